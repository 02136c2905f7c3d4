#!/usr/bin/env python3
"""Download the real CosyVoice2-0.5B or Fun-CosyVoice3-0.5B model dir with modelscope or huggingface_hub, without
ever hanging.

    python tools/download_pretrained.py --model_dir pretrained_models/CosyVoice2-0.5B
    python tools/download_pretrained.py --version cosyvoice3 --model_dir pretrained_models/Fun-CosyVoice3-0.5B

(--version defaults to what the dir's name says: 'CosyVoice3' in it means cosyvoice3; ModelScope
iic/CosyVoice2-0.5B / FunAudioLLM/Fun-CosyVoice3-0.5B-2512, Hugging Face FunAudioLLM/CosyVoice2-0.5B /
FunAudioLLM/Fun-CosyVoice3-0.5B-2512.)

Tries modelscope, then huggingface_hub (whichever is installed; neither is a requirement of this toolkit). Each hub
is first probed with a short TCP connect; the download itself runs in a child process that is killed when no bytes
arrive for --stall_timeout seconds or when --timeout is reached. Offline, it fails within seconds with one line.
On success the dir is checked with cosyvoice.utils.pretrained.check_pretrained_dir.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple
from urllib.parse import urlparse

from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.pretrained import (COSYVOICE2, VERSIONS, ModelVersion, PretrainedDirError, check_pretrained_dir,
                                        get_version, version_from_name)

# Child-process programs: argv[1] = repo id, argv[2] = target dir.
_MODELSCOPE_SCRIPT = (
    "import sys\n"
    "from modelscope import snapshot_download\n"
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2])\n"
)
_HF_SCRIPT = (
    "import sys\n"
    "from huggingface_hub import snapshot_download\n"
    "snapshot_download(repo_id=sys.argv[1], local_dir=sys.argv[2])\n"
)


@dataclass
class Backend:
    name: str        # python module that must be importable
    repo: str        # model id on that hub
    host: str        # probed with a TCP connect before downloading
    script: str      # run as `python -c script repo model_dir`
    port: int = 443


def default_backends(version: ModelVersion = COSYVOICE2) -> List[Backend]:
    hf_host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    return [
        Backend("modelscope", version.modelscope_id, "www.modelscope.cn", _MODELSCOPE_SCRIPT),
        Backend("huggingface_hub", version.huggingface_id, hf_host, _HF_SCRIPT),
    ]


def reachable(host: str, port: int, timeout: float) -> Optional[str]:
    """None if a TCP connection to host:port opens within ``timeout`` seconds, else the reason (DNS included)."""
    result: List[Optional[str]] = ["timed out"]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = None
        except OSError as e:
            result[0] = str(e) or type(e).__name__

    worker = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout: bound it here
    worker.start()
    worker.join(timeout)
    return "timed out" if worker.is_alive() else result[0]


def probe_target(backend: Backend) -> Tuple[str, int]:
    """Where a connection must open for ``backend`` to work: its HTTPS proxy if one is set, else the hub."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy and not _bypasses_proxy(backend.host):
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if url.hostname:
            return url.hostname, url.port or (443 if url.scheme == "https" else 80)
    return backend.host, backend.port


def _bypasses_proxy(host: str) -> bool:
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    entries = [e.strip().lstrip(".") for e in no_proxy.split(",") if e.strip()]
    return any(e == "*" or host == e or host.endswith("." + e) for e in entries)


def _tree_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run_watched(cmd: List[str], watch_dir: str, stall_timeout: float, timeout: float,
                poll: float = 1.0) -> Optional[str]:
    """Run ``cmd``; kill it when ``watch_dir`` stops growing for ``stall_timeout`` s or after ``timeout`` s.

    Returns None on exit status 0, else why it failed.
    """
    start = last_change = time.monotonic()
    last_size = _tree_bytes(watch_dir)
    proc = subprocess.Popen(cmd)
    try:
        while True:
            try:
                rc = proc.wait(timeout=poll)
                return None if rc == 0 else f"exited with status {rc}"
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            size = _tree_bytes(watch_dir)
            if size != last_size:
                last_size, last_change = size, now
            if now - last_change > stall_timeout:
                return f"no bytes arrived for {stall_timeout:g} s"
            if now - start > timeout:
                return f"not finished after {timeout:g} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def download(model_dir: str, backends: List[Backend], connect_timeout: float, stall_timeout: float,
             timeout: float, version: ModelVersion = COSYVOICE2) -> None:
    """Fill ``model_dir`` from the first backend that is installed, reachable and completes; raise RuntimeError."""
    installed = [b for b in backends if importlib.util.find_spec(b.name) is not None]
    if not installed:
        raise RuntimeError(
            f"cannot download {version.title}: none of {', '.join(b.name for b in backends)} is installed "
            f"(pip install modelscope, or pip install huggingface_hub)")
    failures = []
    for b in installed:
        host, port = probe_target(b)
        why = reachable(host, port, connect_timeout)
        if why is not None:
            failures.append(f"{b.name}: cannot reach {host}:{port} within {connect_timeout:g} s ({why})")
            continue
        logging.info("downloading %s from %s (%s) into %s", b.repo, b.host, b.name, model_dir)
        os.makedirs(model_dir, exist_ok=True)
        why = run_watched([sys.executable, "-c", b.script, b.repo, model_dir], model_dir, stall_timeout, timeout)
        if why is not None:
            failures.append(f"{b.name}: download of {b.repo} {why}")
            continue
        try:
            check_pretrained_dir(model_dir, version=version)
            return
        except PretrainedDirError as e:
            failures.append(f"{b.name}: downloaded, but {e}")
    raise RuntimeError(
        f"could not download {version.title} into {model_dir}: {'; '.join(failures)}. Offline? Copy the model dir "
        f"there by hand, or use the stand-in: python tools/make_tiny_pretrained.py --out_dir <dir>"
        + ("" if version is COSYVOICE2 else f" --version {version.name}"))


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="where the model's files go")
    p.add_argument("--version", choices=sorted(VERSIONS), default=None,
                   help="cosyvoice2 (CosyVoice2-0.5B) or cosyvoice3 (Fun-CosyVoice3-0.5B-2512) "
                        "[what --model_dir's name says: cosyvoice3 if it contains 'CosyVoice3']")
    p.add_argument("--connect_timeout", type=float, default=10.0, help="seconds to wait for a hub to answer a connect")
    p.add_argument("--stall_timeout", type=float, default=300.0,
                   help="kill the download after this many s without bytes")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, help="kill the download after this many s in all")
    return p.parse_args(argv)


@entry_point("download_pretrained.py")
def main(argv=None) -> int:
    args = get_args(argv)
    version = get_version(args.version) if args.version else version_from_name(args.model_dir)
    try:
        check_pretrained_dir(args.model_dir, version=version)
        logging.info("%s already holds every required file; nothing to download", args.model_dir)
        return 0
    except PretrainedDirError:
        pass
    try:
        download(args.model_dir, default_backends(version), args.connect_timeout, args.stall_timeout, args.timeout,
                 version)
    except RuntimeError as e:
        raise UserError(str(e)) from e
    logging.info("%s is complete in %s", version.title, args.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
