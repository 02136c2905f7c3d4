"""cosyvoice/bin/average_model.py: which checkpoints are averaged, the numbers, the keys, damaged inputs."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import train_helpers as th
from cosyvoice.bin import average_model
from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils.common import CheckpointError


def _mean(run, names):
    states = [th.load_state(run / f"{n}.pt") for n in names]
    return {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}


def _record(run, dst):
    """The checkpoints <run>/average.json says were averaged into ``dst``; nothing but the .pt is beside ``dst``."""
    record = json.loads((run / average_model.AVERAGE_RECORD).read_text())
    assert record["dst_model"] == str(dst.resolve())
    assert sorted(p.name for p in dst.parent.iterdir()) == [dst.name]
    return record["checkpoints"]


def test_best_by_cv_loss(flow_run, tmp_path):
    # epoch_0_step_5 and epoch_0_whole are the same step: counted once, as the epoch checkpoint
    pool = {c.step: c for c in ckpt.list_checkpoints(flow_run)}.values()
    best = sorted(pool, key=lambda c: c.cv_loss)[:2]
    dst = tmp_path / "model" / "flow.pt"
    assert average_model.main(["--src_path", str(flow_run), "--dst_model", str(dst), "--num", "2", "--val_best"]) == 0
    chosen = [c["name"] for c in _record(flow_run, dst)]
    assert chosen == [c.name for c in best]
    avg, want = th.load_state(dst), _mean(flow_run, chosen)
    assert list(avg) == list(th.load_state(flow_run.parent / "shared_stand_in" / "flow.pt"))  # pretrained keys, order
    assert th.max_abs_diff(avg, want) < 1e-7


def test_last_n_and_same_step_counted_once(flow_run, tmp_path):
    dst = tmp_path / "flow.pt"
    assert average_model.main(["--src_path", str(flow_run), "--dst_model", str(dst), "--num", "3",
                               "--model", "flow"]) == 0
    chosen = [c["name"] for c in _record(flow_run, dst)]
    assert chosen == ["epoch_0_whole", "epoch_0_step_4", "epoch_0_step_3"]
    assert th.max_abs_diff(th.load_state(dst), _mean(flow_run, chosen)) < 1e-7


def test_one_checkpoint_averages_to_itself(llm_run, tmp_path):
    dst = tmp_path / "llm.pt"
    assert average_model.main(["--src_path", str(llm_run), "--dst_model", str(dst), "--num", "1"]) == 0
    assert th.max_abs_diff(th.load_state(dst), th.load_state(llm_run / "epoch_1_whole.pt")) == 0.0


def test_tied_weights_stay_one_tensor(llm_run, tmp_path):
    """Qwen2's tied embed_tokens / lm_head are one tensor in the checkpoints: the average keeps them one tensor,
    so the averaged llm.pt is saved once, about the size of a checkpoint (not with the table twice)."""
    dst = tmp_path / "llm.pt"
    assert average_model.main(["--src_path", str(llm_run), "--dst_model", str(dst), "--num", "2"]) == 0
    state = torch.load(dst, map_location="cpu", weights_only=True)
    emb, head = state["llm.model.model.embed_tokens.weight"], state["llm.model.lm_head.weight"]
    assert emb.untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
    assert dst.stat().st_size < 1.05 * (llm_run / "epoch_1_whole.pt").stat().st_size


def test_too_few_averages_all_with_a_warning(llm_run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        average_model.main(["--src_path", str(llm_run), "--dst_model", str(tmp_path / "x.pt"), "--num", "5"])
    assert "has 3 distinct checkpoint(s), fewer than --num 5: averaging all of them" in caplog.text
    names = ["epoch_1_whole", "epoch_1_step_4", "epoch_0_whole"]
    assert th.max_abs_diff(th.load_state(tmp_path / "x.pt"), _mean(llm_run, names)) < 1e-7
    with pytest.raises(ValueError, match="--num must be >= 1, got 0"):
        average_model.main(["--src_path", str(llm_run), "--dst_model", str(tmp_path / "y.pt"), "--num", "0"])


def test_damaged_source(llm_run, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(llm_run, src, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples", "*.state.pt"))
    (src / "epoch_1_step_4.pt").write_bytes(b"\0" * 64)
    with pytest.raises(ckpt.CheckpointCorrupt, match="epoch_1_step_4.pt is damaged"):
        average_model.main(["--src_path", str(src), "--dst_model", str(tmp_path / "x.pt"), "--num", "2"])
    assert not (tmp_path / "x.pt").exists()


def test_result_is_checked_strictly_against_the_model(llm_run, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(llm_run, src, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples", "*.state.pt"))
    # a checkpoint with an extra key, re-registered with a valid hash: only the strict load can catch it
    info = {c.name: c for c in ckpt.list_checkpoints(src)}["epoch_1_whole"]
    state = th.load_state(src / "epoch_1_whole.pt")
    state["extra.weight"] = torch.zeros(1)
    info.state = None
    ckpt.save_checkpoint(src, info, state, None)
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        average_model.main(["--src_path", str(src), "--dst_model", str(tmp_path / "x.pt"), "--num", "1"])
