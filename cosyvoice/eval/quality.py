"""Data quality report of a Kaldi data dir: speaking-rate outliers, clipping, very low loudness, speaker outliers.

Per utterance (``quality.tsv``):

* ``cps``: characters per second (the characters CER compares: no spaces or punctuation), for reference; and
  ``sps``: syllables per second, the speaking rate that is judged. Characters of Chinese and letters of English are
  not comparable (a speaker mixing both would see every English line flagged), so a Chinese character (or a digit,
  or any other character outside the Latin script) counts as one syllable and an English word as its vowel groups
  (a final silent 'e' dropped; at least one). Outliers are judged among the speaker's utterances by a robust
  z-score of log(sps): (log sps - median) / (1.4826 MAD), the MAD floored at ``rate_mad_floor``; flags
  ``rate_high`` / ``rate_low`` when |z| > ``rate_z``. A transcript that does not match its clip, or a clip with long
  silences, shows up here. Speakers with fewer than ``min_group`` utterances are not judged.
* ``clip_ratio``: share of samples in runs of 3 or more consecutive samples at full scale (|x| >= 0.999, read at the
  file's own rate and format); ``clipping`` when above ``max_clip_ratio``.
* ``loudness_db``: active loudness: RMS (dBFS) over the loudest half of the 20 ms frames (so leading and trailing
  silence do not count); ``low_loudness`` when below ``min_loudness_db``.
* ``spk_dist``: 1 - cosine of the utterance's CAM++ embedding (``utt2embedding.pt``, stage 1) to its speaker's mean
  embedding (``spk2embedding.pt``); ``speaker_outlier`` when its robust z-score among the speaker's utterances
  exceeds ``spk_z`` (one-sided; MAD floored at ``spk_mad_floor``; speakers with fewer than ``min_group``
  utterances are not judged). Another voice, heavy noise or music shows up here.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from cosyvoice.audio.level import CLIP_LEVEL, CLIP_MIN_RUN, FRAME_S, active_loudness_db, clipped_ratio  # noqa: F401
from cosyvoice.eval.metrics import cer_units, cosine, text_language, wer_units

FLAGS = ("rate_high", "rate_low", "clipping", "low_loudness", "speaker_outlier", "unreadable")
MAD_SCALE = 1.4826       # MAD -> standard deviation of a normal distribution


@dataclass
class QualityThresholds:
    rate_z: float = 3.5
    rate_mad_floor: float = 0.15      # in log(sps): with it, |z| > 3.5 needs a rate 2.2 times off the median
    max_clip_ratio: float = 1e-3
    min_loudness_db: float = -40.0
    spk_z: float = 3.5
    spk_mad_floor: float = 0.02
    min_group: int = 5


@dataclass
class UttQuality:
    utt: str
    spk: str
    lang: str
    duration: Optional[float] = None
    chars: int = 0
    syllables: int = 0
    cps: Optional[float] = None
    sps: Optional[float] = None
    sps_z: Optional[float] = None
    clip_ratio: Optional[float] = None
    loudness_db: Optional[float] = None
    spk_dist: Optional[float] = None
    spk_z: Optional[float] = None
    flags: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ audio
def audio_stats(path: str) -> Dict[str, float]:
    """duration (s), clip_ratio and loudness_db of an audio file, read at its own rate."""
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"{path} holds no samples")
    return {"duration": data.shape[0] / sr, "clip_ratio": clipped_ratio(data),
            "loudness_db": active_loudness_db(data.mean(axis=1), sr)}


# ------------------------------------------------------------------------------------------------ statistics
def robust_z(values: Sequence[float], mad_floor: float) -> List[float]:
    """(x - median) / (1.4826 * max(MAD, mad_floor)) for each value."""
    x = np.asarray(values, dtype=np.float64)
    med = float(np.median(x))
    mad = max(float(np.median(np.abs(x - med))), mad_floor)
    return [float(v) for v in (x - med) / (MAD_SCALE * mad)]


_VOWEL_GROUP = re.compile(r"[aeiouy]+")


def syllable_count(text: str) -> int:
    """Estimated syllables: one per non-Latin character (Chinese, digits, ...), vowel groups per Latin word."""
    total = 0
    for unit in wer_units(text):
        for piece in re.findall(r"[a-z']+|[^a-z']", unit):
            if piece[0].isascii() and piece[0].isalpha():
                word = piece.replace("'", "")
                n = len(_VOWEL_GROUP.findall(word))
                if n > 1 and word.endswith("e") and not word.endswith(("le", "ee")):
                    n -= 1
                total += max(n, 1)
            elif piece != "'":
                total += 1
    return total


def judge_speaking_rate(rows: List[UttQuality], th: QualityThresholds) -> None:
    for spk in sorted({r.spk for r in rows}):
        group = [r for r in rows if r.spk == spk and r.sps is not None and r.sps > 0]
        if len(group) < th.min_group:
            continue
        for r, z in zip(group, robust_z([math.log(r.sps) for r in group], th.rate_mad_floor)):
            r.sps_z = z
            if z > th.rate_z:
                r.flags.append("rate_high")
            elif z < -th.rate_z:
                r.flags.append("rate_low")


def judge_speakers(rows: List[UttQuality], utt2embedding: Dict[str, Sequence[float]],
                   spk2embedding: Dict[str, Sequence[float]], th: QualityThresholds) -> None:
    for r in rows:
        if r.utt in utt2embedding and r.spk in spk2embedding:
            r.spk_dist = 1.0 - cosine(utt2embedding[r.utt], spk2embedding[r.spk])
    for spk in sorted({r.spk for r in rows}):
        group = [r for r in rows if r.spk == spk and r.spk_dist is not None]
        if len(group) < th.min_group:
            continue
        for r, z in zip(group, robust_z([r.spk_dist for r in group], th.spk_mad_floor)):
            r.spk_z = z
            if z > th.spk_z:
                r.flags.append("speaker_outlier")


def assess(utt2wav: Dict[str, str], utt2text: Dict[str, str], utt2spk: Dict[str, str],
           utt2embedding: Optional[Dict[str, Sequence[float]]] = None,
           spk2embedding: Optional[Dict[str, Sequence[float]]] = None,
           thresholds: Optional[QualityThresholds] = None, progress: bool = False) -> List[UttQuality]:
    """Quality rows of every utterance of ``utt2wav`` (sorted by utt); flags per the module docstring."""
    th = thresholds or QualityThresholds()
    rows = []
    utts = sorted(utt2wav)
    if progress:
        from tqdm import tqdm

        utts = tqdm(utts, desc="quality", unit="utt")
    for utt in utts:
        text = utt2text.get(utt, "")
        r = UttQuality(utt=utt, spk=utt2spk.get(utt, ""), lang=text_language(text), chars=len(cer_units(text)),
                       syllables=syllable_count(text))
        try:
            stats = audio_stats(utt2wav[utt])
        except Exception:  # noqa: BLE001 - libsndfile errors vary; the row says unreadable
            r.flags.append("unreadable")
        else:
            r.duration, r.clip_ratio, r.loudness_db = stats["duration"], stats["clip_ratio"], stats["loudness_db"]
            if r.duration > 0:
                r.cps, r.sps = r.chars / r.duration, r.syllables / r.duration
            if r.clip_ratio > th.max_clip_ratio:
                r.flags.append("clipping")
            if r.loudness_db < th.min_loudness_db:
                r.flags.append("low_loudness")
        rows.append(r)
    judge_speaking_rate(rows, th)
    if utt2embedding is not None and spk2embedding is not None:
        judge_speakers(rows, utt2embedding, spk2embedding, th)
    for r in rows:
        r.flags.sort(key=FLAGS.index)
    return rows


# ------------------------------------------------------------------------------------------------ output
TSV_COLUMNS = ("utt", "spk", "lang", "duration", "chars", "cps", "syllables", "sps", "sps_z", "clip_ratio",
               "loudness_db", "spk_dist", "spk_z", "flags")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) if value else "-"
    if isinstance(value, float):
        return "-inf" if value == float("-inf") else f"{value:.6g}"
    return str(value)


def tsv_lines(rows: List[UttQuality]) -> List[str]:
    lines = ["\t".join(TSV_COLUMNS)]
    for r in rows:
        d = asdict(r)
        lines.append("\t".join(_fmt(d[c]) for c in TSV_COLUMNS))
    return lines


def summarize(rows: List[UttQuality], thresholds: QualityThresholds, speaker_check: bool) -> Dict[str, object]:
    """Counts per flag, the flagged utterances with their flags, the thresholds, and what was not judged."""
    counts = {flag: sum(flag in r.flags for r in rows) for flag in FLAGS}
    flagged = {r.utt: r.flags for r in rows if r.flags}
    not_judged = []
    for spk in sorted({r.spk for r in rows}):
        if not any(r.sps_z is not None for r in rows if r.spk == spk):
            not_judged.append(f"speaking rate of '{spk}' (fewer than {thresholds.min_group} utterances)")
    if not speaker_check:
        not_judged.append("speaker outliers (no utt2embedding.pt / spk2embedding.pt: run stage 1 first)")
    else:
        for spk in sorted({r.spk for r in rows}):
            if not any(r.spk_z is not None for r in rows if r.spk == spk):
                not_judged.append(f"speaker outliers of '{spk}' (fewer than {thresholds.min_group} utterances "
                                  "with an embedding)")
    durations = [r.duration for r in rows if r.duration is not None]
    return {"utterances": len(rows), "flagged": len(flagged), "hours": sum(durations) / 3600.0,
            "flag_counts": counts, "flagged_utts": flagged, "thresholds": asdict(thresholds),
            "not_judged": not_judged}


def summary_text(summary: Dict[str, object], data_dir: str) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in summary["flag_counts"].items() if v) or "none"
    lines = [f"{data_dir}: {summary['flagged']} of {summary['utterances']} utterance(s) flagged ({counts})"]
    for utt, flags in sorted(summary["flagged_utts"].items()):
        lines.append(f"  {utt}: {', '.join(flags)}")
    for what in summary["not_judged"]:
        lines.append(f"  not judged: {what}")
    return "\n".join(lines)
