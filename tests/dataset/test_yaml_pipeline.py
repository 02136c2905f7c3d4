"""The data pipelines exactly as conf/cosyvoice2.yaml declares them, built with the config loader."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from cosyvoice.dataset import dataset as D
from cosyvoice.dataset import processor as P
from cosyvoice.utils.config import load_config
from dataset_helpers import EMB_DIM, UTTS_A, UTTS_B, FakePyworld, FakeTokenizer

CONF = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice2.yaml"
# the yaml's filter keeps 1 s .. 60 s
KEPT = sorted(u for u, (s, _, _) in (UTTS_A | UTTS_B).items() if s >= 1.0)


@pytest.fixture
def fake_tokenizer_module(monkeypatch):
    """A stand-in ``cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer`` that records how the yaml calls it."""
    mod = types.ModuleType("cosyvoice.tokenizer.tokenizer")
    mod.calls = []

    def get_qwen_tokenizer(token_path, skip_special_tokens=True, version="cosyvoice2"):
        mod.calls.append((token_path, skip_special_tokens))
        return FakeTokenizer()

    mod.get_qwen_tokenizer = get_qwen_tokenizer
    monkeypatch.setitem(sys.modules, "cosyvoice.tokenizer.tokenizer", mod)
    import cosyvoice.tokenizer

    monkeypatch.setattr(cosyvoice.tokenizer, "tokenizer", mod, raising=False)
    return mod


def _stage_names(stages):
    return [s.func.__name__ if hasattr(s, "func") else s.__name__ for s in stages]


def test_yaml_data_pipeline_with_stand_ins(parquet_lists, fake_features, fake_tokenizer_module, tmp_path):
    cfg = load_config(str(CONF), {"qwen_pretrain_path": str(tmp_path)}, keys=["data_pipeline"])
    stages = cfg["data_pipeline"]
    assert _stage_names(stages) == ["parquet_opener", "tokenize", "filter", "resample", "compute_fbank",
                                    "parse_embedding", "compute_whisper_fbank", "shuffle", "sort", "batch",
                                    "padding"]
    assert stages[0] is P.parquet_opener and stages[-1].func is P.padding
    assert stages[4].keywords["feat_extractor"].func is fake_features.mel_spectrogram
    ds = D.Dataset(str(parquet_lists), stages, seed=0)
    ds.set_epoch(0)
    batches = list(ds)
    assert fake_tokenizer_module.calls == [(str(tmp_path), True)]
    assert sorted(u for b in batches for u in b["utts"]) == KEPT
    (b,) = batches  # three utterances of <= 2.1 s fit in 2000 frames
    assert b["utts"] == ["a3", "b2", "a2"]
    assert b["speech_feat_len"].tolist() == [106, 86, 66]   # 24 kHz, padded to 960-sample tokens, hop 480
    assert b["whisper_feat_len"].tolist() == [212, 172, 132]
    assert b["embedding"] is b["spk_embedding"] and b["embedding"].shape == (3, EMB_DIM)
    assert b["speech_token_len"].tolist() == [52, 42, 32]


def test_yaml_gan_pipeline_with_stand_ins(parquet_lists, fake_features, fake_tokenizer_module, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyworld", FakePyworld())
    cfg = load_config(str(CONF), {"qwen_pretrain_path": str(tmp_path)}, keys=["data_pipeline_gan"])
    ds = D.Dataset(str(parquet_lists), cfg["data_pipeline_gan"], gan=True)
    (b,) = list(ds)
    assert sorted(b["utts"]) == KEPT
    assert b["speech"].shape == (3, 24480) and b["speech_feat"].shape == (3, 51, 80)
    assert b["pitch_feat"].shape == (3, 51) and b["pitch_feat"].dtype == torch.float32
