"""cosyvoice/bin/train.py end to end on the stand-in model: records, trackers, samples, resume, DDP, DeepSpeed."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

import train_helpers as th
from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils import train_utils as tu
from cosyvoice.utils.config import load_config

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \[[\w.]+\.py:\d+\] \(0/1\) ")


# ------------------------------------------------------------------------------------------------ one llm run
def test_llm_run_records_command_commit_config_and_log(llm_run, stand_in):
    text = (llm_run / "config.yaml").read_text()
    assert "max_epoch: 2" in text and "accum_grad: 2" in text and "save_per_step: 4" in text
    assert "max_frames_in_batch: 160" in text and "lr: 0.002" in text
    assert f"qwen_pretrain_path: '{(stand_in / 'CosyVoice-BlankEN').resolve()}'" in text
    conf = load_config(str(llm_run / "config.yaml"), keys=["train_conf"])["train_conf"]
    assert (conf["max_epoch"], conf["accum_grad"], conf["optim_conf"]["lr"]) == (2, 2, 0.002)
    cmd = (llm_run / "train.cmd").read_text().splitlines()
    assert re.match(r"# \S+ git ([0-9a-f]{40}(-dirty)?|unknown) world_size 1 cwd ", cmd[0])
    assert "-m cosyvoice.bin.train --model llm" in cmd[1] and "--save_per_step 4" in cmd[1]
    log = (llm_run / "train.log").read_text().splitlines()
    assert log and all(LOG_LINE.match(line) for line in log if line[:2] == "20"), log[:3]
    assert any("epoch 1 step 6:" in line and "loss" in line and "utt/s" in line for line in log)
    assert any("optimizer adam (fused implementation)" in line for line in log)


def test_llm_run_checkpoints(llm_run, stand_in):
    infos = {c.name: c for c in ckpt.list_checkpoints(llm_run)}
    # 5 batches per epoch in windows of 2, 2, 1: steps 3 and 6 end the epochs; save_per_step 4
    assert {n: (c.epoch, c.step, c.resume_epoch, c.resume_batch) for n, c in infos.items()} == {
        "epoch_0_whole": (0, 3, 1, 0), "epoch_1_step_4": (1, 4, 1, 2), "epoch_1_whole": (1, 6, 2, 0)}
    # --keep_states 2: the oldest keeps its weights only
    assert infos["epoch_0_whole"].state is None and not (llm_run / "epoch_0_whole.state.pt").exists()
    for c in infos.values():
        ckpt.verify_checkpoint(llm_run, c, need_state=c.state is not None)
    # the weights have exactly the pretrained keys, moved, and CV improved
    tuned, base = th.load_state(llm_run / "epoch_1_whole.pt"), th.load_state(stand_in / "llm.pt")
    assert th.max_abs_diff(tuned, base) > 1e-3
    assert infos["epoch_1_whole"].cv_loss < infos["epoch_0_whole"].cv_loss


def test_tensorboard_holds_scalars_and_audio(llm_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(llm_run / "tensorboard"), size_guidance={"scalars": 0, "audio": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("cv/loss")] == [0, 3, 4, 6]  # 0: the CV before training (divergence guard)
    assert {"train/acc", "train/lr", "train/grad_norm", "cv/acc"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("speed/speech_tokens_per_s")] == [1, 2, 3, 4, 5, 6]
    assert all(e.value > 0 for e in acc.Scalars("speed/utts_per_s"))
    audio = acc.Audio("sft/llm/short")
    assert [e.step for e in audio] == [3, 6] and audio[0].sample_rate == 24000


def test_swanlab_offline_run_holds_scalars_and_audio(llm_run):
    if importlib.util.find_spec("swanlab") is None:
        pytest.skip("swanlab is not installed (pip install swanlab): TensorBoard only, as train.py logs")
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    [run_dir] = (llm_run / "swanlog").glob("run-*")
    reader = DataStoreReader()
    reader.open(next(run_dir.glob("run-*.swanlab")))
    scalars, media = {}, {}
    while (data := reader.scan()) is not None:
        rec = Record()
        rec.ParseFromString(data)
        if rec.HasField("scalar"):
            scalars.setdefault(rec.scalar.key, []).append((rec.scalar.step, rec.scalar.value.number))
        elif rec.HasField("media"):
            media.setdefault(rec.media.key, []).append(rec.media.step)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in scalars["cv/loss"]] == [0, 3, 4, 6]
    assert media == {"sft/llm/short": [3, 6]}
    wavs = sorted((run_dir / "media" / "audio").glob("*.wav"))
    assert len(wavs) == 2 and all(sf.info(str(w)).samplerate == 24000 for w in wavs)


def test_samples_each_epoch(llm_run, flow_run):
    for epoch in (0, 1):
        wav, sr = sf.read(str(llm_run / "samples" / f"epoch_{epoch}" / "llm_short.wav"))
        assert sr == 24000 and len(wav) > 0
    # flow training: base llm + new flow, and the tuned llm (--sample_llm) + new flow
    assert sorted(p.name for p in (flow_run / "samples").rglob("*.wav")) == ["flow_short.wav", "llm_flow_short.wav"]
    for name in ("flow_short.wav", "llm_flow_short.wav"):
        wav, sr = sf.read(str(flow_run / "samples" / "epoch_0" / name))
        assert sr == 24000 and len(wav) > 0


def test_flow_run_checkpoints(flow_run, stand_in):
    steps = [(c.name, c.step) for c in ckpt.list_checkpoints(flow_run)]
    assert steps == [(f"epoch_0_step_{s}", s) for s in range(1, 6)] + [("epoch_0_whole", 5)]
    assert th.max_abs_diff(th.load_state(flow_run / "epoch_0_whole.pt"), th.load_state(stand_in / "flow.pt")) > 1e-3


# ------------------------------------------------------------------------------------------------ resume
def test_killed_run_resumes_to_the_uninterrupted_result(llm_run, stand_in, lists, tmp_path):
    """kill -9 a training process once its first checkpoint exists; --resume must end where llm_run ended."""
    model_dir = tmp_path / "llm"
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *th.LLM_TRAIN)
    proc = subprocess.Popen([sys.executable, "-m", "cosyvoice.bin.train", *argv], cwd=th.ROOT,
                            env=th.subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (model_dir / "epoch_0_whole.ckpt.json").exists():
        assert proc.poll() is None, f"training exited with {proc.returncode} before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (model_dir / "epoch_1_whole.ckpt.json").exists(), "the run finished before it was killed"

    assert th.run_train(argv + ["--resume"]) == 0
    log = (model_dir / "train.log").read_text()
    assert re.search(r"resumed from epoch_(0_whole|1_step_4): epoch 1, [02] batches into it, step [34]", log)
    final, reference = th.load_state(model_dir / "epoch_1_whole.pt"), th.load_state(llm_run / "epoch_1_whole.pt")
    assert th.max_abs_diff(final, reference) <= 1e-6


def test_damaged_latest_checkpoint_resumes_from_the_previous(llm_run, stand_in, lists, tmp_path, caplog):
    model_dir = tmp_path / "llm"
    shutil.copytree(llm_run, model_dir, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples"))
    reference = th.load_state(llm_run / "epoch_1_whole.pt")
    state = model_dir / "epoch_1_whole.state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 3] ^= 0x55
    state.write_bytes(bytes(data))
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *th.LLM_TRAIN, "--resume")
    with caplog.at_level(logging.WARNING):
        assert th.run_train(argv) == 0
    assert f"checkpoint epoch_1_whole is unusable: {state} is damaged" in caplog.text
    assert "resuming from epoch_1_step_4 instead" in caplog.text
    # steps 5 and 6 were trained again from step 4 (without samples or SwanLab): the same weights
    assert th.max_abs_diff(th.load_state(model_dir / "epoch_1_whole.pt"), reference) <= 1e-6


def test_resume_refuses_another_world_size(llm_run, stand_in, lists, tmp_path):
    model_dir = tmp_path / "llm"
    shutil.copytree(llm_run, model_dir, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples"))
    side = model_dir / "epoch_1_whole.ckpt.json"
    side.write_text(side.read_text().replace('"world_size": 1', '"world_size": 2'))
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *th.LLM_TRAIN, "--resume")
    with pytest.raises(ValueError, match="written by 2 process\\(es\\), this run has 1: exact resume needs"):
        th.run_train(argv)


def test_finished_run_resumes_to_nothing(llm_run, stand_in, lists, tmp_path, caplog):
    model_dir = tmp_path / "llm"
    shutil.copytree(llm_run, model_dir, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples"))
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *th.LLM_TRAIN, "--resume")
    with caplog.at_level(logging.INFO):
        assert th.run_train(argv) == 0
    assert "training already finished: 2 of max_epoch 2 epochs done" in caplog.text
    assert sorted(c.name for c in ckpt.list_checkpoints(model_dir)) == ["epoch_0_whole", "epoch_1_step_4",
                                                                        "epoch_1_whole"]


def test_fp16_amp_saves_and_restores_the_grad_scaler(stand_in, lists, tmp_path, caplog):
    model_dir = tmp_path / "flow"
    argv = th.train_args("flow", stand_in, lists["train"], lists["cv"], model_dir, "--max_epoch", 1, "--accum_grad", 5,
                         "--max_frames_in_batch", 160, "--use_amp", "fp16")
    assert th.run_train(argv) == 0
    [info] = ckpt.list_checkpoints(model_dir)
    scaler = ckpt.load_train_state(model_dir, info)["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    argv[argv.index("--max_epoch") + 1] = "2"
    with caplog.at_level(logging.WARNING):
        assert th.run_train(argv + ["--resume"]) == 0
    # one more epoch was asked for: said, and recorded in config.yaml
    assert re.search(r"config.yaml differs from the checkpointed run's \(.*max_epoch: 2", caplog.text)
    assert "max_epoch: 2" in (model_dir / "config.yaml").read_text()
    assert [c.step for c in ckpt.list_checkpoints(model_dir)] == [1, 2]
    assert "resumed from epoch_0_whole: epoch 1, 0 batches into it, step 1" in (model_dir / "train.log").read_text()


# ------------------------------------------------------------------------------------------------ option errors
def test_missing_checkpoint_is_a_one_line_error(stand_in, lists, tmp_path):
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], tmp_path / "m")
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=f"--checkpoint {tmp_path / 'nope.pt'} not found"):
        th.run_train(argv)
    r = th.train_command_line(argv)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (f"train.py: error: --checkpoint {tmp_path / 'nope.pt'} not found (pass the "
                                         "pretrained llm.pt, or leave it out to train from scratch)")
    assert "Traceback" not in r.stderr


def test_unknown_yaml_key_is_a_one_line_error_and_writes_nothing(stand_in, lists, tmp_path):
    text = (stand_in / "cosyvoice2.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "cosyvoice2.yaml"
    bad.write_text(text.replace("    max_epoch: 200\n", "    max_epochz: 200\n", 1), encoding="utf-8")  # train_conf
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], tmp_path / "m")
    argv[argv.index("--config") + 1] = str(bad)
    r = th.train_command_line(argv)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (f"train.py: error: {bad}: unknown key 'max_epochz' in train_conf (the "
                                         "trainer does not read it); did you mean 'max_epoch'?")
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m" / "config.yaml").exists()  # checked before anything is written


def test_unknown_yaml_key_under_torchrun_is_said_once(stand_in, lists, tmp_path):
    """Every rank checks the yaml, so none waits at a barrier for a rank that already failed; rank 0 says it."""
    text = (stand_in / "cosyvoice2.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "cosyvoice2.yaml"
    bad.write_text(text.replace("    max_epoch: 200\n", "    max_epochz: 200\n", 1), encoding="utf-8")
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], tmp_path / "m")
    argv[argv.index("--config") + 1] = str(bad)
    r = th.torchrun(2, argv)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "train.py: error" in line]
    assert errors == [f"train.py: error: {bad}: unknown key 'max_epochz' in train_conf (the trainer does not read "
                      "it); did you mean 'max_epoch'?"]
    assert "[rank1]" not in r.stderr and "ERROR [train.py" not in r.stderr
    assert "unknown key 'max_epochz'" in (tmp_path / "m" / "train.rank1.log").read_text(encoding="utf-8")


def test_sample_llm_dir_without_checkpoints_means_base_llm_only(tmp_path):
    from cosyvoice.bin.train import sample_llm_file

    assert sample_llm_file(str(tmp_path)) is None
    with pytest.raises(ValueError, match="--sample_llm .*nope not found \\(an llm.pt, or the llm's training dir\\)"):
        sample_llm_file(str(tmp_path / "nope"))


def test_existing_checkpoints_need_resume(llm_run, stand_in, lists):
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], llm_run)
    with pytest.raises(ValueError, match="already holds checkpoints .*pass --resume to continue, or choose a new"):
        th.run_train(argv)


# ------------------------------------------------------------------------------------------------ several processes
@pytest.fixture(scope="module")
def ddp_two(stand_in, lists, tmp_path_factory):
    """llm, 2 epochs, two gloo processes under torchrun: each rank reads one list of two equal utterances."""
    model_dir = tmp_path_factory.mktemp("ddp") / "llm"
    argv = th.train_args("llm", stand_in, lists["even"], lists["cv"], model_dir, "--max_epoch", 2, "--lr", 0.01,
                         "--accum_grad", 1, "--max_frames_in_batch", 2000, "--log_interval", 1)
    r = th.torchrun(2, argv)
    assert r.returncode == 0, r.stderr[-3000:]
    return model_dir, argv


def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(ddp_two, tmp_path):
    model_dir, argv = ddp_two
    assert (model_dir / "train.rank1.log").is_file()
    assert "(1/2)" in (model_dir / "train.rank1.log").read_text()
    single = tmp_path / "single"
    argv = list(argv)
    argv[argv.index("--model_dir") + 1] = str(single)
    assert th.run_train(argv) == 0
    two, one = th.load_state(model_dir / "epoch_1_whole.pt"), th.load_state(single / "epoch_1_whole.pt")
    # every utterance has the same number of targets, so the mean over ranks of the per-rank mean loss is the
    # mean over the whole batch: the updates agree up to float rounding (Adam moves each weight ~0.01 per step)
    assert th.max_abs_diff(two, one) < 1e-4
    assert th.max_abs_diff(two, th.load_state(Path(argv[argv.index("--checkpoint") + 1]))) > 5e-3


def test_deepspeed_is_installed():
    """DeepSpeed is a requirement (tools/setup_env.sh installs it), so its tests run instead of being skipped."""
    assert importlib.util.find_spec("deepspeed") is not None, "deepspeed missing: bash tools/setup_env.sh --force true"


def test_deepspeed_zero2_through_the_same_entry_point(ddp_two, tmp_path):
    model_dir = tmp_path / "ds"
    th.deepspeed_run(ddp_two, model_dir)
    info = {c.name: c for c in ckpt.list_checkpoints(model_dir)}["epoch_1_whole"]
    assert info.train_engine == "deepspeed" and info.state == "epoch_1_whole.ds"
    assert any(k.startswith("epoch_1_whole.ds/") and "optim_states" in k for k in info.files)
    ds_cfg = json.loads((model_dir / "ds_config.json").read_text())
    assert ds_cfg["zero_optimization"]["stage"] == 2 and ds_cfg["gradient_accumulation_steps"] == 1
    # ZeRO-2 with the same data and optimizer gives the DDP weights
    assert th.max_abs_diff(th.load_state(model_dir / "epoch_1_whole.pt"),
                           th.load_state(ddp_two[0] / "epoch_1_whole.pt")) < 1e-5


def test_resume_refuses_checkpoints_of_other_data(llm_run, stand_in, lists, tmp_path):
    """--resume on checkpoints trained on other data fails at once, naming both data lists (and the same data by
    content under another path is accepted)."""
    model_dir = tmp_path / "llm"
    shutil.copytree(llm_run, model_dir, ignore=shutil.ignore_patterns("swanlog", "tensorboard", "samples"))
    record = json.loads((model_dir / "train_data.json").read_text())
    assert record["train_data"] == str(lists["train"]) and len(record["train_sha256"]) == 64
    other = th.write_lists(tmp_path / "other", {"other": [1.0, 1.2, 1.4]}, seed=7)
    argv = th.train_args("llm", stand_in, other, lists["cv"], model_dir, *th.LLM_TRAIN) + ["--resume"]
    with pytest.raises(tu.TrainSetupError, match=r"--resume: the checkpoints in .* were trained on "
                                                 + re.escape(str(lists["train"])) + r" .*not on "
                                                 + re.escape(str(other))):
        th.run_train(argv)
    # the same shards copied elsewhere: same content, so resuming is allowed (the run is already complete)
    moved = tmp_path / "moved"
    moved.mkdir()
    names = []
    for line in Path(lists["train"]).read_text().split():
        shutil.copy(line, moved / Path(line).name)
        names.append(str(moved / Path(line).name))
    (moved / "data.list").write_text("".join(f"{n}\n" for n in names))
    argv = th.train_args("llm", stand_in, moved / "data.list", lists["cv"], model_dir, *th.LLM_TRAIN) + ["--resume"]
    assert th.run_train(argv) == 0
