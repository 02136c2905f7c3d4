"""run.sh under faults and bad input: one run per dir, failed reruns lose nothing, no train/test overlap."""
from __future__ import annotations

import fcntl
import os
import shutil

from recipe_helpers import ROOT, snapshot, write_text, write_wav
from cosyvoice.dataset.datadir import read_table

DEMO = ROOT / "local" / "demo_voice"


def pairs(d, names):
    for i, name in enumerate(names):
        write_wav(d / f"{name}.wav", 0.6 + 0.01 * (sum(map(ord, name)) % 90))  # distinct audio per name
        write_text(d / f"{name}.normalized.txt", f"sentence number {i}")
    return d


def test_second_run_on_a_dir_in_use_fails_at_once_naming_the_holder(run_recipe, tmp_path):
    exp = tmp_path / "exp" / "x"
    exp.mkdir(parents=True)
    with open(exp / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("PID 4242: bash run.sh --stage 5 --lr 0.01\n")
        held.flush()
        r = run_recipe("--stage", "1", "--stop_stage", "1", "--exp_dir", exp, "--data_root", tmp_path / "data")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"run.sh: error: {exp} is in use by another run (PID 4242: bash run.sh --stage 5 --lr 0.01 ); wait for it "
        "to finish, or give another --exp_dir/--data_root (--tag)"]
    assert "Stage 1" not in r.stdout
    # once the holder is gone the lock is free again, and the new run records itself in it
    r = run_recipe("--stage", "0", "--stop_stage", "0", "--data_dir", DEMO, "--data_root", tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / ".lock").read_text().startswith(f"PID ")


def test_failed_stage0_rerun_leaves_the_previous_tables(run_recipe, tmp_path):
    good = tmp_path / "good"
    pairs(good / "train", [f"a_{i}" for i in range(4)])
    pairs(good / "test", ["a_t1", "a_t2"])
    data = tmp_path / "data"
    assert run_recipe("--stop_stage", "0", "--data_dir", good, "--data_root", data).returncode == 0
    before = snapshot(data / "train")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    r = run_recipe("--stop_stage", "0", "--data_dir", empty, "--data_root", data)
    assert r.returncode == 2 and "no usable utterance" in r.stderr
    assert snapshot(data / "train") == before
    r = run_recipe("--stop_stage", "0", "--data_dir", good, "--data_root", data)  # the next run cleans up
    assert r.returncode == 0 and not (data / ".stage0.new").exists()


def test_train_test_overlap_is_an_error_or_dropped_from_test(run_recipe, tmp_path):
    d = tmp_path / "D"
    pairs(d / "train", ["a_1", "a_2", "a_3"])
    pairs(d / "test", ["a_1", "a_t"])                  # the same id in both sets
    shutil.copy(d / "train" / "a_2.wav", d / "test" / "a_copy.wav")  # the same audio under another name
    write_text(d / "test" / "a_copy.normalized.txt", "another transcript")
    data = tmp_path / "data"
    r = run_recipe("--stop_stage", "0", "--data_dir", d, "--data_root", data)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert errors == [f"check_overlap.py: error: 2 test utterance(s) are also in the training set (a_1: id a_1 is "
                      f"also in {d}/train, ...): remove them from one set, or pass --drop_test_overlap true to drop "
                      f"them from the test set ({d}/test)"]
    assert not (data / "train").exists()  # nothing swapped in
    r = run_recipe("--stop_stage", "0", "--data_dir", d, "--data_root", data, "--drop_test_overlap", "true")
    assert r.returncode == 0, r.stderr
    assert [k for k, _ in read_table(data / "test" / "wav.scp")] == ["a_t"]
    rejected = (data / "test" / "rejected.tsv").read_text().splitlines()
    assert rejected[1].startswith("a_1\tin_train_set\tid a_1 is also in")
    assert rejected[2].startswith("a_copy\tin_train_set\tsame audio as a_2 of")
    assert os.path.isfile(data / "train" / "wav.scp")


def test_diverging_training_stops_the_recipe_with_one_line(demo_run):
    """--lr 1e6 through run.sh: the worker's one-line reason is the last line (exit 2), not torchrun's report; and
    stage 6 refuses to average the diverged run."""
    import subprocess

    cwd, _ = demo_run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base = ["bash", str(ROOT / "run.sh"), "--setup_env", "false", "--tag", "demo_voice", "--exp_dir", "exp/diverge",
            "--train_models", "llm", "--sample_texts", ""]
    r = subprocess.run(base + ["--stage", "4", "--stop_stage", "5", "--lr", "1e6"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: training diverged at epoch 0 step ") and "lower --lr" in last
    assert "ChildFailedError" not in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(base + ["--stage", "6", "--stop_stage", "6"], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "diverged" in r.stderr.strip().splitlines()[-1]
    assert not (cwd / "exp" / "diverge" / "model" / "llm.pt").is_file() or (
        cwd / "exp" / "diverge" / "model" / "llm.pt").is_symlink()
