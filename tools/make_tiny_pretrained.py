#!/usr/bin/env python3
"""Write a tiny stand-in for the CosyVoice2-0.5B model dir (same files, same signatures, random tiny weights).

The real model cannot be downloaded everywhere, so the recipe defaults to this stand-in: every stage runs the same
code on it as on the real model. Usage:

    python tools/make_tiny_pretrained.py --out_dir pretrained_models/tiny_stand_in [--seed 1986] [--force]

The dir holds cosyvoice2.yaml (tiny widths, official layout), llm.pt / flow.pt / hift.pt (state_dicts of our modules
built from that yaml under a fixed seed), campplus.onnx (fbank -> 192-dim embedding), speech_tokenizer_v2.onnx (a
fixed random-projection finite-scalar quantizer: whisper log-mel -> 25 Hz ids in [0, 6560]), CosyVoice-BlankEN/ (a
tiny Qwen2 config and byte-level BPE tokenizer) and a README. The same seed gives the same files.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPSET = 17
FBANK_BINS = 80          # CAM++ input: kaldi fbank bins
EMBED_DIM = 192          # CAM++ output size
WHISPER_MELS = 128       # speech tokenizer input: whisper log-mel bins
TOKEN_POOL = 4           # 100 mel frames/s -> 25 tokens/s
FSQ_DIMS = 8             # 3 ** 8 = 6561 codes
FSQ_LEVELS = 3
FSQ_GAIN = 3.0           # projection gain: a frame deviates ~0.4 rms from its mean log-mel


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, salt])


def _model(graph, doc: str):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cosyvoice-sft make_tiny_pretrained", doc_string=doc)
    model.ir_version = 8  # readable by onnxruntime releases of the last few years
    onnx.checker.check_model(model, full_check=True)
    return model


def build_campplus(seed: int):
    """A small speaker-embedding net with the CAM++ signature: float32 (1, T, 80) fbank -> float32 (1, 192).

    Frame-wise linear + ReLU, then mean and standard-deviation pooling over time (as CAM++ pools), then a linear layer.
    """
    from onnx import TensorProto, helper, numpy_helper

    hidden = 128
    rng = _rng(seed, 1)
    w1 = (rng.standard_normal((FBANK_BINS, hidden)) / np.sqrt(FBANK_BINS)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((2 * hidden, EMBED_DIM)) / np.sqrt(2 * hidden)).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(EMBED_DIM)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (np.array(1e-5, np.float32), "eps"))]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),                                   # (1, T, H)
        helper.make_node("ReduceMean", ["h"], ["mean"], axes=[1], keepdims=0),   # (1, H)
        helper.make_node("Mul", ["h", "h"], ["h2"]),
        helper.make_node("ReduceMean", ["h2"], ["mean2"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["mean", "mean"], ["mean_sq"]),
        helper.make_node("Sub", ["mean2", "mean_sq"], ["var0"]),
        helper.make_node("Relu", ["var0"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["stats"], axis=1),            # (1, 2H)
        helper.make_node("MatMul", ["stats", "w2"], ["e0"]),
        helper.make_node("Add", ["e0", "b2"], ["output"]),                          # (1, 192)
    ]
    graph = helper.make_graph(
        nodes, "campplus_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, EMBED_DIM])],
        initializer=inits)
    return _model(graph, f"stand-in for campplus.onnx (random weights, seed {seed}); not a speaker model")


def build_speech_tokenizer(seed: int):
    """A fixed random-projection FSQ tokenizer with the speech_tokenizer_v2 signature.

    Inputs: float32 (1, 128, T) whisper log-mel, int32 (1,) = [T]. Output: int64 (1, T // 4) ids in [0, 6560].
    The first T frames are average-pooled 4x (100 -> 25 Hz), projected 128 -> 8 by a fixed random matrix whose
    columns sum to zero (so only the spectral shape counts, not the loudness), bounded by tanh and rounded to the
    levels {-1, 0, 1}; the id is sum((level_i + 1) * 3 ** i).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = _rng(seed, 2)
    w = rng.standard_normal((WHISPER_MELS, FSQ_DIMS))
    w -= w.mean(axis=0, keepdims=True)
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    w = (FSQ_GAIN * w).astype(np.float32)
    powers = (FSQ_LEVELS ** np.arange(FSQ_DIMS)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "proj"), (powers, "powers"), (np.array([0], np.int64), "zero"),
              (np.array([2], np.int64), "time_axis"), (np.array(1.0, np.float32), "one"))]
    nodes = [
        helper.make_node("Cast", ["feats_length"], ["len64"], to=TensorProto.INT64),
        helper.make_node("Slice", ["feats", "zero", "len64", "time_axis"], ["valid"]),     # (1, 128, T)
        helper.make_node("AveragePool", ["valid"], ["pooled"], kernel_shape=[TOKEN_POOL], strides=[TOKEN_POOL]),
        helper.make_node("Transpose", ["pooled"], ["frames"], perm=[0, 2, 1]),            # (1, N, 128)
        helper.make_node("MatMul", ["frames", "proj"], ["z"]),                             # (1, N, 8)
        helper.make_node("Tanh", ["z"], ["bounded"]),
        helper.make_node("Round", ["bounded"], ["level"]),                                 # {-1, 0, 1}
        helper.make_node("Add", ["level", "one"], ["digit"]),                              # {0, 1, 2}
        helper.make_node("MatMul", ["digit", "powers"], ["code"]),                         # (1, N)
        helper.make_node("Cast", ["code"], ["indices"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "speech_tokenizer_v2_stand_in",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, WHISPER_MELS, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "N"])],
        initializer=inits)
    return _model(graph, f"stand-in for speech_tokenizer_v2.onnx (fixed random FSQ, seed {seed}); 25 Hz, 6561 codes")


def write_onnx(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# cosyvoice2.yaml: conf/cosyvoice2.yaml (the full data pipeline and train_conf) with these blocks at tiny sizes.
TINY_BLOCKS = {
    "llm_input_size": "llm_input_size: 64             # tiny Qwen2 width (CosyVoice-BlankEN/config.json)\n",
    "llm_output_size": "llm_output_size: 64\n",
    "flow": """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 64
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 64
        attention_heads: 4
        linear_units: 128
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 64
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:cosyvoice.utils.config.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [64]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 4
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

""",
    "hift": """\
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 64
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 64

""",
}
YAML_HEADER = """\
# Tiny STAND-IN for CosyVoice2-0.5B's cosyvoice2.yaml, written by tools/make_tiny_pretrained.py (seed {seed}).
# Same classes and sub-structure as the official file, tiny widths (LLM 64, flow 64, HiFT 64), random weights.
# Everything else (data pipeline, train_conf) is conf/cosyvoice2.yaml. It only exercises the code: it cannot speak.

"""


def _top_level_blocks(text: str):
    """[(key or None, block text)], each block running to the next top-level key (comments go with the block above)."""
    from cosyvoice.utils.config import _TOP_KEY

    blocks, key, lines = [], None, []
    for line in text.splitlines(keepends=True):
        m = _TOP_KEY.match(line)
        if m and lines:
            blocks.append((key, "".join(lines)))
            lines = []
        if m:
            key = m.group(1)
        lines.append(line)
    if lines:
        blocks.append((key, "".join(lines)))
    return blocks


def tiny_yaml_text(seed: int, full_yaml: Path = ROOT / "conf" / "cosyvoice2.yaml") -> str:
    blocks = _top_level_blocks(full_yaml.read_text(encoding="utf-8"))
    keys = [k for k, _ in blocks]
    missing = sorted(set(TINY_BLOCKS) - set(keys))
    if missing:
        raise ValueError(f"{full_yaml} has no top-level {', '.join(missing)}; cannot derive the stand-in yaml")
    body = "".join(_replace_block(text, TINY_BLOCKS[k]) if k in TINY_BLOCKS else text
                   for k, text in blocks if k is not None)
    return YAML_HEADER.format(seed=seed) + body


def _replace_block(old: str, new: str) -> str:
    """``new``, followed by the comment lines that close ``old`` (they introduce the next block)."""
    lines = old.splitlines(keepends=True)
    tail = []
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")) and not lines[-1].startswith(" "):
        tail.insert(0, lines.pop())
    comments = [line for line in tail if line.strip()]
    return new.rstrip("\n") + "\n" + ("\n" + "".join(comments) if comments else ("\n" if tail else ""))
