"""Strict checkpoint loading (cosyvoice.utils.common.load_checkpoint_strict) and the backbone's config checks."""
from __future__ import annotations

import re

import pytest
import torch

from cosyvoice.llm.llm import Qwen2Encoder
from cosyvoice.utils.common import CheckpointError, load_checkpoint_strict
from llm_helpers import build_tiny_llm


@pytest.fixture()
def fresh_llm(fixtures_dir, tiny_qwen_dir):
    return build_tiny_llm(fixtures_dir, tiny_qwen_dir)


def _save(tmp_path, state, name="bad_llm.pt"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_missing_key_is_named(fresh_llm, llm_state, tmp_path):
    state = dict(llm_state)
    del state["llm_decoder.bias"]
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint_strict(fresh_llm, path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)) and "missing keys: llm_decoder.bias" in msg


def test_unexpected_key_is_named(fresh_llm, llm_state, tmp_path):
    state = dict(llm_state)
    state["spk_embed_affine_layer.weight"] = torch.zeros(64, 192)
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"unexpected keys: spk_embed_affine_layer\.weight"):
        load_checkpoint_strict(fresh_llm, path)


def test_wrong_shape_is_named(fresh_llm, llm_state, tmp_path):
    state = dict(llm_state)
    state["speech_embedding.weight"] = torch.zeros(4099, 64)
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError, match=re.escape(
            "wrong shapes: speech_embedding.weight (checkpoint [4099, 64] vs model [6564, 64])")):
        load_checkpoint_strict(fresh_llm, path)


def test_many_missing_keys_are_summarised(fresh_llm, llm_state):
    state = {k: v for k, v in llm_state.items() if not k.startswith("llm.")}
    with pytest.raises(CheckpointError, match=r"^<state_dict>: does not fit Qwen2LM: missing keys: .*\(\+\d+ more\)"):
        load_checkpoint_strict(fresh_llm, state)


def test_missing_or_unreadable_file(fresh_llm, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint_strict(fresh_llm, tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: cannot read as a torch checkpoint"):
        load_checkpoint_strict(fresh_llm, junk)
    listy = _save(tmp_path, [torch.zeros(1)], "list.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_checkpoint_strict(fresh_llm, listy)


def test_strip_prefix_and_values_loaded(fresh_llm, llm_state, tmp_path):
    path = _save(tmp_path, {"generator." + k: v for k, v in llm_state.items()}, "wrapped.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint_strict(fresh_llm, path)
    load_checkpoint_strict(fresh_llm, path, strip_prefix="generator.")
    sd = fresh_llm.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in llm_state.items())


def test_encoder_needs_config_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json at .*config.json.*CosyVoice-BlankEN"):
        Qwen2Encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="qwen_pretrain_path"):
        Qwen2Encoder("")


def test_encoder_builds_without_reading_weights(tiny_qwen_dir):
    """Only config.json is in the dir: building works; asking for the base weights fails clearly."""
    enc = Qwen2Encoder(str(tiny_qwen_dir))
    assert enc.model.config.hidden_size == 64 and next(enc.parameters()).dtype == torch.float32
    with pytest.raises((FileNotFoundError, OSError), match="Qwen2"):
        enc.load_pretrained_weights()


def test_encoder_loads_base_weights_when_asked(tiny_qwen_dir, tmp_path):
    import shutil

    src = Qwen2Encoder(str(tiny_qwen_dir))
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    src.model.save_pretrained(tmp_path)  # config.json + model.safetensors, like a Qwen base model dir
    shutil.copy(tiny_qwen_dir / "config.json", tmp_path / "config.json")
    enc = Qwen2Encoder(str(tmp_path), load_pretrained_weights=True)
    for (k, a), (_, b) in zip(enc.model.state_dict().items(), src.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert enc.model.lm_head.weight is enc.model.model.embed_tokens.weight
