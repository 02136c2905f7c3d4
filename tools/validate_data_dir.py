#!/usr/bin/env python3
"""Check a Kaldi-style data dir (wav.scp, text, utt2spk, spk2utt, optional utt2dur).

Every table must be UTF-8, one `key value` entry per line, sorted in byte order (LC_ALL=C) with unique keys;
wav.scp, text, utt2spk (and utt2dur) must name the same utterances; spk2utt must be exactly utt2spk inverted.
Stage 0 writes such dirs and every later stage checks its input with this script (or `validate_data_dir()`).

    python tools/validate_data_dir.py data/train [data/test ...] [--no_check_files]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")
UTT_KEYED = ("wav.scp", "text", "utt2spk", "utt2dur")


class DataDirError(ValueError):
    """A data dir that later stages must not read; the message names the file, the line and the fix."""


def byte_key(s: str) -> bytes:
    """Sort key giving the order of `LC_ALL=C sort` for UTF-8 text (undecodable file-name bytes kept as they are)."""
    return s.encode("utf-8", "surrogateescape")


def write_table(path: str | os.PathLike, entries: dict[str, str]) -> None:
    """Write `key value` lines sorted in byte order, atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for key in sorted(entries, key=byte_key):
            f.write(f"{key} {entries[key]}\n")
    os.replace(tmp, path)


def read_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read `key value` lines; raise DataDirError on a malformed, unsorted or duplicated entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataDirError(f"{path}: cannot read ({e.strerror})") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataDirError(f"{path} line {line}: not valid UTF-8") from None
    if not content:
        raise DataDirError(f"{path}: empty table")
    if not content.endswith("\n"):
        raise DataDirError(f"{path}: last line has no newline")
    entries: list[tuple[str, str]] = []
    prev = None
    for n, line in enumerate(content[:-1].split("\n"), start=1):
        if "\r" in line:
            raise DataDirError(f"{path} line {n}: carriage return (write the table with Unix line ends)")
        key, sep, value = line.partition(" ")
        if not key or not sep or not value.strip() or line != line.strip() or value[0].isspace() or any(
            c.isspace() for c in key
        ):
            raise DataDirError(f"{path} line {n}: expected '<key> <value>', got {line!r}")
        if prev is not None:
            if key == prev:
                raise DataDirError(f"{path} line {n}: duplicate key {key!r}")
            if byte_key(key) < byte_key(prev):
                raise DataDirError(
                    f"{path} line {n}: {key!r} comes after {prev!r}; tables must be sorted in byte order (LC_ALL=C sort)"
                )
        prev = key
        entries.append((key, value))
    return entries


def validate_data_dir(data_dir: str | os.PathLike, check_files: bool = True) -> dict[str, int]:
    """Validate a data dir; return {'utterances': n, 'speakers': m} or raise DataDirError."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataDirError(f"{d}: no such data dir")
    for name in REQUIRED:
        if not (d / name).is_file():
            raise DataDirError(f"{d / name}: missing")
    tables = {name: read_table(d / name) for name in UTT_KEYED if (d / name).is_file()}

    utts = [k for k, _ in tables["wav.scp"]]
    utt_set = set(utts)
    for name, entries in tables.items():
        keys = {k for k, _ in entries}
        if keys != utt_set:
            extra = sorted(keys - utt_set, key=byte_key)
            if extra:
                raise DataDirError(f"{d / name}: utterance {extra[0]!r} is not in wav.scp")
            missing = sorted(utt_set - keys, key=byte_key)
            raise DataDirError(f"{d / name}: utterance {missing[0]!r} from wav.scp is missing")

    utt2spk = dict(tables["utt2spk"])
    for utt, spk in utt2spk.items():
        if any(c.isspace() for c in spk):
            raise DataDirError(f"{d / 'utt2spk'}: speaker of {utt!r} is not one token: {spk!r}")
    expected: dict[str, list[str]] = {}
    for utt in utts:
        expected.setdefault(utt2spk[utt], []).append(utt)
    spk2utt = read_table(d / "spk2utt")
    got = {spk: value.split(" ") for spk, value in spk2utt}
    if got != expected:
        for spk in sorted(set(got) | set(expected), key=byte_key):
            if got.get(spk) != expected.get(spk):
                raise DataDirError(
                    f"{d / 'spk2utt'}: speaker {spk!r} lists {got.get(spk)} but utt2spk gives {expected.get(spk)}; "
                    "rebuild spk2utt from utt2spk"
                )

    if "utt2dur" in tables:
        for utt, value in tables["utt2dur"]:
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                raise DataDirError(f"{d / 'utt2dur'}: duration of {utt!r} is not a positive number: {value!r}")

    if check_files:
        for utt, wav in tables["wav.scp"]:
            if not Path(wav).is_file():
                raise DataDirError(f"{d / 'wav.scp'}: audio of {utt!r} not found: {wav}")
    return {"utterances": len(utts), "speakers": len(expected)}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dirs", nargs="+", help="data dirs to check")
    p.add_argument("--no_check_files", action="store_true", help="do not check that the wav files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = get_args(argv)
    for d in args.data_dirs:
        try:
            info = validate_data_dir(d, check_files=not args.no_check_files)
        except DataDirError as e:
            print(f"validate_data_dir.py: {e}", file=sys.stderr)
            return 1
        print(f"validate_data_dir.py: {d} OK ({info['utterances']} utterances, {info['speakers']} speaker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
