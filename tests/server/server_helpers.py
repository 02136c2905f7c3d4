"""Helpers for the speech server tests: run an app under uvicorn on a free loopback port, the direct-API audio a
request must equal, a gate that holds the model between chunks, and decoding of the audio that came back (a server
process started as a user starts one: tests/process_helpers.py, Served)."""
from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from typing import Iterator, Optional

import numpy as np
import soundfile as sf

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SAMPLE_RATE = 24000
LONG_TEXT = "今天的会议改到下午三点，请大家准时参加。"


@contextlib.contextmanager
def run_server(app, timeout: float = 30.0) -> Iterator[str]:
    """The app served by uvicorn in a thread, on a socket bound here (127.0.0.1, a free port); yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def pcm16(audio) -> np.ndarray:
    """What the server sends for float samples: int16, x * 32767 rounded (see cosyvoice.server.audio)."""
    return np.rint(np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1, 1) * 32767).astype(np.int16)


def direct(cosyvoice, voice: str, text: str, stream: bool = False, seed: Optional[int] = None, speed: float = 1.0,
           instructions: str = "") -> np.ndarray:
    """int16 samples of a direct CosyVoice2 call: what the server must send for the same request."""
    kwargs = dict(stream=stream, speed=speed, seed=seed)
    if voice in cosyvoice.frontend.spk2info and "embedding" in cosyvoice.frontend.spk2info[voice]:
        outputs = cosyvoice.inference_sft(text, voice, **kwargs)
    elif instructions:
        outputs = cosyvoice.inference_instruct2(text, instructions, "", zero_shot_spk_id=voice, **kwargs)
    else:
        outputs = cosyvoice.inference_zero_shot(text, "", "", zero_shot_spk_id=voice, **kwargs)
    return pcm16(np.concatenate([out["tts_speech"].numpy().reshape(-1) for out in outputs]))


def read_wav(data: bytes) -> np.ndarray:
    """int16 samples of a 24 kHz mono wav (a streamed one too), checked to be exactly that."""
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16"), info
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert len(data) == 44 + 2 * len(samples)
    return samples


def read_pcm(data: bytes) -> np.ndarray:
    assert len(data) % 2 == 0
    return np.frombuffer(data, dtype="<i2")


class Gate:
    """Wraps ``cosyvoice.inference_sft`` so that it waits for ``open()`` before each chunk after the first
    ``free`` ones (the model does no more work meanwhile); ``yielded`` counts the chunks handed out."""

    def __init__(self, monkeypatch, cosyvoice, free: int = 1):
        self.event = threading.Event()
        self.yielded = 0
        self.started = threading.Event()
        real = cosyvoice.inference_sft

        def gated(*args, **kwargs):
            self.started.set()
            for out in real(*args, **kwargs):
                if self.yielded >= free and not self.event.wait(60):
                    raise RuntimeError("gate never opened")
                self.yielded += 1
                yield out

        monkeypatch.setattr(cosyvoice, "inference_sft", gated)

    def open(self) -> None:
        self.event.set()
