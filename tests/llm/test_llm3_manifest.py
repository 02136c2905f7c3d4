"""The full-size CosyVoice3 LLM (conf/cosyvoice3.yaml) has exactly the official state_dict layout (manifest)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cosyvoice.llm.llm import CosyVoice3LM
from cosyvoice.utils.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice3.yaml"


@pytest.fixture(scope="module")
def manifest(fixtures3_dir):
    return json.loads((fixtures3_dir / "manifest_full.json").read_text())


@pytest.fixture(scope="module")
def full_llm(full_qwen_dir):
    with torch.device("meta"):
        return load_config(str(CONF), {"qwen_pretrain_path": str(full_qwen_dir)}, keys=["llm"])["llm"]


def test_backbone_config_is_the_one_the_manifest_assumed(full_qwen_dir, manifest):
    ours = json.loads((full_qwen_dir / "config.json").read_text())
    assumed = manifest["qwen2_config_assumed"]
    assert {k: v for k, v in assumed.items() if k not in ("bos_token_id", "eos_token_id")} == ours


def test_full_size_keys_shapes_dtypes_in_order(full_llm, manifest):
    assert manifest["module_classes"]["llm"] == "cosyvoice.llm.llm.CosyVoice3LM"
    assert type(full_llm) is CosyVoice3LM
    entry = manifest["modules"]["llm"]
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in full_llm.state_dict().items()]
    want = [(e["name"], e["shape"], e["dtype"]) for e in entry["state_dict"]]
    assert len(got) == entry["num_state_dict_entries"] == 293
    assert got == want


def test_full_size_parameter_counts_tying_and_buffers(full_llm, manifest):
    entry = manifest["modules"]["llm"]
    assert sum(p.numel() for p in full_llm.parameters()) == entry["num_parameters_unique"] == 506_148_480
    assert sum(v.numel() for v in full_llm.state_dict().values()) == entry["num_parameters_counting_tied_twice"]
    qwen = full_llm.llm.model
    for a, b in entry["tied_entries"]:
        assert a == "llm.model.model.embed_tokens.weight" and b == "llm.model.lm_head.weight"
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight
    assert entry["persistent_buffers_in_state_dict"] == []
    buffers = dict(full_llm.named_buffers())
    for b in entry["non_persistent_buffers"]:
        assert list(buffers[b["name"]].shape) == b["shape"]
        assert b["name"] not in full_llm.state_dict()
    for a in entry["plain_tensor_attributes_not_in_state_dict"]:
        module_name, attr = a["name"].rsplit(".", 1)
        assert list(getattr(full_llm.get_submodule(module_name), attr).shape) == a["shape"]


def test_full_size_sampling_and_tokenizer_entries(full_qwen_dir):
    from cosyvoice.utils.config import resolve_config_text

    text = resolve_config_text(str(CONF), {"qwen_pretrain_path": str(full_qwen_dir)},
                               keys=["llm", "get_tokenizer", "feat_extractor"])
    assert "version: cosyvoice3" in text
    cfg = load_config(str(CONF), {"qwen_pretrain_path": str(full_qwen_dir)}, keys=["feat_extractor"])
    fe = cfg["feat_extractor"]
    assert fe.keywords["fmax"] is None and fe.keywords["sampling_rate"] == 24000
    with torch.device("meta"):
        llm = load_config(str(CONF), {"qwen_pretrain_path": str(full_qwen_dir)}, keys=["llm"])["llm"]
    assert llm.sampling.keywords == {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1}
    assert llm.min_len_mode == "official" and llm.mix_ratio == [5, 15]
