#!/usr/bin/env python3
"""Stage 0 with several datasets: join the data dirs prepare_data.py wrote for each into one.

    python local/merge_data_dirs.py --out_dir data/x/train part0/train part1/train [--labels D0 D1]

Each input holds wav.scp, text, utt2spk, utt2dur (and rejected.tsv); the output holds them all, byte-sorted, with
spk2utt rebuilt from utt2spk and the rejected utterances of every input. An utterance id in two inputs is an error
naming both (each dataset's ids must differ: e.g. give each its own speaker id, which prefixes its file names).
An input holding only rejected.tsv is empty (prepare_data.py --in_cast true: a cast member without a usable
clip); all of them empty is an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cosyvoice.dataset.datadir import byte_key, read_table, validate_data_dir, write_table
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError
from prepare_data import read_rejected, write_rejected  # local/, beside this script

TABLES = ("wav.scp", "text", "utt2spk", "utt2dur")


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", required=True, help="data dir to write")
    p.add_argument("--labels", nargs="*", default=None, help="names of the inputs in messages [their paths]")
    p.add_argument("inputs", nargs="+", help="data dirs to join")
    return p.parse_args(argv)


@entry_point("merge_data_dirs.py")
def main(argv=None) -> int:
    args = get_args(argv)
    labels = args.labels if args.labels and len(args.labels) == len(args.inputs) else args.inputs
    tables = {name: {} for name in TABLES}
    owner, rejected = {}, {}
    for d, label in zip(map(Path, args.inputs), labels):
        empty = not (d / "wav.scp").exists() and (d / "rejected.tsv").is_file()  # prepare_data.py --in_cast true
        part = {name: {} if empty else dict(read_table(d / name)) for name in TABLES}
        for utt in part["wav.scp"]:
            if utt in owner:
                raise UserError(f"utterance {utt!r} is in both {owner[utt]} and {label}: the datasets need "
                                "distinct utterance ids (rename the files, or give each dataset its own --spk_id)")
            owner[utt] = label
        for name in TABLES:
            tables[name].update(part[name])
        rejected.update(read_rejected(d / "rejected.tsv"))
    out = Path(args.out_dir)
    if not owner:
        shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        raise UserError(f"no utterance for the {out.name} set in any of the {len(labels)} datasets ({shown}): a "
                        "dataset gives the test set one only when it has 2 or more usable clips")
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        write_table(out / name, tables[name])
    spk2utt = {}
    for utt in sorted(tables["utt2spk"], key=byte_key):
        spk2utt.setdefault(tables["utt2spk"][utt], []).append(utt)
    write_table(out / "spk2utt", {spk: " ".join(us) for spk, us in spk2utt.items()})
    write_rejected(out / "rejected.tsv", rejected)
    info = validate_data_dir(out)
    counts = ", ".join(f"{spk} {len(us)}" for spk, us in sorted(spk2utt.items()))
    print(f"merge_data_dirs.py: wrote {out} ({info['utterances']} utterances of {info['speakers']} speaker(s): {counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
