"""A second speaker after the demo, as a new user runs it: its own experiment, real training, working hints.

Also: reruns skip only what has the same inputs by content, and stopping run.sh stops every process it started.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from recipe_helpers import ROOT
from test_run_sh import assert_players_resolve

DEMO = ROOT / "local" / "demo_voice"


def make_speaker(out: Path, spk: str, n_train: int, n_test: int) -> Path:
    """Demo clips renamed <spk>_NNNN (pairs in out/train and out/test)."""
    for subset, n in (("train", n_train), ("test", n_test)):
        (out / subset).mkdir(parents=True)
        for wav in sorted((DEMO / subset).glob("*.wav"))[:n]:
            stem = f"{spk}_{wav.stem.split('_')[1]}"
            shutil.copy(wav, out / subset / f"{stem}.wav")
            shutil.copy(wav.with_suffix(".normalized.txt"), out / subset / f"{stem}.normalized.txt")
    return out


def recipe(cwd: Path, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = ["bash", str(ROOT / "run.sh"), "--setup_env", "false", *map(str, args)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


@pytest.fixture(scope="module")
def alice_run(demo_run):
    """After the demo, in the same cwd: `bash run.sh --data_dir alice --spk_id alice` (cwd, CompletedProcess)."""
    cwd, _ = demo_run
    make_speaker(cwd / "alice", "alice", n_train=24, n_test=4)
    r = recipe(cwd, "--data_dir", "alice", "--spk_id", "alice")
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r


def test_second_speaker_trains_its_own_models(alice_run):
    cwd, r = alice_run
    assert "already trained" not in r.stdout and "already done" not in r.stdout
    demo, alice = cwd / "exp" / "demo_voice", cwd / "exp" / "alice"
    assert (cwd / "data" / "alice" / "train" / "wav.scp").read_text().startswith("alice_0001 ")
    for m in ("llm", "flow"):
        assert (alice / m / "epoch_1_whole.pt").is_file(), m
        assert not same_weights(alice / "model" / f"{m}.pt", demo / "model" / f"{m}.pt"), m
        assert not same_weights(alice / "model" / f"{m}.pt", cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny"
                                / f"{m}.pt"), m
    assert sorted(weights(alice / "model" / "spk2info.pt")) == ["alice"]
    assert_players_resolve(alice / "report.html", 3 * 4)
    assert "speaker alice" in (alice / "report.html").read_text(encoding="utf-8")
    # the demo's experiment is untouched by alice's
    assert sorted(weights(demo / "model" / "spk2info.pt")) == ["demo"]


def test_printed_inference_command_works_for_the_new_speaker(alice_run):
    cwd, r = alice_run
    command = [line for line in r.stdout.splitlines() if line.startswith("bash ") and "inference.sh" in line]
    assert command == [f"bash {ROOT}/inference.sh --model_dir exp/alice/model --spk_id alice "
                       "--test_data_dir data/alice/test"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(shlex.split(command[0]), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    index = (cwd / "exp" / "alice" / "inference" / "index.tsv").read_text(encoding="utf-8").splitlines()
    modes = [line.split("\t")[1] for line in index[1:]]
    assert modes.count("sft") == 2 and modes.count("zero-shot") == 2
    for line in index[1:]:
        assert (cwd / "exp" / "alice" / "inference" / line.split("\t")[0]).is_file()
    assert "prompt: alice_" in done.stderr  # the zero-shot prompt is one of alice's own test clips
    assert not (cwd / "exp" / "demo_voice" / "inference").exists()  # nothing written into the demo's experiment


def test_inference_sh_defaults_follow_the_model_dir(alice_run, tmp_path):
    """Only --model_dir: the speaker, the prompts and the output dir are the experiment's (recipe_data.conf)."""
    cwd, _ = alice_run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "inference.sh"), "--model_dir", "exp/alice/model", "--mode", "zero-shot",
                           "--result_dir", str(out)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prompt: alice_" in done.stderr
    assert len(list(out.glob("zero-shot_*.wav"))) == 2


def test_rerun_skips_unchanged_stages_and_retrains_on_changed_data(alice_run):
    cwd, _ = alice_run
    again = recipe(cwd, "--data_dir", "alice", "--spk_id", "alice", "--stop_stage", "5")
    assert again.returncode == 0, again.stderr[-3000:]
    for what in ("Stage 0", "Stage 1: train", "Stage 2: test", "Stage 3: train"):
        assert f"{what}: already done with these inputs; skipped" in again.stdout, what
    assert "Stage 5: llm: already trained with these inputs; skipped" in again.stdout
    # same file names, other content: every stage from 0 on reruns, and the llm is trained again
    before = weights(cwd / "exp" / "alice" / "llm" / "epoch_1_whole.pt")
    txt = cwd / "alice" / "train" / "alice_0001.normalized.txt"
    txt.write_text("今天天气很好，我们去公园散步吧。\n", encoding="utf-8")
    changed = recipe(cwd, "--data_dir", "alice", "--spk_id", "alice", "--stop_stage", "5", "--train_models", "llm")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "already done" not in changed.stdout.split("Stage 4")[0]
    assert "already trained" not in changed.stdout
    assert "Stage 5: llm: the inputs changed (or --force true): training again" in changed.stdout
    assert not (cwd / "exp" / "alice" / "llm.prev").exists()  # kept only until the new run succeeded
    after = weights(cwd / "exp" / "alice" / "llm" / "epoch_1_whole.pt")
    assert any(not bool((before[k] == after[k]).all()) for k in before)


def _train_workers(marker: str) -> list:
    out = subprocess.run(["pgrep", "-f", "--", marker], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL_GROUP"])
def test_stopping_run_sh_stops_every_worker(demo_run, how):
    """SIGTERM to run.sh, or SIGKILL of its whole process group, during training: no worker outlives it."""
    cwd, _ = demo_run
    exp = f"exp/stop_{how}"
    marker = f"--model_dir {exp}/llm"
    cmd = ["bash", str(ROOT / "run.sh"), "--setup_env", "false", "--tag", "demo_voice", "--exp_dir", exp,
           "--stage", "4", "--stop_stage", "5", "--train_models", "llm", "--max_epoch", "200", "--sample_texts", ""]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(_train_workers(marker)) < 3 and time.time() < deadline:  # torchrun agent + 2 workers
            time.sleep(0.5)
        assert len(_train_workers(marker)) >= 3, "training did not start"
        time.sleep(2)
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.time() + 60
        while _train_workers(marker) and time.time() < deadline:
            time.sleep(0.5)
        assert _train_workers(marker) == []
    finally:
        for pid in _train_workers(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_run_stopped_before_training_prints_how_to_go_on(demo_run):
    """--stop_stage 4: the model dir still holds the pretrained weights, so the hint is the rest of the recipe (the
    same options, quoted), not an inference command that would speak with the base model."""
    cwd, _ = demo_run
    make_speaker(cwd / "carol data", "carol", n_train=6, n_test=2)
    r = recipe(cwd, "--data_dir", "carol data", "--stop_stage", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if "Next: stages 5..8, which train the llm and flow and put" in line)
    assert lines[i + 1] == f"bash {ROOT}/run.sh --setup_env false --data_dir carol\\ data --stage 5"
    assert "(inference now would speak with the pretrained llm and flow and this speaker's embedding" in lines[i + 2]
    assert (cwd / "exp" / "carol-data" / "model" / "llm.pt").is_symlink()
    # the printed options are this experiment's: its finished stages are recognised
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    again = subprocess.run(shlex.split(lines[i + 1]) + ["--stage", "0", "--stop_stage", "2"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done with these inputs; skipped") >= 3
