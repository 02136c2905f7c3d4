"""Every acoustic feature the toolkit uses, written once for offline extraction, training and inference.

* :func:`mel_spectrogram` - the 80-bin log-mel at 24 kHz that the flow model predicts and HiFT consumes
  (numerically the Matcha-TTS / HiFi-GAN recipe the official yaml names as ``feat_extractor``; the yaml sets the
  band: ``fmax: 8000`` for CosyVoice2, ``fmax: null`` = 12 kHz for CosyVoice3, otherwise the same);
* :func:`whisper_log_mel_spectrogram` - the 128-bin Whisper log-mel at 16 kHz fed to ``speech_tokenizer_v2.onnx``
  and ``speech_tokenizer_v3.onnx`` alike;
* :func:`kaldi_fbank` / :func:`campplus_fbank` - Kaldi fbank (torchaudio.compliance.kaldi defaults) and its
  mean-normalised form fed to ``campplus.onnx``.

No librosa / whisper / torchaudio: filterbanks are computed here (numpy, librosa-compatible Slaney formulas) and
cached per parameter set and device.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------------
# Slaney mel scale and filterbank (same numbers as librosa.filters.mel(..., htk=False, norm="slaney"))
_F_SP = 200.0 / 3  # Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(hz):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    return np.where(hz >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz_slaney(mel):
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: Optional[float] = None) -> np.ndarray:
    """Area-normalised triangular mel filters, float32 (n_mels, n_fft // 2 + 1). ``fmax=None`` means sr / 2."""
    fmax = float(sr) / 2 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    norm = 2.0 / (edges[2:] - edges[:-2])
    return (weights * norm[:, None]).astype(np.float32)


_CACHE: Dict[Tuple, torch.Tensor] = {}


def _cached(key: Tuple, build) -> torch.Tensor:
    value = _CACHE.get(key)
    if value is None:
        value = build()
        _CACHE[key] = value
    return value


def _hann(win_size: int, device: torch.device) -> torch.Tensor:
    """Periodic Hann window, computed on the CPU in float32 then moved (as the reference recipes do)."""
    return _cached(("hann", win_size, str(device)), lambda: torch.hann_window(win_size).to(device))


def _as_float_tensor(x) -> torch.Tensor:
    if not torch.is_tensor(x):
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a float waveform, got dtype {x.dtype}")
    return x


# ----------------------------------------------------------------------------------------------------------------
def mel_spectrogram(y: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, hop_size: int, win_size: int,
                    fmin: float, fmax: Optional[float], center: bool = False) -> torch.Tensor:
    """Natural-log Slaney mel magnitude spectrogram: (B, T) waveform -> (B, num_mels, frames).

    Reflect-pads (n_fft - hop_size) / 2 samples per side, then an un-centred STFT with a periodic Hann window,
    magnitude sqrt(re^2 + im^2 + 1e-9), mel projection and log(clamp(., 1e-5)). frames = T // hop_size for the
    usual n_fft = 4 * hop. A 1-D waveform is treated as a batch of one. ``fmax=None`` means sampling_rate / 2.
    """
    y = _as_float_tensor(y)
    if y.dim() == 1:
        y = y[None]
    if y.dim() != 2:
        raise ValueError(f"mel_spectrogram expects a (B, T) waveform, got shape {tuple(y.shape)}")
    key = ("mel", sampling_rate, n_fft, num_mels, float(fmin), None if fmax is None else float(fmax), str(y.device))
    basis = _cached(key, lambda: torch.from_numpy(
        slaney_mel_filterbank(sampling_rate, n_fft, num_mels, fmin, fmax)).to(y.device))
    pad = int((n_fft - hop_size) / 2)
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=_hann(win_size, y.device),
                      center=center, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    spec = torch.matmul(basis.to(spec.dtype), spec)
    return torch.log(torch.clamp(spec, min=1e-5))


# ----------------------------------------------------------------------------------------------------------------
WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160


def whisper_mel_filters(n_mels: int = 128, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """The filters Whisper ships in mel_filters.npz: Slaney mel, sr 16 kHz, n_fft 400, 0 Hz to 8 kHz."""
    return _cached(("whisper", n_mels, str(device)), lambda: torch.from_numpy(
        slaney_mel_filterbank(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, n_mels)).to(device))


def whisper_log_mel_spectrogram(audio, n_mels: int = 128, padding: int = 0) -> torch.Tensor:
    """Whisper log-mel of 16 kHz audio: (..., T) -> (..., n_mels, T // 160).

    Centred STFT (n_fft 400, hop 160, periodic Hann, reflect padding) with the last frame dropped, power
    spectrum, mel projection, log10(clamp(., 1e-10)), floored at (max - 8) and mapped by (x + 4) / 4. As in
    Whisper the max is taken over the whole tensor, so call it per utterance. ``padding`` appends zeros first.
    """
    audio = _as_float_tensor(audio)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])
    stft = torch.stft(flat, WHISPER_N_FFT, WHISPER_HOP, window=_hann(WHISPER_N_FFT, audio.device),
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = whisper_mel_filters(n_mels, audio.device).to(power.dtype) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec.reshape(*lead, n_mels, log_spec.shape[-1])


# ----------------------------------------------------------------------------------------------------------------
def _kaldi_mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log()


def kaldi_mel_banks(num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi triangular mel filters on the mel axis (float32 (num_bins, padded_window_size // 2), no norm).

    ``high_freq <= 0`` counts down from Nyquist. Same arithmetic (float32) as torchaudio's get_mel_banks.
    """
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"kaldi fbank: need 0 <= low_freq < high_freq <= Nyquist, got {low_freq}, {high_freq}")
    bin_width = sample_frequency / padded_window_size
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = _kaldi_mel(bin_width * torch.arange(padded_window_size / 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(up, down))


def kaldi_fbank(waveform, num_mel_bins: int = 80, sample_frequency: float = 16000,
                dither: float = 0.0) -> torch.Tensor:
    """Kaldi log-mel filterbank, the defaults of ``torchaudio.compliance.kaldi.fbank``: (T,) or (C, T) -> (frames, bins).

    25 ms frames every 10 ms, edges snipped; per frame: optional Gaussian dither, DC removal, pre-emphasis 0.97,
    Povey window, zero-pad to a power of two, power spectrum, mel filters from 20 Hz to Nyquist, log with floor
    float32 eps. The input is the float waveform (no int16 scaling); of a (C, T) input channel 0 is used.
    """
    x = _as_float_tensor(waveform)
    if x.dim() == 2:
        x = x[0]
    if x.dim() != 1:
        raise ValueError(f"kaldi_fbank expects a (T,) or (C, T) waveform, got shape {tuple(x.shape)}")
    frame_len = int(sample_frequency * 0.025)
    frame_shift = int(sample_frequency * 0.010)
    n_fft = 1 << (frame_len - 1).bit_length()
    if x.numel() < frame_len:
        return x.new_empty((0, num_mel_bins))
    frames = x.unfold(0, frame_len, frame_shift)
    if dither != 0.0:
        frames = frames + dither * torch.randn(frames.shape, dtype=frames.dtype, device=frames.device)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * previous
    povey = _cached(("povey", frame_len, str(x.device), x.dtype), lambda: torch.hann_window(
        frame_len, periodic=False, dtype=x.dtype).pow(0.85).to(x.device))
    frames = F.pad(frames * povey, (0, n_fft - frame_len))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = _cached(("kaldi", num_mel_bins, n_fft, float(sample_frequency), str(x.device), x.dtype),
                    lambda: F.pad(kaldi_mel_banks(num_mel_bins, n_fft, sample_frequency), (0, 1)).to(x))
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def campplus_fbank(wav16k) -> torch.Tensor:
    """CAM++ speaker-embedding input: 80-bin Kaldi fbank of 16 kHz audio minus its mean over time, (frames, 80)."""
    feat = kaldi_fbank(wav16k, num_mel_bins=80, sample_frequency=16000, dither=0.0)
    return feat - feat.mean(dim=0, keepdim=True)
