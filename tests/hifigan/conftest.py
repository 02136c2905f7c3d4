"""Fixtures for the HiFT vocoder tests: the tiny official-format HiFT and its recorded inference."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.utils.config import load_config


@pytest.fixture(scope="session")
def hift_state(fixtures_dir):
    return torch.load(fixtures_dir / "hift.pt", map_location="cpu", weights_only=True)


@pytest.fixture()
def tiny_hift(fixtures_dir):
    """A fresh, unloaded HiFTGenerator built from tiny.yaml."""
    return load_config(str(fixtures_dir / "tiny.yaml"), keys=["hift"])["hift"]


@pytest.fixture()
def loaded_hift(tiny_hift, hift_state):
    tiny_hift.load_state_dict(hift_state, strict=True)
    return tiny_hift.eval()


@pytest.fixture(scope="session")
def hift_ref(fixtures_dir):
    return load_file(str(fixtures_dir / "hift_inference.safetensors"))
