"""The stage tools on damaged models, unwritable or full disks: one line naming the file and the fix, exit status 2,
nothing half-written (issue 15)."""
from __future__ import annotations

import errno
import shutil
import tempfile

import pytest
import torch

from stage_test_utils import call_tool, load_tool, make_data_dir


@pytest.fixture()
def data(tmp_path, synthetic_utts):
    return make_data_dir(tmp_path, {u: synthetic_utts[u] for u in ("spkA_001", "spkB_001")})


def _one_line(err: str) -> str:
    """The one error line of stderr (progress bars aside), with no traceback."""
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("tool, onnx", [("extract_embedding", "campplus.onnx"),
                                        ("extract_speech_token", "speech_tokenizer_v2.onnx")])
def test_truncated_onnx_is_named_with_the_fix(tmp_path, stand_in_dir, data, tool, onnx):
    broken = tmp_path / "model" / onnx
    broken.parent.mkdir()
    broken.write_bytes((stand_in_dir / onnx).read_bytes()[:3000])
    rc, err = call_tool(tool, "--data_dir", data, "--onnx_path", broken)
    assert rc == 2
    line = _one_line(err)
    assert line.startswith(f"{tool}: error: {broken} (3000 bytes) is not a loadable ONNX model: the file is damaged or "
                           f"truncated (")
    assert line.endswith(f"download it again (tools/download_pretrained.py --model_dir {broken.parent}) or, for the "
                         f"stand-in, remake it (tools/make_tiny_pretrained.py --out_dir {broken.parent} --force)")
    assert not (data / "utt2embedding.pt").exists() and not (data / "utt2speech_token.pt").exists()


def _read_only(monkeypatch, folder):
    """Make creating files in ``folder`` fail as on a read-only mount (chmod does not stop root)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and str(dir).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kw)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_read_only_data_dir_fails_before_any_work(monkeypatch, stand_in_dir, data):
    _read_only(monkeypatch, data)
    tool = load_tool("extract_embedding")
    calls = []
    monkeypatch.setattr(tool, "map_utts", lambda *a, **k: calls.append(1) or {})
    rc, err = call_tool("extract_embedding", "--data_dir", data, "--onnx_path", stand_in_dir / "campplus.onnx")
    assert rc == 2 and calls == []  # nothing was computed
    assert _one_line(err) == (f"extract_embedding: error: cannot write {data}: the file system is read-only: choose "
                              f"a writable folder (the data dir, e.g. run.sh --data_root, must be writable)")


def test_read_only_model_dir_for_stage_4(monkeypatch, tmp_path, stand_in_dir):
    data = tmp_path / "data"
    data.mkdir()
    torch.save({"spk": [0.1] * 192}, data / "spk2embedding.pt")
    model_dir = tmp_path / "exp" / "model"
    model_dir.mkdir(parents=True)
    _read_only(monkeypatch, model_dir)
    rc, err = call_tool("save_spk2info", "--data_dir", data, "--pretrained_model_dir", stand_in_dir,
                        "--model_dir", model_dir)
    assert rc == 2
    assert _one_line(err).startswith(f"save_spk2info: error: cannot write {model_dir}: the file system is read-only")
    assert list(model_dir.iterdir()) == []


def _disk_full_torch_save(monkeypatch):
    """torch.save writes part of the file, then the disk is full."""
    def full(obj, f, *args, **kw):
        f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)


def test_disk_full_keeps_the_old_table_and_leaves_no_temp_file(monkeypatch, stand_in_dir, data):
    old = {"spkA_001": [0.0] * 192}
    torch.save(old, data / "utt2embedding.pt")
    _disk_full_torch_save(monkeypatch)
    rc, err = call_tool("extract_embedding", "--data_dir", data, "--onnx_path", stand_in_dir / "campplus.onnx")
    assert rc == 2
    assert _one_line(err) == (f"extract_embedding: error: cannot write {data / 'utt2embedding.pt'}: no space left on device: free some "
                              f"disk space, then rerun")
    monkeypatch.undo()
    assert torch.load(data / "utt2embedding.pt", weights_only=True) == old
    assert sorted(p.name for p in data.iterdir()) == ["spk2utt", "text", "utt2embedding.pt", "utt2spk", "wav.scp"]


def test_disk_full_while_packing_keeps_the_previous_parquet_dir(monkeypatch, tmp_path, stand_in_dir, data):
    for tool, onnx in (("extract_embedding", "campplus.onnx"), ("extract_speech_token", "speech_tokenizer_v2.onnx")):
        assert call_tool(tool, "--data_dir", data, "--onnx_path", stand_in_dir / onnx)[0] == 0
    assert call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet")[0] == 0
    before = sorted(p.name for p in (data / "parquet").iterdir())
    import pyarrow.parquet as pq

    def full(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pq, "write_table", full)
    rc, err = call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet")
    assert rc == 2
    assert _one_line(err) == (f"make_parquet_list: error: cannot write {data / 'parquet'}: no space left on device: "
                              f"free some disk space, then rerun (the previous {data / 'parquet'} is kept)")
    assert sorted(p.name for p in (data / "parquet").iterdir()) == before
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # the half-built dir is gone
    shutil.rmtree(data / "parquet")
