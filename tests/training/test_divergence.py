"""Training that diverges or learns nothing stops with one line (exit status 2) naming the epoch, the step and the
likely cause, and stage 6 refuses its checkpoints; bad training data (out-of-range speech tokens, missing or damaged
shards) and a full disk are one line naming the file and the fix (issue 15)."""
from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import train_helpers as th
from cosyvoice.bin import average_model, train
from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils.divergence import DIVERGED_FILE, DivergenceGuard, TrainingDiverged, mark_run_diverged

QUICK = ["--max_epoch", 1, "--accum_grad", 1, "--log_interval", 1, "--max_frames_in_batch", 160]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _drop_train_log_handlers():
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_cosyvoice_train", False):  # bound to an earlier test's captured stderr
            root.removeHandler(h)
            h.close()


def _cli(fn, argv, capsys):
    """(exit status, the one line besides the log lines on stderr) of an entry point run in this process."""
    _drop_train_log_handlers()
    capsys.readouterr()
    try:
        rc = fn([str(a) for a in argv])
    finally:
        _drop_train_log_handlers()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1, lines
    return rc, lines[0]


def _rewrite(list_file, out_dir, change):
    """Copies of the shards of ``list_file`` with ``change(rows)`` applied, and their data.list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in list_file.read_text().split():
        table = pq.read_table(src)
        rows = table.to_pylist()
        change(rows)
        dst = out_dir / (src.rsplit("/", 1)[-1])
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), dst)
        paths.append(dst)
    (out_dir / "data.list").write_text("".join(f"{p}\n" for p in paths))
    return out_dir / "data.list"


# --------------------------------------------------------------------------------------------------- divergence
def test_lr_1e6_stops_at_once_naming_the_learning_rate(stand_in, lists, tmp_path, capsys):
    model_dir = tmp_path / "llm"
    model_dir.mkdir()
    (model_dir / f".epoch_0_whole.pt.tmp{_dead_pid()}").write_bytes(b"half a checkpoint")
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *QUICK, "--lr", 1e6,
                         "--save_per_step", 1)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line.startswith("train.py: error: training diverged at epoch 0 step 1: the CV loss (")
    assert "is over 10 x the CV loss before training (" in line
    assert ("likely cause: the learning rate is too high (lr 1e+06 now): lower --lr (train_conf.optim_conf.lr) "
            "and train again. Its checkpoints are marked diverged and are not averaged (stage 6)") in line
    assert not list(model_dir.glob("*.tmp*"))  # the stale temp file of a killed save is gone
    record = json.loads((model_dir / DIVERGED_FILE).read_text())
    assert (record["epoch"], record["step"]) == (0, 1) and "learning rate" in record["cause"]
    assert ckpt.list_checkpoints(model_dir) == []  # the diverged weights were not saved
    # stage 6 refuses the run
    dst = tmp_path / "model" / "llm.pt"
    rc, line = _cli(average_model.cli, ["--src_path", model_dir, "--dst_model", dst], capsys)
    assert rc == 2 and not dst.exists()
    assert line.startswith(f"average_model.py: error: {model_dir}: training diverged at epoch 0 step 1, so its "
                           f"checkpoints are not averaged (likely cause: the learning rate is too high (lr 1e+06 now)")
    assert line.endswith("retrain into a fresh model dir (run.sh --stage 5 --force true) after the fix")
    # and so does --resume
    rc, line = _cli(train.cli, argv + ["--resume"], capsys)
    assert rc == 2 and f"{model_dir} holds a run that diverged at epoch 0 step 1" in line


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _nan_embeddings(rows):
    for row in rows:
        row["spk_embedding"] = [float("nan")] * len(row["spk_embedding"])


def test_nan_inputs_stop_training_naming_the_utterance(stand_in, lists, tmp_path, capsys):
    bad = _rewrite(lists["train"], tmp_path / "nan", _nan_embeddings)
    argv = th.train_args("flow", stand_in, bad, lists["cv"], tmp_path / "flow", *QUICK, "--lr", 0.002)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line.startswith("train.py: error: training diverged at epoch 0 step 3: the training loss was nan for 3 "
                           "updates in a row; likely cause: NaN/inf in the input: ")
    assert "embedding of utt " in line and "rerun stages 1-3" in line


def test_skipped_updates_share_stops_training(stand_in, lists, tmp_path, capsys):
    """With the consecutive check off (diverge_patience 0), the share of skipped updates at the CV stops it."""
    config = tmp_path / "cosyvoice2.yaml"
    text = (stand_in / "cosyvoice2.yaml").read_text()
    assert "diverge_patience: 3" in text
    config.write_text(text.replace("diverge_patience: 3", "diverge_patience: 0"))
    shutil.copytree(stand_in / "CosyVoice-BlankEN", tmp_path / "CosyVoice-BlankEN")
    bad = _rewrite(lists["train"], tmp_path / "nan", _nan_embeddings)
    argv = th.train_args("flow", stand_in, bad, lists["cv"], tmp_path / "flow", *QUICK, "--lr", 0.002)
    argv[argv.index("--config") + 1] = str(config)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line.startswith("train.py: error: training diverged at epoch 0 step 5: 5 of the 5 updates since the "
                           "previous CV were skipped (gradient norm nan/inf), more than "
                           "train_conf.diverge_skipped_ratio 0.5: nothing is learnt; likely cause: NaN/inf in the "
                           "input")


def test_marked_checkpoints_are_not_averaged(llm_run, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(llm_run, src, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples", "*.state.pt"))
    mark_run_diverged(src, TrainingDiverged("training diverged at epoch 1 step 6: ...", 1, 6, "a test"))
    assert all(c.diverged == "training diverged at epoch 1 step 6: ..." for c in ckpt.list_checkpoints(src))
    for c in ckpt.list_checkpoints(src):  # the marks keep the checkpoints intact
        ckpt.verify_checkpoint(src, c, need_state=False)
    (src / DIVERGED_FILE).unlink()  # the sidecar marks alone are enough
    rc, line = _cli(average_model.cli, ["--src_path", src, "--dst_model", tmp_path / "x.pt"], capsys)
    assert rc == 2 and not (tmp_path / "x.pt").exists()
    assert line.startswith(f"average_model.py: error: {src}: training diverged (epoch_0_whole, epoch_1_step_4, "
                           f"epoch_1_whole marked), so its checkpoints are not averaged")


def test_guard_counts_only_real_skips_under_a_loss_scaler():
    guard = DivergenceGuard({}, loss_scaled=True)
    for step in range(1, 20):  # fp16 overflow: finite loss, inf gradient norm -> the scaler's business
        guard.after_update(0, step, 2.0, float("inf"), 1e-3, [])
    guard.after_cv(0, 19, 2.0, 1e-3)
    with pytest.raises(TrainingDiverged, match="the training loss was nan for 3 updates in a row"):
        for step in range(20, 23):
            guard.after_update(0, step, float("nan"), float("nan"), 1e-3, [])


def test_guard_settings_are_checked():
    from cosyvoice.utils.train_utils import TrainSetupError

    with pytest.raises(TrainSetupError, match="diverge_loss_ratio must be 0 \\(off\\) or > 1"):
        DivergenceGuard({"diverge_loss_ratio": 0.5})
    with pytest.raises(TrainSetupError, match="numbers expected"):
        DivergenceGuard({"diverge_patience": "many"})


# ------------------------------------------------------------------------------------------------ bad data
@pytest.mark.parametrize("model, token, vocab", [("llm", 6561, "the llm (speech_token_size 6561)"),
                                                 ("flow", 7000, "the flow (vocab_size 6561)")])
def test_out_of_range_speech_token_names_shard_and_utterance(stand_in, lists, tmp_path, capsys, model, token,
                                                             vocab):
    def poison(rows):
        if rows[0]["utt"].startswith("b_"):
            rows[1]["speech_token"][3] = token
    bad = _rewrite(lists["train"], tmp_path / "tok", poison)
    argv = th.train_args(model, stand_in, bad, lists["cv"], tmp_path / model, *QUICK, "--lr", 0.002)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line == (f"train.py: error: {tmp_path / 'tok' / 'b.parquet'}: utt b_006 has speech token {token}, outside "
                    f"the 6561 speech tokens (0..6560) of {vocab}: its speech tokens come from a speech tokenizer "
                    f"that does not match this model; rerun stage 2 (tools/extract_speech_token.py) with the "
                    f"model's speech_tokenizer_v2.onnx, then stage 3")


def test_missing_or_truncated_shard_is_named(stand_in, lists, tmp_path, capsys):
    good = lists["train"].read_text().split()
    listed = tmp_path / "data.list"
    listed.write_text(f"{good[0]}\n{tmp_path / 'gone.parquet'}\n")
    argv = th.train_args("llm", stand_in, listed, lists["cv"], tmp_path / "a", *QUICK)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line == (f"train.py: error: parquet shard {tmp_path / 'gone.parquet'} not found (it is listed in "
                    f"data.list): rerun stage 3 (tools/make_parquet_list.py) for its data dir")

    cut = tmp_path / "cut.parquet"
    data = open(good[1], "rb").read()
    cut.write_bytes(data[:len(data) // 2])
    listed.write_text(f"{good[0]}\n{cut}\n")
    argv = th.train_args("llm", stand_in, listed, lists["cv"], tmp_path / "b", *QUICK)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line.startswith(f"train.py: error: parquet shard {cut} cannot be read (")
    assert line.endswith("the file is damaged or truncated; rerun stage 3 (tools/make_parquet_list.py) for its "
                         "data dir")


def test_shard_damaged_inside_is_named_also_from_a_dataloader_worker(stand_in, lists, tmp_path, capsys):
    good = lists["train"].read_text().split()
    data = bytearray(open(good[0], "rb").read())
    footer = int.from_bytes(data[-8:-4], "little") + 8  # keep the footer (metadata) intact
    for i in range(4, len(data) - footer, 7):
        data[i] ^= 0xA5
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(bytes(data))
    pq.ParquetFile(broken)  # opens: only reading its rows fails
    listed = tmp_path / "data.list"
    listed.write_text(f"{broken}\n")
    argv = th.train_args("llm", stand_in, listed, lists["cv"], tmp_path / "c", *QUICK, "--num_workers", 1,
                         "--prefetch", 2)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line.startswith(f"train.py: error: parquet shard {broken} cannot be read (")
    assert "Traceback" not in line


# ------------------------------------------------------------------------------------------------ full disk
def _full_disk_for(monkeypatch, suffix):
    real = torch.save

    def save(obj, f, *args, **kw):
        if str(getattr(f, "name", f)).split(".tmp")[0].endswith(suffix):
            f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kw)
    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving_a_checkpoint(stand_in, lists, tmp_path, capsys, monkeypatch):
    model_dir = tmp_path / "llm"
    _full_disk_for(monkeypatch, ".state.pt")
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *QUICK, "--lr", 0.002)
    rc, line = _cli(train.cli, argv, capsys)
    assert rc == 2
    assert line == (f"train.py: error: cannot write {model_dir / 'epoch_0_whole.state.pt'}: no space left on device: "
                    f"free some disk space, then rerun")
    assert not list(model_dir.glob("epoch_*")) and not list(model_dir.glob(".*tmp*"))  # no orphan, no partial


def test_disk_full_while_averaging(llm_run, tmp_path, capsys, monkeypatch):
    dst = tmp_path / "model" / "llm.pt"
    _full_disk_for(monkeypatch, "llm.pt")
    rc, line = _cli(average_model.cli, ["--src_path", llm_run, "--dst_model", dst, "--num", 2], capsys)
    assert rc == 2
    assert line == (f"average_model.py: error: cannot write {dst}: no space left on device: free some disk space, "
                    f"then rerun")
    assert list((tmp_path / "model").iterdir()) == []


def test_damaged_checkpoint_in_stage_6_is_one_line_with_the_fix(llm_run, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(llm_run, src, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples", "*.state.pt"))
    (src / "epoch_1_step_4.pt").write_bytes(b"\0" * 64)
    rc, line = _cli(average_model.cli, ["--src_path", src, "--dst_model", tmp_path / "x.pt", "--num", 2], capsys)
    assert rc == 2 and not (tmp_path / "x.pt").exists()
    assert line.startswith(f"average_model.py: error: {src / 'epoch_1_step_4.pt'} is damaged (sha256 ")
    assert line.endswith(f"checkpoint epoch_1_step_4 cannot be averaged; leave it out by deleting "
                         f"{src / 'epoch_1_step_4.ckpt.json'} (or rerun training, stage 5, to write it again)")


def test_nan_fixture_is_what_it_claims(lists, tmp_path):
    bad = _rewrite(lists["train"], tmp_path / "nan", _nan_embeddings)
    rows = [r for src in bad.read_text().split() for r in pq.read_table(src).to_pylist()]
    assert rows and all(np.isnan(r["spk_embedding"]).all() for r in rows)
