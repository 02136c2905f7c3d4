"""Fixtures for the benchmark tests: the tiny fixture flow and HiFT with their golden weights."""
from __future__ import annotations

import pytest

from cosyvoice.hifigan.generator import load_hift
from cosyvoice.utils.common import load_checkpoint_strict
from cosyvoice.utils.config import load_config


@pytest.fixture(scope="session")
def tiny_flow(fixtures_dir):
    flow = load_config(str(fixtures_dir / "tiny.yaml"), keys=["flow"])["flow"]
    load_checkpoint_strict(flow, fixtures_dir / "flow.pt")
    return flow.eval()


@pytest.fixture(scope="session")
def tiny_hift(fixtures_dir):
    hift = load_config(str(fixtures_dir / "tiny.yaml"), keys=["hift"])["hift"]
    load_hift(hift, fixtures_dir / "hift.pt")
    return hift.eval()


@pytest.fixture(scope="session")
def load_io(fixtures_dir):
    from safetensors.torch import load_file

    def load(name: str):
        return load_file(fixtures_dir / f"{name}.safetensors")
    return load
