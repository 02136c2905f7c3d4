"""Fixtures for the recipe tests: run.sh as a user runs it, crafted pair folders and raw packs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from recipe_helpers import ROOT, make_bad_folder, make_raw_pack


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    return make_bad_folder(tmp_path / "pairs")


@pytest.fixture
def raw_pack(tmp_path) -> Path:
    return make_raw_pack(tmp_path / "Hu Tao")


@pytest.fixture
def run_recipe(tmp_path):
    """Run `bash run.sh ARGS...` as a user would (without the venv setup step); return the CompletedProcess.

    The cwd (where data/ and exp/ go by default) is the test's tmp_path unless given."""

    def run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
        cmd = ["bash", str(ROOT / "run.sh"), "--setup_env", "false", *map(str, args)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(cmd, cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`bash run.sh` (the whole demo recipe) run once in a fresh cwd: (cwd, CompletedProcess)."""
    cwd = tmp_path_factory.mktemp("demo_cwd")
    cmd = ["bash", str(ROOT / "run.sh"), "--setup_env", "false"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r
