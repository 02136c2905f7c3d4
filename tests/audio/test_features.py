"""Acoustic features against the official front end's recorded outputs (frontend.safetensors)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.audio import features
from cosyvoice.audio.features import (campplus_fbank, kaldi_fbank, mel_spectrogram, slaney_mel_filterbank,
                                      whisper_log_mel_spectrogram, whisper_mel_filters)

MEL_24K = dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=8000,
               center=False)


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return load_file(str(fixtures_dir / "frontend.safetensors"))


def _diff(a, b, where=None):
    d = (a.double() - b.double()).abs()
    return (d if where is None else d[where]).max().item()


# Tolerances. Every feature here is a float32 FFT followed by a log. FFT libraries (and MKL's per-CPU code paths)
# round differently; in bins near the noise floor that rounding is a sizeable part of the energy, and the log
# magnifies it. Our own float32 and float64 results differ there by as much as we differ from the recording
# (mel 4.4e-3, Kaldi 2.3e-3), so those bins get a looser bound; every bin carrying signal is held to 1e-4.
def test_whisper_log_mel_matches(ref):
    out = whisper_log_mel_spectrogram(ref["wav_16k"], n_mels=128)
    assert out.shape == (1, 128, 150) and out.dtype == torch.float32
    assert _diff(out, ref["whisper_log_mel_128"]) < 1e-4
    # 1-D input and an explicit batch/channel layout give the same numbers
    assert torch.equal(whisper_log_mel_spectrogram(ref["wav_16k"][0]), out[0])
    assert whisper_log_mel_spectrogram(ref["wav_16k"][None]).shape == (1, 1, 128, 150)


def test_whisper_padding_appends_zeros(ref):
    out = whisper_log_mel_spectrogram(ref["wav_16k"], padding=480)
    assert out.shape == (1, 128, 153)


def test_mel_spectrogram_matches(ref):
    out = mel_spectrogram(ref["wav_24k"], **MEL_24K)
    expected = ref["mel_80_24k"]
    assert out.shape == (1, 80, 75)
    assert _diff(out, expected, expected > -7.0) < 1e-4  # bins at most ~80 dB below the peak (2.05)
    assert _diff(out, expected) < 1e-2  # noise-floor bins (log energy -11.5 .. -7), see above


def test_mel_cache_is_keyed_by_every_parameter(ref):
    """Other configurations computed first must not leak into a later call (the Matcha cache bug)."""
    wav = ref["wav_24k"]
    wide = mel_spectrogram(wav, **{**MEL_24K, "fmax": None})
    small = mel_spectrogram(wav, **{**MEL_24K, "n_fft": 960, "win_size": 960, "num_mels": 40})
    assert small.shape == (1, 40, 75)
    assert _diff(wide, ref["mel_80_24k"]) > 0.1  # fmax 12 kHz really is a different feature
    again = mel_spectrogram(wav, **MEL_24K)
    assert torch.equal(again, mel_spectrogram(wav, **MEL_24K))
    expected = ref["mel_80_24k"]
    assert _diff(again, expected, expected > -7.0) < 1e-4


def test_kaldi_fbank_matches(ref):
    out = kaldi_fbank(ref["wav_16k"], num_mel_bins=80, sample_frequency=16000, dither=0.0)
    expected = ref["kaldi_fbank_80"]
    assert out.shape == (148, 80) and out.dtype == torch.float32
    assert _diff(out, expected, expected > -8.0) < 1e-4
    assert _diff(out, expected) < 1e-3  # weak bins: float32 FFT rounding, see above
    # exact silence hits the log floor log(float32 eps) exactly, as in torchaudio
    assert torch.equal(expected[60], torch.full((80,), float(np.log(np.float32(np.finfo(np.float32).eps)))))
    assert torch.equal(out[60], expected[60])
    assert torch.equal(kaldi_fbank(ref["wav_16k"][0]), out)  # (T,) and (1, T) alike


def test_campplus_fbank_is_mean_normalised(ref):
    out = campplus_fbank(ref["wav_16k"])
    expected = ref["kaldi_fbank_80_cmn"]
    assert out.shape == (148, 80)
    assert _diff(out, expected) < 1e-3
    assert out.mean(0).abs().max().item() < 1e-5


def test_kaldi_fbank_short_input_and_dither():
    assert kaldi_fbank(torch.zeros(399)).shape == (0, 80)
    noise = torch.randn(1600) * 0.1
    torch.manual_seed(0)
    a = kaldi_fbank(noise, dither=1.0)
    torch.manual_seed(0)
    b = kaldi_fbank(noise, dither=1.0)
    assert a.shape == (8, 80) and torch.equal(a, b)
    assert _diff(a, kaldi_fbank(noise)) > 1e-3


def test_slaney_filterbank_properties():
    fb = slaney_mel_filterbank(16000, 400, 128)
    assert fb.shape == (128, 201) and fb.dtype == np.float32
    assert (fb >= 0).all() and (fb.max(axis=1) > 0).all()
    assert torch.equal(whisper_mel_filters(128), torch.from_numpy(fb))
    # Slaney area normalisation: each triangle integrates to 1 over frequency (the sum approximates the
    # integral only where a triangle spans many 40 Hz bins, i.e. the upper bands)
    areas = fb.sum(axis=1) * (16000 / 400)
    assert np.allclose(areas[-40:], 1.0, atol=0.05)
    # 80-band variant (whisper's other packaged bank) is the same construction
    assert whisper_mel_filters(80).shape == (80, 201)


def test_feature_inputs_are_checked():
    with pytest.raises(ValueError, match=r"mel_spectrogram expects a \(B, T\) waveform, got shape \(1, 1, 4800\)"):
        mel_spectrogram(torch.zeros(1, 1, 4800), **MEL_24K)
    with pytest.raises(TypeError, match="expected a float waveform, got dtype torch.int16"):
        kaldi_fbank(torch.zeros(1600, dtype=torch.int16))
    assert "scipy" not in features.__dict__ and "librosa" not in features.__dict__
