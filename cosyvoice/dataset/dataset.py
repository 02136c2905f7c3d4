"""The training/CV dataset: parquet lists, sharded by rank and DataLoader worker, run through ``data_pipeline``.

Sharding of one epoch (``DistributedSampler.sample``), for ``L`` lists, ``W`` ranks and ``N`` workers per rank:

1. when ``shuffle``: the list indices are permuted by ``random.Random(f"{seed}:{epoch}")`` (the same permutation
   on every rank, so the shards below are disjoint);
2. when ``partition``: rank ``r`` keeps ``perm[r::W]``, i.e. ``ceil((L - r) / W)`` lists; ranks differ by at
   most one list (if ``L < W`` the lists are repeated so that every rank gets exactly one);
3. worker ``k`` keeps ``shard[k::N]`` (repeated likewise if the rank has fewer lists than workers).

Sample-level randomness (``processor.shuffle``, ``processor.truncate``) draws from one ``random.Random`` seeded
with ``f"{seed}:{epoch}:{rank}:{worker}"`` per pass, carried in every sample as ``sample['rng']``. So a given
(seed, epoch, rank, worker) always yields the same batches in the same order, and changing the epoch reshuffles.
"""
from __future__ import annotations

import math
import os
import random
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset

from cosyvoice.utils.errors import DataError
from cosyvoice.dataset.processor import unreadable_shard


def read_lists(list_file: str) -> List[str]:
    """Non-empty lines of a text file (e.g. data.list: one parquet path per line)."""
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"data list not found: {list_file} (tools/make_parquet_list.py writes it)")
    with open(list_file, "r", encoding="utf-8") as f:
        lists = [line.strip() for line in f if line.strip()]
    if not lists:
        raise ValueError(f"data list {list_file} is empty (rerun tools/make_parquet_list.py)")
    return lists


def check_parquet_lists(list_file: str) -> List[str]:
    """The shards of ``list_file``, each checked to exist and to open as parquet (its footer: cheap), so that a
    missing or truncated shard fails at the start in one line instead of deep inside an epoch."""
    import pyarrow.parquet as pq


    shards = read_lists(list_file)
    for src in shards:
        try:
            pq.ParquetFile(src).close()
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ...
            raise unreadable_shard(src, e) from e
    return shards


def find_shard(utt: str, list_files: Sequence[str]) -> Optional[str]:
    """The parquet shard of ``list_files`` (data.list files) holding utterance ``utt``, or None (for messages)."""
    import pyarrow.parquet as pq

    for list_file in list_files:
        for src in read_lists(list_file):
            try:
                if utt in pq.read_table(src, columns=["utt"]).column("utt").to_pylist():
                    return src
            except Exception:  # noqa: BLE001 - an unreadable shard is reported elsewhere
                continue
    return None


def check_speech_tokens(batch: Dict[str, object], vocab: int, owner: str, list_files: Sequence[str],
                        tokenizer_file: str = "speech_tokenizer_v2.onnx") -> None:
    """Raise one DataError naming the shard and the utterance when a speech token of ``batch`` is outside
    0..vocab-1 (which would be an IndexError deep inside the model's embedding)."""
    tokens, lens = batch.get("speech_token"), batch.get("speech_token_len")
    if not isinstance(tokens, torch.Tensor) or not isinstance(lens, torch.Tensor) or tokens.numel() == 0:
        return
    inside = torch.arange(tokens.size(1)).unsqueeze(0) < lens.reshape(-1, 1).cpu()
    bad = inside & ((tokens.cpu() < 0) | (tokens.cpu() >= vocab))
    if not bool(bad.any()):
        return
    i, j = (int(x) for x in bad.nonzero()[0])
    utt = batch["utts"][i] if "utts" in batch else f"#{i} of the batch"
    shard = find_shard(utt, list_files) or f"a shard of {', '.join(list_files)}"
    raise DataError(f"{shard}: utt {utt} has speech token {int(tokens[i, j])}, outside the {vocab} speech tokens "
                    f"(0..{vocab - 1}) of {owner}: its speech tokens come from a speech tokenizer that does not "
                    f"match this model; rerun stage 2 (tools/extract_speech_token.py) with the model's "
                    f"{tokenizer_file}, then stage 3")


class Processor(IterableDataset):
    """Applies ``f(iter(source), *args, **kw)`` to a source iterable; chains of these form the pipeline."""

    def __init__(self, source, f: Callable, *args, **kw):
        if not callable(f):
            raise TypeError(f"pipeline stage {f!r} is not callable")
        self.source = source
        self.f = f
        self.args = args
        self.kw = kw

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __iter__(self):
        return self.f(iter(self.source), *self.args, **self.kw)

    def apply(self, f: Callable) -> "Processor":
        return Processor(self, f, *self.args, **self.kw)


class DistributedSampler:
    """Picks this rank's and this worker's share of the lists for the current epoch (see the module docstring)."""

    def __init__(self, shuffle: bool = True, partition: bool = True, seed: int = 0):
        self.epoch = -1
        self.shuffle = shuffle
        self.partition = partition
        self.seed = seed
        self.update()

    def update(self) -> Dict[str, int]:
        """Read rank/world size (torch.distributed, if initialised) and worker id/count (DataLoader)."""
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        info = torch.utils.data.get_worker_info()
        self.worker_id, self.num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        return dict(rank=self.rank, world_size=self.world_size,
                    worker_id=self.worker_id, num_workers=self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, data: Sequence) -> List[int]:
        """Indices into ``data`` that this rank and worker read this epoch."""
        indices = list(range(len(data)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(indices)
        if self.partition:
            indices = _share(indices, self.rank, self.world_size)
        return _share(indices, self.worker_id, self.num_workers)

    def rng(self) -> random.Random:
        """The sample-level random stream of this (seed, epoch, rank, worker)."""
        return random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{self.worker_id}")


def _share(indices: List[int], part: int, parts: int) -> List[int]:
    if 0 < len(indices) < parts:  # too few: repeat so every part gets one
        indices = (indices * math.ceil(parts / len(indices)))[:parts]
    return indices[part::parts]


class DataList(IterableDataset):
    """Yields ``{'src': path, 'rank', 'world_size', 'worker_id', 'num_workers', 'rng'}`` for this share of lists."""

    def __init__(self, lists: List[str], shuffle: bool = True, partition: bool = True, seed: int = 0):
        self.lists = lists
        self.sampler = DistributedSampler(shuffle, partition, seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        info = self.sampler.update()
        rng = self.sampler.rng()
        for index in self.sampler.sample(self.lists):
            yield dict(src=self.lists[index], rng=rng, **info)


def _stage_name(f: Callable) -> str:
    while isinstance(f, partial):
        f = f.func
    return getattr(f, "__name__", "")


def Dataset(data_list_file: str,
            data_pipeline: Sequence[Callable],
            mode: str = "train",
            gan: bool = False,
            dpo: bool = False,
            shuffle: bool = True,
            partition: bool = True,
            seed: int = 0) -> Processor:
    """The iterable dataset of ``data_list_file`` (parquet paths) run through ``data_pipeline`` (the yaml's stages).

    ``gan``/``dpo`` are passed to ``padding``. With ``gan`` ``compute_fbank`` runs with ``num_frames=-1``: the
    vocoder is trained on ``truncate``'s fixed-length windows, which need no padding to whole speech tokens.
    ``shuffle`` permutes the lists each epoch; ``partition`` splits them across ranks; ``seed`` fixes the order
    (call ``set_epoch`` before each epoch).
    """
    dataset = DataList(read_lists(data_list_file), shuffle=shuffle, partition=partition, seed=seed)
    for stage in data_pipeline:
        name = _stage_name(stage)
        if name == "padding":
            stage = partial(stage, gan=gan, dpo=dpo)
        elif name == "compute_fbank" and gan:
            stage = partial(stage, num_frames=-1)
        dataset = Processor(dataset, stage, mode=mode)
    return dataset
