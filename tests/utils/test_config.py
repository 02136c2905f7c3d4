"""The one config loader: official names mapped, no reseeding, overrides checked, partial builds."""
from __future__ import annotations

import random

import pytest
import torch

from pathlib import Path

from cosyvoice.utils.config import (ConfigError, DictConfig, load_config, resolve_config_text, select_keys,
                                    top_level_keys, translate_config_text)

CONF = str(Path(__file__).resolve().parents[2] / "conf" / "cosyvoice2.yaml")

OFFICIAL_SNIPPET = """\
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
__set_seed4: !apply:torch.cuda.manual_seed_all [1986]
sample_rate: 24000
cfm: !new:omegaconf.DictConfig
    content:
        sigma_min: 1e-06
        solver: 'euler'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
"""


def test_translate_maps_foreign_names_and_drops_seed_lines():
    text = translate_config_text(OFFICIAL_SNIPPET)
    assert "seed" not in text
    assert "!new:cosyvoice.utils.config.DictConfig" in text
    assert "!name:cosyvoice.audio.features.mel_spectrogram" in text
    assert "matcha" not in text and "omegaconf" not in text
    assert top_level_keys(text) == ["sample_rate", "cfm", "feat_extractor"]


def test_loading_does_not_reseed_global_rngs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(OFFICIAL_SNIPPET.split("feat_extractor")[0])
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    cfg = load_config(str(path))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert isinstance(cfg["cfm"], DictConfig)
    assert cfg["cfm"].sigma_min == pytest.approx(1e-6)  # YAML 1.2: 1e-06 is a float, not a string
    assert cfg["cfm"].solver == "euler"


def test_unknown_override_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sample_rate: 24000\n")
    with pytest.raises(ConfigError, match=r"override 'sampel_rate' is not a key of this config"):
        load_config(str(path), {"sampel_rate": 16000})
    assert load_config(str(path), {"sample_rate": 16000})["sample_rate"] == 16000


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_unmapped_foreign_name_is_a_clear_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("x: !name:whisper.log_mel_spectrogram\n")
    with pytest.raises(ConfigError, match="'whisper.log_mel_spectrogram' is not provided by this toolkit"):
        load_config(str(path))


def test_select_keys_follows_references():
    text = translate_config_text(open(CONF, encoding="utf-8").read())
    keys = top_level_keys(select_keys(text, ["hifigan"]))
    assert {"hifigan", "hift", "mel_spec_transform1", "sample_rate"} <= set(keys)
    assert "llm" not in keys and "flow" not in keys
    # a plain list that refers to dropped builders is dropped with them
    assert "data_pipeline" not in keys
    with pytest.raises(ConfigError, match="config has no key"):
        select_keys(text, ["no_such_entry"])


def test_resolved_text_applies_overrides():
    text = resolve_config_text(CONF, {"qwen_pretrain_path": "/models/BlankEN"}, keys=["get_tokenizer"])
    assert "token_path: /models/BlankEN" in text
    assert "llm:" not in text
