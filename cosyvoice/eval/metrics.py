"""Objective metrics of synthesized speech: speaker similarity, CER/WER, duration ratio, real-time factor.

* Speaker similarity (SIM): cosine between CAM++ embeddings (the ``campplus.onnx`` of the model dir, with the same
  fbank code as inference: :class:`cosyvoice.utils.onnx.EmbeddingExtractor`), in [-1, 1].
* CER / WER: edit distance between the reference text and an ASR transcript. A reference holding any Chinese
  character is scored by characters (CER): NFKC, lower case, punctuation, symbols and spaces removed, every other
  character is one unit (so the letters of English words inside Chinese text count one by one). Any other reference
  is scored by words (WER): NFKC, lower case, punctuation and symbols become spaces (an apostrophe inside a word is
  kept: "don't"), split on spaces. Numbers are compared as written: "10" against "ten" is an error.
* Duration ratio: synthesized seconds / real seconds of the same text. RTF: seconds spent / seconds of audio made.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from cosyvoice.audio.io import load_wav
from cosyvoice.audio.resample import resample
from cosyvoice.utils.onnx import EmbeddingExtractor, SAMPLE_RATE

# CJK unified ideographs (basic, extension A, compatibility, extensions B and later)
_CHINESE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'"}


def has_chinese(text: str) -> bool:
    return bool(_CHINESE.search(text))


def text_language(text: str) -> str:
    """'zh' when the text holds a Chinese character (scored by CER), else 'en' (scored by WER)."""
    return "zh" if has_chinese(text) else "en"


def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _prepare(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(_APOSTROPHES.get(ch, ch) for ch in text)


def cer_units(text: str) -> List[str]:
    """The characters CER compares: no spaces, punctuation or symbols; lower case."""
    return [ch for ch in _prepare(text) if not ch.isspace() and not _is_punct_or_symbol(ch)]


def wer_units(text: str) -> List[str]:
    """The words WER compares: lower case, punctuation and symbols as spaces, in-word apostrophes kept."""
    text = _prepare(text)
    out = []
    for i, ch in enumerate(text):
        if ch == "'" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(ch)
        elif _is_punct_or_symbol(ch):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out).split()


def edit_operations(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimal alignment of ``hyp`` to ``ref`` (Levenshtein).

    Among alignments of equal cost, the one with the fewest substitutions is reported."""
    # each cell: (cost, substitutions, deletions, insertions); tuples compare by cost first
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, n = prev[j - 1]
                best = (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]
            best = min(best, (c + 1, s, d + 1, n), key=lambda t: (t[0], t[1]))
            c, s, d, n = cur[j - 1]
            best = min(best, (c + 1, s, d, n + 1), key=lambda t: (t[0], t[1]))
            cur.append(best)
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


@dataclass
class ErrorCounts:
    """Errors of one transcript. ``unit`` is 'char' (CER, Chinese references) or 'word' (WER)."""

    unit: str
    ref_units: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> Optional[float]:
        """errors / reference units; None for an empty reference (nothing to score against)."""
        return self.errors / self.ref_units if self.ref_units else None

    def to_dict(self) -> Dict[str, object]:
        return {**asdict(self), "errors": self.errors, "rate": self.rate}


def error_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """CER counts when ``reference`` holds Chinese, else WER counts (see the module docstring)."""
    if has_chinese(reference):
        unit, ref, hyp = "char", cer_units(reference), cer_units(hypothesis)
    else:
        unit, ref, hyp = "word", wer_units(reference), wer_units(hypothesis)
    s, d, n = edit_operations(ref, hyp)
    return ErrorCounts(unit, len(ref), s, d, n)


def pooled_rate(counts: Iterable[ErrorCounts], unit: Optional[str] = None) -> Optional[float]:
    """Total errors / total reference units over ``counts`` (only those of ``unit`` when given); None if empty."""
    chosen = [c for c in counts if unit is None or c.unit == unit]
    total = sum(c.ref_units for c in chosen)
    return sum(c.errors for c in chosen) / total if total else None


# ------------------------------------------------------------------------------------------------ similarity
def cosine(a, b) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"cosine: vectors of different sizes {a.size} and {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def centroid(embeddings: Sequence) -> np.ndarray:
    """Element-wise mean of embeddings (as stage 1 computes a speaker's embedding)."""
    if len(embeddings) == 0:
        raise ValueError("centroid of no embeddings")
    return np.mean(np.stack([np.asarray(e, dtype=np.float64).reshape(-1) for e in embeddings]), axis=0)


class SpeakerEmbedder:
    """CAM++ embeddings of audio at any sample rate (resampled to 16 kHz with the official resampler, as stage 1)."""

    def __init__(self, campplus_path: str, threads: int = 1):
        self.path = campplus_path
        self.extractor = EmbeddingExtractor(campplus_path, threads=threads)

    def embed(self, wav, sample_rate: int) -> np.ndarray:
        wav = np.asarray(wav.detach().cpu().numpy() if hasattr(wav, "detach") else wav, dtype=np.float32)
        wav = resample(wav.reshape(-1), int(sample_rate), SAMPLE_RATE)
        if wav.size < SAMPLE_RATE // 40:  # fewer samples than one 25 ms fbank frame
            raise ValueError(f"audio of {wav.size} samples at 16 kHz is too short for a speaker embedding")
        return np.asarray(self.extractor.embed(wav), dtype=np.float64)

    def embed_file(self, path: str) -> np.ndarray:
        return self.embed(load_wav(path, SAMPLE_RATE), SAMPLE_RATE)


# ------------------------------------------------------------------------------------------------ timing
def duration_ratio(synth_seconds: float, real_seconds: float) -> Optional[float]:
    return synth_seconds / real_seconds if real_seconds > 0 else None


def real_time_factor(seconds_spent: float, audio_seconds: float) -> Optional[float]:
    return seconds_spent / audio_seconds if audio_seconds > 0 else None


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean of the values that are not None (and finite); None when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None
