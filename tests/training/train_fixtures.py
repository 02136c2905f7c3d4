"""The fixtures of the training runs, for tests/training and tests/bin (each conftest imports them from here): the
stand-in model, tiny parquet lists and finished reference runs, built once per pytest session."""
from __future__ import annotations

import pytest

import train_helpers as th


def _built_once(name: str):
    """The session fixture ``name``: train_helpers.get_<name>(tmp_path_factory), built once per pytest session."""
    get = getattr(th, f"get_{name}")

    def fixture(tmp_path_factory):
        return get(tmp_path_factory)

    return pytest.fixture(scope="session", name=name)(fixture)


stand_in, lists, llm_run, flow_run, lora_llm_run = map(_built_once, ["stand_in", "lists", "llm_run", "flow_run",
                                                                    "lora_llm_run"])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than oversubscribed
    ones, and the subprocesses of these tests (th.subprocess_env) use one thread too, so results compare exactly.
    (The session-wide runs of train_helpers set it themselves: they are built before any function fixture.)"""
    with th.one_thread():
        yield

