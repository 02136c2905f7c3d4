"""The speech server's single synthesis thread: every model call of the server runs here, one at a time.

One model copy serves every request, and its calls are serialized: a seeded request computes exactly what it
computes alone (the same audio as a direct ``CosyVoice2`` call with that seed), however many requests arrive at
once, and correctness never depends on the model being safe to call from several threads. Requests wait in a
bounded queue (``max_queue``); when it is full, :meth:`SynthesisWorker.submit` raises :class:`QueueFull` and the
server answers 503. Streaming chunks are handed to the request's event loop as the model yields them, so the first
bytes leave as soon as the first chunk exists.

A job talks to its request through an ``asyncio.Queue`` of ``(kind, value)`` items, put from this thread with
``loop.call_soon_threadsafe``: ``('chunk', bytes)`` (streaming), ``('body', bytes)`` (the whole file),
``('voice', dict)``, ``('error', exception)``, then always ``('end', Timing)``. A request that goes away sets
``cancel``: a waiting job is skipped and a running one stops after its current chunk.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from cosyvoice.server import audio as audio_codec
from cosyvoice.utils.errors import UserError
from cosyvoice.cli.frontend import PromptError

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The queue already holds ``max_queue`` waiting requests."""


class RequestError(ValueError):
    """A request that the model cannot serve, found while serving it; ``param`` names the field."""

    def __init__(self, message: str, param: Optional[str], status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass
class Timing:
    """Monotonic seconds: when the request arrived, its job started, its first chunk was ready, it ended."""
    arrived: float
    started: Optional[float] = None
    first_chunk: Optional[float] = None
    ended: Optional[float] = None
    audio_seconds: float = 0.0
    chunks: int = 0

    def since_arrival(self, t: Optional[float]) -> float:
        return float("nan") if t is None else t - self.arrived


class Job:
    """One unit of model work and the channel back to the request that asked for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, arrived: Optional[float] = None):
        self.loop = loop
        self.items: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.timing = Timing(arrived if arrived is not None else time.monotonic())

    def emit(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            self.cancel.set()

    def run(self, cosyvoice) -> None:
        raise NotImplementedError


@dataclass
class SpeechSpec:
    """A validated ``POST /v1/audio/speech``."""
    text: str
    voice: str
    kind: str                      # 'sft' or 'zero-shot'
    response_format: str
    stream: bool = False
    speed: float = 1.0
    seed: Optional[int] = None
    instructions: str = ""
    text_frontend: bool = True

    @property
    def mode(self) -> str:
        if self.kind == "sft":
            return "sft"
        return "instruct" if self.instructions else "zero-shot"


def synthesize(cosyvoice, spec: SpeechSpec):
    """The ``CosyVoice2`` / ``CosyVoice3`` generator that speaks ``spec`` (a direct API call; tests compare the
    server with it)."""
    common = dict(stream=spec.stream, speed=spec.speed, text_frontend=spec.text_frontend, seed=spec.seed)
    if spec.mode == "sft":
        return cosyvoice.inference_sft(spec.text, spec.voice, **common)
    if spec.mode == "instruct":
        return cosyvoice.inference_instruct2(spec.text, spec.instructions, "", zero_shot_spk_id=spec.voice, **common)
    return cosyvoice.inference_zero_shot(spec.text, "", "", zero_shot_spk_id=spec.voice, **common)


class SpeechJob(Job):
    def __init__(self, loop, spec: SpeechSpec, sample_rate: int, arrived: Optional[float] = None):
        super().__init__(loop, arrived)
        self.spec = spec
        self.sample_rate = sample_rate

    def run(self, cosyvoice) -> None:
        spec = self.spec
        pieces = cosyvoice.frontend.text_normalize(spec.text, split=True, text_frontend=spec.text_frontend)
        if not [p for p in pieces if p.strip()]:
            raise RequestError(f"input {spec.text[:40]!r} leaves nothing to say after text normalization "
                               f"(give words, not only punctuation or spaces)", "input")
        outputs = synthesize(cosyvoice, spec)
        chunks = []
        try:
            for out in outputs:
                speech = out["tts_speech"].numpy().reshape(-1)
                if self.timing.first_chunk is None:
                    self.timing.first_chunk = time.monotonic()
                self.timing.chunks += 1
                self.timing.audio_seconds += speech.shape[0] / self.sample_rate
                if spec.stream:
                    self.emit("chunk", audio_codec.to_pcm16(speech))
                else:
                    chunks.append(speech)
                if self.cancel.is_set():
                    return
        finally:
            outputs.close()  # stops the model's LLM thread when the request went away early
        if not spec.stream:
            whole = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
            self.emit("body", audio_codec.encode(whole, self.sample_rate, spec.response_format))


class VoiceJob(Job):
    """Register a zero-shot voice: the prompt's speech tokens, mel and x-vector under ``voice_id``."""

    def __init__(self, loop, voice_id: str, prompt_text: str, prompt_path: str, upload_name: str, voices,
                 text_frontend: bool = True, arrived: Optional[float] = None):
        super().__init__(loop, arrived)
        self.voice_id, self.prompt_text, self.prompt_path = voice_id, prompt_text, prompt_path
        self.upload_name, self.voices, self.text_frontend = upload_name, voices, text_frontend

    def run(self, cosyvoice) -> None:
        if self.voice_id in cosyvoice.frontend.spk2info:
            raise RequestError(f"voice '{self.voice_id}' exists already; choose another id", "id", 409,
                               "voice_exists")
        # normalized as inference_zero_shot normalizes a prompt text, so the voice speaks as a direct call would
        text = cosyvoice.frontend.text_normalize(self.prompt_text, split=False, text_frontend=self.text_frontend)
        try:
            cosyvoice.add_zero_shot_spk(text, self.prompt_path, self.voice_id)
        except PromptError as e:  # the frontend's own check: readable, >= 16 kHz, at most 30 s
            raise RequestError(str(e).replace(self.prompt_path, self.upload_name), "file") from None
        self.emit("voice", self.voices.add(self.voice_id, "zero-shot", "registered"))


@dataclass
class SynthesisWorker:
    """The thread that runs every job, in arrival order, with ``max_queue`` jobs waiting at most."""
    cosyvoice: object
    max_queue: int = 16
    _queue: queue.Queue = field(init=False)
    _thread: Optional[threading.Thread] = field(init=False, default=None)
    running: Optional[Job] = field(init=False, default=None)

    def __post_init__(self):
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {self.max_queue}")
        self._queue = queue.Queue(maxsize=self.max_queue)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cosyvoice-synthesis", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"server busy: {self.max_queue} requests are waiting already (--max_queue "
                            f"{self.max_queue}); retry later") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running job, drop the waiting ones, end the thread."""
        if self._thread is None:
            return
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.set()
                job.emit("error", RequestError("the server is shutting down", None, 503, "shutting_down"))
                job.emit("end", job.timing)
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                continue
            self.running = job
            job.timing.started = time.monotonic()
            try:
                job.run(self.cosyvoice)
            except BaseException as e:  # noqa: BLE001 - handed to the request, which answers with it
                if not isinstance(e, (RequestError, UserError)):  # a user's input error needs no traceback
                    logger.exception("job of %s failed", type(job).__name__)
                job.emit("error", e)
            finally:
                job.timing.ended = time.monotonic()
                self.running = None
                job.emit("end", job.timing)
