"""The official resampler (cosyvoice.audio.resample) against recordings of torchaudio's Resample
(resample.safetensors) and against a float64 evaluation of the windowed-sinc formula written out here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from cosyvoice.audio.io import load_wav
from cosyvoice.audio.resample import resample, resample_filters, resampled_length

TAG_RATE = {"sr22050": 22050, "sr24000": 24000, "sr44100": 44100, "sr48000": 48000}
RECORDED = ["sr22050_to16k", "sr24000_to16k", "sr44100_to16k", "sr44100_to24k", "sr48000_to16k", "sr48000_to24k"]
PAIRS = [(24000, 16000), (48000, 16000), (48000, 24000), (22050, 16000), (22050, 24000), (44100, 16000),
         (44100, 24000), (16000, 24000)]


@pytest.fixture(scope="module")
def recorded(fixtures_dir):
    return load_file(str(fixtures_dir / "resample.safetensors"))


def reference_resample(x: np.ndarray, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """The formula, in float64, one output sample at a time (no conv1d, no gcd, no padding tricks):

    y[j] = sum_i x[i] * c / orig * sinc(c * (i / orig - j / new)) * cos(pi * c * (i / orig - j / new) / (2 * zeros))^2

    over the i with |c * (i / orig - j / new)| < zeros, x = 0 outside the signal, c = rolloff * min(orig, new) and
    sinc(u) = sin(pi u) / (pi u); ceil(new * T / orig) outputs.
    """
    x = np.asarray(x, dtype=np.float64)
    c = rolloff * min(orig, new)
    n_out = math.ceil(new * len(x) / orig)
    reach = int(math.ceil(zeros * orig / c)) + 2
    j = np.arange(n_out)
    i = np.floor(j * orig / new).astype(np.int64)[:, None] + np.arange(-reach, reach + 1)[None, :]
    u = c * (i / orig - j[:, None] / new)
    h = np.where(np.abs(u) < zeros, c / orig * np.sinc(u) * np.cos(np.pi * u / (2 * zeros)) ** 2, 0.0)
    inside = (i >= 0) & (i < len(x))
    return (np.where(inside, x[np.clip(i, 0, len(x) - 1)], 0.0) * h).sum(axis=1)


def _signal(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """(channels, T) float32: a harmonic glide, a partial near 0.45 x sr, noise; the channels differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for ch in range(channels):
        glide = 0.3 * np.sin(2 * np.pi * (180 + 40 * ch) * t * (1 + 0.5 * t))
        top = 0.05 * np.sin(2 * np.pi * 0.45 * sr * t + ch)
        rows.append(glide + 0.15 * np.sin(6 * np.pi * 230 * t) + top + 0.02 * rng.standard_normal(t.size))
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("key", RECORDED)
def test_matches_torchaudio_recordings(recorded, key):
    tag, target = key.rsplit("_", 1)
    mono = recorded[f"{tag}_in"].mean(dim=0, keepdim=True)  # the official load_wav averages channels first
    out = resample(mono, TAG_RATE[tag], int(target[2:-1]) * 1000)
    expected = recorded[key]
    assert out.dtype == torch.float32 and out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("key", RECORDED)
def test_reference_formula_matches_recordings(recorded, key):
    """The formula above is what torchaudio computes, to its float32 filters (whose phase term p / n is rounded to
    float32 before the float64 design: up to 4.3e-6 here, for 22.05 kHz)."""
    tag, target = key.rsplit("_", 1)
    mono = recorded[f"{tag}_in"].double().mean(dim=0).numpy()
    ref = reference_resample(mono, TAG_RATE[tag], int(target[2:-1]) * 1000)
    expected = recorded[key][0].double().numpy()
    assert ref.shape == expected.shape
    assert np.abs(ref - expected).max() <= 1e-5


@pytest.mark.parametrize("orig, new", PAIRS)
@pytest.mark.parametrize("channels", [1, 2])
def test_matches_reference_formula(orig, new, channels):
    x = _signal(0.37, orig, channels, seed=orig + new + channels)
    mono = torch.from_numpy(x).mean(dim=0, keepdim=True)
    ref = reference_resample(mono[0].double().numpy(), orig, new)
    out32 = resample(mono, orig, new)
    assert out32.shape == (1, ref.size) and out32.dtype == torch.float32
    assert np.abs(out32[0].double().numpy() - ref).max() <= 2e-6
    # float64 input gets float64 filters designed exactly: the same formula to rounding
    out64 = resample(mono.double(), orig, new)
    assert out64.dtype == torch.float64
    assert np.abs(out64[0].numpy() - ref).max() <= 1e-12
    # every channel of a (C, T) input is resampled on its own (conv1d may pick another kernel for another batch
    # size, so not always to the same bits: the parity paths all resample the (1, T) channel mean)
    both = resample(torch.from_numpy(x), orig, new)
    for ch in range(channels):
        torch.testing.assert_close(both[ch], resample(torch.from_numpy(x[ch]), orig, new), rtol=0, atol=1e-6)


def test_output_length_is_the_official_one():
    # 22.05 kHz -> 24 kHz: ceil(24000 * 175930 / 22050) = ceil(191488.4) (a round-to-nearest resampler gives 191488)
    assert resampled_length(175930, 22050, 24000) == 191489
    assert resample(torch.zeros(1, 175930), 22050, 24000).shape == (1, 191489)
    # torchaudio takes ceil of the ratio after rounding it to float32: 16000 * 180697 / 44100 = 65559.0023 becomes
    # 65559.0 and stays 65559, where the exact ceiling is 65560 (from about 4 s of audio on, depending on the rates)
    assert math.ceil(16000 * 180697 / 44100) == 65560
    assert resampled_length(180697, 44100, 16000) == 65559
    assert resample(torch.zeros(180697), 44100, 16000).shape == (65559,)
    assert resampled_length(48000 * 30, 48000, 16000) == 16000 * 30
    assert resample(torch.zeros(2, 3, 4801), 48000, 24000).shape == (2, 3, 2401)


def test_equal_rates_and_numpy_input():
    x = torch.randn(1, 100)
    assert resample(x, 24000, 24000) is x
    a = _signal(0.2, 48000, 1, seed=3)[0]
    out = resample(a, 48000, 16000)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.array_equal(out, resample(torch.from_numpy(a), 48000, 16000).numpy())


def test_filters_are_cached_per_rate_pair_and_dtype():
    w, width = resample_filters(48000, 16000)
    assert w.shape == (1, 1, 2 * width + 3) and width == 19 and w.dtype == torch.float32
    assert resample_filters(96000, 32000)[0] is w  # the same reduced pair (3 -> 1)
    w441, width441 = resample_filters(44100, 16000)
    assert w441.shape == (160, 1, 2 * width441 + 441)
    w64, _ = resample_filters(48000, 16000, dtype=torch.float64)
    assert w64.dtype == torch.float64 and w64 is not w
    assert (w64.float() - w).abs().max().item() < 1e-6


def test_bad_arguments():
    with pytest.raises(TypeError, match="resample: expected a float tensor or numpy array, got torch.int16"):
        resample(torch.zeros(10, dtype=torch.int16), 48000, 16000)
    with pytest.raises(TypeError, match="resample: expected float audio, got a numpy array of int16"):
        resample(np.zeros(10, dtype=np.int16), 48000, 16000)
    with pytest.raises(ValueError, match=r"resample: orig_freq must be a positive whole number of Hz, got 0"):
        resample(torch.zeros(10), 0, 16000)
    with pytest.raises(ValueError, match=r"resample: new_freq must be a positive whole number of Hz, got 5512.5"):
        resample(torch.zeros(10), 44100, 5512.5)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_load_wav_is_downmix_then_resample(tmp_path, subtype):
    """load_wav = the official steps: float32 frames, channel mean, then the resampler; bit for bit."""
    x = _signal(0.6, 48000, 2, seed=7)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, x.T, 48000, subtype=subtype)
    frames, _ = sf.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(frames.T.copy()).mean(dim=0, keepdim=True)
    for target in (16000, 24000):
        out = load_wav(path, target)
        assert out.dtype == torch.float32 and out.shape == (1, int(0.6 * target))
        assert torch.equal(out, resample(mono, 48000, target))
