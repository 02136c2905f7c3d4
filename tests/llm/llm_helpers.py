"""Helpers shared by the LLM tests (a uniquely named module, importable from any test in tests/llm)."""
from __future__ import annotations

import random

import torch

from cosyvoice.utils.config import load_config

TOL = 1e-5
# the training fixtures: (stem, python seed, the path each of the two utterances takes); CosyVoice3 adds instruct
TRAIN_CASES = [("llm_train_unistream", 0, ["uni", "uni"]), ("llm_train_bistream", 4, ["bi", "bi"]),
               ("llm_train_mixed", 1, ["bi", "uni"])]
TRAIN3_CASES = TRAIN_CASES + [("llm_train_instruct", 10, ["uni", "bi"])]
BATCH_KEYS = ("text_token", "text_token_len", "speech_token", "speech_token_len")
BATCH3_KEYS = BATCH_KEYS + ("instruct_token", "instruct_token_len")


def build_tiny_llm(fixtures_dir, tiny_qwen_dir):
    """Qwen2LM from the fixture tiny.yaml (fresh weights; nothing loaded)."""
    cfg = load_config(str(fixtures_dir / "tiny.yaml"), {"qwen_pretrain_path": str(tiny_qwen_dir)}, keys=["llm"])
    return cfg["llm"]


def build_tiny3_llm(fixtures3_dir, tiny3_qwen_dir, **overrides):
    """CosyVoice3LM from the fixture tiny3.yaml (fresh weights; nothing loaded); ``overrides`` go to the yaml."""
    cfg = load_config(str(fixtures3_dir / "tiny3.yaml"), {"qwen_pretrain_path": str(tiny3_qwen_dir), **overrides},
                      keys=["llm"])
    return cfg["llm"]


def valid_positions(lengths, width):
    return torch.arange(width)[None, :] < lengths[:, None].long()


def check_training_forward(llm, batch, d, seed, paths) -> None:
    """The training forward under the recorded python seed: one python draw per utterance, the recorded ones and
    nothing else, each choosing the recorded path (bi- or uni-stream), and the recorded loss and accuracy."""
    random.seed(seed)
    with torch.no_grad():
        out = llm(batch, torch.device("cpu"))
    next_draw = random.random()
    ref = random.Random(seed)
    draws = [ref.random(), ref.random()]
    assert draws == d["py_random_draws"].tolist()
    assert next_draw == ref.random()
    assert [("bi" if x < 0.5 else "uni") for x in draws] == paths
    assert abs(out["loss"].item() - d["loss"].item()) < TOL
    assert abs(out["acc"].item() - d["acc"].item()) < TOL
