"""Fixtures for the flow tests: the tiny flow of fixtures/cosyvoice2/tiny.yaml with flow.pt loaded."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.utils.common import load_checkpoint_strict
from cosyvoice.utils.config import load_config


@pytest.fixture(scope="session")
def tiny_flow(fixtures_dir):
    flow = load_config(str(fixtures_dir / "tiny.yaml"), keys=["flow"])["flow"]
    load_checkpoint_strict(flow, fixtures_dir / "flow.pt")
    return flow.eval()


@pytest.fixture(scope="session")
def load_io(fixtures_dir):
    def load(name: str):
        return load_file(fixtures_dir / f"{name}.safetensors")
    return load


class DecoderInputs:
    """Records the keyword arguments of every call to a module (a forward hook)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.calls.append((args, dict(kwargs)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.fixture
def record_calls():
    return DecoderInputs
