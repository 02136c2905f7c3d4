"""A bounded load test on loopback: 50 requests, 8 at a time, two voices, streamed and whole, every response checked
to be valid audio equal to the direct API's audio of its voice and seed. Prints p50/p95 latency and TTFB (the
figures belong to tools/benchmark_server.py; nothing here is timed against a goal)."""
from __future__ import annotations

import time

import httpx2 as httpx
import numpy as np

from cosyvoice.server.loadtest import format_summary, run_load, summarize
from server_helpers import API_KEY, AUTH, SAMPLE_RATE, direct, read_pcm, read_wav

TEXTS = ["你好。", "谢谢你。", "Hello there.", "早上好。", "再见。"]
REQUESTS, CONCURRENCY = 50, 8


def test_fifty_requests_eight_at_a_time(server, cosyvoice, prompt):
    wav, text = prompt
    with open(wav, "rb") as f:
        r = httpx.post(server + "/v1/voices", headers=AUTH, data={"id": "load_voice", "text": text},
                       files={"file": ("prompt.wav", f, "audio/wav")}, timeout=60)
    assert r.status_code == 201, r.text
    # 10 distinct requests (2 voices x 5 texts, alternately streamed), each sent 5 times
    specs = [{"model": "cosyvoice2", "voice": voice, "input": TEXTS[i], "seed": 40 + 5 * v + i,
              "stream": (v + i) % 2 == 0, "response_format": "pcm" if (v + i) % 4 == 0 else "wav"}
             for v, voice in enumerate(["demo", "load_voice"]) for i in range(len(TEXTS))]
    expected = [direct(cosyvoice, s["voice"], s["input"], stream=s["stream"], seed=s["seed"]) for s in specs]
    assert len({e.tobytes() for e in expected}) == len(specs)  # each request has audio of its own
    bodies = [specs[i % len(specs)] for i in range(REQUESTS)]

    start = time.monotonic()
    results = run_load(server, bodies, CONCURRENCY, api_key=API_KEY, timeout=60, deadline=240)
    wall = time.monotonic() - start

    audio_seconds = []
    for result, body in zip(results, bodies):
        assert result.status == 200, (result.index, result.error, result.body[:200])
        samples = read_pcm(result.body) if body["response_format"] == "pcm" else read_wav(result.body)
        assert np.array_equal(samples, expected[specs.index(body)]), (result.index, body)
        audio_seconds.append(len(samples) / SAMPLE_RATE)
    summary = summarize(results, wall, audio_seconds)
    print("\n" + format_summary(f"load {REQUESTS} requests, {CONCURRENCY} concurrent (stand-in, in-process)",
                                summary))
    assert summary["ok"] == REQUESTS and summary["ttfb_p50_s"] <= summary["latency_p50_s"]
    assert all(r.server_first_chunk_ms is not None and r.server_first_chunk_ms > 0 for r in results)
