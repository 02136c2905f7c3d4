"""Audio encodings of the speech server: OpenAI's ``response_format`` values that soundfile can write.

``pcm`` is raw 16-bit signed little-endian mono samples (as OpenAI's ``pcm``), ``wav`` the same samples behind a
44-byte RIFF header. Both can be streamed: a streamed wav's header declares the largest sizes (0xFFFFFFFF), the
usual way to say "until the connection ends", which players and libsndfile accept. ``flac``, ``mp3`` and ``opus``
(Ogg) are encoded by soundfile (libsndfile >= 1.1 writes mp3) once the whole audio exists.
"""
from __future__ import annotations

import io
import struct
from typing import Dict, Optional, Tuple

import numpy as np

STREAMABLE = ("wav", "pcm")
# format -> (soundfile format, soundfile subtype)
_SOUNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
MEDIA_TYPES: Dict[str, str] = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg",
                               "opus": "audio/ogg"}
_UNKNOWN_SIZE = 0xFFFFFFFF


def _soundfile_can_write(fmt: str) -> bool:
    import soundfile as sf

    major, subtype = _SOUNDFILE[fmt]
    return major in sf.available_formats() and subtype in sf.available_subtypes(major)


def supported_formats() -> Tuple[str, ...]:
    """The formats this machine can answer with: wav and pcm always, the others where libsndfile writes them."""
    return STREAMABLE + tuple(fmt for fmt in _SOUNDFILE if _soundfile_can_write(fmt))


def to_pcm16(audio: np.ndarray) -> bytes:
    """float samples in [-1, 1] (clipped) -> 16-bit signed little-endian bytes (x * 32767, rounded)."""
    samples = np.rint(np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0)
    return samples.astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: Optional[int] = None) -> bytes:
    """The 44-byte header of a mono 16-bit PCM wav; ``data_bytes=None``: a streamed wav of unknown length."""
    if data_bytes is None:
        riff_size = data_size = _UNKNOWN_SIZE
    else:
        riff_size, data_size = 36 + data_bytes, data_bytes
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """The whole audio (float samples) as a file of ``fmt``."""
    if fmt == "pcm":
        return to_pcm16(audio)
    if fmt == "wav":
        pcm = to_pcm16(audio)
        return wav_header(sample_rate, len(pcm)) + pcm
    import soundfile as sf

    major, subtype = _SOUNDFILE[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, format=major, subtype=subtype)
    return buf.getvalue()
