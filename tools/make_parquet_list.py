#!/usr/bin/env python3
"""Stage 3: pack a Kaldi data dir and its extracted features into parquet shards for training.

    python tools/make_parquet_list.py --src_dir data/train --des_dir data/train/parquet \\
        [--num_utts_per_parquet 1000] [--num_processes 1] [--intersect]

Reads wav.scp, text, utt2spk, utt2embedding.pt, spk2embedding.pt and utt2speech_token.pt from --src_dir. It first
checks that the tables cover the same utterances and names every difference; it stops there unless --intersect is
given (then only the utterances every table has are packed). Each row holds utt, audio_data (the audio file's
bytes), wav (its path), text, spk, utt_embedding, spk_embedding and speech_token (the columns
cosyvoice.dataset.processor reads). Writes, in --des_dir: parquet_NNNNNNNNN.parquet, utt2parquet_NNNNNNNNN.json and
spk2parquet_NNNNNNNNN.json per shard, and data.list, utt2data.list, spk2data.list listing them. The dir is built
aside and swapped in at the end, so a crash leaves the previous one intact.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple


from cosyvoice.utils.errors import write_error
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.fileio import temp_name
from cosyvoice.utils.stage import StageInputError, load_pt_table, read_table, require_writable_dir

TOOL = "make_parquet_list"
UTT_TABLES = ("wav.scp", "text", "utt2spk", "utt2embedding.pt", "utt2speech_token.pt")
SHOW = 10  # utterance names shown per difference


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src_dir", required=True, help="Kaldi data dir with the stage 1 and 2 outputs")
    p.add_argument("--des_dir", required=True, help="output dir (usually <src_dir>/parquet)")
    p.add_argument("--num_utts_per_parquet", type=int, default=1000, help="rows per parquet shard")
    p.add_argument("--num_processes", type=int, default=1, help="shards written in parallel")
    p.add_argument("--intersect", action="store_true",
                   help="pack only the utterances present in every table instead of failing on a mismatch")
    return p.parse_args(argv)


def load_tables(src_dir: str) -> Dict[str, dict]:
    names = UTT_TABLES + ("spk2embedding.pt",)
    return {name: (load_pt_table if name.endswith(".pt") else read_table)(os.path.join(src_dir, name), TOOL)
            for name in names}


def _names(utts: Sequence[str]) -> str:
    shown = ", ".join(utts[:SHOW])
    return shown + (f", ... (+{len(utts) - SHOW} more)" if len(utts) > SHOW else "")


def coverage_differences(tables: Dict[str, dict]) -> Tuple[List[str], List[str]]:
    """(one message per difference, the utterances every table has). wav.scp is the reference."""
    ref = set(tables["wav.scp"])
    common = set.intersection(*(set(tables[n]) for n in UTT_TABLES))
    problems = []
    for name in UTT_TABLES[1:]:
        have = set(tables[name])
        lacks, extra = sorted(ref - have), sorted(have - ref)
        if lacks:
            problems.append(f"{name} lacks {len(lacks)} utterance(s) of wav.scp: {_names(lacks)}")
        if extra:
            problems.append(f"{name} has {len(extra)} utterance(s) not in wav.scp: {_names(extra)}")
    spk_missing = sorted({tables["utt2spk"][u] for u in common} - set(tables["spk2embedding.pt"]))
    if spk_missing:
        problems.append(f"spk2embedding.pt lacks {len(spk_missing)} speaker(s): {_names(spk_missing)}")
    return problems, sorted(common)


def make_rows(tables: Dict[str, dict], utts: Sequence[str]) -> List[dict]:
    rows = []
    for utt in utts:
        spk = tables["utt2spk"][utt]
        rows.append({"utt": utt, "wav": tables["wav.scp"][utt], "text": tables["text"][utt], "spk": spk,
                     "utt_embedding": [float(x) for x in tables["utt2embedding.pt"][utt]],
                     "spk_embedding": [float(x) for x in tables["spk2embedding.pt"][spk]],
                     "speech_token": [int(x) for x in tables["utt2speech_token.pt"][utt]]})
    return rows


def shard_names(i: int) -> Tuple[str, str, str]:
    return f"parquet_{i:09d}.parquet", f"utt2parquet_{i:09d}.json", f"spk2parquet_{i:09d}.json"


def write_shard(rows: List[dict], i: int, work_dir: str, des_dir: str) -> None:
    """Write shard ``i`` (reading each wav's bytes) and its two json indexes into ``work_dir``.

    The indexes name the parquet file where it will finally live, under ``des_dir``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio = []
    for row in rows:
        try:
            with open(row["wav"], "rb") as f:
                audio.append(f.read())
        except OSError as e:
            raise StageInputError(f"{TOOL}: cannot read audio of utt {row['utt']} ({row['wav']}): {e}") from e
    table = pa.table({
        "utt": pa.array([r["utt"] for r in rows], pa.string()),
        "audio_data": pa.array(audio, pa.binary()),
        "wav": pa.array([r["wav"] for r in rows], pa.string()),
        "text": pa.array([r["text"] for r in rows], pa.string()),
        "spk": pa.array([r["spk"] for r in rows], pa.string()),
        "utt_embedding": pa.array([r["utt_embedding"] for r in rows], pa.list_(pa.float32())),
        "spk_embedding": pa.array([r["spk_embedding"] for r in rows], pa.list_(pa.float32())),
        "speech_token": pa.array([r["speech_token"] for r in rows], pa.list_(pa.int32())),
    })
    parquet_name, utt_json, spk_json = shard_names(i)
    pq.write_table(table, os.path.join(work_dir, parquet_name), compression="zstd")
    final = os.path.join(des_dir, parquet_name)
    with open(os.path.join(work_dir, utt_json), "w", encoding="utf-8") as f:
        json.dump({r["utt"]: final for r in rows}, f, ensure_ascii=False, indent=2)
    with open(os.path.join(work_dir, spk_json), "w", encoding="utf-8") as f:
        json.dump({spk: final for spk in sorted({r["spk"] for r in rows})}, f, ensure_ascii=False, indent=2)


def write_parquet_dir(rows: List[dict], des_dir: str, per_shard: int, num_processes: int) -> int:
    """Write every shard and the three lists into a fresh dir beside ``des_dir``, then swap it in; returns #shards.

    Paths in the lists and json indexes name the final ``des_dir`` as given (relative stays relative).
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    parent = os.path.dirname(os.path.abspath(des_dir))
    os.makedirs(parent, exist_ok=True)
    # named *.tmp<pid>: cosyvoice.utils.fileio.clean_stale_temp removes it if this process is killed
    work = str(temp_name(os.path.abspath(des_dir)))
    shutil.rmtree(work, ignore_errors=True)
    os.mkdir(work)
    try:
        shards = [rows[start:start + per_shard] for start in range(0, len(rows), per_shard)]
        if num_processes > 1 and len(shards) > 1:
            with ProcessPoolExecutor(max_workers=num_processes) as pool:
                futures = [pool.submit(write_shard, shard, i, work, des_dir) for i, shard in enumerate(shards)]
                for fut in tqdm(futures, desc="parquet shards", unit="shard"):
                    fut.result()
        else:
            for i, shard in enumerate(tqdm(shards, desc="parquet shards", unit="shard")):
                write_shard(shard, i, work, des_dir)
        for list_name, k in (("data.list", 0), ("utt2data.list", 1), ("spk2data.list", 2)):
            with open(os.path.join(work, list_name), "w", encoding="utf-8") as f:
                for i in range(len(shards)):
                    f.write(os.path.join(des_dir, shard_names(i)[k]) + "\n")
        _swap_in(work, des_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return len(shards)


def _swap_in(work: str, des_dir: str) -> None:
    """Replace des_dir by work (the old dir is renamed aside first, then deleted)."""
    old: Optional[str] = None
    if os.path.exists(des_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(des_dir))}.old.",
                               dir=os.path.dirname(os.path.abspath(des_dir)))
        os.rmdir(old)
        os.rename(des_dir, old)
    os.rename(work, des_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


@entry_point(TOOL)
def main(argv=None) -> int:
    args = get_args(argv)
    if args.num_utts_per_parquet < 1 or args.num_processes < 1:
        raise StageInputError(f"{TOOL}: --num_utts_per_parquet and --num_processes must be >= 1")
    tables = load_tables(args.src_dir)
    problems, utts = coverage_differences(tables)
    if problems:
        summary = f"{TOOL}: tables of {args.src_dir} do not cover the same utterances: {'; '.join(problems)}"
        if not args.intersect:
            raise StageInputError(f"{summary}. Rerun the stage that makes the short table, or pass --intersect "
                                  f"to pack only the {len(utts)} utterance(s) every table has")
        logging.warning("%s; --intersect: packing the %d utterance(s) every table has", summary, len(utts))
    if not utts:
        raise StageInputError(f"{TOOL}: no utterance is in every table of {args.src_dir}; nothing to pack")
    no_tokens = [u for u in utts if len(tables["utt2speech_token.pt"][u]) == 0]
    if no_tokens:
        logging.warning("%d utterance(s) have no speech tokens (over 30 s, see skipped_speech_token.tsv); "
                        "training drops them: %s", len(no_tokens), _names(no_tokens))
    rows = make_rows(tables, utts)
    require_writable_dir(os.path.dirname(os.path.abspath(args.des_dir)), TOOL)
    try:
        shards = write_parquet_dir(rows, args.des_dir, args.num_utts_per_parquet, args.num_processes)
    except OSError as e:
        error = write_error(args.des_dir, e)
        if error is e:
            raise
        raise StageInputError(f"{TOOL}: {error} (the previous {args.des_dir} is kept)") from e
    logging.info("packed %d utterances into %d parquet shard(s) in %s", len(utts), shards, args.des_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
