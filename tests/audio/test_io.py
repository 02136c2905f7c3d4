"""Audio file reading (mono, resampled) and atomic writing."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from cosyvoice.audio.io import load_wav, save_wav


def _tone(sr, seconds, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def test_stereo_44k_loads_as_mono_16k(tmp_path):
    left, right = 0.5 * _tone(44100, 1.5), 0.1 * _tone(44100, 1.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wav = load_wav(path, 16000)
    assert wav.shape == (1, 24000) and wav.dtype == torch.float32
    expected = 0.3 * _tone(16000, 1.5)  # the channel average of the two in-phase tones
    assert np.abs(wav[0, 200:-200].numpy() - expected[200:-200]).max() < 1e-3


def test_same_rate_is_untouched(tmp_path):
    x = 0.25 * _tone(24000, 0.5)
    path = tmp_path / "a.flac"
    sf.write(path, x, 24000, subtype="PCM_24")
    wav = load_wav(path, 24000)
    assert wav.shape == (1, 12000)
    assert np.abs(wav[0].numpy() - x).max() < 1e-6


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^audio file not found: .*missing\.wav$"):
        load_wav(tmp_path / "missing.wav", 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(ValueError, match=r"^cannot read audio file .*bad\.wav: ") as e:
        load_wav(bad, 16000)
    assert "\n" not in str(e.value)


def test_min_sr_is_enforced(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, _tone(8000, 0.2), 8000)
    with pytest.raises(ValueError, match=r"low\.wav is sampled at 8000 Hz, below the required 16000 Hz"):
        load_wav(path, 24000, min_sr=16000)
    assert load_wav(path, 16000).shape == (1, 3200)  # without min_sr it resamples


def test_save_wav_round_trip_and_atomic(tmp_path):
    wav = torch.from_numpy(0.5 * _tone(24000, 0.25))[None]
    out = tmp_path / "sub" / "out.wav"
    save_wav(out, wav, 24000)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (24000, 1, 6000, "PCM_16")
    assert np.abs(load_wav(out, 24000).numpy() - wav.numpy()).max() < 1e-4
    assert sorted(os.listdir(out.parent)) == ["out.wav"]  # no temporary file left behind
    save_wav(out, 2.0 * wav, 24000)  # overwrite; PCM is clipped to [-1, 1] rather than wrapped
    assert load_wav(out, 24000).max().item() == pytest.approx(1.0, abs=1e-4)
    save_wav(tmp_path / "f.wav", wav[0].numpy(), 24000, subtype="FLOAT")
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"


def test_save_wav_failure_leaves_no_temp(tmp_path):
    with pytest.raises(Exception):
        save_wav(tmp_path / "x.wav", np.zeros(100, dtype=np.float32), 24000, subtype="NOT_A_SUBTYPE")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"save_wav expects \(T,\) or \(C, T\) audio"):
        save_wav(tmp_path / "y.wav", np.zeros((1, 1, 10)), 24000)
