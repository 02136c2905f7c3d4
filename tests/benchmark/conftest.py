"""Fixtures for the benchmark tests: the tiny fixture HiFT with its golden weights (tiny_flow and load_io come from
tests/conftest.py)."""
from __future__ import annotations

import pytest

from cosyvoice.hifigan.generator import load_hift
from cosyvoice.utils.config import load_config


@pytest.fixture(scope="session")
def tiny_hift(fixtures_dir):
    hift = load_config(str(fixtures_dir / "tiny.yaml"), keys=["hift"])["hift"]
    load_hift(hift, fixtures_dir / "hift.pt")
    return hift.eval()
