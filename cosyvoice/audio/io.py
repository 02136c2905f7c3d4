"""Audio file I/O: soundfile for reading/writing (wav, flac, ogg, mp3, ...); the official resampler on reading."""
from __future__ import annotations

import os
import uuid
from typing import Optional, Union

import numpy as np
import soundfile as sf
import torch

from cosyvoice.audio import resample as _official

PathLike = Union[str, os.PathLike]


def resample(wav, orig_sr: int, target_sr: int):
    """``cosyvoice.audio.resample.resample`` under this module's argument names: (..., T) float tensor or numpy
    array from ``orig_sr`` to ``target_sr`` Hz, the official resampler."""
    return _official.resample(wav, orig_sr, target_sr)


def downmix(frames: np.ndarray) -> torch.Tensor:
    """(T, C) float32 frames as soundfile reads them -> (1, T) float32 channel average.

    The official steps exactly: ``torchaudio.load`` gives the frames transposed to (C, T), then ``mean(dim=0,
    keepdim=True)`` (so a mono file is returned as it is).
    """
    return torch.from_numpy(frames).t().mean(dim=0, keepdim=True)


def load_wav(path: PathLike, target_sr: int, min_sr: Optional[int] = None) -> torch.Tensor:
    """Read an audio file as mono float32 at ``target_sr``: a (1, T) tensor, as the official ``load_wav``.

    Channels are averaged (``downmix``), then a different file rate is resampled with the official resampler
    (``cosyvoice.audio.resample``). ``min_sr``: refuse files recorded below this rate (upsampling cannot restore
    the missing band).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile errors vary by format
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read audio file {path}: {reason} (use a wav/flac/ogg/mp3 file)") from e
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    if min_sr is not None and sr < min_sr:
        raise ValueError(f"audio file {path} is sampled at {sr} Hz, below the required {min_sr} Hz "
                         f"(use a recording of at least {min_sr} Hz)")
    return resample(downmix(data), sr, target_sr).contiguous()


def save_wav(path: PathLike, wav, sr: int, subtype: Optional[str] = None) -> None:
    """Write audio atomically (temporary file in the same directory, then rename).

    ``wav``: (T,), (1, T) or (C, T) float tensor/array in [-1, 1] (clipped for integer subtypes). The format comes
    from the file extension; ``subtype`` defaults to soundfile's (16-bit PCM for wav).
    """
    path = os.fspath(path)
    if torch.is_tensor(wav):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise ValueError(f"save_wav expects (T,) or (C, T) audio for {path}, got shape {wav.shape}")
    if subtype is None or not subtype.upper().startswith(("FLOAT", "DOUBLE")):
        wav = np.clip(wav, -1.0, 1.0)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1] or ".wav"
    # same directory (so the rename is atomic), same extension (soundfile picks the format from it)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        fmt = None if os.path.splitext(path)[1] else "WAV"
        sf.write(tmp, wav.T, sr, subtype=subtype, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
