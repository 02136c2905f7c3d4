"""The per-epoch SFT samples (cosyvoice.eval.epoch.SampleRenderer): sample texts, which weights speak, errors."""
from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch

from cosyvoice.eval import epoch as ep


def test_read_sample_texts(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('["hello there", "second"]')
    assert ep.read_sample_texts(str(p)) == {"s00": "hello there", "s01": "second"}
    p.write_text('{"greet": "hi"}')
    assert ep.read_sample_texts(str(p)) == {"greet": "hi"}
    p.write_text('{"greet": ""}')
    with pytest.raises(ValueError, match="expected a non-empty json list of texts or object"):
        ep.read_sample_texts(str(p))


class _FakeCosyVoice:
    """Stands in for CosyVoice2: 'speaks' the first weight of its llm and flow, so the test sees which ran."""

    sample_rate = 24000

    def __init__(self):
        self.model = types.SimpleNamespace(llm=torch.nn.Linear(1, 1, bias=False), flow=torch.nn.Linear(1, 1, bias=False))
        for m, v in ((self.model.llm, 1.0), (self.model.flow, 10.0)):
            m.weight.data.fill_(v)

    def list_available_spks(self):
        return ["demo"]

    def inference_sft(self, text, spk_id, stream=False, seed=None):
        one = torch.ones(1, 1)
        value = float(self.model.llm(one).detach()) + float(self.model.flow(one).detach())
        yield {"tts_speech": torch.full((1, 4), value / 100.0)}


def _renderer(tmp_path, kind, base_llm=None):
    texts = tmp_path / "texts.json"
    texts.write_text('{"a": "hi"}')
    r = ep.SampleRenderer(kind, "unused", str(texts), tmp_path / "samples", spk_id="demo", base_llm=base_llm)
    fake = _FakeCosyVoice()
    r.epoch_model._cosyvoice = fake  # the shared epoch model, built
    return r, fake


class _Audio:
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
    assert float(fake.model.flow.weight.detach()) == 10.0 and new_flow.training  # the base flow back, mode kept


def test_llm_samples_use_the_new_llm_and_the_base_flow(tmp_path):
    r, fake = _renderer(tmp_path, "llm")
    new_llm = torch.nn.Linear(1, 1, bias=False)
    new_llm.weight.data.fill_(7.0)
    audio = _Audio()
    r(new_llm, epoch=0, step=5, tracker=audio)
    assert audio.audio == {"sft/llm/a": (pytest.approx(0.17), 24000, 5)}


def test_a_rendering_error_is_a_warning(tmp_path, caplog):
    r, fake = _renderer(tmp_path, "llm")
    wrong = torch.nn.Linear(2, 1)  # does not fit: the synthesis raises
    state = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        assert r(wrong, epoch=1, step=2, tracker=None) == []
    assert "epoch 1: SFT samples failed (RuntimeError" in caplog.text and "training continues" in caplog.text
    assert torch.equal(torch.get_rng_state(), state)  # the training streams are untouched


def test_the_sample_and_the_evaluation_hooks_share_one_model(tmp_path):
    shared = ep.EpochModel(str(tmp_path))
    texts = tmp_path / "texts.json"
    texts.write_text('["hi"]')
    r = ep.SampleRenderer("llm", str(tmp_path / "."), str(texts), tmp_path / "s", epoch_model=shared)
    assert r.epoch_model is shared
    with pytest.raises(ValueError, match="the shared epoch model is of .*, not .*other"):
        ep.SampleRenderer("llm", str(tmp_path / "other"), str(texts), tmp_path / "s", epoch_model=shared)
    with pytest.raises(ValueError, match="not 'hift'"):
        ep.SampleRenderer("hift", str(tmp_path), str(texts), tmp_path / "s")
