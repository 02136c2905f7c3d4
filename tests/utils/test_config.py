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
allowed_special: !new:omegaconf.DictConfig
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
    assert top_level_keys(text) == ["sample_rate", "allowed_special", "feat_extractor"]


def test_loading_does_not_reseed_global_rngs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(OFFICIAL_SNIPPET.split("feat_extractor")[0])
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    cfg = load_config(str(path))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert isinstance(cfg["allowed_special"], DictConfig)
    assert cfg["allowed_special"].sigma_min == pytest.approx(1e-6)  # YAML 1.2: 1e-06 is a float, not a string
    assert cfg["allowed_special"].solver == "euler"


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
    path.write_text("feat_extractor: !name:whisper.log_mel_spectrogram\n")
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


# ---------------------------------------------------------------------------------------------- strict config
def _conf_with(tmp_path, old: str, new: str) -> str:
    """conf/cosyvoice2.yaml with the one line ``old`` replaced by ``new``, written to tmp_path."""
    text = open(CONF, encoding="utf-8").read()
    assert text.count(old) == 1, old
    path = tmp_path / "cosyvoice2.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return str(path)


def _error(path: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg


def test_the_official_and_our_yamls_pass_the_strict_check(fixtures_dir, fixtures3_dir):
    from cosyvoice.utils.config import check_config_text

    conf3 = Path(CONF).with_name("cosyvoice3.yaml")
    for path in (CONF, conf3, fixtures_dir / "tiny.yaml", fixtures3_dir / "tiny3.yaml"):
        check_config_text(str(path), open(path, encoding="utf-8").read())


def test_a_top_level_key_that_another_refers_to_is_read(tmp_path):
    path = _conf_with(tmp_path, "    sort_size: 500 ", "    sort_size: !ref <my_sort_size> ")
    with open(path, "a", encoding="utf-8") as f:
        f.write("my_sort_size: 321\n")
    assert load_config(path, keys=["sort"])["sort"].keywords["sort_size"] == 321


# (the line of conf/cosyvoice2.yaml, its typo, the entries built, the error after "<path>: ")
TYPOS = {
    "top level": ("sample_rate: 24000 ", "sample_rate: 24000\nsampel_rate: 16000 ", ["hift"],
                  "unknown key 'sampel_rate' at the top level (no part of CosyVoice2 reads it); did you mean "
                  "'sample_rate'?"),
    "train_conf": ("    max_epoch: 200\n    grad_clip: 5\n    accum_grad: 2",
                   "    max_epochz: 200\n    grad_clip: 5\n    accum_grad: 2", ["train_conf"],
                   "unknown key 'max_epochz' in train_conf (the trainer does not read it); did you mean 'max_epoch'?"),
    "optimizer argument": ("        lr: 1e-5\n", "        lr: 1e-5\n        weight_decai: 0.1\n", None,
                           "unknown key 'weight_decai' in train_conf.optim_conf (not an argument of "
                           "torch.optim.Adam); did you mean 'weight_decay'?"),
    # constantlr ignores scheduler_conf (the official warmup_steps stays valid) but a typo is still a typo
    "constantlr argument": ("        warmup_steps: 2500", "        warmup_stepz: 2500", None,
                            "unknown key 'warmup_stepz' in train_conf.scheduler_conf (not an argument of the "
                            "'constantlr' schedule); did you mean 'warmup_steps'?"),
    "warmuplr argument": ("    scheduler: constantlr\n    scheduler_conf:\n        warmup_steps: 2500",
                          "    scheduler: warmuplr\n    scheduler_conf:\n        max_steps: 2500", None,
                          "unknown key 'max_steps' in train_conf.scheduler_conf (not an argument of the 'warmuplr' "
                          "schedule); did you mean 'warmup_steps'?"),
    # checked even when only other entries are built
    "data pipeline argument": ("    token_max_length: 200 ", "    token_max_lenght: 200 ", ["llm"],
                               "unknown key 'token_max_lenght' in filter (not an argument of "
                               "cosyvoice.dataset.processor.filter); did you mean 'token_max_length'?"),
    "module argument": ("            num_mid_blocks: 12", "            num_mid_block: 12", None,
                        "unknown key 'num_mid_block' in flow.decoder.estimator (not an argument of "
                        "cosyvoice.flow.decoder.CausalConditionalDecoder); did you mean 'num_mid_blocks'?"),
    # an official (mapped) name is checked against the implementation it maps to
    "mapped official name": ("    fmax: 8000", "    f_max: 8000", None,
                             "unknown key 'f_max' in feat_extractor (not an argument of "
                             "matcha.utils.audio.mel_spectrogram); did you mean 'fmax'?"),
    "fixed-field dict": ("                sigma_min: 1e-06", "                sigma_mim: 1e-06", ["flow"],
                         "unknown key 'sigma_mim' in flow.decoder.cfm_params.content (not a field of cfm_params); "
                         "did you mean 'sigma_min'?"),
    "istft_params": ("        hop_len: 4", "        hop_length: 4", ["hift"],
                     "unknown key 'hop_length' in hift.istft_params (not a field of istft_params); did you mean "
                     "'hop_len'?"),
}


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_typo_is_named_with_the_closest_key(tmp_path, case):
    old, new, keys, message = TYPOS[case]
    path = _conf_with(tmp_path, old, new)
    assert _error(path, **({} if keys is None else {"keys": keys})) == f"{path}: {message}"


def test_override_typo_names_the_closest_key(tmp_path):
    msg = _error(CONF, overrides={"train_conf": {"max_epochs": 3}}, keys=["train_conf"])
    assert msg == f"{CONF}: override 'train_conf.max_epochs' is not a key of this config; did you mean 'max_epoch'?"


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "cosyvoice2.yaml"
    path.write_text("sample_rate: [24000\n")
    assert _error(str(path)).startswith(f"{path}: not valid YAML: ")


def test_check_command_is_one_line(tmp_path):
    import subprocess
    import sys

    path = _conf_with(tmp_path, "    sort_size: 500 ", "    sort_sise: 500 ")
    run = [sys.executable, "-m", "cosyvoice.utils.config"]
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(run + [CONF, path], capture_output=True, text=True, cwd=root)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"cosyvoice.utils.config: error: {path}: unknown key 'sort_sise' in sort (not an argument of "
                                     "cosyvoice.dataset.processor.sort); did you mean 'sort_size'?"]
    assert subprocess.run(run + [CONF], capture_output=True, text=True, cwd=root).returncode == 0


def test_divergence_guard_keys_are_train_conf_keys(tmp_path):
    from cosyvoice.utils.divergence import GUARD_DEFAULTS

    assert set(GUARD_DEFAULTS) <= set(open(CONF, encoding="utf-8").read().split("train_conf:")[1].replace(":", " ")
                                      .split())
    path = _conf_with(tmp_path, "    diverge_patience: 3 ", "    diverge_patiense: 3 ")
    assert "unknown key 'diverge_patiense' in train_conf (the trainer does not read it); did you mean " \
        "'diverge_patience'?" in _error(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "conf").glob("*.yaml")))
def test_every_conf_yaml_builds(name, full_qwen_dir):
    """The dry run: every conf/*.yaml builds completely (models on the meta device, no weights), with the entries
    the trainer and the front end read."""
    path = Path(__file__).resolve().parents[2] / "conf" / name
    with torch.device("meta"):
        cfg = load_config(str(path), {"qwen_pretrain_path": str(full_qwen_dir)})
    for key in ("llm", "flow", "hift", "get_tokenizer", "feat_extractor", "data_pipeline", "train_conf"):
        assert key in cfg, key
    assert len(cfg["data_pipeline"]) == 10 and all(callable(stage) for stage in cfg["data_pipeline"])
    assert cfg["train_conf"]["optim_conf"]["lr"] == 1e-5 and cfg["sample_rate"] == 24000
