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
def run_recipe():
    """Run `bash run.sh ARGS...` as a user would (without the venv setup step); return the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        cmd = ["bash", str(ROOT / "run.sh"), "--setup_env", "false", *map(str, args)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=300)

    return run
