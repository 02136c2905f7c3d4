"""Temp files of killed saves (``*.tmp<pid>``): removed for dead processes, kept for live ones; a failed save leaves
no temp file and no orphan weights (issue 15)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils.errors import WriteError

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_stale_removes_only_entries_of_dead_processes(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        exp = tmp_path / "exp" / "llm"
        exp.mkdir(parents=True)
        stale = [exp / f".epoch_0_whole.pt.tmp{dead}", exp / f".epoch_0_whole.state.pt.tmp{dead}",
                 tmp_path / "exp" / f"spk2info.pt.tmp{dead}"]
        for p in stale:
            p.write_bytes(b"partial")
        stale_dir = tmp_path / "data" / f".parquet.ab12cd.tmp{dead}"
        stale_dir.mkdir(parents=True)
        (stale_dir / "parquet_000000000.parquet").write_bytes(b"x")
        kept = [exp / f".epoch_1_whole.pt.tmp{live.pid}", exp / f".x.pt.tmp{os.getpid()}", exp / "epoch_0_whole.pt",
                exp / "notes.tmp", exp / f"tmp{dead}"]
        for p in kept:
            p.write_bytes(b"keep")
        outside = tmp_path / "pretrained"
        outside.mkdir()
        (outside / f".llm.pt.tmp{dead}").write_bytes(b"not ours to clean")
        os.symlink(outside, exp / "pretrained_link")  # a model dir links into the pretrained dir: never followed

        removed = ckpt.clean_stale_temp([tmp_path / "exp", tmp_path / "data", tmp_path / "missing"])
        assert sorted(removed) == sorted(stale + [stale_dir])
        assert not any(p.exists() for p in stale) and not stale_dir.exists()
        assert all(p.exists() for p in kept) and (outside / f".llm.pt.tmp{dead}").exists()
    finally:
        live.kill()
        live.wait()


def test_clean_stale_command_line(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".a.pt.tmp{dead}").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f".b.pt.tmp{dead}").write_bytes(b"x")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "cosyvoice.utils.checkpoint", "clean_stale", "--no_recursive",
                        str(tmp_path), str(tmp_path / "nope")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"removed 1 stale temp file(s) of killed processes: {tmp_path / f'.a.pt.tmp{dead}'}\n"
    assert (tmp_path / "sub" / f".b.pt.tmp{dead}").exists()
    r = subprocess.run([sys.executable, "-m", "cosyvoice.utils.checkpoint", "clean_stale", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and not (tmp_path / "sub" / f".b.pt.tmp{dead}").exists()
    r = subprocess.run([sys.executable, "-m", "cosyvoice.utils.checkpoint", "clean_stale", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout == ""


def test_a_save_that_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    info = ckpt.CheckpointInfo(name="epoch_0_whole", epoch=0, step=3, resume_epoch=1, resume_batch=0, world_size=1,
                               train_engine="torch_ddp")
    real = torch.save

    def save(obj, f, *args, **kw):
        if ".state.pt" in str(f.name):
            f.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kw)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(WriteError, match=f"^cannot write {tmp_path / 'epoch_0_whole.state.pt'}: no space left on "
                                         f"device: free some disk space, then rerun$"):
        ckpt.save_checkpoint(tmp_path, info, {"w": torch.zeros(3)}, {"optimizer": {}})
    assert list(tmp_path.iterdir()) == []  # neither the weights written first nor a temp file
