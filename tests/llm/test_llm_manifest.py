"""The full-size CosyVoice2-0.5B LLM (conf/cosyvoice2.yaml) has exactly the official state_dict layout."""
from __future__ import annotations

import json

import pytest
import torch

from cosyvoice.utils.config import load_config

ROOT_CONF = "conf/cosyvoice2.yaml"


@pytest.fixture(scope="module")
def full_llm(full_qwen_dir):
    from pathlib import Path

    conf = Path(__file__).resolve().parents[2] / ROOT_CONF
    with torch.device("meta"):
        return load_config(str(conf), {"qwen_pretrain_path": str(full_qwen_dir)}, keys=["llm"])["llm"]


def test_full_size_keys_shapes_dtypes_in_order(full_llm, fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifest_full.json").read_text())["modules"]["llm"]
    sd = full_llm.state_dict()
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    want = [(e["name"], e["shape"], e["dtype"]) for e in manifest["state_dict"]]
    assert len(got) == manifest["num_state_dict_entries"] == 295
    assert got == want


def test_full_size_parameter_counts_and_tying(full_llm, fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifest_full.json").read_text())["modules"]["llm"]
    assert sum(p.numel() for p in full_llm.parameters()) == manifest["num_parameters_unique"]
    total = sum(v.numel() for v in full_llm.state_dict().values())
    assert total == manifest["state_dict_numel_total_counting_tied_twice"]
    qwen = full_llm.llm.model
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight
    buffers = dict(full_llm.named_buffers())
    assert list(buffers["llm.model.model.rotary_emb.inv_freq"].shape) == [32]
    assert not any(k.endswith("inv_freq") for k in full_llm.state_dict())
