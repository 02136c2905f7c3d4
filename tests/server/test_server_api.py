"""The speech server through real clients on loopback: the openai package, curl and raw HTTP. Every response's audio
is compared with the direct CosyVoice2 call of the same seed; every bad request gets an OpenAI-style 4xx."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from server_helpers import API_KEY, AUTH, LONG_TEXT, SAMPLE_RATE, Gate, direct, read_pcm, read_wav, run_server

SPEECH = "/v1/audio/speech"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def speech(url: str, body: dict, headers=AUTH, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + SPEECH, json=body, headers=headers, timeout=timeout)


@pytest.fixture(scope="module")
def zero_shot_voice(server, prompt):
    """A zero-shot voice registered over HTTP from the prompt clip."""
    wav, text = prompt
    with open(wav, "rb") as f:
        r = httpx.post(server + "/v1/voices", headers=AUTH, data={"id": "narrator", "text": text},
                       files={"file": ("prompt.wav", f, "audio/wav")}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json() == {"id": "narrator", "object": "voice", "kind": "zero-shot", "sample_rate": SAMPLE_RATE,
                        "source": "registered"}
    return "narrator"


# ------------------------------------------------------------------------------------------------ openai client
def test_openai_create_returns_a_playable_wav_of_the_fine_tuned_speaker(server, cosyvoice):
    audio = client(server).audio.speech.create(model="cosyvoice2", voice="demo", input="你好")
    samples = read_wav(audio.content)
    assert len(samples) > 0 and np.abs(samples).max() > 0
    # with a seed: exactly the direct API's audio
    audio = client(server).audio.speech.create(model="cosyvoice2", voice="demo", input="你好",
                                               extra_body={"seed": 11})
    assert np.array_equal(read_wav(audio.content), direct(cosyvoice, "demo", "你好", seed=11))


def test_openai_streaming_response_yields_first_bytes_before_the_rest_is_synthesized(server, cosyvoice,
                                                                                    monkeypatch):
    expected_chunks = list(cosyvoice.inference_sft(LONG_TEXT, "demo", stream=True, seed=3))
    assert len(expected_chunks) >= 2
    expected = direct(cosyvoice, "demo", LONG_TEXT, stream=True, seed=3)
    gate = Gate(monkeypatch, cosyvoice, free=1)  # the model stops after its first chunk until the gate opens
    received = b""
    with client(server).audio.speech.with_streaming_response.create(
            model="cosyvoice2", voice="demo", input=LONG_TEXT, response_format="wav",
            extra_body={"stream": True, "seed": 3}) as response:
        assert response.headers["content-type"] == "audio/wav"
        pieces = response.iter_bytes()
        received += next(pieces)
        # the header and the first chunk arrived while the model was held before its second chunk
        assert gate.yielded == 1 and not gate.event.is_set()
        assert len(received) > 44
        gate.open()
        for piece in pieces:
            received += piece
    assert gate.yielded == len(expected_chunks)
    assert np.array_equal(read_wav(received), expected)
    assert float(response.headers["x-first-chunk-ms"]) > 0


def test_openai_errors_are_openai_errors(server):
    with pytest.raises(openai.BadRequestError) as e:
        client(server).audio.speech.create(model="cosyvoice2", voice="alloy", input="你好")
    assert e.value.status_code == 400
    assert e.value.body["param"] == "voice" and "unknown voice 'alloy'" in e.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).audio.speech.create(
            model="cosyvoice2", voice="demo", input="你好")


# ---------------------------------------------------------------------------------------------------------- curl
def curl(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.fail("curl not found (apt-get install -y curl)")
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args], capture_output=True,
                          timeout=timeout + 10)


def test_curl_whole_file_stream_and_error(server, cosyvoice, tmp_path):
    out = tmp_path / "out.wav"
    body = json.dumps({"model": "cosyvoice2", "voice": "demo", "input": "你好", "seed": 5})
    r = curl("-o", str(out), "-w", "%{http_code} %{content_type}", "-H", f"Authorization: Bearer {API_KEY}",
             "-H", "Content-Type: application/json", "-d", body, server + SPEECH)
    assert r.stdout.decode() == "200 audio/wav", r.stderr
    assert np.array_equal(read_wav(out.read_bytes()), direct(cosyvoice, "demo", "你好", seed=5))

    body = json.dumps({"model": "cosyvoice2", "voice": "demo", "input": LONG_TEXT, "seed": 5, "stream": True,
                       "response_format": "pcm"})
    r = curl("-N", "-D", "-", "-o", str(tmp_path / "out.pcm"), "-H", f"Authorization: Bearer {API_KEY}",
             "-d", body, server + SPEECH)
    assert b"transfer-encoding: chunked" in r.stdout.lower(), r.stdout
    assert np.array_equal(read_pcm((tmp_path / "out.pcm").read_bytes()),
                          direct(cosyvoice, "demo", LONG_TEXT, stream=True, seed=5))

    r = curl("-w", "\n%{http_code}", "-H", "Authorization: Bearer nope", "-d", body, server + SPEECH)
    text, code = r.stdout.decode().rsplit("\n", 1)
    assert code == "401" and json.loads(text)["error"]["code"] == "invalid_api_key"


def test_curl_registers_a_zero_shot_voice_that_speaks_like_the_direct_api(server, cosyvoice, prompt):
    wav, text = prompt
    r = curl("-w", "\n%{http_code}", "-H", f"Authorization: Bearer {API_KEY}", "-F", "id=curl_voice",
             "-F", f"text={text}", "-F", f"file=@{wav}", server + "/v1/voices")
    body, code = r.stdout.decode().rsplit("\n", 1)
    assert code == "201", body
    assert json.loads(body)["kind"] == "zero-shot"
    voices = httpx.get(server + "/v1/voices", headers=AUTH).json()["data"]
    assert {"id": "curl_voice", "object": "voice", "kind": "zero-shot", "sample_rate": SAMPLE_RATE,
            "source": "registered"} in voices
    r = speech(server, {"model": "cosyvoice2", "voice": "curl_voice", "input": "今天天气很好。", "seed": 8})
    assert r.status_code == 200, r.text
    # the same as cloning the prompt directly (prompt features extracted anew, transcript normalized)
    expected = np.concatenate([out["tts_speech"].numpy().reshape(-1) for out in
                               cosyvoice.inference_zero_shot("今天天气很好。", text, str(wav), seed=8)])
    assert np.array_equal(read_wav(r.content), np.rint(np.clip(expected, -1, 1) * 32767).astype(np.int16))


# ------------------------------------------------------------------------------------------------- voices, modes
def test_voices_models_health_and_page(server, zero_shot_voice):
    voices = httpx.get(server + "/v1/voices", headers=AUTH).json()
    assert voices["object"] == "list"
    by_id = {v["id"]: v for v in voices["data"]}
    assert by_id["demo"] == {"id": "demo", "object": "voice", "kind": "sft", "sample_rate": SAMPLE_RATE,
                             "source": "model"}
    assert by_id[zero_shot_voice]["kind"] == "zero-shot"
    assert httpx.get(server + "/v1/models", headers=AUTH).json()["data"][0]["id"] == "cosyvoice2"
    health = httpx.get(server + "/healthz").json()  # no key needed
    assert health["status"] == "ok" and health["sample_rate"] == SAMPLE_RATE and health["api_key"] is True
    assert health["max_queue"] == 16 and "wav" in health["formats"]
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/audio/speech" in page.text and "getReader" in page.text


def test_zero_shot_and_instructions_equal_the_direct_api(server, cosyvoice, zero_shot_voice):
    for extra in ({}, {"instructions": "用开心的语气说"}):
        r = speech(server, {"model": "tts-1", "voice": {"id": zero_shot_voice}, "input": "你好世界。", "seed": 2,
                            **extra})
        assert r.status_code == 200, r.text
        expected = direct(cosyvoice, zero_shot_voice, "你好世界。", seed=2, instructions=extra.get("instructions", ""))
        assert np.array_equal(read_wav(r.content), expected), extra
    plain = speech(server, {"model": "cosyvoice2", "voice": zero_shot_voice, "input": "你好世界。", "seed": 2})
    instructed = speech(server, {"model": "cosyvoice2", "voice": zero_shot_voice, "input": "你好世界。", "seed": 2,
                                 "instructions": "用开心的语气说"})
    assert plain.content != instructed.content  # the instruction reaches the model


def test_formats_and_speed(server, cosyvoice):
    base = {"model": "cosyvoice2", "voice": "demo", "input": "你好", "seed": 4}
    expected = direct(cosyvoice, "demo", "你好", seed=4)
    pcm = speech(server, {**base, "response_format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm" and pcm.headers["x-sample-rate"] == "24000"
    assert np.array_equal(read_pcm(pcm.content), expected)
    flac = speech(server, {**base, "response_format": "flac"})
    decoded, sr = sf.read(io.BytesIO(flac.content), dtype="int16")
    assert sr == SAMPLE_RATE and np.abs(decoded.astype(int) - expected).max() <= 1
    for fmt, media in (("mp3", "audio/mpeg"), ("opus", "audio/ogg")):
        r = speech(server, {**base, "response_format": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == media, r.text
        decoded, sr = sf.read(io.BytesIO(r.content))
        assert sr == SAMPLE_RATE and len(decoded) > 0.5 * len(expected)
    slow = speech(server, {**base, "speed": 0.5})
    assert np.array_equal(read_wav(slow.content), direct(cosyvoice, "demo", "你好", seed=4, speed=0.5))
    assert len(read_wav(slow.content)) > 1.5 * len(expected)


# ------------------------------------------------------------------------------------------------- concurrency
def test_eight_concurrent_seeded_requests_equal_their_sequential_results(server, cosyvoice):
    bodies = [{"model": "cosyvoice2", "voice": "demo", "input": text, "seed": seed, "stream": seed % 2 == 0,
               "response_format": "pcm"}
              for seed, text in enumerate(["你好。", LONG_TEXT, "Hello there.", "谢谢你。"] * 2, start=100)]
    sequential = [speech(server, body).content for body in bodies]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda body: speech(server, body), bodies))
    for body, seq, conc in zip(bodies, sequential, concurrent):
        assert conc.status_code == 200, conc.text
        assert conc.content == seq, body
        assert np.array_equal(read_pcm(conc.content),
                              direct(cosyvoice, "demo", body["input"], stream=body["stream"], seed=body["seed"]))
    assert len({c.content for c in concurrent}) == len(bodies)  # every request got its own audio


def test_full_queue_answers_503_and_the_queued_requests_still_finish(cosyvoice, monkeypatch):
    from cosyvoice.server.app import ServerConfig, create_app

    gate = Gate(monkeypatch, cosyvoice, free=0)  # every synthesis waits before its first chunk
    body = {"model": "cosyvoice2", "voice": "demo", "input": "你好", "seed": 1}
    with run_server(create_app(cosyvoice, ServerConfig(max_queue=2))) as url:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(speech, url, body, {})
            assert gate.started.wait(30)  # the first one runs (held at the gate) ...
            queued = [pool.submit(speech, url, body, {}) for _ in range(2)]
            deadline = time.monotonic() + 30
            while httpx.get(url + "/healthz").json()["waiting"] < 2:  # ... and two wait in the queue
                assert time.monotonic() < deadline
                time.sleep(0.05)
            busy = speech(url, body, {})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "server_busy" and "--max_queue 2" in busy.json()["error"]["message"]
            gate.open()
            results = [first.result(60)] + [q.result(60) for q in queued]
    assert [r.status_code for r in results] == [200, 200, 200]
    assert len({r.content for r in results}) == 1  # same seed, same audio


def test_client_that_goes_away_stops_its_synthesis(server, cosyvoice, monkeypatch, caplog):
    chunks = len(list(cosyvoice.inference_sft(LONG_TEXT, "demo", stream=True, seed=3)))
    assert chunks >= 3
    gate = Gate(monkeypatch, cosyvoice, free=1)
    body = {"model": "cosyvoice2", "voice": "demo", "input": LONG_TEXT, "seed": 3, "stream": True,
            "response_format": "pcm"}
    with caplog.at_level("INFO", logger="cosyvoice.server"):
        with httpx.stream("POST", server + SPEECH, json=body, headers=AUTH, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_raw())
        # the client left while the model was held before its second chunk: the server notices at once
        deadline = time.monotonic() + 30
        while not any("client gone" in rec.getMessage() for rec in caplog.records):
            assert time.monotonic() < deadline, [rec.getMessage() for rec in caplog.records]
            time.sleep(0.05)
    gate.open()
    deadline = time.monotonic() + 30
    while httpx.get(server + "/healthz").json()["busy"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # it stopped at the first chunk or at the one in the making when the client left: the rest was never made
    assert gate.yielded in (1, 2) and gate.yielded < chunks
    assert speech(server, {"model": "cosyvoice2", "voice": "demo", "input": "你好"}).status_code == 200


# ------------------------------------------------------------------------------------------------ bad requests
OK = {"model": "cosyvoice2", "voice": "demo", "input": "你好"}
BAD_SPEECH = [  # (what, body, status, param)
    ("no model", {"voice": "demo", "input": "你好"}, 400, "model"),
    ("no input", {"model": "cosyvoice2", "voice": "demo"}, 400, "input"),
    ("no voice", {"model": "cosyvoice2", "input": "你好"}, 400, "voice"),
    ("unknown model", {**OK, "model": "whisper-1"}, 400, "model"),
    ("input not a string", {**OK, "input": ["你好"]}, 400, "input"),
    ("empty input", {**OK, "input": ""}, 400, "input"),
    ("blank input", {**OK, "input": "  \n "}, 400, "input"),
    ("input too long", {**OK, "input": "你" * 201}, 400, "input"),
    ("nothing to say", {**OK, "input": "，。！"}, 400, "input"),
    ("only emoji", {**OK, "input": "🙂🙂"}, 400, "input"),
    ("template variable", {**OK, "input": "你好，{NICKNAME}！"}, 400, "input"),
    ("markup", {**OK, "input": "<color=#FFD780FF>小心</color>"}, 400, "input"),
    ("unknown voice", {**OK, "voice": "alloy"}, 400, "voice"),
    ("voice not a string", {**OK, "voice": 3}, 400, "voice"),
    ("bad voice object", {**OK, "voice": {"name": "demo"}}, 400, "voice"),
    ("unsupported format", {**OK, "response_format": "aac"}, 400, "response_format"),
    ("unknown format", {**OK, "response_format": "wave"}, 400, "response_format"),
    ("speed too low", {**OK, "speed": 0.1}, 400, "speed"),
    ("speed too high", {**OK, "speed": 4.5}, 400, "speed"),
    ("speed a string", {**OK, "speed": "fast"}, 400, "speed"),
    ("speed a bool", {**OK, "speed": True}, 400, "speed"),
    ("stream not a bool", {**OK, "stream": "yes"}, 400, "stream"),
    ("stream as mp3", {**OK, "stream": True, "response_format": "mp3"}, 400, "response_format"),
    ("stream with speed", {**OK, "stream": True, "speed": 1.5}, 400, "speed"),
    ("sse", {**OK, "stream_format": "sse"}, 400, "stream_format"),
    ("negative seed", {**OK, "seed": -1}, 400, "seed"),
    ("float seed", {**OK, "seed": 1.5}, 400, "seed"),
    ("string seed", {**OK, "seed": "1"}, 400, "seed"),
    ("huge seed", {**OK, "seed": 2 ** 64}, 400, "seed"),
    ("instructions for an SFT voice", {**OK, "instructions": "用开心的语气说"}, 400, "instructions"),
    ("instructions not a string", {**OK, "instructions": 1}, 400, "instructions"),
    ("unknown field", {**OK, "temperature": 0.7}, 400, "temperature"),
]


def check_error(r: httpx.Response, status: int, param):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"] and "\n" not in error["message"]
    assert error["type"] == ("authentication_error" if status == 401 else "invalid_request_error")
    assert "Traceback" not in r.text
    return error


@pytest.mark.parametrize("what,body,status,param", BAD_SPEECH, ids=[case[0] for case in BAD_SPEECH])
def test_bad_speech_request(server, what, body, status, param):
    check_error(speech(server, body), status, param)


def test_bad_bodies_keys_and_routes(server):
    raw = lambda content, headers=AUTH: httpx.post(server + SPEECH, content=content, headers=headers)  # noqa: E731
    assert "not valid JSON" in check_error(raw(b"{model: cosyvoice2"), 400, None)["message"]
    check_error(raw(b"[1, 2]"), 400, None)
    check_error(raw(b"{}" + b" " * (2 << 20)), 413, None)
    check_error(speech(server, OK, headers={}), 401, None)
    check_error(speech(server, OK, headers={"Authorization": f"Basic {API_KEY}"}), 401, None)
    check_error(httpx.get(server + "/v1/voices"), 401, None)
    check_error(httpx.get(server + "/v1/nothing", headers=AUTH), 404, None)
    check_error(httpx.get(server + SPEECH, headers=AUTH), 405, None)


def test_bad_voice_uploads(server, prompt, tmp_path):
    wav, text = prompt

    def upload(data=None, files=None):
        return httpx.post(server + "/v1/voices", headers=AUTH, data=data, files=files, timeout=60)

    def clip(name, seconds, rate):
        path = tmp_path / name
        sf.write(path, np.zeros(int(seconds * rate), np.float32) + 0.01, rate)
        return ("p.wav", path.read_bytes(), "audio/wav")

    good = ("prompt.wav", wav.read_bytes(), "audio/wav")
    check_error(httpx.post(server + "/v1/voices", headers=AUTH, json={"id": "x"}), 400, "file")
    check_error(upload({"text": text}, {"file": good}), 400, "id")
    check_error(upload({"id": "../etc", "text": text}, {"file": good}), 400, "id")
    check_error(upload({"id": "demo", "text": text}, {"file": good}), 409, "id")
    check_error(upload({"id": "v1"}, {"file": good}), 400, "text")
    check_error(upload({"id": "v1", "text": " "}, {"file": good}), 400, "text")
    check_error(upload({"id": "v1", "text": "{F#她}{M#他}来了"}, {"file": good}), 400, "text")
    check_error(upload({"id": "v1", "text": text}), 400, "file")
    check_error(upload({"id": "v1", "text": text, "extra": "1"}, {"file": good}), 400, "extra")
    unreadable = check_error(upload({"id": "v1", "text": text}, {"file": ("notes.wav", b"not audio", "audio/wav")}),
                             400, "file")
    assert "notes.wav" in unreadable["message"] and "/tmp" not in unreadable["message"]
    low = check_error(upload({"id": "v1", "text": text}, {"file": clip("low.wav", 2, 8000)}), 400, "file")
    assert "8000 Hz" in low["message"]
    long = check_error(upload({"id": "v1", "text": text}, {"file": clip("long.wav", 31, 16000)}), 400, "file")
    assert "31.0 s" in long["message"]
    short = check_error(upload({"id": "v1", "text": text}, {"file": clip("short.wav", 0.01, 16000)}), 400, "file")
    assert "0.01 s long; it needs at least 0.5 s" in short["message"]
    check_error(upload({"id": "v1", "text": text}, {"file": ("big.wav", b"\0" * (3 << 20), "audio/wav")}),
                413, "file")
    ids = [v["id"] for v in httpx.get(server + "/v1/voices", headers=AUTH).json()["data"]]
    assert "v1" not in ids  # nothing half-registered


def test_unexpected_failure_is_a_one_line_500_and_the_server_goes_on(server, cosyvoice, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the flow exploded\nsecond line")
        yield  # noqa: unreachable - makes it a generator

    monkeypatch.setattr(cosyvoice, "inference_sft", broken)
    r = speech(server, OK)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert error["message"] == "synthesis failed: RuntimeError: the flow exploded (see the server log)"
    from cosyvoice.utils.errors import UserError

    def refused(*args, **kwargs):
        raise UserError("speaker table is damaged: rewrite it with run.sh stage 4")
        yield  # noqa: unreachable - makes it a generator

    monkeypatch.setattr(cosyvoice, "inference_sft", refused)  # a user error found late is still a 4xx
    error = check_error(speech(server, OK), 400, None)
    assert error["message"] == "speaker table is damaged: rewrite it with run.sh stage 4"
    monkeypatch.undo()
    assert speech(server, OK).status_code == 200


def test_worker_thread_is_the_only_caller_of_the_model(server, cosyvoice, monkeypatch):
    """Every synthesis of concurrent requests runs in the one synthesis thread, never two at once."""
    real = cosyvoice.inference_sft
    threads, active, overlap = set(), [0], [False]
    lock = threading.Lock()

    def watched(*args, **kwargs):
        threads.add(threading.current_thread().name)
        with lock:
            active[0] += 1
            overlap[0] |= active[0] > 1
        try:
            yield from real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(cosyvoice, "inference_sft", watched)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: speech(server, {**OK, "seed": i, "stream": i % 2 == 0}), range(6)))
    assert [r.status_code for r in results] == [200] * 6
    assert threads == {"cosyvoice-synthesis"} and not overlap[0]
