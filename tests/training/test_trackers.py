"""cosyvoice.utils.trackers: SwanLab mode choice, failing trackers, sample texts and the sample renderer."""
from __future__ import annotations

import importlib.util
import logging
import types

import numpy as np
import pytest
import torch

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


def test_read_sample_texts(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('["hello there", "second"]')
    assert tr.read_sample_texts(str(p)) == {"s00": "hello there", "s01": "second"}
    p.write_text('{"greet": "hi"}')
    assert tr.read_sample_texts(str(p)) == {"greet": "hi"}
    p.write_text('{"greet": ""}')
    with pytest.raises(ValueError, match="expected a non-empty json list of texts or object"):
        tr.read_sample_texts(str(p))


class _FakeCosyVoice:
    """Stands in for CosyVoice2: 'speaks' the first weight of its llm and flow, so the test sees which ran."""

    sample_rate = 24000

    def __init__(self):
        self.model = types.SimpleNamespace(llm=torch.nn.Linear(1, 1, bias=False), flow=torch.nn.Linear(1, 1, bias=False))
        for m, v in ((self.model.llm, 1.0), (self.model.flow, 10.0)):
            m.weight.data.fill_(v)

    def inference_sft(self, text, spk_id, stream=False, seed=None):
        value = float(self.model.llm.weight.detach()) + float(self.model.flow.weight.detach())
        yield {"tts_speech": torch.full((1, 4), value / 100.0)}


def _renderer(tmp_path, kind, base_llm=None):
    texts = tmp_path / "texts.json"
    texts.write_text('{"a": "hi"}')
    r = tr.SampleRenderer(kind, "unused", str(texts), tmp_path / "samples", spk_id="demo", base_llm=base_llm)
    fake = _FakeCosyVoice()
    r.base_llm_state = {k: v.clone() for k, v in fake.model.llm.state_dict().items()}
    r.tuned_llm_state = torch.load(base_llm, weights_only=True) if base_llm else None
    r.cosyvoice = fake
    return r, fake


class _Audio(tr.Tracker):
    def __init__(self):
        self.audio = {}

    def log_audio(self, tag, wav, sample_rate, step):
        self.audio[tag] = (float(np.asarray(wav)[0]), sample_rate, step)


def test_flow_samples_pair_the_new_flow_with_the_base_and_the_tuned_llm(tmp_path):
    tuned = tmp_path / "llm.pt"
    torch.save({"weight": torch.full((1, 1), 5.0)}, tuned)
    r, fake = _renderer(tmp_path, "flow", base_llm=str(tuned))
    new_flow = torch.nn.Linear(1, 1, bias=False)
    new_flow.weight.data.fill_(20.0)
    audio = _Audio()
    written = r(new_flow, epoch=3, step=42, tracker=audio)
    assert [p.name for p in written] == ["flow_a.wav", "llm_flow_a.wav"]
    assert audio.audio["sft/flow/a"] == (pytest.approx(0.21), 24000, 42)       # base llm 1 + new flow 20
    assert audio.audio["sft/llm_flow/a"] == (pytest.approx(0.25), 24000, 42)   # tuned llm 5 + new flow 20
    assert float(fake.model.llm.weight.detach()) == 1.0                                   # base llm restored afterwards
    assert (tmp_path / "samples" / "epoch_3" / "llm_flow_a.wav").is_file()


def test_llm_samples_use_the_new_llm_and_the_base_flow(tmp_path):
    r, fake = _renderer(tmp_path, "llm")
    new_llm = torch.nn.Linear(1, 1, bias=False)
    new_llm.weight.data.fill_(7.0)
    audio = _Audio()
    r(new_llm, epoch=0, step=5, tracker=audio)
    assert audio.audio == {"sft/llm/a": (pytest.approx(0.17), 24000, 5)}


def test_a_rendering_error_is_a_warning(tmp_path, caplog):
    r, fake = _renderer(tmp_path, "llm")
    wrong = torch.nn.Linear(2, 1)  # does not fit: load_state_dict raises
    state = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        assert r(wrong, epoch=1, step=2, tracker=None) == []
    assert "epoch 1: SFT samples failed (RuntimeError" in caplog.text and "training continues" in caplog.text
    assert torch.equal(torch.get_rng_state(), state)  # the training streams are untouched
