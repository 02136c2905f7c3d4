"""An OpenAI-compatible speech server over one loaded :class:`~cosyvoice.cli.cosyvoice.CosyVoice2` (or CosyVoice3).

    app = create_app(CosyVoice2("exp/demo_voice/model"), ServerConfig(api_key="..."))

Routes: ``POST /v1/audio/speech`` (OpenAI's fields, plus ``stream``, ``seed``), ``GET /v1/voices``,
``POST /v1/voices`` (register a zero-shot voice from an uploaded prompt), ``GET /v1/models``, ``GET /healthz`` and the
try-it page at ``/``. Every error is OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``, with a
4xx status naming the field (5xx only for a busy or broken server, never with a traceback). Model work runs in the
single thread of :mod:`cosyvoice.server.worker`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cosyvoice.server import audio as audio_codec
from cosyvoice.server.worker import QueueFull, RequestError, SpeechJob, SpeechSpec, SynthesisWorker, VoiceJob
from cosyvoice.text.checks import text_problem
from cosyvoice.utils.errors import UserError, one_line

logger = logging.getLogger("cosyvoice.server")

# OpenAI's TTS model names, accepted besides ServerConfig.model_name so that clients with a fixed list work
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
SPEECH_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions", "stream", "stream_format",
                 "seed")
SPEED_RANGE = (0.25, 4.0)   # OpenAI's
MAX_SEED = 2 ** 63 - 1
VOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


@dataclass
class ServerConfig:
    model_name: str = "cosyvoice2"       # the id of GET /v1/models and the `model` requests name
    api_key: str = ""                    # non-empty: /v1/* needs `Authorization: Bearer <api_key>`
    max_input_chars: int = 4096          # longest `input` (and `instructions`), OpenAI's limit
    max_upload_bytes: int = 10 << 20     # largest POST /v1/voices body
    max_queue: int = 16                  # requests waiting while one is synthesized; more get 503
    default_format: str = "wav"          # response_format when a request gives none (OpenAI's default is mp3)
    text_frontend: bool = True           # normalize text (numbers, symbols) before synthesis


class ApiError(Exception):
    """An error answered as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 401:
            kind = "authentication_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class Voices:
    """The voices requests may name, readable from the event loop while the worker thread adds to them."""

    def __init__(self, spk2info: dict, sample_rate: int, characters=()):
        self._lock = threading.Lock()
        self.sample_rate = sample_rate
        self._table: Dict[str, dict] = {}
        for spk, info in list(spk2info.items()):
            kind = "sft" if "embedding" in info else "zero-shot" if "flow_embedding" in info else None
            if kind is None:
                logger.warning("speaker '%s' of spk2info.pt has neither an SFT embedding nor a zero-shot prompt; "
                               "not served", spk)
                continue
            self.add(spk, kind, "character" if spk in characters else "model")

    def add(self, voice_id: str, kind: str, source: str) -> dict:
        entry = {"id": voice_id, "object": "voice", "kind": kind, "sample_rate": self.sample_rate, "source": source}
        with self._lock:
            self._table[voice_id] = entry
        return dict(entry)

    def get(self, voice_id: str) -> Optional[dict]:
        with self._lock:
            entry = self._table.get(voice_id)
        return dict(entry) if entry else None

    def list(self) -> List[dict]:
        with self._lock:
            return [dict(self._table[k]) for k in sorted(self._table)]


# ------------------------------------------------------------------------------------------------ request parsing
async def read_body(request: Request, limit: int, what: str, param: Optional[str]) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"{what} is larger than {limit} bytes", param, "request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_big
        parts.append(part)
    return b"".join(parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_speech(data, config: ServerConfig, voices: Voices, formats) -> SpeechSpec:
    """A :class:`SpeechSpec` from a request's JSON, or an :class:`ApiError` naming the first bad field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object with model, input and voice")
    unknown = [k for k in data if k not in SPEECH_FIELDS]
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}' (fields: {', '.join(SPEECH_FIELDS)})", unknown[0])
    for name in ("model", "input", "voice"):
        if data.get(name) is None:
            raise ApiError(400, f"'{name}' is required", name)

    models = (config.model_name,) + OPENAI_MODELS
    if data["model"] not in models:
        raise ApiError(400, f"unknown model {data['model']!r}; this server serves {', '.join(models)}", "model",
                       "model_not_found")

    text = data["input"]
    if not isinstance(text, str):
        raise ApiError(400, f"'input' must be a string, got {type(text).__name__}", "input")
    if not text.strip():
        raise ApiError(400, "'input' is empty: give the text to speak", "input")
    if len(text) > config.max_input_chars:
        raise ApiError(400, f"'input' is {len(text)} characters long; at most {config.max_input_chars} "
                            f"(split the text into several requests)", "input", "input_too_long")
    problem = text_problem(text)  # the rules the CLI and the recipe apply to every text
    if problem:
        raise ApiError(400, f"'input' {unspeakable(problem)}", "input", problem[0])

    voice = data["voice"]
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]
    if not isinstance(voice, str):
        raise ApiError(400, "'voice' must be a voice id (a string, or {\"id\": ...})", "voice")
    entry = voices.get(voice)
    if entry is None:
        known = ", ".join(v["id"] for v in voices.list()) or "none (register one with POST /v1/voices)"
        raise ApiError(400, f"unknown voice {voice!r}; voices: {known}", "voice", "voice_not_found")

    fmt = data.get("response_format", config.default_format)
    if fmt not in formats:
        raise ApiError(400, f"response_format {fmt!r} is not supported; use one of {', '.join(formats)}",
                       "response_format")

    speed = data.get("speed", 1.0)
    if not _is_number(speed) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise ApiError(400, f"'speed' must be a number from {SPEED_RANGE[0]} to {SPEED_RANGE[1]}, got {speed!r}",
                       "speed")

    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {stream!r}", "stream")
    stream_format = data.get("stream_format", "audio")
    if stream_format != "audio":
        raise ApiError(400, f"stream_format {stream_format!r} is not supported; only 'audio' (the audio bytes "
                            f"themselves)", "stream_format")
    if stream and fmt not in audio_codec.STREAMABLE:
        raise ApiError(400, f"stream: true sends {' or '.join(audio_codec.STREAMABLE)}; {fmt} is sent whole "
                            f"(use stream: false, or response_format wav/pcm)", "response_format")
    if stream and speed != 1.0:
        raise ApiError(400, "'speed' other than 1.0 needs stream: false (streaming synthesis runs at 1.0)", "speed")

    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
        raise ApiError(400, f"'seed' must be an integer from 0 to {MAX_SEED}, got {seed!r}", "seed")

    instructions = data.get("instructions", "")
    if not isinstance(instructions, str):
        raise ApiError(400, f"'instructions' must be a string, got {type(instructions).__name__}", "instructions")
    if len(instructions) > config.max_input_chars:
        raise ApiError(400, f"'instructions' is {len(instructions)} characters long; at most "
                            f"{config.max_input_chars}", "instructions")
    if instructions.strip() and entry["kind"] == "sft":
        raise ApiError(400, f"voice {voice!r} is an SFT speaker, which takes no instructions; instructions need a "
                            f"zero-shot voice (register one with POST /v1/voices)", "instructions")
    return SpeechSpec(text=text, voice=voice, kind=entry["kind"], response_format=fmt, stream=stream,
                      speed=float(speed), seed=seed, instructions=instructions.strip(),
                      text_frontend=config.text_frontend)


def unspeakable(problem) -> str:
    """A :func:`cosyvoice.text.checks.text_problem` result, told as the rest of a sentence about a field."""
    reason, part = problem
    if reason == "no_speakable_text":
        return f"{part!r} has nothing to say (no letter, digit or CJK character): give words"
    return (f"holds {reason.replace('_', ' ')} {part!r}, which would be read out literally: replace it by the "
            f"words to say")


def job_error(e: BaseException) -> ApiError:
    """The answer to an exception a job raised: its field for a request error, a one-line 500 otherwise."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, RequestError):
        return ApiError(e.status, str(e), e.param, e.code)
    if isinstance(e, UserError):  # bad input that got past the request checks: still the client's to fix
        return ApiError(400, one_line(e), None, "invalid_input")
    return ApiError(500, f"synthesis failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         " (see the server log)", None, "internal_error")


# ---------------------------------------------------------------------------------------------------- the app
def create_app(cosyvoice, config: Optional[ServerConfig] = None) -> FastAPI:
    """The FastAPI app serving ``cosyvoice``; its synthesis thread runs while the app's lifespan does."""
    config = config or ServerConfig()
    formats = audio_codec.supported_formats()
    if config.default_format not in formats:
        raise ValueError(f"default_format {config.default_format!r} is not one of {', '.join(formats)}")
    sample_rate = cosyvoice.sample_rate
    voices = Voices(cosyvoice.frontend.spk2info, sample_rate, getattr(cosyvoice, "characters", {}))
    worker = SynthesisWorker(cosyvoice, config.max_queue)
    page = PAGE.read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        # anyio loads its asyncio backend on first use, i.e. in the first streamed response; under load (the
        # synthesis thread holds the GIL) that cost ~0.2 s of the first request's TTFB, so load it now
        async with anyio.create_task_group():
            pass
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="CosyVoice speech server", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.worker, app.state.voices, app.state.config, app.state.formats = worker, voices, config, formats

    @app.exception_handler(ApiError)
    async def _api_error(_request, e: ApiError):
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        message = f"{request.method} {request.url.path}: {e.detail}"
        return ApiError(e.status_code, message, None, None, getattr(e, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return job_error(e).response()

    async def check_key(request: Request) -> None:
        if not config.api_key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' (the key the server "
                                "was started with)", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})

    async def next_item(job, request: Request, waiter: Optional[asyncio.Task]):
        """The job's next item; cancels the job if the client goes away while it waits."""
        waiter = waiter or asyncio.ensure_future(job.items.get())
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=1.0)
            if done:
                return waiter.result()
            if await request.is_disconnected():
                job.cancel.set()
                waiter.cancel()
                raise ApiError(499, "client closed the request", None, "client_closed")

    def submit(job) -> None:
        try:
            worker.submit(job)
        except QueueFull as e:
            raise ApiError(503, str(e), None, "server_busy", {"Retry-After": "1"}) from None

    def log_speech(request_id: str, spec: SpeechSpec, timing, outcome: str) -> None:
        total = timing.since_arrival(timing.ended)
        rtf = total / timing.audio_seconds if timing.audio_seconds > 0 else float("nan")
        logger.info("speech %s %s: voice=%s mode=%s format=%s stream=%s chars=%d seed=%s | queue %.3f s, "
                    "first chunk %.3f s (TTFB), total %.3f s, %d chunk(s), audio %.2f s, RTF %.3f",
                    request_id, outcome, spec.voice, spec.mode, spec.response_format, spec.stream, len(spec.text),
                    spec.seed, timing.since_arrival(timing.started), timing.since_arrival(timing.first_chunk),
                    total, timing.chunks, timing.audio_seconds, rtf)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @v1.post("/audio/speech")
    async def speech(request: Request):
        arrived = time.monotonic()
        body = await read_body(request, 6 * config.max_input_chars + (64 << 10), "the request body", None)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise ApiError(400, f"the body is not valid JSON ({e}); send application/json with model, input and "
                                f"voice") from None
        spec = parse_speech(data, config, voices, formats)
        request_id = uuid.uuid4().hex[:12]
        job = SpeechJob(asyncio.get_running_loop(), spec, sample_rate, arrived)
        submit(job)
        kind, value = await next_item(job, request, None)
        if kind == "error":
            await next_item(job, request, None)  # its 'end'
            log_speech(request_id, spec, job.timing, "failed")
            raise job_error(value)
        headers = {"X-Request-Id": request_id, "X-Sample-Rate": str(sample_rate),
                   "X-Queue-Ms": f"{1000 * job.timing.since_arrival(job.timing.started):.1f}",
                   "X-First-Chunk-Ms": f"{1000 * job.timing.since_arrival(job.timing.first_chunk):.1f}"}
        media_type = audio_codec.MEDIA_TYPES[spec.response_format]
        if kind == "body":
            await next_item(job, request, None)
            log_speech(request_id, spec, job.timing, "done")
            return Response(value, media_type=media_type, headers=headers)

        async def chunks(first: bytes) -> AsyncIterator[bytes]:
            outcome = "client gone"
            try:
                yield (audio_codec.wav_header(sample_rate) if spec.response_format == "wav" else b"") + first
                while True:
                    kind, value = await job.items.get()
                    if kind == "chunk":
                        yield value
                    elif kind == "error":  # the status line has gone: the stream just ends short
                        logger.error("speech %s: stream cut short: %s", request_id, job_error(value).message)
                        outcome = "cut short"
                    elif kind == "end":
                        outcome = "done" if outcome != "cut short" else outcome
                        return
            finally:
                job.cancel.set()
                log_speech(request_id, spec, job.timing, outcome)

        return StreamingResponse(chunks(value), media_type=media_type, headers=headers)

    @v1.get("/voices")
    async def list_voices():
        return {"object": "list", "data": voices.list()}

    @v1.post("/voices", status_code=201)
    async def add_voice(request: Request):
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "send multipart/form-data with the fields id, text and file (the prompt audio)",
                           "file")
        body = await read_body(request, config.max_upload_bytes, "the upload", "file")

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=4,
                                         max_part_size=64 << 10).parse()
        except MultiPartException as e:
            raise ApiError(400, f"cannot read the form: {e}") from None
        unknown = [k for k in form.keys() if k not in ("id", "text", "file")]
        if unknown:
            raise ApiError(400, f"unknown field '{unknown[0]}' (fields: id, text, file)", unknown[0])
        voice_id, text, upload = form.get("id"), form.get("text"), form.get("file")
        if not isinstance(voice_id, str) or not VOICE_ID.match(voice_id):
            raise ApiError(400, "'id' must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                           "id")
        if voices.get(voice_id) is not None:
            raise ApiError(409, f"voice '{voice_id}' exists already; choose another id", "id", "voice_exists")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'text' is required: the transcript of the prompt audio", "text")
        if len(text) > config.max_input_chars:
            raise ApiError(400, f"'text' is {len(text)} characters long; at most {config.max_input_chars}", "text")
        problem = text_problem(text)
        if problem:
            raise ApiError(400, f"'text' {unspeakable(problem)}", "text", problem[0])
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "'file' is required: the prompt audio (wav/flac/ogg/mp3, >= 16 kHz, at most 30 s)",
                           "file")
        name = os.path.basename(upload.filename or "upload")
        with tempfile.TemporaryDirectory(prefix="cosyvoice-voice-") as tmp:
            path = os.path.join(tmp, "prompt" + os.path.splitext(name)[1][:8])
            with open(path, "wb") as f:
                f.write(await upload.read())
            await upload.close()
            job = VoiceJob(asyncio.get_running_loop(), voice_id, text.strip(), path, f"upload '{name}'", voices,
                           config.text_frontend)
            submit(job)
            kind, value = await next_item(job, request, None)
            await next_item(job, request, None)  # its 'end': the worker is done with the file
        if kind == "error":
            raise job_error(value)
        logger.info("registered zero-shot voice '%s' from %s", voice_id, name)
        return JSONResponse(value, status_code=201)

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "owned_by": "cosyvoice"}]}

    app.include_router(v1)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": config.model_name, "sample_rate": sample_rate,
                "voices": len(voices.list()), "formats": list(formats), "busy": worker.running is not None,
                "waiting": worker.waiting, "max_queue": config.max_queue, "api_key": bool(config.api_key)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    return app
