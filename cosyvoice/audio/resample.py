"""The official front end's resampler: bandlimited interpolation with a Hann-windowed sinc.

The official code resamples with ``torchaudio.transforms.Resample(orig, new)`` at its defaults; this module computes
the same numbers without torchaudio. With the rates reduced by their gcd to ``o`` -> ``n`` samples, output sample
``j`` (phase ``p = j mod n``) is a dot product of ``2 * width + o`` input samples with the filter of its phase:

    h_p(k) = sinc(pi * t) * cos(pi * t / (2 * w)) ** 2 * f / o,   t = clamp((k / o - p / n) * f, -w, w),
    f = min(o, n) * rolloff,  width = ceil(w * o / f),  k = -width .. width + o - 1,

with ``w = lowpass_filter_width = 6`` zero crossings, ``rolloff = 0.99`` and sinc(0) = 1. Since output ``j + n``
uses the filter of ``j`` on the input shifted by ``o``, all ``n`` phases are one conv1d of stride ``o`` with ``n``
output channels over the input zero-padded by ``width`` on the left and ``width + o`` on the right; the interleaved
channels are cut to ``ceil(n * T / o)`` samples.

Number-for-number details of the official transform, kept here on purpose:

* the filters are built in float64 and cast to float32 once (``Resample``'s default ``dtype=None``), except that the
  phase term ``p / n`` is rounded to float32 before it is added (torchaudio divides an integer ``arange`` by ``n``,
  which yields the default float32);
* the output length is ``ceil`` of ``n * T / o`` after that ratio is rounded to float32 (torchaudio wraps the Python
  float in a default-dtype tensor), which for long signals can be one sample less than the exact ceiling.

Filters are cached per (reduced rates, dtype, device), so a second clip at the same rates costs one conv1d. A
float64 waveform gets the float64 filters (``Resample(dtype=torch.float64)``); float32 gets the official ones.
Every parity path here resamples on the CPU (as the official ``load_wav``); on CUDA, cuDNN may run the float32
conv1d in TF32 (torch's default for convolutions), which is not exact.
"""
from __future__ import annotations

import functools
import math
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side
ROLLOFF = 0.99            # cut-off, as a fraction of the lower rate's Nyquist frequency

ArrayLike = Union[torch.Tensor, np.ndarray]


def _check_rate(rate, name: str) -> int:
    if isinstance(rate, bool) or not float(rate).is_integer() or rate <= 0:
        raise ValueError(f"resample: {name} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def reduced_rates(orig_freq: int, new_freq: int) -> Tuple[int, int]:
    """``(orig, new)`` divided by their greatest common divisor, e.g. (48000, 16000) -> (3, 1)."""
    orig, new = _check_rate(orig_freq, "orig_freq"), _check_rate(new_freq, "new_freq")
    g = math.gcd(orig, new)
    return orig // g, new // g


def resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """Samples the official resampler returns for ``length`` input samples (see the module docstring)."""
    o, n = reduced_rates(orig_freq, new_freq)
    if o == n:
        return int(length)
    return math.ceil(float(np.float32(n * int(length) / o)))


@functools.lru_cache(maxsize=32)
def _filters(o: int, n: int, dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, int]:
    """(conv1d weight (n, 1, 2 * width + o) in ``dtype`` on ``device``, width) for reduced rates ``o`` -> ``n``."""
    cutoff = min(o, n) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * o / cutoff)
    taps = torch.arange(-width, width + o, dtype=torch.float64) / o                       # (K,)
    # -p / n: rounded to float32 for the official float32 filters, exact for float64 ones
    phase_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    phase = (torch.arange(0, -n, -1, dtype=phase_dtype)[:, None] / n).to(torch.float64)  # (n, 1)
    t = ((phase + taps) * cutoff).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
    weight = sinc * (window * (cutoff / o))
    return weight.to(dtype=dtype, device=device)[:, None, :].contiguous(), width


def resample_filters(orig_freq: int, new_freq: int, dtype: torch.dtype = torch.float32,
                     device: Union[str, torch.device] = "cpu") -> Tuple[torch.Tensor, int]:
    """The cached conv1d filters of a rate pair: ((n, 1, 2 * width + o) tensor, width). Do not modify it."""
    o, n = reduced_rates(orig_freq, new_freq)
    return _filters(o, n, dtype, torch.device(device))


def resample(waveform: ArrayLike, orig_freq: int, new_freq: int) -> ArrayLike:
    """Resample ``waveform`` (..., T) from ``orig_freq`` to ``new_freq`` Hz exactly as the official front end does.

    Takes a float torch tensor (any device; returns one of the same dtype and device) or a float numpy array
    (returns a numpy array). Equal rates return the input unchanged. Average the channels before calling it, as
    the official ``load_wav`` does (``cosyvoice.audio.io.load_wav`` does both).
    """
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TypeError(f"resample: expected float audio, got a numpy array of {waveform.dtype}")
        return resample(torch.from_numpy(np.ascontiguousarray(waveform)), orig_freq, new_freq).numpy()
    if not torch.is_tensor(waveform) or not waveform.is_floating_point():
        kind = waveform.dtype if torch.is_tensor(waveform) else type(waveform).__name__
        raise TypeError(f"resample: expected a float tensor or numpy array, got {kind}")
    o, n = reduced_rates(orig_freq, new_freq)
    if o == n:
        return waveform
    weight, width = _filters(o, n, waveform.dtype, waveform.device)
    shape = waveform.shape
    length = shape[-1]
    rows = waveform.reshape(-1, length)
    padded = F.pad(rows, (width, width + o))
    phases = F.conv1d(padded[:, None, :], weight, stride=o)                      # (B, n, frames)
    out = phases.transpose(1, 2).reshape(rows.shape[0], -1)[:, :resampled_length(length, o, n)]
    return out.reshape(*shape[:-1], out.shape[-1])
