"""cosyvoice.utils.executor: agreed windows over uneven ranks, and llm/flow learning a repeated batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cosyvoice.utils.checkpoint import rng_scope
from cosyvoice.utils.executor import Executor, agreed_windows
from cosyvoice.utils.train_utils import DistInfo


def test_windows_of_one_process_end_with_a_short_one():
    windows = list(agreed_windows(iter(range(5)), 2, DistInfo()))
    assert windows == [[0, 1], [2, 3], [4]]
    assert list(agreed_windows(iter([]), 2, DistInfo())) == []


def _uneven_worker(rank, port, counts, size, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(counts))
    info = DistInfo(rank=rank, world_size=len(counts), backend="gloo")
    out[rank] = [len(w) for w in agreed_windows(iter(range(counts[rank])), size, info)]
    dist.barrier()  # every rank reaches the same next collective: no rank is left waiting
    dist.destroy_process_group()


def test_uneven_ranks_stop_together_without_deadlock():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    counts = [5, 3]  # rank 0 has five batches, rank 1 three
    ctx = mp.start_processes(_uneven_worker, args=(port, counts, 2, out), nprocs=2, join=False, start_method="spawn")
    for p in ctx.processes:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in ctx.processes), [p.exitcode for p in ctx.processes]
    # windows (2, 2) then min(2, 1) = 1: a short window ends the epoch on both ranks
    assert dict(out) == {0: [2, 1], 1: [2, 1]}


def _one_batch(stand_in, lists, model_name):
    from cosyvoice.dataset.dataset import Dataset
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    cfg = load_config(str(stand_in / "cosyvoice2.yaml"), {"qwen_pretrain_path": str(stand_in / "CosyVoice-BlankEN")},
                      keys=[model_name, "data_pipeline"])
    model = cfg[model_name]
    load_checkpoint_strict(model, stand_in / f"{model_name}.pt")
    data = Dataset(str(lists["demo"]), cfg["data_pipeline"], shuffle=False, partition=False)
    data.set_epoch(0)
    batch = next(iter(data))
    # two utterances are enough to see learning, and keep the test fast
    return model, {k: v[:2] for k, v in batch.items()}


@pytest.mark.parametrize("model_name", ["llm", "flow"])
def test_loss_goes_down_on_a_repeated_batch_of_the_demo_voice(stand_in, lists, model_name):
    model, batch = _one_batch(stand_in, lists, model_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    conf = {"accum_grad": 1, "grad_clip": 5, "max_epoch": 1, "log_interval": 100, "save_per_step": -1}
    executor = Executor(model, optimizer, scheduler, conf, DistInfo(), stand_in)

    def loss():  # same random draws each time (flow noise/t, llm layout), so the values are comparable
        model.train()
        with rng_scope(3), torch.no_grad():
            return float(model(batch, torch.device("cpu"))["loss"])

    before = loss()
    model.train()
    for _ in range(6):
        executor.train_window([batch])
    after = loss()
    assert after < 0.9 * before, (before, after)


def test_log_line_and_tracker_carry_the_training_speed(stand_in, lists, caplog):
    model, batch = _one_batch(stand_in, lists, "flow")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    conf = {"accum_grad": 2, "grad_clip": 5, "max_epoch": 1, "log_interval": 100, "save_per_step": -1}

    class Tracker:
        logged = []

        def log_scalars(self, scalars, step):
            self.logged.append((step, dict(scalars)))

    tracker = Tracker()
    executor = Executor(model, optimizer, scheduler, conf, DistInfo(), stand_in, tracker=tracker)
    executor.meter.restart()
    for _ in range(3):  # three steps of two batches
        window = [batch, batch]
        losses, norm = executor.train_window(window)
        executor.meter.add_window(window)
        executor.step += 1
    with caplog.at_level("INFO", logger="cosyvoice.utils.executor"):
        executor.log_train(losses, norm)
    [(step, scalars)] = tracker.logged
    assert step == 3
    n_utts = 3 * 2 * len(batch["utts"])
    n_tokens = 3 * 2 * int(batch["speech_token_len"].sum())
    n_frames = 3 * 2 * int(batch["speech_feat_len"].sum())
    seconds = 3 * scalars["speed/step_s"]
    assert scalars["speed/step_s"] > 0
    assert scalars["speed/utts_per_s"] == pytest.approx(n_utts / seconds)
    assert scalars["speed/speech_tokens_per_s"] == pytest.approx(n_tokens / seconds)
    assert scalars["speed/mel_frames_per_s"] == pytest.approx(n_frames / seconds)
    assert "s/step" in caplog.text and "utt/s" in caplog.text and "mel frames/s" in caplog.text
    # the counts start again after each log line
    assert executor.meter.counts["steps"] == 0 and executor.meter.counts["utts"] == 0


def test_throughput_rates_sum_the_ranks():
    from cosyvoice.utils.executor import Throughput

    # per-rank means over 2 ranks: 4 steps in 8 s, 10 utterances and 1000 tokens per rank
    speed = Throughput.rates({"steps": 4, "seconds": 8.0, "utts": 10, "speech_tokens": 1000, "mel_frames": 0}, 2)
    assert speed == {"step_s": 2.0, "utts_per_s": 2.5, "speech_tokens_per_s": 250.0}
    assert Throughput.rates({"steps": 0, "seconds": 0.0}, 1) == {}
    assert Throughput.describe({}) == "speed n/a"


def test_default_optimizer_is_fused_where_torch_has_it_and_follows_the_yaml_otherwise(caplog):
    from cosyvoice.utils.train_utils import TrainSetupError, fused_supported, init_optimizer

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))

    with caplog.at_level("INFO", logger="cosyvoice.utils.train_utils"):
        fused = init_optimizer(model(), {"optim": "adam", "optim_conf": {"lr": 1e-2}})
    assert fused_supported(list(model().parameters()))  # CPU floats with torch >= 2.4
    assert fused.param_groups[0]["fused"] is True and "fused implementation" in caplog.text
    plain = init_optimizer(model(), {"optim": "adam", "optim_conf": {"lr": 1e-2, "fused": False}})
    assert not plain.param_groups[0]["fused"]
    foreach = init_optimizer(model(), {"optim": "adamw", "optim_conf": {"lr": 1e-2, "foreach": True}})
    assert foreach.param_groups[0]["foreach"] is True and not foreach.param_groups[0]["fused"]
    with pytest.raises(TrainSetupError, match="optim_conf"):
        init_optimizer(model(), {"optim": "adam", "optim_conf": {"lr": 1e-2, "fused": True, "foreach": True}})

    # the same updates up to float rounding
    finals = []
    for conf in ({"lr": 1e-2}, {"lr": 1e-2, "fused": False, "foreach": False}):
        m = model()
        opt = init_optimizer(m, {"optim": "adam", "optim_conf": conf})
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            opt.zero_grad()
            m(torch.randn(3, 8, generator=g)).pow(2).sum().backward()
            opt.step()
        finals.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    start = torch.cat([p.detach().flatten() for p in model().parameters()])
    assert (finals[0] - start).abs().max() > 1e-2  # it trained
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-5, atol=1e-6)
