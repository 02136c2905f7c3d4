"""cosyvoice.utils.trackers: SwanLab mode choice and failing trackers."""
from __future__ import annotations

import importlib.util
import logging

import pytest

from cosyvoice.utils import trackers as tr


@pytest.fixture
def swanlab_env(monkeypatch):
    """Pretend swanlab is installed; the test sets login, network and dashboard."""
    state = {"logged_in": False, "reachable": False, "dashboard": False}
    real = importlib.util.find_spec

    def find_spec(name, *a):
        if name == "swanlab":
            return object()
        if name == "swanboard":
            return object() if state["dashboard"] else None
        return real(name, *a)

    monkeypatch.setattr(tr.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(tr, "swanlab_logged_in", lambda: state["logged_in"])
    monkeypatch.setattr(tr, "_api_reachable", lambda timeout=tr.NETWORK_TIMEOUT_S: state["reachable"])
    return state


@pytest.mark.parametrize("logged_in, reachable, dashboard, requested, expected", [
    (True, True, False, "auto", "cloud"),
    (True, False, False, "auto", "offline"),     # logged in but no network: never a hang, never a prompt
    (False, True, True, "auto", "local"),
    (False, True, False, "auto", "offline"),
    (False, True, False, "cloud", "offline"),    # asked for cloud without a login
    (True, True, False, "local", "offline"),     # local needs the dashboard package
    (True, True, True, "offline", "offline"),
    (True, True, True, "off", None),
])
def test_swanlab_mode_is_always_chosen_explicitly(swanlab_env, logged_in, reachable, dashboard, requested, expected):
    swanlab_env.update(logged_in=logged_in, reachable=reachable, dashboard=dashboard)
    assert tr.choose_swanlab_mode(requested) == expected


def test_missing_swanlab_means_tensorboard_only(monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(tr.importlib.util, "find_spec", lambda n, *a: None if n == "swanlab" else real(n, *a))
    with caplog.at_level(logging.INFO):
        assert tr.choose_swanlab_mode("auto") is None
    assert "SwanLab is not installed (pip install swanlab); tracking with TensorBoard only" in caplog.text
    with pytest.raises(ValueError, match="--swanlab must be one of auto, cloud, local, offline, off"):
        tr.choose_swanlab_mode("online")


def test_api_key_in_the_environment_counts_as_logged_in(monkeypatch):
    monkeypatch.setenv("SWANLAB_API_KEY", "k")
    assert tr.swanlab_logged_in()


def test_a_failing_tracker_is_dropped_once(caplog):
    class Broken(tr.Tracker):
        name = "broken"

        def log_scalars(self, scalars, step):
            raise ConnectionError("gone")

    class Keep(tr.Tracker):
        name = "keep"

        def __init__(self):
            self.seen = []

        def log_scalars(self, scalars, step):
            self.seen.append((dict(scalars), step))

    keep = Keep()
    multi = tr.MultiTracker([Broken(), keep])
    with caplog.at_level(logging.WARNING):
        multi.log_scalars({"a": 1.0}, 1)
        multi.log_scalars({"a": 2.0}, 2)
    assert multi.names == ["keep"]
    assert keep.seen == [({"a": 1.0}, 1), ({"a": 2.0}, 2)]
    assert caplog.text.count("broken tracker failed in log_scalars (ConnectionError: gone)") == 1
