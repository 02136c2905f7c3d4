"""Dataset: sharding by rank and worker, seeded order, and the whole pipeline end to end."""
from __future__ import annotations

import sys
import types
from functools import partial

import pytest
import torch

from cosyvoice.dataset import dataset as D
from cosyvoice.dataset import processor as P
from dataset_helpers import EMB_DIM, UTTS_A, UTTS_B, FakePyworld, FakeTokenizer, fake_mel


@pytest.fixture
def place(monkeypatch):
    """place(rank, world, worker, workers): pretend to run there (torch.distributed and DataLoader worker info)."""

    def set_place(rank=0, world=1, worker=0, workers=1):
        monkeypatch.setattr(D.dist, "is_initialized", lambda: world > 1)
        monkeypatch.setattr(D.dist, "get_rank", lambda: rank)
        monkeypatch.setattr(D.dist, "get_world_size", lambda: world)
        info = None if workers == 1 else types.SimpleNamespace(id=worker, num_workers=workers)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)

    return set_place


def shares(place, lists, world, workers, epoch=0, seed=0, **kw):
    """{(rank, worker): [list, ...]} as DataList hands them out."""
    out = {}
    data = D.DataList(lists, seed=seed, **kw)
    data.set_epoch(epoch)
    for rank in range(world):
        for worker in range(workers):
            place(rank, world, worker, workers)
            items = list(data)
            assert all(i["rank"] == rank and i["world_size"] == world and i["worker_id"] == worker
                       and i["num_workers"] == workers for i in items)
            out[rank, worker] = [i["src"] for i in items]
    return out


LISTS = [f"l{i}.parquet" for i in range(7)]


def test_two_ranks_two_workers_partition_the_lists(place):
    got = shares(place, LISTS, world=2, workers=2)
    flat = [x for v in got.values() for x in v]
    assert sorted(flat) == sorted(LISTS)                           # disjoint and covering
    assert [len(got[0, 0]) + len(got[0, 1]), len(got[1, 0]) + len(got[1, 1])] == [4, 3]
    assert [len(v) for v in got.values()] == [2, 2, 2, 1]


def test_list_order_is_seeded_by_seed_and_epoch(place):
    base = shares(place, LISTS, 2, 2, epoch=0, seed=0)
    assert shares(place, LISTS, 2, 2, epoch=0, seed=0) == base
    assert shares(place, LISTS, 2, 2, epoch=1, seed=0) != base
    assert shares(place, LISTS, 2, 2, epoch=0, seed=1) != base
    for other in (shares(place, LISTS, 2, 2, epoch=1), shares(place, LISTS, 2, 2, seed=1)):
        assert sorted(x for v in other.values() for x in v) == sorted(LISTS)


def test_without_shuffle_or_partition(place):
    got = shares(place, LISTS, world=2, workers=2, shuffle=False)
    assert got[0, 0] == ["l0.parquet", "l4.parquet"] and got[1, 1] == ["l3.parquet"]
    got = shares(place, LISTS, world=2, workers=1, shuffle=False, partition=False)
    assert got[0, 0] == got[1, 0] == LISTS                          # e.g. CV: every rank reads everything


def test_fewer_lists_than_ranks_or_workers_repeat_lists(place):
    got = shares(place, ["only.parquet"], world=2, workers=1)
    assert got == {(0, 0): ["only.parquet"], (1, 0): ["only.parquet"]}
    got = shares(place, LISTS[:3], world=2, workers=2, shuffle=False)
    assert got == {(0, 0): ["l0.parquet"], (0, 1): ["l2.parquet"], (1, 0): ["l1.parquet"], (1, 1): ["l1.parquet"]}


def test_read_lists_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data list not found: {tmp_path / 'x.list'}"):
        D.read_lists(str(tmp_path / "x.list"))
    (tmp_path / "e.list").write_text("\n  \n")
    with pytest.raises(ValueError, match="is empty"):
        D.read_lists(str(tmp_path / "e.list"))
    (tmp_path / "ok.list").write_text("a.parquet\n\nb.parquet  \n")
    assert D.read_lists(str(tmp_path / "ok.list")) == ["a.parquet", "b.parquet"]


def pipeline(shuffle_size=1000, sort_size=500, batch_kw=None, whisper=True, gan=False):
    stages = [
        P.parquet_opener,
        partial(P.tokenize, get_tokenizer=FakeTokenizer, allowed_special="all"),
        partial(P.filter, max_length=6000, min_length=50, token_max_length=200, token_min_length=1),
        partial(P.resample, resample_rate=24000),
    ]
    if gan:
        stages.append(partial(P.truncate, truncate_length=24480))
    stages.append(partial(P.compute_fbank, feat_extractor=fake_mel, num_frames=960))
    if gan:
        stages.append(partial(P.compute_f0, sample_rate=24000, hop_size=480))
    stages.append(partial(P.parse_embedding, normalize=True))
    if whisper:
        stages.append(partial(P.compute_whisper_fbank, num_frames=960))
    stages += [partial(P.shuffle, shuffle_size=shuffle_size), partial(P.sort, sort_size=sort_size),
               partial(P.batch, **(batch_kw or dict(batch_type="dynamic", max_frames_in_batch=200))),
               partial(P.padding, use_spk_embedding=True)]
    return stages


KEPT = sorted(u for u in list(UTTS_A) + list(UTTS_B) if u != "b3")  # b3 (0.4 s) is under min_length=50


def test_dataset_end_to_end(parquet_lists, fake_features, place):
    place()
    stages = pipeline()
    ds = D.Dataset(str(parquet_lists), stages, mode="train", seed=3)
    assert stages[-1].keywords == {"use_spk_embedding": True}       # the caller's list is left alone
    ds.set_epoch(0)
    batches = list(ds)
    assert sorted(u for b in batches for u in b["utts"]) == KEPT
    for b in batches:
        assert b["speech_feat"].shape[0] * b["speech_feat"].shape[1] <= 200 or len(b["utts"]) == 1
        assert b["speech_feat"].shape[2] == 80 and b["whisper_feat"].shape[2] == 128
        assert b["embedding"] is b["spk_embedding"] and b["embedding"].shape[1] == EMB_DIM
        assert b["text_token"].dtype == b["speech_token"].dtype == torch.int64
        assert b["speech_feat_len"].tolist() == sorted(b["speech_feat_len"].tolist(), reverse=True)
        # 50 mel frames/s, 100 whisper frames/s, 25 speech tokens/s (both padded to whole tokens)
        assert (b["whisper_feat_len"] == 2 * b["speech_feat_len"]).all()
        assert (b["speech_feat_len"] % 2 == 0).all()
    assert len(batches) > 1


def test_dataset_order_is_deterministic_per_seed_and_epoch(parquet_lists, fake_features, place):
    place()

    def order(epoch, seed=0):
        ds = D.Dataset(str(parquet_lists), pipeline(sort_size=1, batch_kw=dict(batch_type="static", batch_size=2)),
                       seed=seed)
        ds.set_epoch(epoch)
        return [u for b in ds for u in b["utts"]]

    first = order(0)
    assert sorted(first) == KEPT
    assert order(0) == first
    assert order(1) != first and sorted(order(1)) == KEPT
    assert order(0, seed=5) != first


def test_dataset_ranks_split_the_utterances(parquet_lists, fake_features, place):
    seen = []
    for rank in range(2):
        place(rank, 2)
        ds = D.Dataset(str(parquet_lists), pipeline())
        ds.set_epoch(2)
        seen.append([u for b in ds for u in b["utts"]])
    assert sorted(seen[0] + seen[1]) == KEPT
    assert {u[0] for u in seen[0]} != {u[0] for u in seen[1]}      # one parquet file each


def test_dataset_with_dataloader_workers(parquet_lists, fake_features):
    ds = D.Dataset(str(parquet_lists), pipeline(batch_kw=dict(batch_type="static", batch_size=1)), seed=1)
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert sorted(b["utts"][0] for b in loader) == KEPT


def test_dataset_gan_mode(parquet_lists, monkeypatch, place):
    place()
    monkeypatch.setitem(sys.modules, "pyworld", FakePyworld())
    ds = D.Dataset(str(parquet_lists), pipeline(whisper=False, gan=True), gan=True)
    batches = list(ds)
    assert sorted(u for b in batches for u in b["utts"]) == KEPT
    for b in batches:
        # truncate to 24480 samples; no padding to whole tokens in GAN mode (24480 is not a multiple of 960)
        assert (b["speech_len"] == 24480).all() and b["speech"].shape[1] == 24480
        assert (b["speech_feat_len"] == 51).all() and (b["pitch_feat_len"] == 51).all()
        assert torch.allclose(b["pitch_feat"], torch.full_like(b["pitch_feat"], 100.0))


def test_set_epoch_reaches_the_sampler(parquet_lists):
    ds = D.Dataset(str(parquet_lists), [P.parquet_opener], seed=9)
    ds.set_epoch(4)
    assert ds.source.sampler.epoch == 4 and ds.source.sampler.seed == 9
