"""cosyvoice.server.audio: the bytes of each response_format, and a streamed wav that players can read."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from cosyvoice.server import audio


def test_pcm16_scales_rounds_and_clips():
    data = audio.to_pcm16(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 1e-5], dtype=np.float32))
    assert np.frombuffer(data, "<i2").tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767, 0]


def test_wav_header_with_and_without_length():
    x = np.sin(np.arange(2400) / 10).astype(np.float32) * 0.5
    whole = audio.encode(x, 24000, "wav")
    assert whole[:4] == b"RIFF" and whole[8:16] == b"WAVEfmt " and len(whole) == 44 + 2 * 2400
    decoded, sr = sf.read(io.BytesIO(whole), dtype="int16")
    assert sr == 24000 and np.array_equal(decoded, np.frombuffer(audio.to_pcm16(x), "<i2"))
    # a streamed wav declares the largest sizes; libsndfile reads what is there
    streamed = audio.wav_header(24000) + audio.to_pcm16(x)
    assert streamed[4:8] == b"\xff\xff\xff\xff" and streamed[40:44] == b"\xff\xff\xff\xff"
    decoded, sr = sf.read(io.BytesIO(streamed), dtype="int16")
    assert sr == 24000 and np.array_equal(decoded, np.frombuffer(audio.to_pcm16(x), "<i2"))


def test_every_supported_format_decodes_to_the_audio():
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)).astype(np.float32)
    formats = audio.supported_formats()
    assert formats[:2] == ("wav", "pcm") and "flac" in formats
    assert "mp3" in formats  # libsndfile >= 1.1 writes mp3 (soundfile 0.14 bundles 1.2)
    for fmt in formats:
        data = audio.encode(x, 24000, fmt)
        if fmt == "pcm":
            assert len(data) == 2 * len(x)
            continue
        y, sr = sf.read(io.BytesIO(data), dtype="float32")
        assert sr == 24000, fmt
        if fmt in ("wav", "flac"):  # lossless 16 bit
            assert len(y) == len(x) and np.abs(y - x).max() < 1e-4, fmt
        else:  # lossy: the same length give or take the codec's padding, the same tone
            assert abs(len(y) - len(x)) < 0.1 * len(x), (fmt, len(y))
            n = min(len(x), len(y))
            assert abs(np.sqrt(np.mean(y[:n] ** 2)) - np.sqrt(np.mean(x ** 2))) < 0.05, fmt


def test_empty_audio_still_makes_a_file():
    for fmt in audio.supported_formats():
        data = audio.encode(np.zeros(0, np.float32), 24000, fmt)
        assert isinstance(data, bytes), fmt
    assert audio.encode(np.zeros(0, np.float32), 24000, "wav") == audio.wav_header(24000, 0)
