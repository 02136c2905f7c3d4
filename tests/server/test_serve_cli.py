"""python -m cosyvoice.bin.serve and serve.sh as a user starts them: a free port (--port 0, logged), the API key
from the environment, a request, the per-request TTFB log line, a clean stop on SIGTERM, one-line start-up errors."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from process_helpers import Served
from server_helpers import read_wav

ROOT = Path(__file__).resolve().parents[2]


def test_python_module_serves_with_a_key_from_the_environment(model_dir):
    served = Served([sys.executable, "-m", "cosyvoice.bin.serve", "--model_dir", str(model_dir), "--port", "0"],
                    env={"COSYVOICE_API_KEY": "env-key"})
    try:
        url = served.url()
        served.wait_for_line(r"warm-up: one line with voice 'demo'")
        body = {"model": "cosyvoice2", "voice": "demo", "input": "你好", "seed": 1}
        assert httpx.post(url + "/v1/audio/speech", json=body).status_code == 401
        r = httpx.post(url + "/v1/audio/speech", json=body, headers={"Authorization": "Bearer env-key"}, timeout=60)
        assert r.status_code == 200 and len(read_wav(r.content)) > 0
        line = served.wait_for_line(r"speech \w+ done: voice=demo mode=sft .* first chunk ([\d.]+) s \(TTFB\)")
        assert float(line.group(1)) > 0
        assert "env-key" not in served.log()
    finally:
        assert served.stop() in (0, -signal.SIGTERM), served.log()
    assert "Application shutdown complete" in served.log()  # a graceful stop, not a kill


def test_serve_sh_passes_its_options(model_dir):
    served = Served(["bash", "serve.sh", "--model_dir", str(model_dir), "--port", "0", "--max_queue", "3",
                     "--warmup", "false", "--model_name", "mychar"])
    try:
        url = served.url()
        health = httpx.get(url + "/healthz").json()
        assert (health["max_queue"], health["model"], health["api_key"]) == (3, "mychar", False)
        r = httpx.post(url + "/v1/audio/speech", json={"model": "mychar", "voice": "demo", "input": "你好"},
                       timeout=60)
        assert r.status_code == 200, r.text
    finally:
        assert served.stop() in (0, -signal.SIGTERM), served.log()
    assert "warm-up" not in served.log()


def test_start_up_errors_are_one_line(model_dir, tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "cosyvoice.bin.serve", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    r = serve("--model_dir", str(tmp_path / "missing"), "--port", "0")
    assert r.returncode == 2  # the project's exit code for a user error
    assert r.stderr.strip().splitlines()[-1].startswith("serve.py: error: ") and "missing" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = serve("--model_dir", str(model_dir), "--port", str(taken.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen on 127.0.0.1:" in r.stderr and "--port 0" in r.stderr
    r = serve("--model_dir", str(model_dir), "--port", "70000")
    assert r.returncode == 2 and "--port must be 0-65535" in r.stderr
    r = subprocess.run(["bash", "serve.sh", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--max_queue N" in r.stdout
    r = subprocess.run(["bash", "serve.sh", "--model_dir", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("serve.sh: error: model dir")
    assert "make_tiny_pretrained.py --out_dir" in r.stderr
    r = subprocess.run(["bash", "serve.sh", "--model_dir", str(tmp_path / "exp" / "alice" / "model")], cwd=ROOT,
                       capture_output=True, text=True)  # an experiment's model dir: the recipe writes it
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"serve.sh: error: model dir {tmp_path}/exp/alice/model not found: run the recipe that writes it (bash "
        "run.sh with that experiment's options; stage 4 writes <exp_dir>/model), or give another --model_dir")


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                           ("0.0.0.0", False), ("192.0.2.1", False)])
def test_loopback_detection(host, loopback):
    from cosyvoice.bin.serve import get_args, is_loopback

    assert is_loopback(host) is loopback
    assert get_args(["--model_dir", "m"]).host == "127.0.0.1"  # the default binds to loopback only


def test_benchmark_server_prints_and_writes_its_figures(model_dir, tmp_path):
    out = tmp_path / "server.json"
    r = subprocess.run([sys.executable, "tools/benchmark_server.py", "--model_dir", str(model_dir), "--requests", "2",
                        "--concurrency", "2", "--modes", "stream,whole", "--threads", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"stream x2: 2/2 ok in [\d.]+ s \| TTFB p50 \d+ ms", r.stdout), r.stdout
    assert re.search(r"whole  x2: 2/2 ok", r.stdout), r.stdout
    report = json.loads(out.read_text())
    assert [(run["mode"], run["concurrency"], run["ok"]) for run in report["runs"]] == [("stream", 2, 2),
                                                                                     ("whole", 2, 2)]
    for run in report["runs"]:
        assert 0 < run["ttfb_p50_s"] <= run["latency_p95_s"] and run["audio_s_per_s"] > 0
    assert report["environment"]["threads"] == 1
