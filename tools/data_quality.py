#!/usr/bin/env python3
"""Data quality report of a data dir (run after stage 1), and optionally a copy without the flagged utterances.

    python tools/data_quality.py --data_dir data/train [--drop_flagged true --out_dir data/train_filtered]

Reads wav.scp, text, utt2spk (stage 0) and utt2embedding.pt, spk2embedding.pt (stage 1). Writes into --data_dir:

* quality.tsv: one row per utterance: duration, characters and characters per second, syllables, syllables per
  second and its robust z-score, clipped
  sample share, active loudness (dBFS), CAM++ distance to the speaker centroid and its robust z-score, flags;
* quality_summary.json: counts per flag, the flagged utterances, the thresholds, what could not be judged;
* flagged.tsv: `<utt>\\t<flag,flag>` for each flagged utterance (empty when none).

The flags and their thresholds are described in cosyvoice/eval/quality.py. With --drop_flagged true, --out_dir
(default <data_dir>_filtered) becomes a complete data dir without the flagged utterances: wav.scp, text, utt2spk,
spk2utt, utt2dur and every utt2*.pt table filtered, spk2embedding.pt recomputed as the mean over the kept
utterances, and dropped.tsv listing what was left out and why. Later stages then read --out_dir.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


from cosyvoice.dataset.datadir import validate_data_dir, write_table
from cosyvoice.eval.quality import assess, QualityThresholds, summarize, summary_text, tsv_lines
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import str2bool
from cosyvoice.utils.stage import (StageInputError, load_pt_table, read_table, require_writable_dir, save_pt,
                                   speaker_means, write_lines, write_text)

TOOL = "data_quality"
TABLES = ("wav.scp", "text", "utt2spk", "utt2dur")


def get_args(argv=None):
    d = QualityThresholds()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="Kaldi data dir after stage 1")
    p.add_argument("--drop_flagged", type=str2bool, default=False, help="write --out_dir without flagged utts")
    p.add_argument("--out_dir", default="", help="filtered data dir [<data_dir>_filtered]")
    p.add_argument("--no_speaker_check", action="store_true",
                   help="do not require stage 1's embeddings (no speaker-outlier check)")
    p.add_argument("--rate_z", type=float, default=d.rate_z, help="speaking-rate robust z-score limit")
    p.add_argument("--max_clip_ratio", type=float, default=d.max_clip_ratio, help="largest share of clipped samples")
    p.add_argument("--min_loudness_db", type=float, default=d.min_loudness_db, help="lowest active loudness (dBFS)")
    p.add_argument("--spk_z", type=float, default=d.spk_z, help="speaker-distance robust z-score limit")
    p.add_argument("--min_group", type=int, default=d.min_group,
                   help="fewest utterances of a language/speaker to judge outliers in it")
    return p.parse_args(argv)


def read_inputs(data_dir: str, speaker_check: bool):
    tables = {name: read_table(os.path.join(data_dir, name), TOOL) for name in ("wav.scp", "text", "utt2spk")}
    if set(tables["wav.scp"]) != set(tables["text"]) or set(tables["wav.scp"]) != set(tables["utt2spk"]):
        raise StageInputError(f"{TOOL}: wav.scp, text and utt2spk of {data_dir} name different utterances; "
                              "rerun stage 0")
    embeddings = (None, None)
    if speaker_check:
        embeddings = (load_pt_table(os.path.join(data_dir, "utt2embedding.pt"), TOOL),
                      load_pt_table(os.path.join(data_dir, "spk2embedding.pt"), TOOL))
    return tables, embeddings


def write_report(data_dir: str, rows, summary) -> None:
    write_lines(os.path.join(data_dir, "quality.tsv"), tsv_lines(rows))
    write_text(os.path.join(data_dir, "quality_summary.json"), json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
               TOOL)
    write_lines(os.path.join(data_dir, "flagged.tsv"),
                [f"{r.utt}\t{','.join(r.flags)}" for r in rows if r.flags])


def write_filtered(data_dir: str, out_dir: str, flagged: dict) -> int:
    """Copy the data dir into ``out_dir`` without the ``flagged`` utterances; returns how many are kept."""
    import torch

    if os.path.abspath(out_dir) == os.path.abspath(data_dir):
        raise StageInputError(f"{TOOL}: --out_dir must differ from --data_dir ({data_dir})")
    utt2spk = read_table(os.path.join(data_dir, "utt2spk"), TOOL)
    kept = [u for u in sorted(utt2spk) if u not in flagged]
    if not kept:
        raise StageInputError(f"{TOOL}: every utterance of {data_dir} is flagged; nothing would be left "
                              "(see quality.tsv, loosen the thresholds or use --drop_flagged false)")
    os.makedirs(out_dir, exist_ok=True)
    keep = set(kept)
    for name in TABLES:
        src = os.path.join(data_dir, name)
        if os.path.isfile(src):
            table = read_table(src, TOOL)
            write_table(os.path.join(out_dir, name), {u: v for u, v in table.items() if u in keep})
        elif os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    spk2utt = {}
    for utt in kept:
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_table(os.path.join(out_dir, "spk2utt"), {spk: " ".join(utts) for spk, utts in spk2utt.items()})
    for pt in sorted(Path(data_dir).glob("utt2*.pt")):
        table = load_pt_table(str(pt), TOOL)
        save_pt({u: v for u, v in table.items() if u in keep}, os.path.join(out_dir, pt.name))
        if pt.name == "utt2embedding.pt":
            kept_emb = {u: torch.as_tensor(v).reshape(-1).tolist() for u, v in table.items() if u in keep}
            save_pt(speaker_means(kept_emb, utt2spk), os.path.join(out_dir, "spk2embedding.pt"))
    write_lines(os.path.join(out_dir, "dropped.tsv"), [f"{u}\t{','.join(f)}" for u, f in sorted(flagged.items())])
    validate_data_dir(out_dir)
    return len(kept)


@entry_point(TOOL)
def main(argv=None) -> int:
    args = get_args(argv)

    th = QualityThresholds(rate_z=args.rate_z, max_clip_ratio=args.max_clip_ratio,
                           min_loudness_db=args.min_loudness_db, spk_z=args.spk_z, min_group=args.min_group)
    tables, (utt2emb, spk2emb) = read_inputs(args.data_dir, not args.no_speaker_check)
    require_writable_dir(args.data_dir, TOOL)
    rows = assess(tables["wav.scp"], tables["text"], tables["utt2spk"], utt2emb, spk2emb, th, progress=True)
    summary = summarize(rows, th, speaker_check=utt2emb is not None)
    write_report(args.data_dir, rows, summary)
    print(summary_text(summary, args.data_dir))
    if args.drop_flagged:
        out_dir = args.out_dir or args.data_dir.rstrip("/") + "_filtered"
        n = write_filtered(args.data_dir, out_dir, summary["flagged_utts"])
        logging.info("wrote %s: %d utterance(s) kept, %d dropped (listed in %s/dropped.tsv)", out_dir, n,
                     summary["flagged"], out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
