"""The fixtures of the training runs, for tests/training and tests/bin (each conftest imports them from here): the
stand-in model, tiny parquet lists and finished reference runs, built once per pytest session."""
from __future__ import annotations

import pytest

import train_helpers as th


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory):
    return th.get_stand_in(tmp_path_factory)


@pytest.fixture(scope="session")
def lists(tmp_path_factory):
    return th.get_lists(tmp_path_factory)


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
