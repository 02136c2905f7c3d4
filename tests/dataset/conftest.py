"""Fixtures of the dataset tests: tiny parquet lists and fake audio features."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from dataset_helpers import UTTS_A, UTTS_B, fake_mel, fake_whisper, make_row, write_parquet


@pytest.fixture(scope="session")
def parquet_lists(tmp_path_factory):
    """Two parquet files (three utterances each) and a data.list naming them."""
    d = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(0)
    files = []
    for name, utts in (("a", UTTS_A), ("b", UTTS_B)):
        rows = [make_row(u, s, sr, text, rng) for u, (s, sr, text) in utts.items()]
        files.append(write_parquet(d / f"{name}.parquet", rows))
    data_list = d / "data.list"
    data_list.write_text("".join(f"{f}\n" for f in files))
    return data_list


@pytest.fixture
def fake_features(monkeypatch):
    """Serve ``cosyvoice.audio.features`` with the fakes of dataset_helpers for the duration of one test."""
    mod = types.ModuleType("cosyvoice.audio.features")
    mod.mel_spectrogram = fake_mel
    mod.whisper_log_mel_spectrogram = fake_whisper
    monkeypatch.setitem(sys.modules, "cosyvoice.audio.features", mod)
    import cosyvoice.audio

    monkeypatch.setattr(cosyvoice.audio, "features", mod, raising=False)
    return mod
