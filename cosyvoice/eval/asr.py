"""Pluggable ASR backends for CER/WER, loaded from a local model dir (never downloaded).

* ``whisper``: a Hugging Face Whisper dir (``config.json`` with ``model_type: whisper``, weights, tokenizer and
  ``preprocessor_config.json``), e.g. openai/whisper-large-v3, loaded with transformers'
  ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` (``local_files_only=True``). The language token is set
  from the reference text (zh / en) when the model is multilingual. Note that Whisper may write Mandarin in
  traditional characters, which CER counts as errors: prefer Paraformer for Chinese.
* ``paraformer``: a FunASR model dir (``model.pt`` + ``config.yaml``, e.g. iic/paraformer-zh), loaded with
  ``funasr.AutoModel`` when the ``funasr`` package is installed (``pip install funasr``; not a requirement).

:func:`load_asr` never raises: it returns ``(backend, status)`` where status is ``{"status": "ok", ...}`` or
``{"status": "skipped", "reason": ...}`` (no dir given, dir missing, unknown layout, package missing, load error),
and the caller reports CER/WER as skipped with that reason. They are never made up.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000           # every backend reads 16 kHz audio
WHISPER_WINDOW_S = 30         # Whisper's input window; longer audio takes the long-form path
BACKENDS = ("auto", "whisper", "paraformer")


class ASRUnavailable(RuntimeError):
    """The ASR model cannot be used; the message is the reason reported in place of CER/WER."""


def describe_error(e: BaseException) -> str:
    """``Type: first line of the message`` (or just the type)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def skipped(reason: str) -> Dict[str, str]:
    return {"status": "skipped", "reason": reason}


def detect_backend(model_dir: str) -> str:
    """'whisper' or 'paraformer' from the files of ``model_dir``; raises ASRUnavailable for anything else."""
    config = os.path.join(model_dir, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, "r", encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError) as e:
            raise ASRUnavailable(f"cannot read {config}: {e}") from e
        if model_type == "whisper":
            return "whisper"
        raise ASRUnavailable(f"{config} has model_type {model_type!r}; supported: a Whisper dir (model_type "
                             "'whisper') or a FunASR Paraformer dir (model.pt + config.yaml)")
    if os.path.isfile(os.path.join(model_dir, "model.pt")) and (
            os.path.isfile(os.path.join(model_dir, "config.yaml"))
            or os.path.isfile(os.path.join(model_dir, "configuration.json"))):
        return "paraformer"
    raise ASRUnavailable(f"{model_dir} is neither a Whisper dir (config.json with model_type 'whisper') nor a "
                         "FunASR Paraformer dir (model.pt + config.yaml)")


class WhisperASR:
    """Whisper through transformers, offline."""

    name = "whisper"

    def __init__(self, model_dir: str, device: Optional[str] = None):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = WhisperProcessor.from_pretrained(model_dir, local_files_only=True)
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
        self.model.to(self.device).eval()
        lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
        self.languages = {tok.strip("<|>") for tok in lang_to_id}

    def transcribe(self, wav16k: np.ndarray, language: str) -> str:
        import torch

        wav16k = np.asarray(wav16k, dtype=np.float32).reshape(-1)
        options = {}
        if wav16k.size > WHISPER_WINDOW_S * SAMPLE_RATE:  # long-form: the whole clip, with its attention mask
            options = {"truncation": False, "padding": "longest", "return_attention_mask": True}
        inputs = self.processor(wav16k, sampling_rate=SAMPLE_RATE, return_tensors="pt", **options)
        kwargs = {"task": "transcribe", "language": language} if language in self.languages else {}
        if "attention_mask" in inputs and options:
            kwargs["attention_mask"] = inputs["attention_mask"].to(self.device)
        with torch.inference_mode():
            ids = self.model.generate(inputs["input_features"].to(self.device, self.model.dtype), **kwargs)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


class ParaformerASR:
    """FunASR Paraformer (or any FunASR AutoModel dir), when ``funasr`` is installed."""

    name = "paraformer"

    def __init__(self, model_dir: str, device: Optional[str] = None):
        try:
            from funasr import AutoModel
        except ImportError as e:
            raise ASRUnavailable(f"{model_dir} is a FunASR model dir but the funasr package is not installed "
                                 f"(pip install funasr): {e}") from e
        import torch

        self.device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel(model=model_dir, device=self.device, disable_update=True, disable_pbar=True,
                               disable_log=True)

    def transcribe(self, wav16k: np.ndarray, language: str) -> str:
        result = self.model.generate(input=np.asarray(wav16k, dtype=np.float32).reshape(-1), batch_size_s=300)
        return str(result[0].get("text", "")).strip() if result else ""


def load_asr(model_dir: Optional[str], backend: str = "auto",
             device: Optional[str] = None) -> Tuple[Optional[object], Dict[str, str]]:
    """(backend object or None, status dict). See the module docstring; never raises for a bad model."""
    if not model_dir:
        return None, skipped("no --asr_model_dir given")
    if backend not in BACKENDS:
        return None, skipped(f"unknown ASR backend {backend!r} (use one of {', '.join(BACKENDS)})")
    if not os.path.isdir(model_dir):
        return None, skipped(f"ASR model dir {model_dir} does not exist")
    try:
        kind = detect_backend(model_dir) if backend == "auto" else backend
        asr = (WhisperASR if kind == "whisper" else ParaformerASR)(model_dir, device)
    except ASRUnavailable as e:
        logger.warning("ASR skipped: %s", e)
        return None, skipped(str(e))
    except Exception as e:  # noqa: BLE001 - any load failure means: no CER/WER, with the reason
        reason = f"cannot load ASR model {model_dir}: {describe_error(e)}"
        logger.warning("ASR skipped: %s", reason)
        return None, skipped(reason)
    logger.info("ASR: %s model from %s", asr.name, model_dir)
    return asr, {"status": "ok", "backend": asr.name, "model_dir": os.path.abspath(model_dir)}
