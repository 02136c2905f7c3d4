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
from cosyvoice.tokenizer.tiny import build_tiny_qwen_tokenizer
from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer
from cosyvoice.utils.config import _TOP_KEY, load_config
from cosyvoice.utils.pretrained import check_pretrained_dir

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

    Inputs: float32 (1, 128, T) whisper log-mel, int32 (1,) = [T]. Output: int64 (1, ceil(T / 4)) ids in [0, 6560]
    (the real tokenizer's two stride-2 convolutions also give ceil(T / 4)). The first T frames are average-pooled 4x
    (100 -> 25 Hz; the last window may be partial), projected 128 -> 8 by a fixed random matrix whose columns sum to
    zero (so only the spectral shape counts, not the loudness), bounded by 0.999 * tanh and rounded to the levels
    {-1, 0, 1}, as the real quantizer does; the id is sum((level_i + 1) * 3 ** i).
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
              (np.array([2], np.int64), "time_axis"), (np.array(1.0, np.float32), "one"),
              (np.array(0.999, np.float32), "shrink"))]
    nodes = [
        helper.make_node("Cast", ["feats_length"], ["len64"], to=TensorProto.INT64),
        helper.make_node("Slice", ["feats", "zero", "len64", "time_axis"], ["valid"]),     # (1, 128, T)
        helper.make_node("AveragePool", ["valid"], ["pooled"], kernel_shape=[TOKEN_POOL], strides=[TOKEN_POOL],
                         ceil_mode=1),                                                     # (1, 128, ceil(T/4))
        helper.make_node("Transpose", ["pooled"], ["frames"], perm=[0, 2, 1]),            # (1, N, 128)
        helper.make_node("MatMul", ["frames", "proj"], ["z"]),                             # (1, N, 8)
        helper.make_node("Tanh", ["z"], ["t"]),
        helper.make_node("Mul", ["t", "shrink"], ["bounded"]),                             # strictly inside (-1, 1)
        helper.make_node("Round", ["bounded"], ["level"]),                                 # {-1, 0, 1}
        helper.make_node("Add", ["level", "one"], ["digit"]),                              # {0, 1, 2}
        helper.make_node("MatMul", ["digit", "powers"], ["code"]),                         # (1, N)
        helper.make_node("Cast", ["code"], ["indices"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "speech_tokenizer_v2_stand_in",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, WHISPER_MELS, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "N"])],  # N = ceil(T / 4)
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
    input_size: 512            # the official encoder hard-codes 512 channels, so the official code loads this dir
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 512
        attention_heads: 8
        linear_units: 64
        num_blocks: 1
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 512
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
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
# Same classes and sub-structure as the official file, tiny widths (LLM 64, flow encoder 512 as the official code
# requires with 1 + 4 narrow blocks, flow decoder 64, HiFT 64), random weights.
# Everything else (data pipeline, train_conf) is conf/cosyvoice2.yaml. It only exercises the code: it cannot speak.

"""


def _top_level_blocks(text: str):
    """[(key or None, block text)], each block running to the next top-level key (comments go with the block above)."""

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


# ---------------------------------------------------------------------------------------------------------------------
# CosyVoice-BlankEN/ and the weights.
QWEN_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 2,
    "use_cache": True,
    "bos_token_id": None,
    "eos_token_id": None,
}
VOCAB_MULTIPLE = 64  # the embedding table is padded past the tokenizer, as in the real model (151936 rows)


def write_qwen_dir(qwen_dir: Path) -> int:
    """Tiny byte-level BPE tokenizer + Qwen2 config.json whose vocab covers it and the wrapper's special tokens."""
    import json


    qwen_dir.mkdir(parents=True, exist_ok=True)
    build_tiny_qwen_tokenizer(str(qwen_dir))
    wrapper = get_qwen_tokenizer(str(qwen_dir), skip_special_tokens=True)
    n_tokens = len(getattr(wrapper, "tokenizer", wrapper))
    vocab = -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config = dict(QWEN_CONFIG, vocab_size=vocab)
    eos = getattr(getattr(wrapper, "tokenizer", wrapper), "eos_token_id", None)
    config["bos_token_id"] = config["eos_token_id"] = eos
    (qwen_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return n_tokens


def write_weights(out: Path, seed: int) -> dict:
    """Build llm/flow/hift from the dir's own cosyvoice2.yaml under ``seed``; save their state_dicts.

    Also writes CosyVoice-BlankEN/model.safetensors (the Qwen2 weights inside llm.pt), so code that loads the Qwen2
    base with ``from_pretrained`` (the official Qwen2Encoder) finds it as in the real dir.
    """
    import torch
    from safetensors.torch import save_file


    torch.manual_seed(seed)
    cfg = load_config(str(out / "cosyvoice2.yaml"), {"qwen_pretrain_path": str(out / "CosyVoice-BlankEN")},
                      keys=["llm", "flow", "hift"])
    _bias_towards_ending(cfg["llm"])
    sizes = {}
    for name in ("llm", "flow", "hift"):
        state = cfg[name].state_dict()
        torch.save(state, out / f"{name}.pt")
        sizes[name] = sum(v.numel() for v in state.values())
    qwen = cfg["llm"].llm.model
    tied = {"lm_head.weight"} if qwen.config.tie_word_embeddings else set()
    qwen_state = {k: v.detach().contiguous() for k, v in qwen.state_dict().items() if k not in tied}
    save_file(qwen_state, str(out / "CosyVoice-BlankEN" / "model.safetensors"), metadata={"format": "pt"})
    return sizes


# Random weights almost never pick the end-of-speech token, so every utterance would run to the LLM's maximum
# length (20 tokens per text token) and the demo would spend minutes on noise. A bias on that one logit makes it
# likely (about 15 % a step once the minimum length is reached), so stand-in utterances end at sensible lengths.
EOS_LOGIT_BIAS = 7.0


def _bias_towards_ending(llm) -> None:
    import torch

    with torch.no_grad():
        llm.llm_decoder.bias[llm.speech_token_size] += EOS_LOGIT_BIAS


README = """\
# Tiny stand-in for CosyVoice2-0.5B (NOT a real model)

Written by `python tools/make_tiny_pretrained.py --out_dir <dir> --seed {seed}`. Same seed, same files.

It has the file layout and the model signatures of the official CosyVoice2-0.5B download, with tiny random
weights, so that every recipe stage runs the same code on it as on the real model, offline and fast. It cannot
speak: fine-tuning and synthesis run, but the audio is noise. For real results use the real model
(`python tools/download_pretrained.py --model_dir <dir>`, or `bash run.sh --download_model true`).

* `cosyvoice2.yaml`: conf/cosyvoice2.yaml with tiny widths: LLM 64 (Qwen2, 2 layers), flow decoder 64, HiFT base
  channels 64; the flow encoder is 512 wide (1 + 4 narrow blocks) because the official encoder hard-codes 512
  channels, so that the official CosyVoice2 class loads this dir and the ones fine-tuned from it. Same classes,
  same data pipeline and train_conf.
* `llm.pt`, `flow.pt`, `hift.pt`: state_dicts of this package's modules built from that yaml under torch seed {seed}.
  The LLM's end-of-speech logit gets a bias of +7 so that its utterances end at a sensible length.
* `campplus.onnx`: input 0 float32 (1, T, 80) mean-normalised fbank -> output 0 float32 (1, 192). A random
  two-layer net with mean and standard-deviation pooling over time.
* `speech_tokenizer_v2.onnx`: input 0 float32 (1, 128, T) whisper log-mel, input 1 int32 (1,) = [T] -> output 0
  int64 (1, ceil(T / 4)) ids in [0, 6560]. A fixed random-projection finite-scalar quantizer: 4x average pool,
  128 -> 8 projection, 0.999 * tanh, round to -1/0/1, id = sum((level + 1) * 3^i). So tokens follow the audio.
* `CosyVoice-BlankEN/`: a byte-level BPE tokenizer ({n_tokens} tokens with the special ones) and a tiny Qwen2
  config.json (vocab {vocab}); model.safetensors holds the Qwen2 weights that are also in llm.pt.

The front-end models are used by position (inputs 0/1, output 0) as the official front end uses them, so the real
ONNX files work unchanged.
"""


def make_stand_in(out_dir: Path, seed: int) -> dict:
    """Write the whole stand-in into ``out_dir`` (which must not exist yet); returns facts for the log."""
    import json

    out_dir.mkdir(parents=True)
    (out_dir / "cosyvoice2.yaml").write_text(tiny_yaml_text(seed), encoding="utf-8")
    write_onnx(build_campplus(seed), out_dir / "campplus.onnx")
    write_onnx(build_speech_tokenizer(seed), out_dir / "speech_tokenizer_v2.onnx")
    n_tokens = write_qwen_dir(out_dir / "CosyVoice-BlankEN")
    sizes = write_weights(out_dir, seed)
    vocab = json.loads((out_dir / "CosyVoice-BlankEN" / "config.json").read_text())["vocab_size"]
    (out_dir / "README.md").write_text(README.format(seed=seed, n_tokens=n_tokens, vocab=vocab), encoding="utf-8")
    for path in out_dir.rglob("*"):  # some writers create 0600 files; the dir is meant to be shared
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"parameters": sizes, "tokens": n_tokens, "vocab": vocab}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True, help="the stand-in model dir to write")
    p.add_argument("--seed", type=int, default=1986, help="seed of every random weight")
    p.add_argument("--force", action="store_true", help="replace an existing --out_dir")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s")
    args = get_args(argv)
    out = Path(args.out_dir)
    if out.exists() and not args.force:
        print(f"ERROR: {out} exists; pass --force to replace it", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        facts = make_stand_in(work / out.name, args.seed)

        check_pretrained_dir(str(work / out.name))
        if out.exists():  # --force: move the old dir into `work`, which is removed below
            os.rename(out, work / "replaced")
        os.rename(work / out.name, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logging.info("wrote the tiny stand-in to %s (seed %d): parameters %s, %d text tokens, Qwen2 vocab %d",
                 out, args.seed, facts["parameters"], facts["tokens"], facts["vocab"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
