"""Fixtures for the LLM tests: the tiny Qwen2LM (tiny.yaml) and CosyVoice3LM (tiny3.yaml) with their fixture llm.pt."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.utils.common import load_checkpoint_strict
from llm_helpers import build_tiny3_llm, build_tiny_llm


def _family(folder_fixture: str, qwen_fixture: str, build, tag: str):
    """The three session fixtures of one model family, named ``tiny{tag}_llm`` (the tiny LM with the official-format
    fixture llm.pt, eval mode; tests must not change its weights), ``llm{tag}_fixture`` (name -> the tensors of
    <fixtures>/<name>.safetensors, each file read once) and ``llm{tag}_state`` (the fixture llm.pt)."""

    def model(request):
        folder = request.getfixturevalue(folder_fixture)
        llm = build(folder, request.getfixturevalue(qwen_fixture))
        load_checkpoint_strict(llm, folder / "llm.pt")
        return llm.eval()

    def loader(request):
        folder, cache = request.getfixturevalue(folder_fixture), {}

        def get(name: str):
            if name not in cache:
                cache[name] = load_file(str(folder / f"{name}.safetensors"))
            return cache[name]

        return get

    def state(request):
        return torch.load(request.getfixturevalue(folder_fixture) / "llm.pt", map_location="cpu", weights_only=True)

    return tuple(pytest.fixture(scope="session", name=name)(f)
                 for name, f in ((f"tiny{tag}_llm", model), (f"llm{tag}_fixture", loader), (f"llm{tag}_state", state)))


tiny_llm, llm_fixture, llm_state = _family("fixtures_dir", "tiny_qwen_dir", build_tiny_llm, "")  # Qwen2LM
tiny3_llm, llm3_fixture, llm3_state = _family("fixtures3_dir", "tiny3_qwen_dir", build_tiny3_llm, "3")  # CosyVoice3LM
