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
                                    "parse_embedding", "shuffle", "sort", "batch", "padding"]
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
    assert "whisper_feat" not in b  # nothing reads it: the pipeline leaves the official yaml's whisper step out
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


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    from cosyvoice.tokenizer.tiny import build_tiny_qwen_tokenizer

    d = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_qwen_tokenizer(str(d))
    return d


def test_yaml_data_pipeline_with_the_real_tokenizer_and_features(parquet_lists, tiny_tokenizer_dir):
    """The yaml's pipeline as training runs it: the Qwen tokenizer wrapper, matcha-style mel (the whisper log-mel
    step of the official yaml, which nothing reads, is checked on its own in tests/tools/test_resample_parity.py)."""
    from cosyvoice.audio.features import mel_spectrogram
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    cfg = load_config(str(CONF), {"qwen_pretrain_path": str(tiny_tokenizer_dir)}, keys=["data_pipeline"])
    ds = D.Dataset(str(parquet_lists), cfg["data_pipeline"], seed=0)
    ds.set_epoch(0)
    (b,) = list(ds)
    assert b["utts"] == ["a3", "b2", "a2"]
    assert b["speech_feat_len"].tolist() == [106, 86, 66] and b["speech_feat"].shape == (3, 106, 80)

    tokenizer = get_qwen_tokenizer(str(tiny_tokenizer_dir), skip_special_tokens=True)
    texts = [UTTS_A["a3"][2], UTTS_B["b2"][2], UTTS_A["a2"][2]]
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)
        assert b["text_token_len"][i] == len(ids) and b["text_token"][i, :len(ids)].tolist() == ids
        assert b["text_token"][i, len(ids):].eq(0).all()

    # b2 is stored at 24 kHz: its features are those of the decoded wav zero-padded to 86 x 480 samples
    row = next(r for r in P.parquet_opener(iter([{"src": parquet_lists.read_text().split()[1]}])) if r["utt"] == "b2")
    wav, _ = P._decode_audio(row)
    wav = torch.nn.functional.pad(wav, (0, 86 * 480 - wav.size(1)))
    mel = mel_spectrogram(wav, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920,
                          fmin=0, fmax=8000, center=False)
    assert torch.allclose(b["speech_feat"][1, :86], mel[0].T, atol=1e-5)
    assert b["speech_feat"][1, 86:].eq(0).all()
