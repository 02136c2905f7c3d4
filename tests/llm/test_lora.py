"""LoRA adapters on the tiny Qwen2LM (cosyvoice/utils/lora.py): what trains, the adapter file, merging, switching."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from cosyvoice.utils import lora
from cosyvoice.utils.common import CheckpointError, load_checkpoint_strict
from llm_helpers import build_tiny_llm

SETTINGS = lora.LoraSettings(target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj", "llm_decoder", "speech_embedding"), r=4, alpha=8.0,
                             dropout=0.0)


@pytest.fixture
def plain(fixtures_dir, tiny_qwen_dir):
    llm = build_tiny_llm(fixtures_dir, tiny_qwen_dir)
    load_checkpoint_strict(llm, fixtures_dir / "llm.pt")
    return llm


def randomize_adapter(module, name, seed):
    """Non-zero B (a fresh adapter computes the base model: B starts at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in module.named_parameters():
            if lora.adapter_of(key) == name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def batch(n=2, t=7, s=11, vocab=100, speech=6561, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"text_token": torch.randint(0, vocab, (n, t), generator=g),
            "text_token_len": torch.tensor([t, t - 2], dtype=torch.int32),
            "speech_token": torch.randint(0, speech, (n, s), generator=g),
            "speech_token_len": torch.tensor([s, s - 3], dtype=torch.int32)}


def logits(llm, b):
    """The llm's training forward, with its layout draw fixed."""
    import random

    random.seed(3)
    with torch.no_grad():
        return llm(b, torch.device("cpu"))["loss"]


def test_settings_defaults_and_errors():
    s = lora.lora_settings({"llm_lora": {"r": 8}}, "llm")
    assert s.r == 8 and s.alpha == 32 and s.target_modules == lora.DEFAULT_TARGETS["llm"]
    assert lora.lora_settings({}, "flow").target_modules == lora.DEFAULT_TARGETS["flow"]
    assert lora.finetune_mode({}) == "full"
    with pytest.raises(lora.LoraError, match=r"train_conf.llm_lora: unknown LoRA setting\(s\) rank"):
        lora.lora_settings({"llm_lora": {"rank": 8}}, "llm")
    with pytest.raises(lora.LoraError, match="r .* must be >= 1"):
        lora.lora_settings({"llm_lora": {"r": 0}}, "llm")
    with pytest.raises(lora.LoraError, match="finetune must be full or lora, got 'half'"):
        lora.finetune_mode({"finetune": "half"})


def test_only_the_adapter_trains_and_starts_as_the_base_model(plain):
    b = batch()
    before = logits(plain.eval(), b)
    plain.train()
    lora.add_adapter(plain, SETTINGS, seed=1)
    trainable = [k for k, p in plain.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in k for k in trainable)
    assert any(k.startswith("speech_embedding.lora_embedding_A") for k in trainable)
    assert torch.equal(logits(plain.eval(), b), before)  # B = 0: the adapter changes nothing yet
    n_train, n_all = lora.count_parameters(plain)
    assert 0 < n_train < 0.1 * n_all


def test_adapter_state_dict_round_trip_and_strict_load(plain, fixtures_dir, tiny_qwen_dir, tmp_path):
    lora.add_adapter(plain, SETTINGS, seed=1)
    randomize_adapter(plain, lora.TRAIN_ADAPTER, 7)
    state = lora.adapter_state_dict(plain)
    assert "llm.model.model.layers.0.self_attn.q_proj.lora_A.weight" in state
    assert "speech_embedding.lora_embedding_B" in state and all("default" not in k for k in state)
    assert lora.is_adapter_state(state) and not lora.is_adapter_state(plain.state_dict())
    torch.save(state, tmp_path / "a.pt")
    other = build_tiny_llm(fixtures_dir, tiny_qwen_dir)
    load_checkpoint_strict(other, fixtures_dir / "llm.pt")
    lora.add_adapter(other, SETTINGS, name="x", trainable=False)
    lora.load_adapter_state_dict(other, tmp_path / "a.pt", "x")
    assert all(torch.equal(v, lora.adapter_state_dict(other, "x")[k]) for k, v in state.items())
    smaller = lora.LoraSettings(target_modules=("q_proj",), r=4, alpha=8.0, dropout=0.0)
    third = build_tiny_llm(fixtures_dir, tiny_qwen_dir)
    lora.add_adapter(third, smaller)
    with pytest.raises(CheckpointError, match=r"a.pt: does not fit the LoRA adapter of Qwen2LM: unexpected keys"):
        lora.load_adapter_state_dict(third, tmp_path / "a.pt")


def test_merged_weights_are_the_plain_layout_and_compute_the_adapter(plain, fixtures_dir, tiny_qwen_dir, llm_state):
    b = batch()
    lora.add_adapter(plain, SETTINGS, seed=1)
    randomize_adapter(plain, lora.TRAIN_ADAPTER, 7)
    with_adapter = logits(plain.eval(), b)
    merged = lora.merged_state_dict(plain)
    assert list(merged) == list(llm_state)  # the official llm.pt's keys, in its order
    assert all(merged[k].shape == v.shape and merged[k].dtype == v.dtype for k, v in llm_state.items())
    fresh = build_tiny_llm(fixtures_dir, tiny_qwen_dir)
    load_checkpoint_strict(fresh, merged)  # strictly, into the plain module
    assert float((logits(fresh.eval(), b) - with_adapter).abs()) < 1e-5
    assert float((with_adapter - logits(build_plain(fixtures_dir, tiny_qwen_dir), b)).abs()) > 1e-3
    # decoding: the hidden states of one step agree too
    x = torch.randn(1, 5, plain.llm_input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h1, _ = plain.llm.forward_one_step(x)
        h2, _ = fresh.llm.forward_one_step(x)
    assert float((h1 - h2).abs().max()) < 1e-5


def build_plain(fixtures_dir, tiny_qwen_dir):
    llm = build_tiny_llm(fixtures_dir, tiny_qwen_dir)
    load_checkpoint_strict(llm, fixtures_dir / "llm.pt")
    return llm.eval()


def test_target_modules_that_match_nothing_name_the_layers(plain):
    with pytest.raises(lora.LoraError, match=r"target_modules \['qproj'\] do not name layers of Qwen2LM.*q_proj"):
        lora.add_adapter(plain, lora.LoraSettings(target_modules=("qproj",)))


def test_switch_runs_each_adapter_alone_and_serves_in_order(plain, fixtures_dir, tiny_qwen_dir):
    b = batch()
    base = logits(plain.eval(), b)
    for i, name in enumerate(("a", "b")):
        lora.add_adapter(plain, SETTINGS if name == "a" else lora.LoraSettings(("v_proj",), r=2), name=name,
                         trainable=False)
        randomize_adapter(plain, name, 10 + i)
    switch = lora.AdapterSwitch(plain.eval())
    with switch.use(None):
        assert torch.equal(logits(plain, b), base)
    with switch.use("a"):
        la = logits(plain, b)
    with switch.use("b"):
        lb = logits(plain, b)
    with switch.use("a"):
        assert torch.equal(logits(plain, b), la)
    assert not torch.equal(la, lb) and not torch.equal(la, base)
    # one adapter alone on the module gives the same numbers bit for bit
    alone = build_plain(fixtures_dir, tiny_qwen_dir)
    lora.add_adapter(alone, SETTINGS, name="a", trainable=False)
    randomize_adapter(alone, "a", 10)
    assert torch.equal(logits(alone, b), la)

    # threads: the same adapter shares, another one waits, and arrival order is kept
    events = []
    entered = threading.Event()

    def hold(name, tag, wait=None):
        with switch.use(name):
            events.append(f"in {tag}")
            entered.set()
            if wait is not None:
                wait.wait(5)
            events.append(f"out {tag}")

    release = threading.Event()
    first = threading.Thread(target=hold, args=("a", "a1", release))
    first.start()
    entered.wait(5)
    other = threading.Thread(target=hold, args=("b", "b1"))
    other.start()
    time.sleep(0.1)
    late = threading.Thread(target=hold, args=("a", "a2"))  # arrives after b1: must not overtake it
    late.start()
    time.sleep(0.1)
    assert events == ["in a1"]
    release.set()
    for t in (first, other, late):
        t.join(5)
    assert events == ["in a1", "out a1", "in b1", "out b1", "in a2", "out a2"]
