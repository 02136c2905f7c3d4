"""Fixtures for the LLM tests: the tiny Qwen2LM (tiny.yaml) and CosyVoice3LM (tiny3.yaml) with their fixture llm.pt."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.utils.common import load_checkpoint_strict
from llm_helpers import build_tiny3_llm, build_tiny_llm


def _loaded(build, folder, qwen_dir):
    llm = build(folder, qwen_dir)
    load_checkpoint_strict(llm, folder / "llm.pt")
    return llm.eval()


def _loader(folder):
    """name -> the tensors of <folder>/<name>.safetensors (each file read once)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_file(str(folder / f"{name}.safetensors"))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_llm(fixtures_dir, tiny_qwen_dir):
    """Tiny Qwen2LM with the official-format fixture weights, eval mode. Tests must not change its weights."""
    return _loaded(build_tiny_llm, fixtures_dir, tiny_qwen_dir)


@pytest.fixture(scope="session")
def llm_fixture(fixtures_dir):
    """Load one llm_*.safetensors fixture by stem name."""
    return _loader(fixtures_dir)


@pytest.fixture(scope="session")
def llm_state(fixtures_dir):
    return torch.load(fixtures_dir / "llm.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def tiny3_llm(fixtures3_dir, tiny3_qwen_dir):
    """Tiny CosyVoice3LM with the official-format fixture weights, eval mode. Tests must not change its weights."""
    return _loaded(build_tiny3_llm, fixtures3_dir, tiny3_qwen_dir)


@pytest.fixture(scope="session")
def llm3_fixture(fixtures3_dir):
    """Load one CosyVoice3 llm_*.safetensors fixture by stem name."""
    return _loader(fixtures3_dir)


@pytest.fixture(scope="session")
def llm3_state(fixtures3_dir):
    return torch.load(fixtures3_dir / "llm.pt", map_location="cpu", weights_only=True)
