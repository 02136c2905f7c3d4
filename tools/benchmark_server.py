#!/usr/bin/env python3
"""Speech server benchmark: time to first byte (TTFB), latency and throughput of POST /v1/audio/speech.

    python tools/benchmark_server.py                           # the tiny stand-in (written to a temp dir), CPU
    python tools/benchmark_server.py --model_dir exp/demo_voice/model --voice demo
    python tools/benchmark_server.py --concurrency 1,8 --requests 50 --threads 2

Starts ``python -m cosyvoice.bin.serve`` in its own process on a free loopback port (so the client does not share
the server's interpreter), waits for it, then for each concurrency and for streamed (pcm) and whole (wav) responses
sends ``--requests`` requests (seed = request number, the same line each time) with the load client of
:mod:`cosyvoice.server.loadtest`. Prints one line per run: TTFB and latency p50/p95 as the client sees them,
requests/s and seconds of audio per second; with concurrency 1 the TTFB of a streamed request is the first chunk's
latency, with more it includes the time spent waiting in the server's queue (one synthesis at a time). Writes JSON
(``--out``, default exp/benchmark/server_<model>_<device>.json) with the machine, versions and git commit.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from cosyvoice.audio.io import load_wav
from cosyvoice.server.loadtest import format_summary, run_load, summarize
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.onnx import EmbeddingExtractor

ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("benchmark_server")
DEFAULT_TEXT = "今天的会议改到下午三点，请大家准时参加。"


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default="", help="model dir to serve (empty: the stand-in with the demo "
                                                   "speaker 'demo', written to a temp dir)")
    p.add_argument("--voice", default="demo", help="voice of every request")
    p.add_argument("--text", default=DEFAULT_TEXT, help="line of every request")
    p.add_argument("--requests", type=int, default=30, help="requests per run")
    p.add_argument("--concurrency", default="1,8", help="comma list of concurrencies, one run each")
    p.add_argument("--modes", default="stream,whole", help="comma list of stream (pcm, streamed) and whole (wav)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the server process (OMP_NUM_THREADS)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    p.add_argument("--out", default="", help="JSON output (default exp/benchmark/server_<model>_<device>.json)")
    return p.parse_args(argv)


def stand_in_model_dir(workdir: Path) -> Path:
    """The stand-in plus spk2info.pt with the demo voice's speaker 'demo' (as run.sh stage 4 lays a model dir out)."""
    model_dir = workdir / "CosyVoice2-0.5B-tiny"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_pretrained.py"), "--out_dir", str(model_dir),
                    "--seed", "1986"], check=True, stdout=subprocess.DEVNULL)
    wav = ROOT / "local" / "demo_voice" / "test" / "demo_0005.wav"
    embedding = EmbeddingExtractor(str(model_dir / "campplus.onnx")).extract(load_wav(wav, 16000))
    torch.save({"demo": {"embedding": embedding}}, model_dir / "spk2info.pt")
    return model_dir


def start_server(model_dir: Path, threads: int):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, "-m", "cosyvoice.bin.serve", "--model_dir", str(model_dir),
                             "--port", "0", "--max_queue", "64"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, found = [], threading.Event()

    def collect():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "listening on http://" in line:
                found.set()
        found.set()

    threading.Thread(target=collect, daemon=True).start()
    found.wait(300)
    match = next((re.search(r"listening on (http://\S+)", line) for line in lines if "listening on" in line), None)
    if match is None:
        proc.kill()
        raise SystemExit("the server did not start:\n" + "\n".join(lines[-20:]))
    return proc, match.group(1), lines


def environment(model_dir: Path, args) -> dict:
    import torch

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"model_dir": str(model_dir), "device": "cuda" if torch.cuda.is_available() else "cpu", "cpu": cpu,
            "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
            "python": platform.python_version(), "commit": git("rev-parse", "HEAD")[:10],
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "loadavg_start": os.getloadavg()}


@entry_point("benchmark_server.py")
def main(argv=None) -> int:
    args = get_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"stream", "whole"} or not concurrencies or min(concurrencies) < 1:
        raise UserError("--modes takes stream and/or whole; --concurrency positive integers")
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else stand_in_model_dir(Path(tmp))
        env = environment(model_dir, args)
        proc, url, log_lines = start_server(model_dir, args.threads)
        runs = []
        try:
            import httpx2 as httpx

            deadline = time.monotonic() + 120
            while httpx.get(url + "/healthz", timeout=5).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not answer /healthz")
                time.sleep(0.2)
            name = "stand-in" if not args.model_dir else model_dir.name
            print(f"== server benchmark: {name} on {env['device']} ({env['cpu']}), server threads {args.threads}, "
                  f"torch {env['torch']}, commit {env['commit']}; {args.requests} requests per run, "
                  f"text {args.text!r} ({len(args.text)} chars)")
            for concurrency in concurrencies:
                for mode in modes:
                    stream = mode == "stream"
                    bodies = [{"model": "cosyvoice2", "voice": args.voice, "input": args.text, "seed": i,
                               "stream": stream, "response_format": "pcm" if stream else "wav"}
                              for i in range(args.requests)]
                    start = time.monotonic()
                    results = run_load(url, bodies, concurrency, timeout=args.timeout,
                                       deadline=args.timeout * args.requests)
                    wall = time.monotonic() - start
                    bad = [r for r in results if r.status != 200]
                    if bad:
                        raise SystemExit(f"{len(bad)} request(s) failed, e.g. {bad[0].status} {bad[0].error} "
                                         f"{bad[0].body[:200]!r}")
                    audio = [(len(r.body) - (0 if stream else 44)) / 2 / 24000 for r in results]
                    summary = summarize(results, wall, audio)
                    first_chunk = sorted(r.server_first_chunk_ms for r in results)
                    summary.update(mode=mode, concurrency=concurrency, audio_s_mean=sum(audio) / len(audio),
                                   server_first_chunk_p50_ms=first_chunk[len(first_chunk) // 2])
                    runs.append(summary)
                    print(format_summary(f"{mode:6s} x{concurrency}", summary)
                          + f" | server first chunk p50 {summary['server_first_chunk_p50_ms']:.0f} ms"
                          + f" | audio {summary['audio_s_mean']:.2f} s/request")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        env["loadavg_end"] = os.getloadavg()
    out = Path(args.out or ROOT / "exp" / "benchmark" / f"server_{'stand-in' if not args.model_dir else model_dir.name}"
               f"_{env['device']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "args": vars(args), "runs": runs}, indent=2, ensure_ascii=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
