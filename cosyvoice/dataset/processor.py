"""Data pipeline stages named by ``data_pipeline`` in a cosyvoice2.yaml or cosyvoice3.yaml (the same stages).

Each stage is a generator ``f(data, ..., mode='train')`` that takes an iterator of sample dicts (or, after
``batch``, of lists of sample dicts) and yields the transformed items. ``cosyvoice.dataset.dataset.Dataset``
chains them in the order the yaml lists them:
    parquet_opener -> tokenize -> filter -> resample [-> truncate] -> compute_fbank [-> compute_f0]
    -> parse_embedding [-> compute_whisper_fbank] -> shuffle -> sort -> batch -> padding

A parquet row (written by ``tools/make_parquet_list.py``) holds ``utt``, ``audio_data`` (encoded audio bytes),
``wav``, ``text``, ``spk``, ``utt_embedding``, ``spk_embedding``, ``speech_token`` and optionally ``instruct``.

Randomness (``shuffle``, ``truncate``) comes from ``sample['rng']``, a ``random.Random`` that
``DataList`` seeds from (seed, epoch, rank, worker) and shares with every sample of one pass; a sample
without it falls back to the global ``random`` module.
"""
from __future__ import annotations

import logging
import math
import os
import random
from io import BytesIO
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from cosyvoice.audio.io import downmix
from cosyvoice.audio.resample import resample as resample_audio
from cosyvoice.utils.errors import DataError
from cosyvoice.audio.features import whisper_log_mel_spectrogram

logger = logging.getLogger(__name__)

Sample = Dict[str, object]

WHISPER_SAMPLE_RATE = 16000


def _where(sample: Sample) -> str:
    """'utt X (from file Y)', for error messages."""
    utt = sample.get("utt", "?")
    src = sample.get("src")
    return f"utt '{utt}'" + (f" (from {src})" if src else "")


def _require(sample: Sample, keys: Iterable[str], stage: str, hint: str) -> None:
    missing = [k for k in keys if k not in sample]
    if missing:
        raise KeyError(f"{stage}: {_where(sample)} has no {', '.join(missing)}; {hint}")


def _rng(sample: Sample):
    return sample.get("rng") or random


def _decode_audio(sample: Sample):
    """Encoded audio bytes -> (float32 tensor (1, T) averaged over channels, sample rate), as ``load_wav`` reads."""
    try:
        wav, sr = sf.read(BytesIO(sample["audio_data"]), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types; name the utterance whatever it was
        raise ValueError(f"cannot decode audio_data of {_where(sample)}: {e} (rebuild the parquet list)") from e
    return downmix(wav), sr


def _resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (C, T) float audio with the official resampler (``cosyvoice.audio.resample``)."""
    return resample_audio(wav, orig_sr, new_sr)


def parquet_opener(data: Iterable[Sample], mode: str = "train") -> Iterator[Sample]:
    """For each ``{'src': parquet_path, ...}`` yield one new dict per row: the input's keys plus the row's columns."""
    for item in data:
        if "src" not in item:
            raise KeyError("parquet_opener: every item needs 'src' (a parquet path from data.list)")
        src = item["src"]
        try:
            pf = pq.ParquetFile(src)
            batches = pf.iter_batches(batch_size=64)
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ...
            raise unreadable_shard(src, e) from e
        while True:
            try:
                record_batch = next(batches, None)
            except Exception as e:  # noqa: BLE001 - a damaged page deep in the file
                raise unreadable_shard(src, e) from e
            if record_batch is None:
                break
            for row in record_batch.to_pylist():
                yield {**item, **row}


class ShardError(DataError, OSError):
    """A parquet shard that is missing or cannot be read (an OSError too, as before)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unreadable_shard(src: str, error: BaseException) -> DataError:
    """The one-line error for a parquet shard that is missing or cannot be read."""
    if isinstance(error, FileNotFoundError) or not os.path.exists(src):
        return ShardError(f"parquet shard {src} not found (it is listed in data.list): rerun stage 3 "
                         f"(tools/make_parquet_list.py) for its data dir")
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return ShardError(f"parquet shard {src} cannot be read ({type(error).__name__}: {reason[:200]}): the file is "
                     f"damaged or truncated; rerun stage 3 (tools/make_parquet_list.py) for its data dir")


END_OF_PROMPT = "<|endofprompt|>"


def speaker_tag(spk: str) -> str:
    """The text a multi-speaker SFT model is trained with before each of ``spk``'s texts (the CosyVoice2 paper's
    speaker prompt, ``<speaker><|endofprompt|>``, in the place of an instruction)."""
    return f"{spk}{END_OF_PROMPT}"


def add_speaker_tag(data: Iterable[Sample], mode: str = "train"):
    """Put :func:`speaker_tag` of the row's ``spk`` in front of its ``text`` (before ``tokenize``; the trainer
    inserts this stage when ``train_conf.speaker_tag`` is true). At synthesis the same tag is the prompt text of
    the speaker's SFT calls, so the LLM reads ``[sos, tag + text, task_id]`` in both."""
    for sample in data:
        _require(sample, ["text", "spk"], "add_speaker_tag", "the parquet rows need 'text' and 'spk' columns")
        sample["text"] = speaker_tag(str(sample["spk"])) + sample["text"]
        yield sample


def tokenize(data: Iterable[Sample], get_tokenizer: Callable, allowed_special, mode: str = "train",
             default_instruct: Optional[str] = None):
    """Add ``text_token`` (and ``instruct_token`` when the row has ``instruct``) from ``get_tokenizer()``.

    ``default_instruct`` (an addition; CosyVoice3's yaml sets it to the system prompt
    ``'You are a helpful assistant.<|endofprompt|>'``): the instruction of a row without one, so that every
    sample has ``instruct_token`` as the CosyVoice3 LLM is trained and prompted. None: rows without an
    instruction get none (CosyVoice2)."""
    tokenizer = get_tokenizer()
    default_ids = (None if default_instruct is None
                   else tokenizer.encode(default_instruct, allowed_special=allowed_special))
    for sample in data:
        _require(sample, ["text"], "tokenize", "the parquet rows need a 'text' column")
        sample["text_token"] = tokenizer.encode(sample["text"], allowed_special=allowed_special)
        if sample.get("instruct") is not None:
            sample["instruct_token"] = tokenizer.encode(sample["instruct"], allowed_special=allowed_special)
        elif default_ids is not None:
            sample["instruct_token"] = list(default_ids)
        yield sample


def filter(data: Iterable[Sample],
           max_length: float = 10240,
           min_length: float = 10,
           token_max_length: int = 200,
           token_min_length: int = 1,
           min_output_input_ratio: float = 0.0005,
           max_output_input_ratio: float = 1,
           mode: str = "train"):
    """Decode ``audio_data`` into ``speech`` (1, T) and ``sample_rate``, and drop samples that fail a length rule.

    Lengths are in 10 ms frames of audio (``max_length``/``min_length``) and in text tokens
    (``token_*_length``); the ratios bound text tokens per audio frame. Samples with an empty ``speech_token``
    (or an empty ``reject_speech_token`` when present) are dropped: tokens are not extracted online here.
    """
    for sample in data:
        _require(sample, ["audio_data", "text_token"], "filter",
                 "put parquet_opener and tokenize before filter in data_pipeline")
        sample["speech"], sample["sample_rate"] = _decode_audio(sample)
        del sample["audio_data"]
        if sample.get("speech_token") is None:
            raise KeyError(f"filter: {_where(sample)} has no speech_token; run the speech-token stage "
                           "(tools/extract_speech_token.py) before making the parquet lists")
        num_frames = sample["speech"].size(1) / sample["sample_rate"] * 100
        n_text = len(sample["text_token"])
        if not min_length <= num_frames <= max_length:
            continue
        if not token_min_length <= n_text <= token_max_length:
            continue
        if len(sample["speech_token"]) == 0:
            continue
        if "reject_speech_token" in sample and len(sample["reject_speech_token"]) == 0:
            continue
        if num_frames != 0 and not min_output_input_ratio <= n_text / num_frames <= max_output_input_ratio:
            continue
        yield sample


def resample(data: Iterable[Sample], resample_rate: int = 22050, min_sample_rate: int = 16000,
             mode: str = "train"):
    """Bring ``speech`` to ``resample_rate`` (dropping audio below ``min_sample_rate``), then scale so max |x| <= 1."""
    for sample in data:
        _require(sample, ["speech", "sample_rate"], "resample", "put filter before resample in data_pipeline")
        sr = sample["sample_rate"]
        if sr != resample_rate:
            if sr < min_sample_rate:
                logger.warning("dropping %s: sample rate %d Hz is below %d Hz", _where(sample), sr, min_sample_rate)
                continue
            sample["speech"] = _resample(sample["speech"], sr, resample_rate)
            sample["sample_rate"] = resample_rate
        peak = sample["speech"].abs().max()
        if peak > 1:
            sample["speech"] = sample["speech"] / peak
        yield sample


def truncate(data: Iterable[Sample], truncate_length: int = 24576, mode: str = "train"):
    """Cut ``speech`` to a random window of ``truncate_length`` samples, or zero-pad it up to that length."""
    for sample in data:
        speech = sample["speech"]
        extra = speech.size(1) - truncate_length
        if extra > 0:
            start = _rng(sample).randint(0, extra)
            speech = speech[:, start:start + truncate_length]
        else:
            speech = F.pad(speech, (0, -extra))
        sample["speech"] = speech
        yield sample


def compute_fbank(data: Iterable[Sample], feat_extractor: Callable, num_frames: int = -1, mode: str = "train"):
    """Add ``speech_feat`` (T, n_mels) = ``feat_extractor(speech)`` transposed.

    With ``num_frames != -1`` the waveform is first zero-padded (in place) to a multiple of ``num_frames`` samples,
    so that it spans a whole number of speech tokens (960 samples = one 25 Hz token at 24 kHz).
    """
    for sample in data:
        _require(sample, ["speech", "sample_rate"], "compute_fbank", "put filter/resample before compute_fbank")
        if num_frames != -1:
            length = sample["speech"].size(1)
            sample["speech"] = F.pad(sample["speech"], (0, math.ceil(length / num_frames) * num_frames - length))
        sample["speech_feat"] = feat_extractor(sample["speech"]).squeeze(0).transpose(0, 1)
        yield sample


def compute_whisper_fbank(data: Iterable[Sample], num_frames: int = -1, mode: str = "train"):
    """Add ``speech_16k`` and ``whisper_feat`` (T, 128): the whisper log-mel of the speech resampled to 16 kHz.

    Compatibility only: official yamls list this step, for an online speech-token extractor; this toolkit's
    pipelines leave it out (the tokens come from stage 2)."""
    for sample in data:
        _require(sample, ["speech", "sample_rate"], "compute_whisper_fbank", "put filter/resample before it")
        if num_frames != -1 and sample["speech"].size(1) % num_frames != 0:
            raise ValueError(f"compute_whisper_fbank: speech of {_where(sample)} is not aligned with speech_token "
                             f"({sample['speech'].size(1)} samples, not a multiple of {num_frames}); "
                             "put compute_fbank with the same num_frames before it")
        sample["speech_16k"] = _resample(sample["speech"], sample["sample_rate"], WHISPER_SAMPLE_RATE)
        feat = whisper_log_mel_spectrogram(sample["speech_16k"], n_mels=128)
        sample["whisper_feat"] = feat.reshape(feat.shape[-2], feat.shape[-1]).transpose(0, 1)
        yield sample


def compute_f0(data: Iterable[Sample], sample_rate: int, hop_size: int, mode: str = "train"):
    """Add ``pitch_feat`` (T,), pyworld harvest (dio when harvest finds < 5 voiced frames) refined by stonemask,
    linearly interpolated to the ``speech_feat`` length. Only vocoder (HiFT) GAN training needs it."""
    try:
        import pyworld
    except ImportError:
        raise ImportError("compute_f0 needs pyworld for vocoder GAN training: pip install pyworld") from None
    frame_period = hop_size * 1000 / sample_rate
    for sample in data:
        _require(sample, ["speech", "speech_feat"], "compute_f0", "put compute_fbank before compute_f0")
        if sample.get("sample_rate", sample_rate) != sample_rate:
            raise ValueError(f"compute_f0: {_where(sample)} is at {sample['sample_rate']} Hz, not {sample_rate} Hz; "
                             "put resample before compute_f0")
        wav = sample["speech"].squeeze(0).numpy().astype(np.float64)
        f0, t = pyworld.harvest(wav, sample_rate, frame_period=frame_period)
        if np.count_nonzero(f0) < 5:
            f0, t = pyworld.dio(wav, sample_rate, frame_period=frame_period)
        f0 = pyworld.stonemask(wav, f0, t, sample_rate)
        f0 = torch.as_tensor(np.asarray(f0), dtype=torch.float32).view(1, 1, -1)
        sample["pitch_feat"] = F.interpolate(f0, size=sample["speech_feat"].size(0), mode="linear").view(-1)
        yield sample


def parse_embedding(data: Iterable[Sample], normalize: bool, mode: str = "train"):
    """Turn the precomputed ``utt_embedding``/``spk_embedding`` into float32 tensors, L2-normalised if asked."""
    for sample in data:
        for key in ("utt_embedding", "spk_embedding"):
            value = sample.get(key)
            if value is None or len(value) == 0:
                raise ValueError(f"{_where(sample)} has no {key}: run stage 1 (speaker embeddings) "
                                 "before making the parquet lists")
            emb = torch.as_tensor(np.asarray(value, dtype=np.float32))
            sample[key] = F.normalize(emb, dim=0) if normalize else emb
        yield sample


def shuffle(data: Iterable[Sample], shuffle_size: int = 10000, mode: str = "train"):
    """Buffered shuffle: fill ``shuffle_size`` samples, shuffle, emit half, keep the rest; flush at the end."""
    buf: List[Sample] = []
    rng = None
    emit = max(1, shuffle_size // 2)
    for sample in data:
        if rng is None:
            rng = _rng(sample)
        buf.append(sample)
        if len(buf) >= shuffle_size:
            rng.shuffle(buf)
            yield from buf[:emit]
            buf = buf[emit:]
    if buf:
        rng.shuffle(buf)
        yield from buf


def sort(data: Iterable[Sample], sort_size: int = 500, mode: str = "train"):
    """Sort each run of ``sort_size`` samples by ``speech_feat`` length (ascending), so batches hold similar lengths."""
    buf: List[Sample] = []
    for sample in data:
        buf.append(sample)
        if len(buf) >= sort_size:
            buf.sort(key=lambda x: x["speech_feat"].size(0))
            yield from buf
            buf = []
    buf.sort(key=lambda x: x["speech_feat"].size(0))
    yield from buf


def static_batch(data: Iterable[Sample], batch_size: int = 16):
    """Group samples into lists of ``batch_size`` (the last one may be shorter)."""
    buf: List[Sample] = []
    for sample in data:
        buf.append(sample)
        if len(buf) >= batch_size:
            yield buf
            buf = []
    if buf:
        yield buf


def dynamic_batch(data: Iterable[Sample], max_frames_in_batch: int = 12000, mode: str = "train"):
    """Group samples while (longest ``speech_feat`` length) x (batch size) stays <= ``max_frames_in_batch``.

    A sample that alone exceeds the budget forms a batch by itself (never an empty batch).
    """
    buf: List[Sample] = []
    longest = 0
    for sample in data:
        _require(sample, ["speech_feat"], "dynamic_batch", "put compute_fbank before batch")
        frames = sample["speech_feat"].size(0)
        if buf and max(longest, frames) * (len(buf) + 1) > max_frames_in_batch:
            yield buf
            buf, longest = [], 0
        buf.append(sample)
        longest = max(longest, frames)
    if buf:
        yield buf


def batch(data: Iterable[Sample], batch_type: str = "static", batch_size: int = 16,
          max_frames_in_batch: int = 12000, mode: str = "train"):
    """``static_batch`` (``batch_size``) or ``dynamic_batch`` (``max_frames_in_batch``)."""
    if batch_type == "static":
        return static_batch(data, batch_size)
    if batch_type == "dynamic":
        return dynamic_batch(data, max_frames_in_batch)
    raise ValueError(f"batch: unknown batch_type '{batch_type}' (use 'static' or 'dynamic')")


def _pad_tokens(rows: List, name: str, out: Dict[str, object]) -> None:
    tokens = [torch.as_tensor(np.asarray(r, dtype=np.int64)) for r in rows]
    out[f"{name}_len"] = torch.tensor([t.size(0) for t in tokens], dtype=torch.int32)
    out[name] = pad_sequence(tokens, batch_first=True, padding_value=0)


def _pad_feats(feats: List[torch.Tensor], name: str, out: Dict[str, object]) -> None:
    out[f"{name}_len"] = torch.tensor([f.size(0) for f in feats], dtype=torch.int32)
    out[name] = pad_sequence(feats, batch_first=True, padding_value=0)


def padding(data: Iterable[List[Sample]], use_spk_embedding: bool, mode: str = "train", gan: bool = False,
            dpo: bool = False):
    """Turn each list of samples into a training batch dict, longest waveform first.

    Keys: ``utts``, ``text`` (lists); ``text_token`` (B, L) int64 padded with 0 and ``text_token_len`` int32;
    ``speech_feat`` (B, T, 80) padded with 0 and ``speech_feat_len``; ``utt_embedding``/``spk_embedding`` (B, D);
    when every sample has them: ``instruct_token``, ``whisper_feat``, ``speech_token`` (int64), each with ``*_len``;
    ``gan``: ``speech`` (B, T) and ``pitch_feat`` (B, T) with lengths; ``dpo``: ``reject_speech_token``;
    ``embedding`` = ``spk_embedding`` if ``use_spk_embedding`` else ``utt_embedding``. Lengths are int32.
    """
    for samples in data:
        if not isinstance(samples, list) or not samples:
            raise TypeError("padding expects non-empty lists of samples: put batch before padding in data_pipeline")
        speech_len = torch.tensor([s["speech"].size(1) for s in samples])
        order = torch.sort(speech_len, descending=True, stable=True).indices.tolist()
        items = [samples[i] for i in order]

        def every(key: str) -> bool:
            return all(s.get(key) is not None for s in items)

        out: Dict[str, object] = {"utts": [s["utt"] for s in items], "text": [s["text"] for s in items]}
        _pad_tokens([s["text_token"] for s in items], "text_token", out)
        _pad_feats([s["speech_feat"] for s in items], "speech_feat", out)
        out["utt_embedding"] = torch.stack([s["utt_embedding"] for s in items])
        out["spk_embedding"] = torch.stack([s["spk_embedding"] for s in items])
        if every("instruct_token"):
            _pad_tokens([s["instruct_token"] for s in items], "instruct_token", out)
        if every("whisper_feat"):
            _pad_feats([s["whisper_feat"] for s in items], "whisper_feat", out)
        if every("speech_token"):
            _pad_tokens([s["speech_token"] for s in items], "speech_token", out)
        if gan:
            _pad_feats([s["speech"].squeeze(0) for s in items], "speech", out)
            _pad_feats([s["pitch_feat"] for s in items], "pitch_feat", out)
        if dpo:
            _pad_tokens([s["reject_speech_token"] for s in items], "reject_speech_token", out)
        out["embedding"] = out["spk_embedding"] if use_spk_embedding else out["utt_embedding"]
        yield out
