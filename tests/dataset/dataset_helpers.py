"""Tiny parquet rows in the official column layout, and stand-ins for the tokenizer, mel and pyworld."""
from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch

EMB_DIM = 192

SCHEMA = pa.schema([
    ("utt", pa.string()),
    ("wav", pa.string()),
    ("audio_data", pa.binary()),
    ("text", pa.string()),
    ("spk", pa.string()),
    ("utt_embedding", pa.list_(pa.float32())),
    ("spk_embedding", pa.list_(pa.float32())),
    ("speech_token", pa.list_(pa.int32())),
])


def sine_wav_bytes(seconds: float, sr: int, freq: float = 220.0, channels: int = 1) -> bytes:
    t = np.arange(int(round(seconds * sr))) / sr
    wav = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 2:
        wav = np.stack([wav, 0.5 * wav], axis=1)
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_row(utt: str, seconds: float, sr: int, text: str, rng: np.random.Generator, n_tokens=None, **extra):
    row = {
        "utt": utt,
        "wav": f"/data/{utt}.wav",
        "audio_data": sine_wav_bytes(seconds, sr),
        "text": text,
        "spk": "spk1",
        "utt_embedding": rng.standard_normal(EMB_DIM).astype(np.float32).tolist(),
        "spk_embedding": rng.standard_normal(EMB_DIM).astype(np.float32).tolist(),
        "speech_token": rng.integers(0, 6561, int(seconds * 25) if n_tokens is None else n_tokens).tolist(),
    }
    row.update(extra)
    return row


def write_parquet(path: Path, rows, schema=SCHEMA) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# utt -> (seconds, sample rate, text); file a at 16 kHz, file b at 24 kHz
UTTS_A = {"a1": (0.6, 16000, "hello world"), "a2": (1.3, 16000, "good morning to you"),
          "a3": (2.1, 16000, "one two three four five")}
UTTS_B = {"b1": (0.9, 24000, "the cat sat"), "b2": (1.7, 24000, "on the warm mat today"),
          "b3": (0.4, 24000, "yes")}


class FakeTokenizer:
    """One token per character (ids 1..95)."""

    def __init__(self):
        self.calls = 0

    def encode(self, text, allowed_special=None):
        self.calls += 1
        return [ord(c) % 95 + 1 for c in text]


def fake_mel(speech: torch.Tensor, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920,
             fmin=0, fmax=8000, center=False) -> torch.Tensor:
    """(1, T) -> (1, num_mels, T // hop_size): frame means, so values depend on the waveform (matcha's signature)."""
    hop, n_mels = hop_size, num_mels
    frames = speech.size(1) // hop
    means = speech[:, : frames * hop].reshape(1, frames, hop).mean(-1)
    return means.unsqueeze(1).expand(1, n_mels, frames).clone() + torch.arange(n_mels).view(1, n_mels, 1)


def fake_whisper(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """(1, T) at 16 kHz -> (1, n_mels, T // 160), like whisper's 100 frames/s."""
    return torch.ones(1, n_mels, audio.size(-1) // 160)


class FakePyworld(types.ModuleType):
    """Constant 100 Hz f0 from harvest (or all-unvoiced, to exercise the dio fallback)."""

    def __init__(self, harvest_fails=False):
        super().__init__("pyworld")
        self.harvest_fails = harvest_fails
        self.calls = []

    def _track(self, wav, sr, frame_period):
        n = int(len(wav) / sr * 1000 / frame_period) + 1
        return np.full(n, 100.0), np.arange(n) * frame_period / 1000

    def harvest(self, wav, sr, frame_period):
        self.calls.append("harvest")
        f0, t = self._track(wav, sr, frame_period)
        return (f0 * 0 if self.harvest_fails else f0), t

    def dio(self, wav, sr, frame_period):
        self.calls.append("dio")
        f0, t = self._track(wav, sr, frame_period)
        return f0 * 2, t

    def stonemask(self, wav, f0, t, sr):
        self.calls.append("stonemask")
        return f0
