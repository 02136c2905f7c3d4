"""Fixtures for the stage-tool tests: the stand-in pretrained dir (made once by its tool), synthetic clips."""
from __future__ import annotations

from pathlib import Path

import pytest

from stage_test_utils import run_tool, sweep


@pytest.fixture(scope="session")
def stand_in_dir(tmp_path_factory) -> Path:
    """The tiny stand-in pretrained dir, made once by the tool itself (seed 1986)."""
    out = tmp_path_factory.mktemp("pretrained") / "tiny"
    r = run_tool("make_tiny_pretrained", "--out_dir", out, "--seed", "1986")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def synthetic_utts():
    """Four short clips of two speakers: 16 kHz and 24 kHz sweeps (load_wav resamples the latter)."""
    return {
        "spkA_001": (sweep(1.2, 150, 400, seed=1), 16000),
        "spkA_002": (sweep(1.0, 300, 900, seed=2), 16000),
        "spkB_001": (sweep(1.5, 800, 2500, sr=24000, seed=3), 24000),
        "spkB_002": (sweep(0.8, 120, 200, seed=4), 16000),
    }
