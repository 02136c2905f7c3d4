"""Signal levels of a clip: clipping and active loudness (the data quality report and the prompt checks)."""
from __future__ import annotations

import math

import numpy as np

CLIP_LEVEL = 0.999       # |sample| at or above this is full scale
CLIP_MIN_RUN = 3         # a run of this many full-scale samples counts as clipping
FRAME_S = 0.02           # loudness frame


def clipped_ratio(audio: np.ndarray, level: float = CLIP_LEVEL, min_run: int = CLIP_MIN_RUN) -> float:
    """Share of samples (over all channels) lying in runs of ``min_run``+ consecutive full-scale samples."""
    audio = np.asarray(audio, dtype=np.float64)
    audio = audio.reshape(audio.shape[0], -1) if audio.ndim > 1 else audio.reshape(-1, 1)
    if audio.size == 0:
        return 0.0
    clipped = 0
    for ch in audio.T:
        hot = np.concatenate([[False], np.abs(ch) >= level, [False]]).astype(np.int8)
        edges = np.diff(hot)
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs = ends - starts
        clipped += int(runs[runs >= min_run].sum())
    return clipped / audio.size


def active_loudness_db(mono: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> float:
    """RMS in dBFS over the loudest half of the ``frame_s`` frames (-inf for digital silence)."""
    mono = np.asarray(mono, dtype=np.float64).reshape(-1)
    frame = max(1, int(round(frame_s * sample_rate)))
    n = len(mono) // frame
    if n == 0:
        energies = np.array([np.mean(mono ** 2)]) if len(mono) else np.array([0.0])
    else:
        energies = np.mean(mono[:n * frame].reshape(n, frame) ** 2, axis=1)
    loudest = np.sort(energies)[len(energies) // 2:]
    power = float(np.mean(loudest))
    return 10.0 * math.log10(power) if power > 0 else float("-inf")
