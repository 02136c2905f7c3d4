"""The CosyVoice2 / CosyVoice3 inference API: load a model dir, synthesize in the SFT, zero-shot, cross-lingual,
instruct and voice-conversion modes.

Same class names, constructors and method names (and argument order) as the official
``cosyvoice.cli.cosyvoice.CosyVoice2`` / ``CosyVoice3`` / ``AutoModel``; a model dir laid out like the official
CosyVoice2-0.5B or Fun-CosyVoice3-0.5B download (or a stand-in of tools/make_tiny_pretrained.py, or a fine-tuned
model dir written by the recipe) loads unchanged::

    cosyvoice = AutoModel(model_dir="pretrained_models/CosyVoice2-0.5B")   # or CosyVoice2(...) / CosyVoice3(...)
    for i, out in enumerate(cosyvoice.inference_zero_shot("收到好友从远方寄来的生日礼物。", "希望你以后能够做的比我还好呦。",
                                                          "prompt.wav")):
        save_wav(f"zero_shot_{i}.wav", out["tts_speech"], cosyvoice.sample_rate)

Every ``inference_*`` method yields ``{'tts_speech': float32 (1, samples)}`` at ``sample_rate`` (24 kHz): one
dict per text piece, or one per chunk with ``stream=True``. ``seed`` (an addition) makes a call reproducible.

CosyVoice3's LLM needs ``<|endofprompt|>`` after a system prompt in its input. The official classes leave that to
the caller (``'You are a helpful assistant.<|endofprompt|>'`` typed in front of the prompt text, the text or the
instruction); :class:`CosyVoice3` passes such input through unchanged (the official numbers) and completes input
without it: the system prompt goes in front of the prompt text (zero-shot; for SFT and cross-lingual, which have
none, it becomes the prompt text), and an instruction becomes ``'You are a helpful assistant. <instruction>'``
ending with ``<|endofprompt|>``, the form the official instructions have.
Additions: ``characters=[...]`` / ``add_character(path)`` load character folders (cosyvoice/cli/character.py: a
LoRA adapter of the llm, a flow, a speaker entry) onto this one base model; ``inference_sft(text, spk_id)`` then
speaks as that character, switching adapters per call without reloading anything. A LoRA experiment's own model
dir (``<exp>/model``, whose llm.pt is the pretrained one, linked), loaded without them, logs a warning naming its
characters (``characters=[]`` says there are none to load).
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import time
from typing import Dict, Generator, Iterator, Optional, Sequence

import torch

from cosyvoice.cli.character import Character, CharacterError, find_characters, read_character
from cosyvoice.cli.frontend import CosyVoiceFrontEnd, PathLike, v3_instruction, with_end_of_prompt
from cosyvoice.cli.model import CosyVoice2Model, CosyVoice3Model
from cosyvoice.flow.flow import CausalMaskedDiffWithDiT, CausalMaskedDiffWithXvec
from cosyvoice.llm.llm import CosyVoice3LM, Qwen2LM
from cosyvoice.text.checks import text_problem
from cosyvoice.utils.checkpoint import atomic_torch_save, sha256_file
from cosyvoice.utils.config import load_config
from cosyvoice.utils.pretrained import (CAMPPLUS_FILE, COSYVOICE2, COSYVOICE3, QWEN_DIR, SPK2INFO_FILE, ModelVersion,
                                        check_pretrained_dir, model_version)

logger = logging.getLogger(__name__)

CONFIG_KEYS = ["llm", "flow", "hift", "get_tokenizer", "feat_extractor", "allowed_special", "sample_rate"]


class CosyVoice2:
    """A CosyVoice2 model dir, ready to synthesize.

    ``load_jit`` / ``load_trt`` / ``load_vllm`` (official accelerations) are not supported here and must stay
    False; ``fp16`` takes effect on CUDA only; ``trt_concurrent`` is accepted for compatibility and unused.
    """

    VERSION: ModelVersion = COSYVOICE2
    MODEL = CosyVoice2Model

    def __init__(self, model_dir: str, load_jit: bool = False, load_trt: bool = False, load_vllm: bool = False,
                 fp16: bool = False, trt_concurrent: int = 1, characters: Optional[Sequence[PathLike]] = None):
        self._load(model_dir, fp16, characters, load_jit=load_jit, load_trt=load_trt, load_vllm=load_vllm)

    def _load(self, model_dir: str, fp16: bool, characters: Optional[Sequence[PathLike]],
              **accelerations: bool) -> None:
        name = type(self).__name__
        unsupported = [flag for flag, on in accelerations.items() if on]
        if unsupported:
            raise ValueError(f"{name}: {', '.join(unsupported)} not supported by this toolkit "
                             f"(TorchScript/TensorRT/vLLM exports); leave them False")
        self.model_dir = os.fspath(model_dir)
        check_pretrained_dir(self.model_dir, version=self.VERSION)
        if fp16 and not torch.cuda.is_available():
            logger.info("no CUDA device: fp16 is ignored, running in float32")
            fp16 = False
        self.fp16 = fp16
        configs = load_config(os.path.join(self.model_dir, self.VERSION.config_file),
                              {"qwen_pretrain_path": os.path.join(self.model_dir, QWEN_DIR)}, keys=CONFIG_KEYS)
        _check_model_type(configs, self.model_dir, self.VERSION)
        self.frontend = CosyVoiceFrontEnd(configs["get_tokenizer"], configs["feat_extractor"],
                                          os.path.join(self.model_dir, CAMPPLUS_FILE),
                                          os.path.join(self.model_dir, self.VERSION.speech_tokenizer_file),
                                          os.path.join(self.model_dir, SPK2INFO_FILE),
                                          configs["allowed_special"])
        self.sample_rate = int(configs["sample_rate"])
        self.model = self.MODEL(configs["llm"], configs["flow"], configs["hift"], fp16)
        self.model.load(os.path.join(self.model_dir, "llm.pt"), os.path.join(self.model_dir, "flow.pt"),
                        os.path.join(self.model_dir, "hift.pt"))
        del configs
        self.characters: Dict[str, Character] = {}
        self._base_sha256: Dict[str, str] = {}
        for path in find_characters(characters or []):
            self.add_character(path)
        if characters is None:  # not [] (a caller that knows there are none, e.g. training's per-epoch samples)
            self._warn_if_lora_model_dir()

    def _warn_if_lora_model_dir(self) -> None:
        """A LoRA experiment's model dir (<exp>/model beside <exp>/characters) keeps the pretrained llm.pt, linked;
        its speakers speak as themselves only with their characters loaded, so loading it alone is worth a word."""
        folder = os.path.join(os.path.dirname(os.path.abspath(self.model_dir)), "characters")
        if not os.path.islink(os.path.join(self.model_dir, "llm.pt")) or not os.path.isdir(folder):
            return
        try:
            spks = {read_character(path, verify=False).spk_id for path in find_characters([folder])}
        except CharacterError:
            return
        mine = sorted(spks & set(self.frontend.spk2info))
        if mine:
            base = os.path.dirname(os.path.realpath(os.path.join(self.model_dir, "llm.pt")))
            logger.warning("%s is the model dir of a LoRA run: its llm.pt is the pretrained one, so %s speak(s) with "
                           "the base llm here; load the characters for the fine-tuned voices: %s(%r, characters=[%r])",
                           self.model_dir, ", ".join(mine), type(self).__name__, base, folder)

    # ------------------------------------------------------------------------------------------------ characters
    def add_character(self, path: PathLike) -> str:
        """Load the character folder ``path`` (cosyvoice/cli/character.py) onto this base model; returns its
        speaker id, which ``inference_sft`` takes from then on. Its adapter stays unmerged and is used by its own
        calls only; every file is checked against the manifest, and an adapter against the base weights it was
        trained on (a merged or other llm.pt is refused)."""

        character = read_character(os.fspath(path))
        spk = character.spk_id
        if spk in self.characters:
            raise CharacterError(f"{path}: speaker '{spk}' is already loaded from {self.characters[spk].path}; "
                                 f"each character needs its own speaker id")
        for part in ("llm", "flow"):
            if character.kind(part) != "lora":
                continue
            mine = os.path.join(self.model_dir, f"{part}.pt")
            if mine not in self._base_sha256:
                self._base_sha256[mine] = sha256_file(mine)
            if self._base_sha256[mine] != character.manifest["base_model"][f"{part}.pt"]:
                raise CharacterError(
                    f"{path}: its {part} adapter was trained on the {part}.pt of "
                    f"{character.manifest['base_model'].get('dir')}, not on {mine} (another or a merged model): "
                    f"load it onto that base model dir")
        entry = character.spk2info_entry()
        if "embedding" not in entry:
            raise CharacterError(f"{path}: its spk2info.pt entry for '{spk}' has no 'embedding'")
        lora_llm = character.kind("llm") == "lora"
        flow_kind = character.kind("flow")
        self.model.add_character(
            spk, llm_adapter=character.file("llm") if lora_llm else None,
            llm_lora=character.lora_settings("llm") if lora_llm else None,
            llm_key=character.sha256("llm") if lora_llm else "",
            flow_weights=character.file("flow") if flow_kind != "base" else None,
            flow_lora=character.lora_settings("flow") if flow_kind == "lora" else None,
            flow_key=character.sha256("flow") if flow_kind != "base" else "")
        if spk in self.frontend.spk2info:
            logger.info("character %s replaces the entry of %s/%s for speaker %s", path, self.model_dir, SPK2INFO_FILE,
                        spk)
        self.frontend.spk2info[spk] = {k: v.to(self.frontend.device) if torch.is_tensor(v) else v
                                       for k, v in entry.items()}
        self.characters[spk] = character
        logger.info("character %s (%s): llm %s, flow %s%s", spk, path, character.kind("llm"), flow_kind,
                    ", speaker tag" if character.speaker_tag else "")
        return spk

    # what differs between the versions' inputs (CosyVoice2: nothing to add)
    def _complete_input(self, model_input: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The model input of one piece as the LLM needs it."""
        return model_input

    def _instruction(self, instruct_text: str) -> str:
        """The instruction as the LLM was trained on it: ending with ``<|endofprompt|>``."""
        return with_end_of_prompt(instruct_text)

    # ------------------------------------------------------------------------------------------------ speakers
    def list_available_spks(self):
        return list(self.frontend.spk2info.keys())

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: PathLike, zero_shot_spk_id: str) -> bool:
        """Keep the prompt's features under ``zero_shot_spk_id`` (for ``zero_shot_spk_id=`` in later calls)."""
        if not zero_shot_spk_id:
            raise ValueError("add_zero_shot_spk: zero_shot_spk_id must not be empty")
        model_input = self.frontend.frontend_zero_shot("", prompt_text, prompt_wav, self.sample_rate, "")
        del model_input["text"], model_input["text_len"]
        self.frontend.spk2info[zero_shot_spk_id] = model_input
        return True

    def save_spkinfo(self) -> None:
        """Write the speaker table to ``<model_dir>/spk2info.pt`` (atomically, tensors on the CPU); the entries of
        characters stay in their own folders."""
        path = os.path.join(self.model_dir, SPK2INFO_FILE)
        table = {spk: {k: v.cpu() if torch.is_tensor(v) else v for k, v in info.items()}
                 for spk, info in self.frontend.spk2info.items() if spk not in self.characters}

        atomic_torch_save(table, path)  # a full disk or read-only dir: one-line WriteError, the old table kept

    # ------------------------------------------------------------------------------------------------ synthesis
    def _pieces(self, tts_text, text_frontend: bool):
        if isinstance(tts_text, Iterator):
            return [tts_text]
        if not isinstance(tts_text, str):
            raise TypeError(f"tts_text must be a str (or a generator of str), got {type(tts_text).__name__}")
        problem = text_problem(tts_text)
        if problem and problem[0] != "no_speakable_text":  # that one is told below, after normalization
            raise ValueError(f"tts_text {tts_text!r} holds {problem[0].replace('_', ' ')} {problem[1]!r}, which "
                             f"would be read out literally: replace it by the words to say")
        pieces = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        pieces = [p for p in pieces if not isinstance(p, str) or p.strip()]
        if not pieces:
            raise ValueError(f"nothing to synthesize: tts_text {tts_text!r} is empty or only punctuation")
        return pieces

    def _synthesize(self, model_input: Dict[str, torch.Tensor], text, stream: bool, speed: float, seed: Optional[int],
                    character: Optional[str] = None) -> Generator[Dict[str, torch.Tensor], None, None]:
        start = time.time()
        logger.info("synthesis text %s", text if isinstance(text, str) else "<text generator>")
        for model_output in self.model.tts(**self._complete_input(model_input), stream=stream, speed=speed,
                                           seed=seed):
            seconds = model_output["tts_speech"].shape[1] / self.sample_rate
            if seconds > 0:
                logger.info("yield speech len %.2f s, rtf %.3f", seconds, (time.time() - start) / seconds)
            yield model_output
            start = time.time()

    def inference_sft(self, tts_text, spk_id: str, stream: bool = False, speed: float = 1.0,
                      text_frontend: bool = True, seed: Optional[int] = None):
        """Speak ``tts_text`` as the speaker ``spk_id`` of spk2info.pt (e.g. the fine-tuned speaker), or as the
        character ``spk_id`` (its own adapter and flow)."""
        _check_speed(speed)
        self.frontend._speaker(spk_id, "embedding", "sft")
        character = spk_id if spk_id in self.characters else None
        for text in self._pieces(tts_text, text_frontend):
            model_input = self.frontend.frontend_sft(text, spk_id)
            yield from self._synthesize(model_input, text, stream, speed, seed, character)

    def inference_zero_shot(self, tts_text, prompt_text: str, prompt_wav: PathLike, zero_shot_spk_id: str = "",
                            stream: bool = False, speed: float = 1.0, text_frontend: bool = True,
                            seed: Optional[int] = None):
        """Clone the voice of ``prompt_wav`` whose transcript is ``prompt_text`` (or of a saved speaker)."""
        _check_speed(speed)
        if zero_shot_spk_id == "":
            if not isinstance(prompt_text, str) or not prompt_text.strip():
                raise ValueError("prompt_text is empty: give the transcript of prompt_wav "
                                 "(or use inference_cross_lingual, which needs none)")
            self.frontend._extract_speech_token(prompt_wav)  # a bad prompt fails before any synthesis
        else:
            self.frontend._speaker(zero_shot_spk_id, "flow_embedding", "zero-shot")
        prompt_text = self.frontend.text_normalize(prompt_text, split=False, text_frontend=text_frontend)
        for text in self._pieces(tts_text, text_frontend):
            if isinstance(text, str) and len(text) < 0.5 * len(prompt_text):
                logger.warning("synthesis text %s is much shorter than the prompt text %s; this may sound bad",
                               text, prompt_text)
            model_input = self.frontend.frontend_zero_shot(text, prompt_text, prompt_wav, self.sample_rate,
                                                           zero_shot_spk_id)
            yield from self._synthesize(model_input, text, stream, speed, seed)

    def inference_cross_lingual(self, tts_text, prompt_wav: PathLike, zero_shot_spk_id: str = "",
                                stream: bool = False, speed: float = 1.0, text_frontend: bool = True,
                                seed: Optional[int] = None):
        """Speak ``tts_text`` (any language) in the voice of ``prompt_wav``; its transcript is not needed."""
        _check_speed(speed)
        self._check_prompt(prompt_wav, zero_shot_spk_id)
        for text in self._pieces(tts_text, text_frontend):
            model_input = self.frontend.frontend_cross_lingual(text, prompt_wav, self.sample_rate, zero_shot_spk_id)
            yield from self._synthesize(model_input, text, stream, speed, seed)

    def inference_instruct2(self, tts_text, instruct_text: str, prompt_wav: PathLike, zero_shot_spk_id: str = "",
                            stream: bool = False, speed: float = 1.0, text_frontend: bool = True,
                            seed: Optional[int] = None):
        """Speak ``tts_text`` in the voice of ``prompt_wav`` following ``instruct_text`` (e.g. '用开心的语气说');
        ``<|endofprompt|>`` is appended to the instruction when it does not end with it (CosyVoice3: see the
        module docstring)."""
        _check_speed(speed)
        if not isinstance(instruct_text, str) or not instruct_text.strip():
            raise ValueError("instruct_text is empty: give an instruction such as '用开心的语气说这句话'")
        instruct_text = self._instruction(instruct_text)
        self._check_prompt(prompt_wav, zero_shot_spk_id)
        for text in self._pieces(tts_text, text_frontend):
            model_input = self.frontend.frontend_instruct2(text, instruct_text, prompt_wav, self.sample_rate,
                                                           zero_shot_spk_id)
            yield from self._synthesize(model_input, text, stream, speed, seed)

    def inference_instruct(self, *args, **kwargs):
        raise NotImplementedError(f"inference_instruct is for CosyVoice 1 models; {type(self).__name__} uses "
                                  f"inference_instruct2")

    def inference_vc(self, source_wav: PathLike, prompt_wav: PathLike, stream: bool = False, speed: float = 1.0,
                     seed: Optional[int] = None):
        """Re-voice ``source_wav`` with the voice of ``prompt_wav`` (speech tokens of the source, no LLM)."""
        _check_speed(speed)
        self._check_prompt(prompt_wav, "")
        model_input = self.frontend.frontend_vc(source_wav, prompt_wav, self.sample_rate)
        yield from self._synthesize(model_input, os.fspath(source_wav), stream, speed, seed)

    def _check_prompt(self, prompt_wav: PathLike, zero_shot_spk_id: str) -> None:
        if zero_shot_spk_id == "":
            self.frontend._extract_speech_token(prompt_wav)  # a bad prompt fails before any synthesis
        else:
            self.frontend._speaker(zero_shot_spk_id, "flow_embedding", "this mode")


def _check_speed(speed) -> None:
    """``speed`` must be a finite number > 0 (the official code divides by it, or fails deep inside torch)."""
    if isinstance(speed, bool) or not isinstance(speed, numbers.Real) or not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a number > 0 (1.0: normal, 0.5: half as fast, 2.0: twice as fast), "
                         f"got speed={speed!r}")


class CosyVoice3(CosyVoice2):
    """A Fun-CosyVoice3-0.5B model dir, ready to synthesize: CosyVoice2's API (and code) with CosyVoice3's model
    (:class:`CosyVoice3Model`: the DiT flow and the causal HiFT), files (cosyvoice3.yaml, speech_tokenizer_v3.onnx)
    and input (the system prompt and ``<|endofprompt|>``, see the module docstring).

    Official constructor: no ``load_jit`` (CosyVoice3 has nothing to TorchScript); ``load_trt`` / ``load_vllm``
    must stay False; ``fp16`` takes effect on CUDA only; ``trt_concurrent`` is accepted and unused.
    """

    VERSION = COSYVOICE3
    MODEL = CosyVoice3Model
    SYSTEM_PROMPT = "You are a helpful assistant."

    def __init__(self, model_dir: str, load_trt: bool = False, load_vllm: bool = False, fp16: bool = False,
                 trt_concurrent: int = 1, characters: Optional[Sequence[PathLike]] = None):
        self._load(model_dir, fp16, characters, load_trt=load_trt, load_vllm=load_vllm)
        self._end_of_prompt_id = int(self.model.llm.END_OF_PROMPT_ID)
        ids = self.frontend.tokenizer.encode(f"{self.SYSTEM_PROMPT}<|endofprompt|>",
                                             allowed_special=self.frontend.allowed_special)
        if ids[-1:] != [self._end_of_prompt_id]:
            raise ValueError(f"{self.model_dir}/{QWEN_DIR}: the tokenizer gives <|endofprompt|> the id {ids[-1]}, the "
                             f"CosyVoice3 LLM expects {self._end_of_prompt_id}: the tokenizer does not belong to "
                             f"this model")
        self._system_prompt = torch.tensor([ids], dtype=torch.int32, device=self.frontend.device)

    def _complete_input(self, model_input: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Put the system prompt in front of the prompt text (or make it the prompt text) unless the prompt text
        or the text already holds ``<|endofprompt|>`` (then the input goes to the LLM as the caller gave it)."""
        tokens = [t for t in (model_input.get("prompt_text"), model_input.get("text")) if torch.is_tensor(t)]
        if any(bool((t == self._end_of_prompt_id).any()) for t in tokens):
            return model_input
        prompt = model_input.get("prompt_text")
        prefix = self._system_prompt.to(prompt.device) if prompt is not None else self._system_prompt
        prompt = prefix if prompt is None else torch.cat([prefix, prompt.to(prefix.dtype)], dim=1)
        return {**model_input, "prompt_text": prompt,
                "prompt_text_len": torch.tensor([prompt.shape[1]], dtype=torch.int32, device=prompt.device)}

    def _instruction(self, instruct_text: str) -> str:
        """An instruction without ``<|endofprompt|>`` becomes 'You are a helpful assistant. <instruction>' ending
        with it (the form of the official CosyVoice3 instructions); one with it is kept as given."""
        return v3_instruction(instruct_text, self.SYSTEM_PROMPT)


def AutoModel(**kwargs):
    """The official factory: ``AutoModel(model_dir=..., [fp16=...])`` gives the CosyVoice2 or CosyVoice3 of the
    model dir (by its yaml, see cosyvoice.utils.pretrained.model_version). The model dir must exist here (the
    official one downloads a missing one from ModelScope: use tools/download_pretrained.py)."""
    if "model_dir" not in kwargs:
        raise TypeError("AutoModel() needs model_dir=<a CosyVoice2 or CosyVoice3 model dir>")
    model_dir = os.fspath(kwargs["model_dir"])
    if not os.path.isdir(model_dir):
        check_pretrained_dir(model_dir)  # raises, saying how to get it
    version = model_version(model_dir)
    return {COSYVOICE2.name: CosyVoice2, COSYVOICE3.name: CosyVoice3}[version.name](**kwargs)


def _check_model_type(configs: dict, model_dir: str, version: ModelVersion) -> None:
    """The yaml must build the model of ``version`` (CosyVoice2: Qwen2LM + chunk-aware causal flow; CosyVoice3:
    CosyVoice3LM + the DiT flow)."""
    if version is COSYVOICE3:
        llm_ok, flow_ok = isinstance(configs["llm"], CosyVoice3LM), isinstance(configs["flow"], CausalMaskedDiffWithDiT)
    else:
        llm_ok = isinstance(configs["llm"], Qwen2LM) and not isinstance(configs["llm"], CosyVoice3LM)
        flow_ok = isinstance(configs["flow"], CausalMaskedDiffWithXvec)
    if not (llm_ok and flow_ok):
        raise ValueError(f"{model_dir}/{version.config_file} does not describe a {version.title} model (llm "
                         f"{type(configs['llm']).__name__}, flow {type(configs['flow']).__name__}); "
                         f"use a {version.title} model dir")
