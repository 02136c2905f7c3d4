"""Fixtures for the flow tests: a recorder of module calls (tiny_flow and load_io come from tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch


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
