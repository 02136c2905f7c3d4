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
