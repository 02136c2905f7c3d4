"""cosyvoice.utils.checkpoint: atomic writes, sidecars, damage detection, fallback, pruning, RNG states."""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from cosyvoice.utils import checkpoint as ckpt


def _info(name, step, **kw):
    return ckpt.CheckpointInfo(name=name, epoch=kw.pop("epoch", 0), step=step, resume_epoch=0, resume_batch=step,
                               world_size=1, train_engine="torch_ddp", cv={"loss": kw.pop("loss", 1.0)})


def _save(d, name, step, value=None):
    state = {"w": torch.full((3,), float(step if value is None else value))}
    ckpt.save_checkpoint(d, _info(name, step), state, {"position": {"step": step}})
    return state


def test_atomic_save_leaves_the_old_file_when_the_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "a.pt"
    ckpt.atomic_torch_save({"w": torch.ones(2)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f):
        real_save(obj, f)
        f.truncate(10)  # a partial file, then the process "dies"
        raise OSError("disk gone")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk gone"):
        ckpt.atomic_torch_save({"w": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temp file left behind


def test_sidecar_records_hashes_and_position(tmp_path):
    _save(tmp_path, "epoch_0_whole", 3)
    side = json.loads((tmp_path / "epoch_0_whole.ckpt.json").read_text())
    assert side["step"] == 3 and side["state"] == "epoch_0_whole.state.pt"
    assert side["files"]["epoch_0_whole.pt"] == ckpt.sha256_file(tmp_path / "epoch_0_whole.pt")
    assert set(side["files"]) == {"epoch_0_whole.pt", "epoch_0_whole.state.pt"}
    [info] = ckpt.list_checkpoints(tmp_path)
    ckpt.verify_checkpoint(tmp_path, info)
    assert ckpt.load_train_state(tmp_path, info)["position"] == {"step": 3}


def test_a_checkpoint_without_sidecar_does_not_exist(tmp_path):
    _save(tmp_path, "epoch_0_whole", 3)
    torch.save({"w": torch.zeros(3)}, tmp_path / "epoch_0_step_5.pt")  # a crash before the sidecar was written
    assert [c.name for c in ckpt.list_checkpoints(tmp_path)] == ["epoch_0_whole"]
    assert ckpt.find_resume_checkpoint(tmp_path).name == "epoch_0_whole"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_latest_falls_back_to_the_previous_with_a_warning(tmp_path, caplog, damage):
    _save(tmp_path, "epoch_0_step_2", 2)
    _save(tmp_path, "epoch_0_step_4", 4)
    target = tmp_path / "epoch_0_step_4.state.pt"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING):
        found = ckpt.find_resume_checkpoint(tmp_path)
    assert found.name == "epoch_0_step_2"
    assert "checkpoint epoch_0_step_4 is unusable" in caplog.text
    assert str(target) in caplog.text
    assert "resuming from epoch_0_step_2 instead" in caplog.text


def test_all_damaged_is_an_error(tmp_path):
    _save(tmp_path, "epoch_0_step_2", 2)
    (tmp_path / "epoch_0_step_2.pt").write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointCorrupt, match="no usable checkpoint in .*epoch_0_step_2.pt is damaged"):
        ckpt.find_resume_checkpoint(tmp_path)
    assert ckpt.find_resume_checkpoint(tmp_path / "empty") is None


def test_prune_keeps_weights_and_the_newest_states(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, f"epoch_0_step_{step}", step)
    assert ckpt.prune_train_states(tmp_path, keep=2) == ["epoch_0_step_1"]
    assert not (tmp_path / "epoch_0_step_1.state.pt").exists()
    assert (tmp_path / "epoch_0_step_1.pt").exists()
    infos = {c.name: c for c in ckpt.list_checkpoints(tmp_path)}
    assert infos["epoch_0_step_1"].state is None
    ckpt.verify_checkpoint(tmp_path, infos["epoch_0_step_1"], need_state=False)  # weights still verifiable
    with pytest.raises(ckpt.CheckpointCorrupt, match="weights only"):
        ckpt.verify_checkpoint(tmp_path, infos["epoch_0_step_1"])


def test_rng_state_round_trip_and_scope():
    state = ckpt.get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    ckpt.set_rng_state(state)
    with ckpt.rng_scope(7):
        inside = torch.rand(1).item()
    with ckpt.rng_scope(7):
        assert torch.rand(1).item() == inside                       # seeded: the same draws every time
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a  # the outer streams are untouched
    # the state survives torch.save / weights_only load (what a resume does)
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    ckpt.set_rng_state(torch.load(buf, weights_only=True))
    assert random.random() == a[0]
