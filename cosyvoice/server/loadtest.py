"""A bounded load client for the speech server: ``requests`` POSTs to /v1/audio/speech, ``concurrency`` at a time.

Used by the server's load test and by tools/benchmark_server.py. Each result keeps the status, the time to the
first body byte (TTFB) and to the last, and the body. The run is bounded: every request has ``timeout`` seconds and
the whole run ``deadline`` seconds (what has not started by then is not sent).
"""
from __future__ import annotations

import http.client
import json
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass
class Result:
    index: int
    status: int
    ttfb: float          # seconds from sending the request to the first body byte
    latency: float       # seconds from sending the request to the last body byte
    body: bytes
    error: str = ""
    server_first_chunk_ms: Optional[float] = None


def one_request(base_url: str, index: int, body: dict, headers: Dict[str, str], timeout: float) -> Result:
    """One POST /v1/audio/speech over a fresh connection (the standard library's http.client)."""
    parsed = urllib.parse.urlsplit(base_url)
    start = time.monotonic()
    first = None
    parts = []
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=timeout)
    try:
        conn.request("POST", parsed.path.rstrip("/") + "/v1/audio/speech", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        while True:
            part = response.read1(1 << 16)
            if not part:
                break
            if first is None:
                first = time.monotonic()
            parts.append(part)
        end = time.monotonic()
        header = response.getheader("x-first-chunk-ms")
        return Result(index, response.status, (first or end) - start, end - start, b"".join(parts),
                      server_first_chunk_ms=float(header) if header else None)
    except Exception as e:  # noqa: BLE001 - a failed request is a result, reported by the caller
        return Result(index, 0, float("nan"), time.monotonic() - start, b"", f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def run_load(base_url: str, bodies: Sequence[dict], concurrency: int, api_key: str = "", timeout: float = 60.0,
             deadline: float = 300.0) -> List[Result]:
    """POST each of ``bodies`` (in order, ``concurrency`` in flight) and return the results in the same order."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stop_at = time.monotonic() + deadline
    results: List[Optional[Result]] = [None] * len(bodies)

    def task(i: int) -> None:
        if time.monotonic() > stop_at:
            results[i] = Result(i, 0, float("nan"), 0.0, b"", f"not sent: the run passed its {deadline} s deadline")
        else:
            results[i] = one_request(base_url, i, bodies[i], headers, timeout)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="load") as pool:
        list(pool.map(task, range(len(bodies))))
    return results


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(results: Sequence[Result], wall: float, audio_seconds: Sequence[float]) -> Dict[str, float]:
    ok = [r for r in results if r.status == 200]
    ttfb = [r.ttfb for r in ok]
    latency = [r.latency for r in ok]
    return {"requests": len(results), "ok": len(ok), "wall_s": wall,
            "ttfb_p50_s": percentile(ttfb, 50), "ttfb_p95_s": percentile(ttfb, 95),
            "latency_p50_s": percentile(latency, 50), "latency_p95_s": percentile(latency, 95),
            "latency_mean_s": statistics.fmean(latency) if latency else float("nan"),
            "requests_per_s": len(ok) / wall if wall > 0 else float("nan"),
            "audio_s_per_s": sum(audio_seconds) / wall if wall > 0 else float("nan")}


def format_summary(name: str, s: Dict[str, float]) -> str:
    return (f"{name}: {s['ok']}/{s['requests']} ok in {s['wall_s']:.1f} s | TTFB p50 {1000 * s['ttfb_p50_s']:.0f} ms, "
            f"p95 {1000 * s['ttfb_p95_s']:.0f} ms | latency p50 {1000 * s['latency_p50_s']:.0f} ms, "
            f"p95 {1000 * s['latency_p95_s']:.0f} ms | {s['requests_per_s']:.2f} req/s, "
            f"{s['audio_s_per_s']:.2f} s of audio per s")
