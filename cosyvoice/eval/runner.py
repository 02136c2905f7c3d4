"""Stage 8: synthesize the speaker's held-out test texts with the base model (zero-shot) and the fine-tuned model
(SFT speaker), and score them against the real recordings.

Systems (keys of ``metrics.json``):

* ``real``: the test recordings themselves (their SIM is to the centroid of the *other* test clips, and their
  CER/WER is the ASR model's own error on real speech: the floor the others can reach);
* ``base``: the pretrained model, zero-shot, prompted with one training clip of the speaker and its transcript;
* ``sft``: the fine-tuned model dir, ``inference_sft`` as the speaker.

Per utterance and system: ``sim_centroid`` (CAM++ cosine to the centroid of the real test clips), ``sim_real``
(to the real clip of the same text), ``transcript`` and ``errors`` (CER for Chinese texts, WER otherwise; see
:mod:`cosyvoice.eval.metrics`), ``seconds``, ``duration_ratio`` (to the real clip) and ``rtf``. Per system, the
means, and CER / WER / ``error_rate`` pooled over utterances (total errors / total reference units).
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from cosyvoice.audio.io import load_wav, save_wav
from cosyvoice.eval import metrics as M
from cosyvoice.utils.errors import UserError

logger = logging.getLogger(__name__)

OUTPUT_SR = 24000
SYSTEMS = {"real": "Real recording", "base": "Base model, zero-shot", "sft": "Fine-tuned, SFT speaker"}
PROMPT_TARGET_S = 5.0      # the automatic prompt: the training clip closest to this length, within the limits
PROMPT_LIMITS_S = (1.0, 15.0)


class EvalInputError(UserError, ValueError):
    """Bad evaluation input, reported in one line naming the file and the fix."""


@dataclass
class TestItem:
    utt: str
    text: str
    wav: str
    spk: str


# ------------------------------------------------------------------------------------------------ inputs
def read_kaldi_table(path: str) -> Dict[str, str]:
    if not os.path.isfile(path):
        raise EvalInputError(f"{path} not found: run stage 0 first (it writes the data dir)")
    table = {}
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if not value:
                raise EvalInputError(f"{path} line {n}: expected '<key> <value>', got {line!r}")
            table[key] = value
    return table


def read_items(data_dir: str, spk_id: str = "") -> Tuple[str, List[TestItem]]:
    """(speaker, its utterances in sorted order) of a data dir; ``spk_id`` empty: the dir's only speaker."""
    wav = read_kaldi_table(os.path.join(data_dir, "wav.scp"))
    text = read_kaldi_table(os.path.join(data_dir, "text"))
    utt2spk = read_kaldi_table(os.path.join(data_dir, "utt2spk"))
    speakers = sorted(set(utt2spk.values()))
    if not spk_id:
        if len(speakers) != 1:
            raise EvalInputError(f"{data_dir} has {len(speakers)} speakers ({', '.join(speakers[:5])}): "
                                 "choose one with --spk_id")
        spk_id = speakers[0]
    items = [TestItem(u, text[u], wav[u], spk_id) for u in sorted(wav) if utt2spk.get(u) == spk_id and u in text]
    if not items:
        raise EvalInputError(f"{data_dir} has no utterance of speaker '{spk_id}' (speakers: {', '.join(speakers)})")
    return spk_id, items


def read_speakers(data_dir: str, spk_id: str = "") -> Dict[str, List[TestItem]]:
    """{speaker: its utterances} of a data dir: every speaker (sorted), or only ``spk_id`` when it is given."""
    if spk_id:
        spk, items = read_items(data_dir, spk_id)
        return {spk: items}
    utt2spk = read_kaldi_table(os.path.join(data_dir, "utt2spk"))
    return {spk: read_items(data_dir, spk)[1] for spk in sorted(set(utt2spk.values()))}


def spread(items: List, n: int) -> List:
    """``n`` items evenly spread over the list (all of them when ``n`` <= 0 or >= its length)."""
    if n <= 0 or n >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def choose_prompt(data_dir: str, spk_id: str, prompt_utt: str = "") -> TestItem:
    """The zero-shot prompt of the base model: ``prompt_utt`` of ``data_dir``, or the speaker's clip closest to
    5 s among those of 1-15 s (ties: the first in sorted order), or else the longest."""
    _, items = read_items(data_dir, spk_id)
    if prompt_utt:
        for item in items:
            if item.utt == prompt_utt:
                return item
        raise EvalInputError(f"--prompt_utt {prompt_utt} is not an utterance of speaker '{spk_id}' in {data_dir}")
    import soundfile as sf

    durations = {it.utt: sf.info(it.wav).duration for it in items}
    lo, hi = PROMPT_LIMITS_S
    fitting = [it for it in items if lo <= durations[it.utt] <= hi]
    if fitting:
        return min(fitting, key=lambda it: abs(durations[it.utt] - PROMPT_TARGET_S))
    return max(items, key=lambda it: durations[it.utt])


# ------------------------------------------------------------------------------------------------ synthesis
def limit_speech_tokens(llm, max_token_text_ratio: Optional[float]) -> None:
    """Cap the speech tokens ``llm`` (a Qwen2LM) may produce at ``max_token_text_ratio`` x text tokens (the
    official default is 20); None removes the cap. Useful for quick runs of a model that does not stop by itself,
    such as the random stand-in."""
    llm.__dict__.pop("inference", None)
    if max_token_text_ratio is not None:
        llm.inference = functools.partial(type(llm).inference, llm, max_token_text_ratio=float(max_token_text_ratio))


def synthesize(generate: Callable[[], object]) -> Tuple[np.ndarray, float]:
    """Run one synthesis generator to the end: (24 kHz float32 audio, seconds spent)."""
    start = time.perf_counter()
    pieces = [out["tts_speech"].reshape(-1).float().cpu().numpy() for out in generate()]
    spent = time.perf_counter() - start
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), spent


def synthesize_items(cosyvoice, items: List[TestItem], system: str, out_dir: str, seed: int,
                     prompt: Optional[TestItem] = None) -> Dict[str, Dict[str, float]]:
    """Synthesize every item with ``system`` ('base': zero-shot from ``prompt``; 'sft': the SFT speaker) into
    ``<out_dir>/<utt>.wav``. Returns {utt: {'wav', 'seconds', 'rtf'}}."""
    from tqdm import tqdm


    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for item in tqdm(items, desc=f"synthesis ({system})", unit="utt"):
        if system == "base":
            gen = functools.partial(cosyvoice.inference_zero_shot, item.text, prompt.text, prompt.wav, seed=seed)
        else:
            gen = functools.partial(cosyvoice.inference_sft, item.text, item.spk, seed=seed)
        audio, spent = synthesize(gen)
        path = os.path.join(out_dir, f"{item.utt}.wav")
        save_wav(path, audio, cosyvoice.sample_rate)
        seconds = audio.size / cosyvoice.sample_rate
        results[item.utt] = {"wav": path, "seconds": seconds, "rtf": M.real_time_factor(spent, seconds)}
    return results


def copy_real(items: List[TestItem], out_dir: str) -> Dict[str, Dict[str, float]]:
    """The real test clips as 24 kHz 16-bit wavs in ``out_dir`` (for the report's players)."""

    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for item in items:
        audio = load_wav(item.wav, OUTPUT_SR)
        path = os.path.join(out_dir, f"{item.utt}.wav")
        save_wav(path, audio, OUTPUT_SR)
        results[item.utt] = {"wav": path, "seconds": audio.shape[1] / OUTPUT_SR, "rtf": None}
    return results


def free_memory() -> None:
    """Collect garbage and return cached GPU memory (after dropping a model)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------------ scoring
def score(items: List[TestItem], audio: Dict[str, Dict[str, Dict[str, float]]], embedder: M.SpeakerEmbedder,
          asr=None) -> Tuple[Dict[str, Dict], List[Dict]]:
    """(summary per system, per-utterance rows) for ``audio[system][utt]`` = {'wav', 'seconds', 'rtf'}.

    ``audio['real']`` must hold every item. ``asr``: an object with ``transcribe(wav16k, language)`` or None (no
    transcripts, no CER/WER)."""

    def load16(path):
        return load_wav(path, 16000).reshape(-1).numpy()

    real_emb = {it.utt: embedder.embed(load16(audio["real"][it.utt]["wav"]), 16000) for it in items}
    center = M.centroid(list(real_emb.values()))
    rows = []
    for it in items:
        row = {"utt": it.utt, "text": it.text, "lang": M.text_language(it.text)}
        real_seconds = audio["real"][it.utt]["seconds"]
        for system, table in audio.items():
            if it.utt not in table:
                continue
            entry = dict(table[it.utt])
            wav16 = load16(entry["wav"])
            if system == "real":
                others = [e for u, e in real_emb.items() if u != it.utt]
                entry["sim_centroid"] = M.cosine(real_emb[it.utt], M.centroid(others)) if others else None
                entry["sim_real"] = None
            else:
                emb = embedder.embed(wav16, 16000) if wav16.size >= 400 else None
                entry["sim_centroid"] = M.cosine(emb, center) if emb is not None else None
                entry["sim_real"] = M.cosine(emb, real_emb[it.utt]) if emb is not None else None
            entry["duration_ratio"] = M.duration_ratio(entry["seconds"], real_seconds)
            if asr is not None:
                entry["transcript"] = asr.transcribe(wav16, row["lang"]) if wav16.size else ""
                entry["errors"] = M.error_counts(it.text, entry["transcript"]).to_dict()
            row[system] = entry
        rows.append(row)
    return summarize(rows, list(audio), asr is not None), rows


def speaker_separation(speakers: Dict[str, List[TestItem]], audio: Dict[str, Dict[str, Dict]],
                       embedder: M.SpeakerEmbedder, systems=("base", "sft")) -> Dict[str, Dict]:
    """Whether each speaker's synthesized clips sound like that speaker rather than another one of the run.

    For every system and speaker A: the mean CAM++ cosine of A's synthesized clips to the centroid of each
    speaker's real test clips (``sim``: {B: value}); ``closest``: the speaker with the highest one; ``ok``:
    ``closest`` is A; ``margin``: A's value minus the best other one. Per system, ``ok`` when every speaker's is.
    """
    def embed(path):
        wav = load_wav(path, 16000).reshape(-1).numpy()
        return embedder.embed(wav, 16000) if wav.size >= 400 else None

    centroids = {spk: M.centroid([embed(audio["real"][it.utt]["wav"]) for it in items])
                 for spk, items in speakers.items()}
    out = {}
    for system in systems:
        if system not in audio:
            continue
        table = {}
        for spk, items in speakers.items():
            embs = [e for e in (embed(audio[system][it.utt]["wav"]) for it in items if it.utt in audio[system])
                    if e is not None]
            sims = {other: M.mean(M.cosine(e, c) for e in embs) for other, c in centroids.items()}
            known = {k: v for k, v in sims.items() if v is not None}
            closest = max(known, key=known.get) if known else None
            rivals = [v for k, v in known.items() if k != spk]
            table[spk] = {"sim": sims, "closest": closest, "ok": closest == spk,
                          "margin": (known[spk] - max(rivals)) if spk in known and rivals else None}
        out[system] = {"speakers": table, "ok": all(t["ok"] for t in table.values())}
    return out


def summarize(rows: List[Dict], systems: List[str], with_asr: bool) -> Dict[str, Dict]:
    out = {}
    for system in systems:
        entries = [r[system] for r in rows if system in r]
        counts = [M.ErrorCounts(**{k: e["errors"][k] for k in ("unit", "ref_units", "substitutions", "deletions",
                                                               "insertions")})
                  for e in entries if with_asr and "errors" in e]
        total = sum(e["seconds"] for e in entries)
        rtfs = [e["rtf"] for e in entries if e.get("rtf") is not None]
        out[system] = {
            "utterances": len(entries),
            "sim_centroid": M.mean(e.get("sim_centroid") for e in entries),
            "sim_real": M.mean(e.get("sim_real") for e in entries),
            "cer": M.pooled_rate(counts, "char") if with_asr else None,
            "wer": M.pooled_rate(counts, "word") if with_asr else None,
            "error_rate": M.pooled_rate(counts) if with_asr else None,
            "duration_ratio": M.mean(e.get("duration_ratio") for e in entries),
            "rtf": (sum(e["rtf"] * e["seconds"] for e in entries if e.get("rtf") is not None)
                    / sum(e["seconds"] for e in entries if e.get("rtf") is not None)) if rtfs else None,
            "seconds": total,
        }
    return out
