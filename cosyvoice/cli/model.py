"""CosyVoice2/3 synthesis engines: speech-token LLM -> flow (tokens -> mel) -> HiFT (mel -> 24 kHz audio).

:class:`CosyVoice2Model` keeps the official class name, constructor, ``load``, ``token2wav`` and ``tts`` (same
arguments, same chunking and the same numbers), so checkpoints and calling code written for the official one work.
Differences, all on purpose:

* The LLM runs in a worker thread as in the official code, but the caller waits on a condition variable instead of
  polling, an exception in the worker is re-raised in the caller, and abandoning the generator stops the worker.
* The streaming hop length grows within one call and starts again at ``token_hop_len`` on the next call (the
  official class grows ``self.token_hop_len`` for good, so only its first streaming call follows the schedule).
* ``seed`` makes a call reproducible, also when several threads call ``tts`` on one object at once: the LLM samples
  from a ``torch.Generator`` of its own seeded with it, and HiFT draws its noise from another one seeded with it.
  The global RNG is neither read nor written (the numbers are those of ``torch.manual_seed(seed)``, since a fresh
  generator seeded alike draws the same). The flow of CosyVoice2 draws nothing: its noise is fixed.
* Each call keeps its state (tokens, vocoder and flow caches) under its own ``uuid4`` key, so concurrent calls
  never see each other's tokens.
* ``speed`` other than 1.0 with ``stream=True`` is an error (the official code silently ignores it).
* On a CPU the LLM worker waits (after the token it is on) while the first streaming chunk is made, so that chunk
  has the cores to itself and the first audio comes sooner; later chunks run beside the LLM
  (``first_chunk_alone``; same numbers).
* Characters (``add_character``, ``tts(..., character=...)``): LoRA adapters of several fine-tuned voices live on the
  one llm (and flow) unmerged, and a call uses only its own (:class:`cosyvoice.utils.lora.AdapterSwitch`: calls of
  one character run together, others wait their turn); a character's fully fine-tuned flow is its own module.
* Opt-in (``flow_cache_max_frames``, e.g. :data:`FLOW_CACHE_FRAMES`): a streaming chunk runs the flow's 10 Euler
  steps on its new frames only, reusing the state of the earlier frames (``flow.inference_chunk``), where the
  official code (and the default) recomputes the whole prefix each time. Same numbers to float rounding (up to about
  5e-5 in the audio), cost linear instead of quadratic in the length; the last chunk still runs the whole utterance.

:class:`CosyVoice3Model` is the same engine with CosyVoice3's token2wav (the causal HiFT re-run on the whole mel so
far, as official) and silent-token filter.
"""
from __future__ import annotations

import logging
import math
import threading
import uuid as uuid_lib
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Dict, Generator, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from cosyvoice.hifigan.generator import load_hift
from cosyvoice.utils.common import fade_in_out, load_checkpoint_strict
from cosyvoice.utils import lora

logger = logging.getLogger(__name__)

# a stream-cache budget for opting in (``CosyVoice2Model(flow_cache_max_frames=FLOW_CACHE_FRAMES)``): 1000 mel frames
# (20 s) cost 4.6 GB at full size
FLOW_CACHE_FRAMES = 1000


class _LLMJob:
    """What the caller and the LLM worker thread of one ``tts`` call share."""

    def __init__(self):
        self.cond = threading.Condition()
        self.cancel = threading.Event()
        self.go = threading.Event()  # cleared: the worker waits before its next token (see CosyVoice2Model.tts)
        self.go.set()
        self.error: Optional[BaseException] = None


@dataclass
class _CharacterModules:
    """What one character's calls use instead of the base modules (None: the base one)."""

    llm_adapter: Optional[str] = None              # adapter name on the shared llm
    flow: Optional[torch.nn.Module] = None         # the character's own flow (fully fine-tuned)
    flow_adapter: Optional[str] = None             # adapter name on the shared flow


class CosyVoice2Model:
    """Streaming-capable CosyVoice2 inference over an ``llm`` (Qwen2LM), a ``flow`` (CausalMaskedDiffWithXvec)
    and a ``hift`` (HiFTGenerator). Runs on CUDA when available, else on the CPU.

    Beyond the official arguments, two keyword-only switches of this toolkit's speed changes (BENCHMARKS.md has their
    before/after): ``first_chunk_alone`` (default True; False: the LLM keeps decoding while the first streaming chunk
    is made on a CPU, as official; same audio either way) and ``flow_cache_max_frames`` (default 0: every streaming
    chunk re-runs the flow on the whole prefix, as the official code does, so the audio is the official one; N > 0:
    chunks ending within N mel frames reuse the earlier frames' flow state and compute only their new frames, which
    saves up to a third of the streaming flow work on long utterances but moves the audio by float rounding, up to
    about 5e-5: the earlier frames' attention saw fewer keys when they were made than the official recomputation
    does)."""

    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module, hift: torch.nn.Module, fp16: bool = False, *,
                 flow_cache_max_frames: int = 0, first_chunk_alone: bool = True):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.llm = llm
        self.flow = flow
        self.hift = hift
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        # autocast dtype of the LLM and flow on CUDA (None: float32); HiFT always runs in float32
        self.amp_dtype: Optional[torch.dtype] = torch.float16 if self.fp16 else None
        self.token_hop_len = 25                       # first streaming hop; the flow's training chunk size
        self.token_max_hop_len = 4 * self.token_hop_len
        # on a CPU, the LLM worker waits while the first streaming chunk is made: both at once share the cores
        # and the first audio comes later (tools/benchmark.py --stages ttfa; BENCHMARKS.md)
        self.first_chunk_alone = bool(first_chunk_alone)
        self.stream_scale_factor = 2                  # each hop is this times the previous one, up to the max
        self.mel_cache_len = 8                        # mel frames handed to the next chunk's vocoder call
        self.source_cache_len = self.mel_cache_len * 480
        self.speech_window = np.hamming(2 * self.source_cache_len)
        self.lock = threading.Lock()
        # per-call state, keyed by the call's uuid (as in the official class)
        self.tts_speech_token_dict: Dict[str, List[int]] = {}
        self.llm_end_dict: Dict[str, bool] = {}
        self.hift_cache_dict: Dict[str, Optional[dict]] = {}
        # Streaming: the flow's per-layer state after the frames made so far (see flow.inference_chunk), so a chunk
        # costs its new frames only. It takes 2 x 10 Euler steps x 56 transformer blocks x 2 x 512 floats per mel
        # frame at full size (4.6 MB/frame in float32); chunks ending past this many frames are not cached
        # (0, the default: never cache, every chunk recomputes the whole prefix as the official code does).
        self.flow_cache_dict: Dict[str, object] = {}
        self.flow_cache_max_frames = int(flow_cache_max_frames)
        self._jobs: Dict[str, _LLMJob] = {}
        self.silent_tokens: List[int] = []            # CosyVoice2 has none; CosyVoice3 caps runs of them
        # characters (add_character): adapters on the shared llm/flow, switched per call, and flows of their own
        self._characters: Dict[str, _CharacterModules] = {}
        self._adapter_names: Dict[str, str] = {}      # "<llm|flow>:<key>" -> adapter name (one copy per file)
        self._own_flows: Dict[str, torch.nn.Module] = {}  # key -> fully fine-tuned flow (one copy per file)
        self._switches: Dict[str, Any] = {}           # "llm"/"flow" -> cosyvoice.utils.lora.AdapterSwitch
        self._call_modules: Dict[str, Optional[_CharacterModules]] = {}

    # --------------------------------------------------------------------------------------------------- loading
    def load(self, llm_model: str, flow_model: str, hift_model: str) -> None:
        """Load ``llm.pt``, ``flow.pt`` and ``hift.pt`` strictly (every ``generator.`` is removed from hift keys)."""
        load_checkpoint_strict(self.llm, llm_model)
        load_checkpoint_strict(self.flow, flow_model)
        load_hift(self.hift, hift_model)
        for module in (self.llm, self.flow, self.hift):
            module.to(self.device).eval()

    # ------------------------------------------------------------------------------------------------ characters
    def add_character(self, name: str, llm_adapter=None, llm_lora=None, llm_key: str = "",
                      flow_weights=None, flow_lora=None, flow_key: str = "") -> None:
        """Register character ``name`` for ``tts(..., character=name)``.

        ``llm_adapter`` (a path or state_dict) with its ``llm_lora`` settings (cosyvoice.utils.lora.LoraSettings):
        a LoRA adapter put, unmerged, on the shared llm. ``flow_weights``: with ``flow_lora`` a LoRA adapter of the
        shared flow, without it a fully fine-tuned flow held by the character. ``*_key`` (e.g. the file's sha256)
        identifies the weights: characters with the same key share one copy. Not while a call is running.
        """
        import copy


        with self.lock:
            if self._jobs:
                raise RuntimeError("add_character while synthesis is running: add characters first")
            if name in self._characters:
                raise ValueError(f"character {name!r} is already loaded")
            modules = _CharacterModules()
            if llm_adapter is not None:
                modules.llm_adapter = self._put_adapter("llm", self.llm, llm_adapter, llm_lora, llm_key or name)
            if flow_weights is not None and flow_lora is not None:
                modules.flow_adapter = self._put_adapter("flow", self.flow, flow_weights, flow_lora, flow_key or name)
            elif flow_weights is not None:
                key = flow_key or name
                if key not in self._own_flows:
                    if self._switches.get("flow") is not None and lora.adapter_names(self.flow):
                        raise ValueError("a fully fine-tuned character flow cannot join a flow that carries LoRA "
                                         "adapters of other characters")
                    flow = copy.deepcopy(self.flow)
                    load_checkpoint_strict(flow, flow_weights)
                    self._own_flows[key] = flow.to(self.device).eval()
                modules.flow = self._own_flows[key]
            self._characters[name] = modules

    def _put_adapter(self, part: str, module: torch.nn.Module, weights, settings, key: str) -> str:

        full_key = f"{part}:{key}"
        if full_key not in self._adapter_names:
            adapter = f"c{len(self._adapter_names)}"
            lora.add_adapter(module, settings, name=adapter, trainable=False)
            lora.load_adapter_state_dict(module, weights, adapter)
            module.to(self.device).eval()  # the new LoRA layers, on the module's device, dropout off
            self._adapter_names[full_key] = adapter
            switch = self._switches.setdefault(part, lora.AdapterSwitch(module))
            switch.refresh()
        return self._adapter_names[full_key]

    def characters(self) -> List[str]:
        return list(self._characters)

    def _use(self, part: str, uuid: str):
        """The adapter of ``part`` (llm or flow) for the call ``uuid`` (none: the base module), held for a block."""
        switch = self._switches.get(part)
        if switch is None:
            return nullcontext()
        modules = self._call_modules.get(uuid)
        return switch.use(getattr(modules, f"{part}_adapter") if modules is not None else None)

    def _flow_for(self, uuid: str) -> torch.nn.Module:
        modules = self._call_modules.get(uuid)
        return modules.flow if modules is not None and modules.flow is not None else self.flow

    def _flow_chunks(self) -> bool:
        """Whether streaming chunks go through the flow's incremental ``inference_chunk``."""
        return self.flow_cache_max_frames != 0 and self.flow.chunk_cache_supported()

    def _flow_inputs(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                     embedding: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The keyword arguments of ``flow.inference``, on the model's device, lengths from the shapes."""
        def length(x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([x.shape[1]], dtype=torch.int32, device=self.device)

        return dict(token=token.to(self.device, dtype=torch.int32), token_len=length(token),
                    prompt_token=prompt_token.to(self.device), prompt_token_len=length(prompt_token),
                    prompt_feat=prompt_feat.to(self.device), prompt_feat_len=length(prompt_feat),
                    embedding=embedding.to(self.device))

    def _autocast(self):
        if self.amp_dtype is None or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ------------------------------------------------------------------------------------------------ token2wav
    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, token_offset: int, uuid: str, stream: bool = False,
                  finalize: bool = False, speed: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Audio (1, samples) for speech tokens ``token[:, token_offset:]`` of the call ``uuid``.

        The flow always re-reads every token from the start (with the prompt); its mel is cut at
        ``token_offset * token_mel_ratio``. A streaming chunk that is not the last reuses the flow state of the
        previous chunk of ``uuid`` (``flow_cache_dict``), so that only its new frames are computed; the result is
        the same. A chunk that is not the last (``finalize=False``) keeps its last
        ``mel_cache_len`` mel frames, their source and their ``source_cache_len`` samples for the next chunk, which
        starts with those frames and cross-fades over those samples (Hamming window). ``speed`` stretches the mel by
        linear interpolation (last chunk of a call without earlier chunks only). ``generator``: HiFT's noise source
        (None: the global RNG, as the official code).
        """
        flow_inputs = self._flow_inputs(token, prompt_token, prompt_feat, embedding)
        flow = self._flow_for(uuid)
        with self._use("flow", uuid), self._autocast():
            if stream and not finalize and self._flow_chunks():
                tts_mel, self.flow_cache_dict[uuid] = flow.inference_chunk(
                    **flow_inputs, token_offset=token_offset, cache=self.flow_cache_dict.get(uuid),
                    max_cache_frames=self.flow_cache_max_frames)
            else:
                self.flow_cache_dict.pop(uuid, None)
                tts_mel, _ = flow.inference(**flow_inputs, streaming=stream, finalize=finalize)
                tts_mel = tts_mel[:, :, token_offset * flow.token_mel_ratio:]
        cache = self.hift_cache_dict[uuid]
        if cache is not None:
            tts_mel = torch.concat([cache["mel"], tts_mel], dim=2)
            cache_source = cache["source"]
        else:
            cache_source = torch.zeros(1, 1, 0, device=tts_mel.device)
        if finalize and speed != 1.0:
            if cache is not None:
                raise ValueError("speed change works only without streaming (stream=False)")
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)), mode="linear")
        tts_speech, tts_source = self.hift.inference(speech_feat=tts_mel, cache_source=cache_source,
                                                     generator=generator)
        if cache is not None:
            tts_speech = fade_in_out(tts_speech, cache["speech"], self.speech_window)
        if not finalize:
            self.hift_cache_dict[uuid] = {"mel": tts_mel[:, :, -self.mel_cache_len:],
                                          "source": tts_source[:, :, -self.source_cache_len:],
                                          "speech": tts_speech[:, -self.source_cache_len:]}
            tts_speech = tts_speech[:, :-self.source_cache_len]
        return tts_speech

    # ------------------------------------------------------------------------------------------------ LLM worker
    def _append(self, uuid: str, token: int) -> None:
        job = self._jobs[uuid]
        with job.cond:
            self.tts_speech_token_dict[uuid].append(token)
            job.cond.notify_all()

    def llm_job(self, text, prompt_text: torch.Tensor, llm_prompt_speech_token: torch.Tensor,
                llm_embedding: torch.Tensor, uuid: str, seed: Optional[int] = None) -> None:
        """Decode speech tokens into ``tts_speech_token_dict[uuid]`` (runs in the worker thread).

        ``text``: (1, T) int32 token ids, or a generator of (1, n) pieces (bi-directional streaming input).
        ``seed``: sample from a generator of this call seeded with it (None: from the global RNG, as official).
        """
        job = self._jobs[uuid]
        prompt_kwargs = dict(
            prompt_text=prompt_text.to(self.device),
            prompt_text_len=torch.tensor([prompt_text.shape[1]], dtype=torch.int32, device=self.device),
            prompt_speech_token=llm_prompt_speech_token.to(self.device),
            prompt_speech_token_len=torch.tensor([llm_prompt_speech_token.shape[1]], dtype=torch.int32,
                                                 device=self.device),
            embedding=llm_embedding.to(self.device))
        if seed is not None:
            prompt_kwargs["generator"] = torch.Generator(device=self.device).manual_seed(int(seed))
        with self._use("llm", uuid), self._autocast():
            if isinstance(text, Iterator):
                tokens = self.llm.inference_bistream(text=text, **prompt_kwargs)
            else:
                text = text.to(self.device)
                tokens = self.llm.inference(
                    text=text, text_len=torch.tensor([text.shape[1]], dtype=torch.int32, device=self.device),
                    uuid=uuid, **prompt_kwargs)
            silent_run = 0
            for token in tokens:
                if job.cancel.is_set():
                    break
                if token in self.silent_tokens:
                    silent_run += 1
                    if silent_run > 5:  # keep at most 5 silent tokens in a row
                        continue
                else:
                    silent_run = 0
                self._append(uuid, int(token))
                job.go.wait()

    def vc_job(self, source_speech_token: torch.Tensor, uuid: str) -> None:
        """Voice conversion: the source speech tokens stand in for the LLM's output."""
        job = self._jobs[uuid]
        with job.cond:
            self.tts_speech_token_dict[uuid] = [int(t) for t in source_speech_token.flatten().tolist()]

    def _worker(self, target, args, uuid: str, **kwargs) -> None:
        job = self._jobs[uuid]
        try:
            target(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
            job.error = e
        finally:
            with job.cond:
                self.llm_end_dict[uuid] = True
                job.cond.notify_all()

    def _wait_for_tokens(self, uuid: str, need: Optional[int]) -> int:
        """Block until ``need`` tokens exist (None: until the LLM has finished) or the LLM ended; return the count.

        Re-raises an exception of the LLM worker."""
        job = self._jobs[uuid]
        with job.cond:
            while not (self.llm_end_dict[uuid]
                       or (need is not None and len(self.tts_speech_token_dict[uuid]) >= need)):
                job.cond.wait()
            if job.error is not None:
                raise job.error
            return len(self.tts_speech_token_dict[uuid])

    # ----------------------------------------------------------------------------------------------------- tts
    def tts(self, text: torch.Tensor = torch.zeros(1, 0, dtype=torch.int32),
            flow_embedding: torch.Tensor = torch.zeros(0, 192),
            llm_embedding: torch.Tensor = torch.zeros(0, 192),
            prompt_text: torch.Tensor = torch.zeros(1, 0, dtype=torch.int32),
            llm_prompt_speech_token: torch.Tensor = torch.zeros(1, 0, dtype=torch.int32),
            flow_prompt_speech_token: torch.Tensor = torch.zeros(1, 0, dtype=torch.int32),
            prompt_speech_feat: torch.Tensor = torch.zeros(1, 0, 80),
            source_speech_token: torch.Tensor = torch.zeros(1, 0, dtype=torch.int32),
            stream: bool = False, speed: float = 1.0, seed: Optional[int] = None, character: Optional[str] = None,
            **kwargs) -> Generator[Dict[str, torch.Tensor], None, None]:
        """Synthesize one text; yields ``{'tts_speech': float32 (1, samples)}`` on the CPU, once, or per chunk.

        Takes the front end's dict (``**frontend.frontend_zero_shot(...)``); unused keys (``*_len``) are ignored.
        Streaming: the first chunk covers ``token_hop_len`` tokens plus what rounds the prompt up to a whole
        number of hops, each later chunk ``stream_scale_factor`` times the previous one, at most
        ``token_max_hop_len``; a chunk is made once ``pre_lookahead_len`` more tokens exist, as look-ahead.
        What is left when the LLM ends (at least the look-ahead) is the last chunk.
        ``character`` (an addition): a character of :meth:`add_character` whose adapters and flow this call uses
        (None: the base modules); other calls are never affected by it.
        """
        if stream and speed != 1.0:
            raise ValueError(f"speed {speed} needs stream=False: speed change works only without streaming")
        if character is not None and character not in self._characters:
            raise ValueError(f"unknown character {character!r} (loaded: {', '.join(self._characters) or 'none'})")
        this_uuid = str(uuid_lib.uuid4())  # uuid1 may draw from python's global random
        with self.lock:
            self._call_modules[this_uuid] = self._characters.get(character) if character is not None else None
            self._jobs[this_uuid] = _LLMJob()
            self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
            self.hift_cache_dict[this_uuid] = None
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        if source_speech_token.shape[1] == 0:
            worker = threading.Thread(target=self._worker, daemon=True, name=f"cosyvoice-llm-{this_uuid[:8]}",
                                      args=(self.llm_job, (text, prompt_text, llm_prompt_speech_token,
                                                           llm_embedding, this_uuid), this_uuid),
                                      kwargs={"seed": seed})
        else:
            worker = threading.Thread(target=self._worker, daemon=True, name=f"cosyvoice-vc-{this_uuid[:8]}",
                                      args=(self.vc_job, (source_speech_token, this_uuid), this_uuid))
        flow_kwargs = dict(prompt_token=flow_prompt_speech_token, prompt_feat=prompt_speech_feat,
                           embedding=flow_embedding, uuid=this_uuid, generator=generator)
        worker.start()
        try:
            token_offset = 0
            if stream:
                lookahead = self.flow.pre_lookahead_len
                hop = self.token_hop_len
                n_prompt = flow_prompt_speech_token.shape[1]
                prompt_token_pad = math.ceil(n_prompt / hop) * hop - n_prompt
                while True:
                    this_hop = hop + prompt_token_pad if token_offset == 0 else hop
                    need = token_offset + this_hop + lookahead
                    if self._wait_for_tokens(this_uuid, need) < need:
                        break
                    chunk = torch.tensor(self.tts_speech_token_dict[this_uuid][:need]).unsqueeze(0)
                    alone = token_offset == 0 and self.first_chunk_alone and self.device.type == "cpu"
                    if alone:
                        self._jobs[this_uuid].go.clear()
                    try:
                        speech = self.token2wav(token=chunk, token_offset=token_offset, stream=True,
                                                finalize=False, **flow_kwargs)
                    finally:
                        self._jobs[this_uuid].go.set()
                    token_offset += this_hop
                    hop = min(self.token_max_hop_len, hop * self.stream_scale_factor)
                    yield {"tts_speech": speech.cpu()}
            self._wait_for_tokens(this_uuid, None)
            tokens = torch.tensor(self.tts_speech_token_dict[this_uuid], dtype=torch.int32).reshape(1, -1)
            if tokens.shape[1] == 0:
                logger.warning("the LLM produced no speech tokens; yielding empty audio")
                yield {"tts_speech": torch.zeros(1, 0)}
            else:
                # the last piece runs the flow without chunk masks, as the official code does
                speech = self.token2wav(token=tokens, token_offset=token_offset, stream=False, finalize=True,
                                        speed=speed, **flow_kwargs)
                yield {"tts_speech": speech.cpu()}
        finally:
            self._jobs[this_uuid].cancel.set()
            self._jobs[this_uuid].go.set()
            worker.join()
            with self.lock:
                for table in (self.tts_speech_token_dict, self.llm_end_dict, self.hift_cache_dict,
                              self.flow_cache_dict, self._jobs, self._call_modules):
                    table.pop(this_uuid, None)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.current_stream().synchronize()


class CosyVoice3Model(CosyVoice2Model):
    """Streaming-capable CosyVoice3 inference over an ``llm`` (CosyVoice3LM), a ``flow`` (CausalMaskedDiffWithDiT)
    and a ``hift`` (CausalHiFTGenerator); the official class name, constructor and methods. Loading, the LLM
    worker and the ``tts`` chunk schedule are CosyVoice2Model's (with its documented differences: the hop length
    restarts on every call, ``seed``, errors re-raised in the caller).

    What differs from CosyVoice2 is :meth:`token2wav`: the causal HiFT is re-run on the whole mel made so far and
    only its new samples are returned (no cross-fade, no source cache), as the official code does. The flow of a
    chunk is recomputed from the start (the DiT has no incremental mode here). Runs of more than 5 silent or
    breath tokens (``silent_tokens``) from the LLM are cut to 5.
    """

    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module, hift: torch.nn.Module, fp16: bool = False,
                 **switches):
        super().__init__(llm, flow, hift, fp16, **switches)
        # FSQ tokens of silence and breath (official list)
        self.silent_tokens = [1, 2, 28, 29, 55, 248, 494, 2241, 2242, 2322, 2323]

    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, token_offset: int, uuid: str, stream: bool = False,
                  finalize: bool = False, speed: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Audio (1, samples) for speech tokens ``token[:, token_offset:]`` of the call ``uuid``.

        The flow re-reads every token from the start (with the prompt) and its mel is cut at
        ``token_offset * token_mel_ratio``; ``hift_cache_dict[uuid]`` keeps the mel of the call so far and how many
        samples were returned. The HiFT runs on all of that mel (``finalize`` as given: a chunk that is not the last
        holds back its last frames) and the samples past those already returned are this chunk's audio; the
        concatenated chunks equal one HiFT call on the whole mel. ``speed`` stretches the mel by linear
        interpolation (a call without streaming chunks only). ``generator``: only used by a HiFT in train mode (in
        eval mode the causal HiFT draws nothing).
        """
        flow_inputs = self._flow_inputs(token, prompt_token, prompt_feat, embedding)
        flow = self._flow_for(uuid)
        with self._use("flow", uuid), self._autocast():
            tts_mel, _ = flow.inference(**flow_inputs, streaming=stream, finalize=finalize)
        tts_mel = tts_mel[:, :, token_offset * flow.token_mel_ratio:].float()
        cache = self.hift_cache_dict[uuid]
        if cache is not None:
            tts_mel = torch.concat([cache["mel"], tts_mel], dim=2)
        done = cache["speech_offset"] if cache is not None else 0
        self.hift_cache_dict[uuid] = {"mel": tts_mel, "speech_offset": done}
        if speed != 1.0:
            if cache is not None or not finalize:
                raise ValueError("speed change works only without streaming (stream=False)")
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)), mode="linear")
        tts_speech, _ = self.hift.inference(speech_feat=tts_mel, finalize=finalize, generator=generator)
        tts_speech = tts_speech[:, done:]
        self.hift_cache_dict[uuid]["speech_offset"] = done + tts_speech.shape[1]
        return tts_speech
