"""Fixtures of the tests of cosyvoice/bin/average_model.py and export.py: finished training runs to work on.

They come from tests/training/train_helpers.py and are built once per pytest session (shared with tests/training).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import train_helpers as th  # noqa: E402


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory):
    return th.get_stand_in(tmp_path_factory)


@pytest.fixture(scope="session")
def llm_run(tmp_path_factory):
    return th.get_llm_run(tmp_path_factory)


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory):
    return th.get_flow_run(tmp_path_factory)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than oversubscribed
    ones, and the subprocesses of these tests (th.subprocess_env) use one thread too, so results compare exactly.
    (The session-wide runs of train_helpers set it themselves: they are built before any function fixture.)"""
    with th.one_thread():
        yield


@pytest.fixture(scope="session")
def lora_llm_run(tmp_path_factory):
    return th.get_lora_llm_run(tmp_path_factory)
