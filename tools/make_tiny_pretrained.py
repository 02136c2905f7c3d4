#!/usr/bin/env python3
"""Write a tiny stand-in for the CosyVoice2-0.5B or Fun-CosyVoice3-0.5B model dir (same files, same signatures,
random tiny weights).

The real models cannot be downloaded everywhere, so the recipe defaults to a stand-in: every stage runs the same
code on it as on the real model. Usage:

    python tools/make_tiny_pretrained.py [--version cosyvoice2|cosyvoice3] [--out_dir DIR] [--seed 1986] [--force]

(default --out_dir: exp/pretrained/CosyVoice2-0.5B-tiny, or exp/pretrained/CosyVoice3-0.5B-tiny for cosyvoice3).
The dir holds the version's yaml (cosyvoice2.yaml / cosyvoice3.yaml: conf/<that yaml> with tiny widths),
llm.pt / flow.pt / hift.pt (state_dicts of our modules built from that yaml under a fixed seed), campplus.onnx
(fbank -> 192-dim embedding), the speech tokenizer (speech_tokenizer_v2.onnx / speech_tokenizer_v3.onnx: a fixed
random-projection finite-scalar quantizer, whisper log-mel -> 25 Hz ids in [0, 6560]), CosyVoice-BlankEN/ (a tiny
Qwen2 config and byte-level BPE tokenizer; for CosyVoice3 padded so that the special tokens have their real ids,
<|endofprompt|> = 151646) and a README. The same seed gives the same files.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from cosyvoice.tokenizer.tiny import QWEN2_REGULAR_TOKENS, build_tiny_qwen_tokenizer
from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer
from cosyvoice.utils.config import load_config
from cosyvoice.utils.cli import entry_point, setup_logging
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.pretrained import check_pretrained_dir, get_version

ROOT = Path(__file__).resolve().parents[1]  # the repository (conf/)
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


def build_speech_tokenizer(seed: int, version: str = "cosyvoice2"):
    """A fixed random-projection FSQ tokenizer with the speech_tokenizer_v2 (or, for ``version`` 'cosyvoice3',
    speech_tokenizer_v3: the same feed and output) signature; each version has its own projection.

    Inputs: float32 (1, 128, T) whisper log-mel, int32 (1,) = [T]. Output: int64 (1, ceil(T / 4)) ids in [0, 6560]
    (the real tokenizer's two stride-2 convolutions also give ceil(T / 4)). The first T frames are average-pooled 4x
    (100 -> 25 Hz; the last window may be partial), projected 128 -> 8 by a fixed random matrix whose columns sum to
    zero (so only the spectral shape counts, not the loudness), bounded by 0.999 * tanh and rounded to the levels
    {-1, 0, 1}, as the real quantizer does; the id is sum((level_i + 1) * 3 ** i).
    """
    from onnx import TensorProto, helper, numpy_helper

    tag = "v2" if version == "cosyvoice2" else "v3"
    rng = _rng(seed, 2 if tag == "v2" else 3)
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
        nodes, f"speech_tokenizer_{tag}_stand_in",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, WHISPER_MELS, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "N"])],  # N = ceil(T / 4)
        initializer=inits)
    return _model(graph, f"stand-in for speech_tokenizer_{tag}.onnx (fixed random FSQ, seed {seed}); 25 Hz, 6561 codes")


def write_onnx(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# The stand-in yaml: conf/<version>.yaml (the full data pipeline and train_conf) with these widths overridden, each
# named by its dotted path of keys. Nothing else differs from the full-size yaml.
TINY_WIDTHS = {
    "cosyvoice2": {
        "llm_input_size": "64", "llm_output_size": "64",  # tiny Qwen2 width (CosyVoice-BlankEN/config.json)
        # the encoder keeps 512 channels (the official encoder hard-codes them, so the official code loads this dir)
        "flow.encoder.linear_units": "64", "flow.encoder.num_blocks": "1",
        "flow.decoder.estimator.channels": "[64]", "flow.decoder.estimator.attention_head_dim": "16",
        "flow.decoder.estimator.n_blocks": "1", "flow.decoder.estimator.num_mid_blocks": "2",
        "flow.decoder.estimator.num_heads": "4",
        "hift.base_channels": "64", "hift.f0_predictor.cond_channels": "64",
    },
    "cosyvoice3": {  # the sizes of the golden tiny3 set
        "llm_input_size": "16", "llm_output_size": "16",
        "flow.pre_lookahead_layer.channels": "64",
        "flow.decoder.estimator.dim": "64", "flow.decoder.estimator.depth": "2",
        "flow.decoder.estimator.heads": "4", "flow.decoder.estimator.dim_head": "16",
        "hift.base_channels": "64", "hift.f0_predictor.cond_channels": "64",
    },
}
YAML_HEADER = {
    "cosyvoice2": """\
# Tiny STAND-IN for CosyVoice2-0.5B's cosyvoice2.yaml, written by tools/make_tiny_pretrained.py (seed {seed}).
# conf/cosyvoice2.yaml with tiny widths (LLM 64, flow encoder 512 as the official code requires with 1 + 4 narrow
# blocks, flow decoder 64, HiFT 64; the keys marked "tiny"), random weights. It only exercises the code: it cannot speak.

""",
    "cosyvoice3": """\
# Tiny STAND-IN for Fun-CosyVoice3-0.5B's cosyvoice3.yaml, written by tools/make_tiny_pretrained.py (seed {seed}).
# conf/cosyvoice3.yaml with tiny widths (LLM 16, DiT 64, HiFT 64; the keys marked "tiny"), random weights.
# It only exercises the code: it cannot speak.

""",
}
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def override_widths(text: str, widths: Dict[str, str], source: str = "yaml") -> str:
    """``text`` (a yaml) with the value of each dotted key path of ``widths`` replaced (the line's comment becomes
    ``# tiny``). Raises ValueError naming the paths that ``text`` does not have."""
    out, stack, done = [], [], set()
    for line in text.splitlines(keepends=True):
        m = _KEY_LINE.match(line.rstrip("\n"))
        if m is None:
            out.append(line)
            continue
        depth = len(m.group("indent"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, m.group("key")))
        path = ".".join(k for _, k in stack)
        if path in widths:
            line = f"{m.group('indent')}{m.group('key')}: {widths[path]}  # tiny\n"
            done.add(path)
        out.append(line)
    missing = sorted(set(widths) - done)
    if missing:
        raise ValueError(f"{source} has no {', '.join(missing)}; cannot derive the stand-in yaml")
    return "".join(out)


def tiny_yaml_text(seed: int, full_yaml: Optional[Path] = None, version: str = "cosyvoice2") -> str:
    """The stand-in yaml of ``version``: conf/<its yaml> (or ``full_yaml``) with the tiny widths."""
    full_yaml = full_yaml or ROOT / "conf" / _version(version).config_file
    body = override_widths(full_yaml.read_text(encoding="utf-8"), TINY_WIDTHS[version], str(full_yaml))
    return YAML_HEADER[version].format(seed=seed) + body


def _version(name: str):
    return get_version(name)


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


# CosyVoice3: the tiny3 backbone of the golden set, with the real 151936-row table (CosyVoice3LM looks for
# <|endofprompt|> = 151646, so the tokenizer keeps the real ids; 16 wide, the table is 9.7 MB).
QWEN_CONFIG_V3 = dict(QWEN_CONFIG, hidden_size=16, intermediate_size=48, num_attention_heads=2,
                      num_key_value_heads=1)
QWEN_VOCAB_V3 = 151936


def write_qwen_dir(qwen_dir: Path, version: str = "cosyvoice2") -> int:
    """Tiny byte-level BPE tokenizer + Qwen2 config.json whose vocab covers it and the wrapper's special tokens.

    CosyVoice3: the BPE is padded to the real 151643 regular entries so that every special token has its real id,
    and the table has the real 151936 rows."""
    import json


    qwen_dir.mkdir(parents=True, exist_ok=True)
    v3 = version == "cosyvoice3"
    build_tiny_qwen_tokenizer(str(qwen_dir), pad_to=QWEN2_REGULAR_TOKENS if v3 else None)
    wrapper = get_qwen_tokenizer(str(qwen_dir), skip_special_tokens=True, version=version)
    n_tokens = len(getattr(wrapper, "tokenizer", wrapper))
    if v3:
        if n_tokens > QWEN_VOCAB_V3:
            raise ValueError(f"the tiny CosyVoice3 tokenizer has {n_tokens} tokens, more than {QWEN_VOCAB_V3}")
        config = dict(QWEN_CONFIG_V3, vocab_size=QWEN_VOCAB_V3)
    else:
        config = dict(QWEN_CONFIG, vocab_size=-(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)
    eos = getattr(getattr(wrapper, "tokenizer", wrapper), "eos_token_id", None)
    config["bos_token_id"] = config["eos_token_id"] = eos
    (qwen_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return n_tokens


def write_weights(out: Path, seed: int, version: str = "cosyvoice2") -> dict:
    """Build llm/flow/hift from the dir's own yaml under ``seed``; save their state_dicts.

    Also writes CosyVoice-BlankEN/model.safetensors (the Qwen2 weights inside llm.pt), so code that loads the Qwen2
    base with ``from_pretrained`` (the official Qwen2Encoder) finds it as in the real dir.
    """
    import torch
    from safetensors.torch import save_file


    torch.manual_seed(seed)
    cfg = load_config(str(out / _version(version).config_file), {"qwen_pretrain_path": str(out / "CosyVoice-BlankEN")},
                      keys=["llm", "flow", "hift"])
    if version == "cosyvoice2":
        _bias_towards_ending(cfg["llm"])
    else:
        _steer_stop_tokens(cfg["llm"])
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


# CosyVoice3: any of 200 ids (6561..6760) ends decoding, and below min_len the official decoding bans only 6561
# (sos), so random weights would stop after ~30 tokens on average, often at once. Its llm_decoder has no bias, so
# the stand-in makes one: dimension 0 of every speech-embedding row (every decoding step's input) is a constant and
# no layer writes into that dimension of the residual stream, so the final hidden state carries a near-constant
# feature h0; the decoder rows then read it as a bias: +SOS_LOGIT on 6561 (banned below min_len, likely after it:
# about 15 % a step) and OTHER_STOP_LOGIT on the 199 other stop ids (practically never chosen).
CONSTANT_FEATURE = 4.0
SOS_LOGIT = 3.0
OTHER_STOP_LOGIT = -6.0


def _steer_stop_tokens(llm) -> None:
    import torch

    backbone = llm.llm.model.model
    with torch.no_grad():
        llm.speech_embedding.weight[:, 0] = CONSTANT_FEATURE
        for layer in backbone.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        h0 = _constant_feature_level(llm)
        w = llm.llm_decoder.weight
        w[:, 0] = 0.0
        w[llm.sos, 0] = SOS_LOGIT / h0
        w[llm.sos + 1:llm.sos + 200, 0] = OTHER_STOP_LOGIT / h0


def _constant_feature_level(llm) -> float:
    """Mean of the final hidden state's dimension 0 over a few random speech-token sequences."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, llm.speech_token_size, (4, 32), generator=g)
    hidden, _ = llm.llm(llm.speech_embedding(ids), torch.full((4,), 32, dtype=torch.int32))
    return float(hidden[..., 0].mean())


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

README_V3 = """\
# Tiny stand-in for Fun-CosyVoice3-0.5B (NOT a real model)

Written by `python tools/make_tiny_pretrained.py --version cosyvoice3 --out_dir <dir> --seed {seed}`. Same seed,
same files.

It has the file layout and the model signatures of the official Fun-CosyVoice3-0.5B download, with tiny random
weights, so that every recipe stage runs the same code on it as on the real model, offline and fast. It cannot
speak: fine-tuning and synthesis run, but the audio is noise. For real results use the real model
(`python tools/download_pretrained.py --version cosyvoice3 --model_dir <dir>`).

* `cosyvoice3.yaml`: conf/cosyvoice3.yaml with tiny widths: LLM 16 (Qwen2, 2 layers), DiT 64 (2 blocks), HiFT base
  channels 64. Same classes, same data pipeline and train_conf.
* `llm.pt`, `flow.pt`, `hift.pt`: state_dicts of this package's modules built from that yaml under torch seed {seed}.
  Decoding ends on any of 200 stop ids and the official rule bans only 6561 before the minimum length, so the LLM is
  steered: its last hidden state carries a constant feature (dimension 0 of the speech embeddings, which no layer
  writes to) that llm_decoder reads as a bias of +{sos:g} on 6561 and {other:g} on the other stop ids. Utterances
  then end at a sensible length, after the minimum.
* `campplus.onnx`: input 0 float32 (1, T, 80) mean-normalised fbank -> output 0 float32 (1, 192). A random
  two-layer net with mean and standard-deviation pooling over time.
* `speech_tokenizer_v3.onnx`: input 0 float32 (1, 128, T) whisper log-mel, input 1 int32 (1,) = [T] -> output 0
  int64 (1, ceil(T / 4)) ids in [0, 6560], the feed the official front end gives the real one. A fixed
  random-projection finite-scalar quantizer (its own projection, not the v2 stand-in's): 4x average pool,
  128 -> 8 projection, 0.999 * tanh, round to -1/0/1, id = sum((level + 1) * 3^i). So tokens follow the audio.
* `CosyVoice-BlankEN/`: a byte-level BPE tokenizer padded with unreachable entries to the real 151643 regular
  tokens, so the special tokens have their real ids (<|endoftext|> 151643, <|endofprompt|> 151646, {n_tokens}
  tokens with CosyVoice3's special ones), and a tiny Qwen2 config.json with the real vocab {vocab};
  model.safetensors holds the Qwen2 weights that are also in llm.pt.

The front-end models are used by position (inputs 0/1, output 0) as the official front end uses them, so the real
ONNX files work unchanged.
"""


def make_stand_in(out_dir: Path, seed: int, version: str = "cosyvoice2") -> dict:
    """Write the whole stand-in of ``version`` into ``out_dir`` (which must not exist yet); returns facts for the
    log."""
    import json

    spec = _version(version)
    out_dir.mkdir(parents=True)
    (out_dir / spec.config_file).write_text(tiny_yaml_text(seed, version=version), encoding="utf-8")
    write_onnx(build_campplus(seed), out_dir / "campplus.onnx")
    write_onnx(build_speech_tokenizer(seed, version), out_dir / spec.speech_tokenizer_file)
    n_tokens = write_qwen_dir(out_dir / "CosyVoice-BlankEN", version)
    sizes = write_weights(out_dir, seed, version)
    vocab = json.loads((out_dir / "CosyVoice-BlankEN" / "config.json").read_text())["vocab_size"]
    readme = (README.format(seed=seed, n_tokens=n_tokens, vocab=vocab) if version == "cosyvoice2" else
              README_V3.format(seed=seed, n_tokens=n_tokens, vocab=vocab, sos=SOS_LOGIT, other=OTHER_STOP_LOGIT))
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    for path in out_dir.rglob("*"):  # some writers create 0600 files; the dir is meant to be shared
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"parameters": sizes, "tokens": n_tokens, "vocab": vocab}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", default="cosyvoice2", choices=("cosyvoice2", "cosyvoice3"),
                   help="which model's stand-in: CosyVoice2-0.5B or Fun-CosyVoice3-0.5B")
    p.add_argument("--out_dir", help="the stand-in model dir to write [exp/pretrained/CosyVoice2-0.5B-tiny, or "
                                     "exp/pretrained/CosyVoice3-0.5B-tiny for cosyvoice3]")
    p.add_argument("--seed", type=int, default=1986, help="seed of every random weight")
    p.add_argument("--force", action="store_true", help="replace an existing --out_dir")
    return p.parse_args(argv)


@entry_point("make_tiny_pretrained.py")
def main(argv=None) -> int:
    setup_logging()
    args = get_args(argv)
    out = Path(args.out_dir or _version(args.version).stand_in_dir)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        facts = make_stand_in(work / out.name, args.seed, args.version)

        check_pretrained_dir(str(work / out.name), version=_version(args.version))
        if out.exists():  # --force: move the old dir into `work`, which is removed below
            os.rename(out, work / "replaced")
        os.rename(work / out.name, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    logging.info("wrote the tiny %s stand-in to %s (seed %d, %.1f MB): parameters %s, %d text tokens, Qwen2 vocab %d",
                 _version(args.version).title, out, args.seed, size / 2 ** 20, facts["parameters"], facts["tokens"],
                 facts["vocab"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
