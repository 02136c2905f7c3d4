"""Checkpoint selection by cv_loss, sim and cer on crafted per-epoch records."""
from __future__ import annotations

import json

import pytest
import torch

from cosyvoice.eval.select import load_epoch_records, select_best, write_epoch_eval
from cosyvoice.utils import checkpoint as ckpt

# name, epoch, step, CV loss, (sim, error rate) or None when not evaluated
CRAFTED = [
    ("epoch_0_whole", 0, 10, 2.0, (0.50, 0.40)),
    ("epoch_1_step_15", 1, 15, 1.5, None),
    ("epoch_1_step_20", 1, 20, 1.3, None),   # same step as epoch_1_whole: the whole one stands for both
    ("epoch_1_whole", 1, 20, 1.2, (0.60, 0.30)),
    ("epoch_2_whole", 2, 30, 1.4, (0.80, 0.35)),
    ("epoch_3_whole", 3, 40, 1.6, (0.80, 0.20)),
]


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "llm"
    d.mkdir()
    for name, epoch, step, cv, ev in CRAFTED:
        info = ckpt.CheckpointInfo(name=name, epoch=epoch, step=step, resume_epoch=epoch, resume_batch=0,
                                   world_size=1, train_engine="torch_ddp", cv={"loss": cv, "acc": 1 - cv / 4})
        ckpt.save_checkpoint(d, info, {"w": torch.zeros(1)}, None)
        if ev is not None:
            write_epoch_eval(d, epoch, {"sim": ev[0], "sim_to_real": ev[0] - 0.1, "error_rate": ev[1],
                                        "cer": ev[1], "wer": None, "n_utts": 4})
    return d


def names(records):
    return [r["name"] for r in records]


def test_records_merge_sidecars_and_evaluations(model_dir):
    records = load_epoch_records(model_dir)
    assert names(records) == ["epoch_0_whole", "epoch_1_step_15", "epoch_1_whole", "epoch_2_whole",
                              "epoch_3_whole"]
    r = records[2]
    assert (r["epoch"], r["step"], r["cv_loss"], r["cv_acc"]) == (1, 20, 1.2, pytest.approx(0.7))
    assert (r["sim"], r["error_rate"], r["wer"]) == (0.60, 0.30, None)
    assert records[1]["sim"] is None and records[1]["cv_loss"] == 1.5
    saved = json.loads((model_dir / "eval" / "epoch_2.json").read_text())
    assert saved["checkpoint"] == "epoch_2_whole" and saved["epoch"] == 2


def test_select_by_cv_loss(model_dir):
    records = load_epoch_records(model_dir)
    assert names(select_best(records, "cv_loss")) == ["epoch_1_whole"]
    assert names(select_best(records, "cv_loss", 3)) == ["epoch_1_whole", "epoch_2_whole", "epoch_1_step_15"]


def test_select_by_sim_prefers_the_later_checkpoint_on_ties(model_dir):
    records = load_epoch_records(model_dir)
    assert names(select_best(records, "sim", 2)) == ["epoch_3_whole", "epoch_2_whole"]
    assert names(select_best(records, "sim", 4)) == ["epoch_3_whole", "epoch_2_whole", "epoch_1_whole",
                                                     "epoch_0_whole"]


def test_select_by_cer(model_dir):
    records = load_epoch_records(model_dir)
    assert names(select_best(records, "cer", 2)) == ["epoch_3_whole", "epoch_1_whole"]


def test_selection_errors_say_what_to_do(model_dir, caplog):
    records = load_epoch_records(model_dir)
    evaluated = [r for r in records if r["sim"] is not None]
    assert len(evaluated) == 4
    with caplog.at_level("WARNING"):
        picked = select_best(records, "sim", 5)
    assert sorted(names(picked)) == sorted(names(evaluated))
    assert "only 4 of 5 checkpoint(s) have 'sim', fewer than --num 5: using those" in caplog.text
    no_asr = [{**r, "error_rate": None} for r in records]
    with pytest.raises(ValueError, match=r"^--select_by cer: none of 5 checkpoint\(s\) has 'error_rate' "
                                         r"\(train with --eval_every_epoch true and an --asr_model_dir\)$"):
        select_best(no_asr, "cer")
    with pytest.raises(ValueError, match="^--select_by must be one of cv_loss, sim, cer, got 'wer'$"):
        select_best(records, "wer")
    with pytest.raises(ValueError, match="^--num must be >= 1, got 0$"):
        select_best(records, "sim", 0)


def test_non_finite_metrics_are_not_considered():
    records = [{"name": "a", "epoch": 0, "step": 1, "sim": float("nan")},
               {"name": "b", "epoch": 1, "step": 2, "sim": 0.1}]
    assert names(select_best(records, "sim")) == ["b"]
