#!/usr/bin/env python3
"""Stage 0: no utterance in both the training and the test set (by id, or by the same audio under another name).

    python local/check_overlap.py --train_dir data/x/train --test_dir data/x/test [--drop_from_test true]

An overlap makes the evaluation score the model on what it was trained on. By default it is an error (one line
naming the utterances); with --drop_from_test true those utterances are removed from the test set instead and listed
in its rejected.tsv (reason `in_train_set`). Audio is compared by its decoded samples, so the same clip saved twice,
or under two names, is found whatever its header.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from prepare_data import Utterance, read_rejected, write_data_dir, write_rejected
from cosyvoice.dataset.datadir import byte_key, read_table, validate_data_dir
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train_dir", required=True, help="training data dir (stage 0)")
    p.add_argument("--test_dir", required=True, help="test data dir (stage 0)")
    p.add_argument("--train_label", default="", help="how to name the training set in messages [--train_dir]")
    p.add_argument("--test_label", default="", help="how to name the test set in messages [--test_dir]")
    p.add_argument("--drop_from_test", default="false", choices=("true", "false"),
                   help="drop the overlapping utterances from the test set instead of failing")
    return p.parse_args(argv)


def audio_digest(path: str) -> str:
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    h = hashlib.sha256(f"{rate} {data.shape}".encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def find_overlap(train_dir: Path, test_dir: Path, train_label: str = "") -> dict[str, str]:
    """{test utt: why} for each test utterance that the training set also holds."""
    train_label = train_label or str(train_dir)
    train_wavs, test_wavs = dict(read_table(train_dir / "wav.scp")), dict(read_table(test_dir / "wav.scp"))
    found = {u: f"id {u} is also in {train_label}" for u in test_wavs if u in train_wavs}
    seen = {audio_digest(w): u for u, w in train_wavs.items()}
    for utt, wav in test_wavs.items():
        if utt not in found:
            twin = seen.get(audio_digest(wav))
            if twin is not None:
                found[utt] = f"same audio as {twin} of {train_label}"
    return found


def drop(test_dir: Path, utts: dict[str, str]) -> None:
    tables = {name: dict(read_table(test_dir / name)) for name in ("wav.scp", "text", "utt2spk", "utt2dur")}
    kept = [Utterance(u, Path(w), tables["text"][u], float(tables["utt2dur"][u]))
            for u, w in tables["wav.scp"].items() if u not in utts]
    spk = {u: tables["utt2spk"][u] for u in tables["wav.scp"]}
    rejected = read_rejected(test_dir / "rejected.tsv")
    rejected.update({u: ("in_train_set", why) for u, why in utts.items()})
    write_data_dir(test_dir, kept, "", utt2spk=spk)
    write_rejected(test_dir / "rejected.tsv", rejected)


@entry_point("check_overlap.py")
def main(argv=None) -> int:
    args = get_args(argv)
    prog = "check_overlap.py"
    train_dir, test_dir = Path(args.train_dir), Path(args.test_dir)
    overlap = find_overlap(train_dir, test_dir, args.train_label)
    test_label = args.test_label or str(test_dir)
    if not overlap:
        print(f"{prog}: {args.train_label or train_dir} and {test_label} share no utterance")
        return 0
    names = sorted(overlap, key=byte_key)
    example = f"{names[0]}: {overlap[names[0]]}"
    if args.drop_from_test == "false":
        raise UserError(f"{len(names)} test utterance(s) are also in the training set ({example}"
                        f"{', ...' if len(names) > 1 else ''}): remove them from one set, or pass "
                        f"--drop_test_overlap true to drop them from the test set ({test_label})")
    if len(names) == len(dict(read_table(test_dir / "wav.scp"))):
        raise UserError(f"every test utterance is also in the training set ({example}): give a test set of "
                        f"other clips")
    drop(test_dir, overlap)
    validate_data_dir(test_dir)
    print(f"{prog}: dropped {len(names)} test utterance(s) that are also in the training set ({example}); "
          f"see {test_dir / 'rejected.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
