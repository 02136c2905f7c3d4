"""Every model dir this toolkit writes is an official one: its yaml names only what the official yaml names, and it
holds exactly the official files (so the official CosyVoice2 class and the runtimes built on it load it unchanged).

The official names and files are recorded in tests/official_layout.json (read off the official code at ace7c47).
Written dirs checked: the stand-in (tools/make_tiny_pretrained.py), the stage-4 model dir (tools/save_spk2info.py),
the same dir after stage 6 (average_model) and stage 7 (export), and the trainer's config.yaml.
Hook for CosyVoice3: a writer of v3 dirs adds them to the tests below with version "cosyvoice3"; its official names
and files are already in tests/official_layout.json.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosyvoice.bin import average_model, export
from cosyvoice.utils.config import NAME_MAP, load_config
from official_layout import LOADED, OFFICIAL, SEED_FUNCS, check_official_dir, check_official_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_official_names_are_recorded_for_both_versions():
    for version in ("cosyvoice2", "cosyvoice3"):
        names = set(OFFICIAL[version]["names"])
        assert {"cosyvoice.llm.llm.Qwen2Encoder", "omegaconf.DictConfig", "matcha.utils.audio.mel_spectrogram"} <= names
        # every name from outside the cosyvoice package is one the loader maps (or a seed line it drops)
        outside = {n for n in names if not n.startswith("cosyvoice.")}
        assert outside == set(NAME_MAP) | SEED_FUNCS
    assert "cosyvoice.llm.llm.CosyVoice3LM" in OFFICIAL["cosyvoice3"]["names"]


def test_every_official_v2_name_resolves_in_this_package():
    from cosyvoice.utils.config_keys import locate

    missing = [n for n in OFFICIAL["cosyvoice2"]["names"] if n not in SEED_FUNCS and locate(n) is None]
    assert missing == []


def test_conf_yamls_use_official_names():
    check_official_yaml(ROOT / "conf" / "cosyvoice2.yaml")
    check_official_yaml(ROOT / "conf" / "cosyvoice3.yaml", "cosyvoice3")


def test_stand_in_is_an_official_dir(stand_in_dir):
    check_official_dir(stand_in_dir, LOADED | {"README.md"})
    # and this toolkit still builds it with its own code (names mapped)
    cfg = load_config(str(stand_in_dir / "cosyvoice2.yaml"), keys=["hifigan"])
    assert type(cfg["hifigan"].discriminator.mpd).__module__ == "cosyvoice.hifigan.discriminator"


def test_trainer_config_keeps_official_names(llm_run, flow_run):
    for run in (llm_run, flow_run):
        check_official_yaml(run / "config.yaml")


@pytest.fixture(scope="module")
def recipe_model_dir(stand_in, llm_run, flow_run, tmp_path_factory):
    """The model dir as stages 4, 6 and 7 write it, after each stage: {stage: listing}."""
    root = tmp_path_factory.mktemp("recipe")
    data, model = root / "data" / "train", root / "exp" / "model"
    data.mkdir(parents=True)
    torch.save({"demo": torch.randn(192, generator=torch.Generator().manual_seed(1)).tolist()},
               data / "spk2embedding.pt")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "save_spk2info.py"), "--data_dir", str(data),
                        "--pretrained_model_dir", str(stand_in), "--model_dir", str(model)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listings = {4: {p.name for p in model.iterdir()}}
    for name, run in (("llm", llm_run), ("flow", flow_run)):
        assert average_model.main(["--src_path", str(run), "--dst_model", str(model / f"{name}.pt"),
                                   "--num", "2", "--model", name]) == 0
    listings[6] = {p.name for p in model.iterdir()}
    assert export.main(["--model_dir", str(model)]) == 0
    listings[7] = {p.name for p in model.iterdir()}
    return model, listings


def test_stage_4_6_7_model_dir_is_official(recipe_model_dir):
    model, listings = recipe_model_dir
    assert listings[4] == listings[6] == LOADED | {"spk2info.pt"}
    assert listings[7] == LOADED | {"spk2info.pt", export.ENCODER_FILE, export.ESTIMATOR_FILE}
    check_official_dir(model, listings[7])
    assert not (model / "llm.pt").is_symlink() and not (model / "flow.pt").is_symlink()  # fine-tuned, not links
    # what load_jit and load_trt read; load_vllm's vllm/ is written by the official code itself (README)
    layout = OFFICIAL["cosyvoice2"]["model_dir"]["accelerations"]
    assert export.ENCODER_FILE in layout["load_jit"] and export.ESTIMATOR_FILE in layout["load_trt"]


def test_a_foreign_name_is_caught(tmp_path):
    """The check itself fails on a yaml with one of this toolkit's own names (what model dirs held before)."""
    conf = (ROOT / "conf" / "cosyvoice2.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "cosyvoice2.yaml"
    bad.write_text(conf.replace("!new:omegaconf.DictConfig", "!new:cosyvoice.utils.config.DictConfig"))
    with pytest.raises(AssertionError, match=r"cosyvoice\.utils\.config\.DictConfig"):
        check_official_yaml(bad)
