"""CosyVoice2/3 front end: text -> token ids, prompt audio -> speech tokens, CAM++ embedding and 24 kHz mel.

Same class name, constructor and method names as the official ``CosyVoiceFrontEnd``, with the same outputs. Every
feature comes from :mod:`cosyvoice.audio.features` (through the yaml's ``feat_extractor`` and the ONNX wrappers of
:mod:`cosyvoice.utils.onnx`), so inference computes exactly what training and the offline extraction compute.
Prompts are audio file paths (as in the newest official code).

CosyVoice3 uses the same class, as the official code does: the yaml's tokenizer (``version: cosyvoice3``) and mel
(``fmax: null``) and the ``speech_tokenizer_v3.onnx`` path are what differ. Like the official front end it adds no
system prompt: :class:`cosyvoice.cli.cosyvoice.CosyVoice3` completes the input (see there).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Iterator, Tuple, Union

import torch

from cosyvoice.audio.io import load_wav
from cosyvoice.dataset.processor import END_OF_PROMPT, speaker_tag  # noqa: F401 - the one definition of both
from cosyvoice.text.normalizer import TextFrontend
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.onnx import MAX_TOKENIZER_SECONDS, EmbeddingExtractor, SpeechTokenizer
from cosyvoice.audio.level import active_loudness_db

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
# A prompt must carry a voice: at least this long (12 speech tokens; 3-10 s is typical) and not silent (its active
# loudness, cosyvoice.audio.level.active_loudness_db, at or above this many dBFS; a quiet recording is ~ -40).
MIN_PROMPT_SECONDS = 0.5
SILENT_PROMPT_DB = -60.0


class SpeakerError(UserError, KeyError):
    """An unknown speaker id, or one whose spk2info entry cannot serve the requested mode."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PromptError(UserError, ValueError):
    """A prompt wav that cannot be used: missing, unreadable, sampled below 16 kHz, too long, too short or silent."""


def check_prompt_audio(speech: torch.Tensor, sample_rate: int, name: str, what: str = "prompt wav") -> None:
    """Raise PromptError unless the (1, T) audio lasts from MIN_PROMPT_SECONDS to the tokenizer's 30 s and is not
    silent (the 8 kHz check is load_wav's ``min_sr``)."""

    seconds = speech.shape[-1] / sample_rate
    if seconds > MAX_TOKENIZER_SECONDS:
        raise PromptError(f"{what} {name} is {seconds:.1f} s long; the speech tokenizer "
                          f"takes at most {MAX_TOKENIZER_SECONDS} s (use a shorter prompt, 3-10 s is typical)")
    if seconds < MIN_PROMPT_SECONDS:
        raise PromptError(f"{what} {name} is {seconds:.2f} s long; it needs at least {MIN_PROMPT_SECONDS} s "
                          f"of the voice (3-10 s is typical)")
    loudness = active_loudness_db(speech.reshape(-1).cpu().numpy(), sample_rate)
    if loudness < SILENT_PROMPT_DB:
        shown = "digital silence" if loudness == float("-inf") else f"loudness {loudness:.0f} dBFS"
        raise PromptError(f"{what} {name} is silent ({shown}, below {SILENT_PROMPT_DB:.0f} dBFS): give a "
                          f"recording of a voice")


def with_end_of_prompt(instruct_text: str) -> str:
    """The instruction as the CosyVoice2 LLM was trained on it: ending with ``<|endofprompt|>``."""
    if instruct_text.rstrip().endswith(END_OF_PROMPT):
        return instruct_text
    return instruct_text.rstrip() + END_OF_PROMPT


def v3_instruction(instruct_text: str, system_prompt: str) -> str:
    """The instruction as the CosyVoice3 LLM was trained on it: ``'<system prompt> <instruction><|endofprompt|>'``
    (e.g. 'You are a helpful assistant. 请用广东话表达。<|endofprompt|>'). Text that already holds
    ``<|endofprompt|>`` is kept as given; the system prompt is not repeated when the instruction starts with it."""
    if END_OF_PROMPT in instruct_text:
        return instruct_text
    text = instruct_text.strip()
    if not text.startswith(system_prompt):
        text = f"{system_prompt} {text}"
    return with_end_of_prompt(text)


def _tokenizer_providers():
    """CUDA for the speech tokenizer when both torch and onnxruntime can use it (as official), else the CPU."""
    import onnxruntime

    if torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class CosyVoiceFrontEnd:
    """Inputs of :meth:`cosyvoice.cli.model.CosyVoice2Model.tts` for each inference mode.

    ``get_tokenizer``: the yaml's factory of the text tokenizer; ``feat_extractor``: the yaml's 24 kHz mel
    function; ``campplus_model`` / ``speech_tokenizer_model``: ONNX paths; ``spk2info``: path of a saved speaker
    table (``{spk: {'embedding': (1, 192)}}`` for SFT, or a zero-shot entry), missing file -> empty table.
    """

    def __init__(self, get_tokenizer: Callable, feat_extractor: Callable, campplus_model: str,
                 speech_tokenizer_model: str, spk2info: str = "", allowed_special: str = "all"):
        self.tokenizer = get_tokenizer()
        self.feat_extractor = feat_extractor
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.campplus = EmbeddingExtractor(campplus_model)
        self.speech_tokenizer = SpeechTokenizer(speech_tokenizer_model, providers=_tokenizer_providers())
        self.spk2info = self._load_spk2info(spk2info)
        self.allowed_special = allowed_special
        self.text_frontend = TextFrontend(lambda text: self.tokenizer.encode(text, allowed_special=allowed_special))

    def _load_spk2info(self, path: str) -> dict:
        if not path or not os.path.exists(path):
            return {}
        try:
            table = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line report
            raise ValueError(f"cannot read speaker table {path}: {type(e).__name__}: {e} "
                             f"(remove it, or rewrite it with run.sh stage 4)") from e
        if not isinstance(table, dict):
            raise ValueError(f"speaker table {path} holds a {type(table).__name__}, not a dict of speakers")
        return table

    # ------------------------------------------------------------------------------------------------ features
    def _extract_text_token(self, text) -> Tuple[Union[torch.Tensor, Iterator], torch.Tensor]:
        """int32 (1, N) ids and (1,) length; a generator of strings gives a generator of (1, 1) ids."""
        if isinstance(text, Iterator):
            return self._extract_text_token_generator(text), torch.tensor([0], dtype=torch.int32, device=self.device)
        ids = self.tokenizer.encode(text, allowed_special=self.allowed_special)
        text_token = torch.tensor([ids], dtype=torch.int32, device=self.device).reshape(1, -1)
        return text_token, torch.tensor([text_token.shape[1]], dtype=torch.int32, device=self.device)

    def _extract_text_token_generator(self, text_generator: Iterator[str]) -> Iterator[torch.Tensor]:
        for text in text_generator:
            text_token, _ = self._extract_text_token(text)
            for i in range(text_token.shape[1]):
                yield text_token[:, i:i + 1]

    @staticmethod
    def _load_prompt(prompt_wav: PathLike, sample_rate: int) -> torch.Tensor:
        if isinstance(prompt_wav, torch.Tensor) or not isinstance(prompt_wav, (str, os.PathLike)):
            raise TypeError(f"prompt_wav must be the path of an audio file, got {type(prompt_wav).__name__}")
        path = os.fspath(prompt_wav)
        if not os.path.isfile(path):
            raise PromptError(f"prompt wav not found: {path} (give the path of an existing audio file)")
        try:
            return load_wav(path, sample_rate, min_sr=16000)
        except ValueError as e:  # unreadable, empty, or sampled below 16 kHz; the message names the file
            raise PromptError(f"prompt wav: {e}") from e

    def _extract_speech_token(self, prompt_wav: PathLike,
                              what: str = "prompt wav") -> Tuple[torch.Tensor, torch.Tensor]:
        """25 Hz speech tokens of the prompt: int32 (1, N) and (1,). From 0.5 to 30 s of audio that is not silent;
        ``what`` names the audio in errors."""
        speech = self._load_prompt(prompt_wav, 16000)
        check_prompt_audio(speech, 16000, os.fspath(prompt_wav), what)
        token, token_len = self.speech_tokenizer.extract(speech)
        return token.to(self.device), token_len.to(self.device)

    def _extract_spk_embedding(self, prompt_wav: PathLike) -> torch.Tensor:
        """CAM++ x-vector of the whole prompt: float32 (1, 192)."""
        return self.campplus.extract(self._load_prompt(prompt_wav, 16000)).to(self.device)

    def _extract_speech_feat(self, prompt_wav: PathLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """24 kHz mel of the prompt: float32 (1, T, 80) and int32 (1,)."""
        speech = self._load_prompt(prompt_wav, 24000)
        feat = self.feat_extractor(speech).squeeze(0).transpose(0, 1).unsqueeze(0).to(self.device)
        return feat, torch.tensor([feat.shape[1]], dtype=torch.int32, device=self.device)

    def text_normalize(self, text, split: bool = True, text_frontend: bool = True):
        """Normalize (and with ``split`` cut into pieces) the text; see :class:`TextFrontend`."""
        return self.text_frontend.normalize(text, split=split, text_frontend=text_frontend)

    # --------------------------------------------------------------------------------------------------- modes
    def _speaker(self, spk_id: str, needs: str, mode: str) -> dict:
        if spk_id not in self.spk2info:
            known = ", ".join(sorted(self.spk2info)) or "none (the model dir has no spk2info.pt)"
            raise SpeakerError(f"unknown speaker '{spk_id}' for {mode}; known speakers: {known}")
        info = self.spk2info[spk_id]
        if needs not in info:
            hint = ("it was added with add_zero_shot_spk: use it as zero_shot_spk_id" if needs == "embedding"
                    else "it has only an SFT embedding: use inference_sft, or add it with add_zero_shot_spk")
            raise SpeakerError(f"speaker '{spk_id}' cannot be used for {mode}: {hint}")
        return info

    def frontend_sft(self, tts_text, spk_id: str) -> Dict[str, torch.Tensor]:
        """The speaker's embedding for the LLM and the flow; a speaker of a multi-speaker SFT model (an entry with
        ``speaker_tag``) also gets its tag as the prompt text, as it was trained."""
        text_token, text_token_len = self._extract_text_token(tts_text)
        info = self._speaker(spk_id, "embedding", "sft")
        embedding = info["embedding"]
        model_input = {"text": text_token, "text_len": text_token_len, "llm_embedding": embedding,
                       "flow_embedding": embedding}
        if info.get("speaker_tag"):
            model_input["prompt_text"], model_input["prompt_text_len"] = self._extract_text_token(info["speaker_tag"])
        return model_input

    def frontend_zero_shot(self, tts_text, prompt_text: str, prompt_wav: PathLike, resample_rate: int,
                           zero_shot_spk_id: str) -> Dict[str, torch.Tensor]:
        """Prompt text, prompt speech tokens, prompt mel and x-vector of ``prompt_wav`` (or of a saved speaker).

        At 24 kHz (CosyVoice2) the prompt is cut to n = min(mel frames // 2, tokens): 2n mel frames, n tokens.
        """
        text_token, text_token_len = self._extract_text_token(tts_text)
        if zero_shot_spk_id == "":
            prompt_text_token, prompt_text_token_len = self._extract_text_token(prompt_text)
            speech_token, speech_token_len = self._extract_speech_token(prompt_wav)
            speech_feat, speech_feat_len = self._extract_speech_feat(prompt_wav)
            if resample_rate == 24000:
                n = min(speech_feat.shape[1] // 2, speech_token.shape[1])
                speech_feat, speech_feat_len[:] = speech_feat[:, :2 * n], 2 * n
                speech_token, speech_token_len[:] = speech_token[:, :n], n
            embedding = self._extract_spk_embedding(prompt_wav)
            model_input = {"prompt_text": prompt_text_token, "prompt_text_len": prompt_text_token_len,
                           "llm_prompt_speech_token": speech_token, "llm_prompt_speech_token_len": speech_token_len,
                           "flow_prompt_speech_token": speech_token,
                           "flow_prompt_speech_token_len": speech_token_len,
                           "prompt_speech_feat": speech_feat, "prompt_speech_feat_len": speech_feat_len,
                           "llm_embedding": embedding, "flow_embedding": embedding}
        else:
            model_input = dict(self._speaker(zero_shot_spk_id, "flow_embedding", "zero-shot"))
        model_input["text"] = text_token
        model_input["text_len"] = text_token_len
        return model_input

    def frontend_cross_lingual(self, tts_text, prompt_wav: PathLike, resample_rate: int,
                               zero_shot_spk_id: str) -> Dict[str, torch.Tensor]:
        """Zero-shot without the prompt's text and speech tokens in the LLM (the voice comes through the flow)."""
        model_input = self.frontend_zero_shot(tts_text, "", prompt_wav, resample_rate, zero_shot_spk_id)
        for key in ("prompt_text", "prompt_text_len", "llm_prompt_speech_token", "llm_prompt_speech_token_len"):
            model_input.pop(key, None)
        return model_input

    def frontend_instruct2(self, tts_text, instruct_text: str, prompt_wav: PathLike, resample_rate: int,
                           zero_shot_spk_id: str) -> Dict[str, torch.Tensor]:
        """The instruction (ending with ``<|endofprompt|>``) takes the place of the prompt text; the LLM gets no
        prompt speech tokens. With a saved speaker the instruction replaces its prompt text (the official code
        drops the instruction in that case)."""
        instruct_text = with_end_of_prompt(instruct_text)
        model_input = self.frontend_zero_shot(tts_text, instruct_text, prompt_wav, resample_rate, zero_shot_spk_id)
        if zero_shot_spk_id != "":
            model_input["prompt_text"], model_input["prompt_text_len"] = self._extract_text_token(instruct_text)
        model_input.pop("llm_prompt_speech_token", None)
        model_input.pop("llm_prompt_speech_token_len", None)
        return model_input

    def frontend_vc(self, source_speech_16k: PathLike, prompt_wav: PathLike,
                    resample_rate: int) -> Dict[str, torch.Tensor]:
        """Voice conversion: the source audio's speech tokens, rendered in the prompt's voice by the flow."""
        prompt_speech_token, prompt_speech_token_len = self._extract_speech_token(prompt_wav)
        prompt_speech_feat, prompt_speech_feat_len = self._extract_speech_feat(prompt_wav)
        embedding = self._extract_spk_embedding(prompt_wav)
        source_speech_token, source_speech_token_len = self._extract_speech_token(source_speech_16k, "source wav")
        return {"source_speech_token": source_speech_token, "source_speech_token_len": source_speech_token_len,
                "flow_prompt_speech_token": prompt_speech_token,
                "flow_prompt_speech_token_len": prompt_speech_token_len,
                "prompt_speech_feat": prompt_speech_feat, "prompt_speech_feat_len": prompt_speech_feat_len,
                "flow_embedding": embedding}
