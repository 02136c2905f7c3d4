#!/usr/bin/env python3
"""Stage -1: a raw character voice pack -> train/test folders of `<spk>_<n>.wav` + `<spk>_<n>.normalized.txt`
(a clip in another format keeps its suffix: `<spk>_<n>.flac`).

A raw pack is a folder, possibly nested, of `<name>.wav` clips (or .flac/.ogg/.mp3) with same-stem `<name>.lab`
transcripts (one UTF-8 line), as in the public game voice datasets. Clips whose transcript is missing or empty, is
not UTF-8, or holds a template variable (`{NICKNAME}`) or markup (`{F#...}{M#...}`, `<color=...>`, a literal
`\\n`) are dropped and counted per reason, as is the same clip in two formats (`a.wav` and `a.flac`). The kept
clips are numbered in byte order of their path and split, seeded and deterministic, into the two sets. Source
files are only read: each kept clip is copied byte for byte (keeping its format's suffix).

A pack may instead list its transcripts in a `metadata.csv` at its root, in one of the two common dataset layouts:
LJSpeech (`<id>|<text>[|<normalized text>]` lines, no header, clips in `wavs/<id>.wav`; the normalized text is used
when given) or Hugging Face's audiofolder (a CSV header naming `file_name` and a text column: transcription, text,
sentence, normalized_text or transcript; `file_name` is the clip's path inside the pack). Its .lab files, if any,
are then not read.

Besides the two set folders, the output holds sources.tsv (new utterance id -> set, source path) and dropped.tsv
(source path -> reason), so every clip can be traced.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from prepare_data import TEXT_SUFFIX, byte_key, short_split_note, split_test

from cosyvoice.dataset.datadir import audio_suffix
from cosyvoice.text.checks import TEXT_REASONS, text_problem
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError

REASONS = {
    "no_lab": "clip without transcript (.lab, or its metadata.csv row)",
    "two_audio": "more than one audio file with the same name (e.g. a.wav and a.flac)",
    "empty_lab": ".lab is empty or whitespace",
    "lab_not_utf8": ".lab is not UTF-8",
    **TEXT_REASONS,
    "no_wav": "transcript without audio (not a clip; only counted)",
}
MANIFESTS = ("sources.tsv", "dropped.tsv")
METADATA = "metadata.csv"
# text columns of an audiofolder metadata.csv, in the order they are preferred
TEXT_COLUMNS = ("normalized_text", "transcription", "text", "sentence", "transcript")
OWNER_MARK = ".converted_raw_pack"  # marks a folder this script writes, so a rerun may overwrite it


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack_dir", required=True,
                   help="raw pack: nested folders of <name>.wav (or .flac/.ogg/.mp3) + <name>.lab (only read)")
    p.add_argument("--out_dir", required=True, help="where the <train_set>/ and <test_set>/ pair folders go")
    p.add_argument("--spk_id", default="", help="speaker id for the new names (default: the pack folder's name)")
    p.add_argument("--train_set", default="train")
    p.add_argument("--test_set", default="test")
    p.add_argument("--num_test", type=int, default=0, help="clips held out for the test set (0: use --test_ratio)")
    p.add_argument("--test_ratio", type=float, default=0.05, help="share of clips held out for the test set")
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/test split")
    p.add_argument("--in_cast", default="false", choices=("true", "false"),
                   help="true: the pack is one of several trained together (no hint to split it into a cast)")
    return p.parse_args(argv)


def cast_hint(pack: Path, wavs: dict[str, list[Path]], spk: str) -> str:
    """A note when the clips sit in two or more top-level folders of the pack (a dataset root of several
    characters, e.g. <lang>/<character>/): they would all become one speaker. Empty otherwise."""
    folders = Counter(paths[0].relative_to(pack).parts[0] for paths in wavs.values()
                      if len(paths[0].relative_to(pack).parts) > 1)
    if len(folders) < 2:
        return ""
    shown = ", ".join(f"{name} {n}" for name, n in sorted(folders.items(), key=lambda kv: byte_key(kv[0]))[:4])
    more = f", and {len(folders) - 4} more" if len(folders) > 4 else ""
    return (f"note: the clips are in {len(folders)} folders of {pack} ({shown}{more} clips), and all of them "
            f"become speaker {spk!r}; if each folder is one character, train them as a cast, one speaker per "
            f"folder: --raw_pack_dir \"{pack}/*\"")


def speaker_from_name(name: str) -> str:
    """A speaker id usable as the `<spk>_` prefix: no '_', no whitespace, no path characters."""
    spk = re.sub(r"[\W_]+", "-", name).strip("-")
    return spk or "spk"


def classify_text(raw: bytes) -> tuple[str | None, str]:
    """Return (reason, detail) for a dropped transcript, or (None, text) for a usable one."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return "lab_not_utf8", f"invalid byte at offset {e.start}"
    text = " ".join(text.split())
    if not text:
        return "empty_lab", ""
    problem = text_problem(text)
    if problem:
        return problem
    return None, text


def scan_pack(pack: Path) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    """Map each clip's relative stem (posix, no suffix) to its audio files (one, unless the pack holds the same
    clip twice) and to its .lab file."""
    wavs: dict[str, list[Path]] = {}
    labs: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(pack):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            stem, suffix = os.path.splitext(path.relative_to(pack).as_posix())
            if audio_suffix(name):
                wavs.setdefault(stem, []).append(path)
            elif suffix.lower() == ".lab":
                labs[stem] = path
    return {stem: sorted(paths, key=lambda p: byte_key(p.name)) for stem, paths in wavs.items()}, labs


def read_metadata(pack: Path, wavs: dict[str, list[Path]]) -> dict[str, tuple[bytes, str]] | None:
    """The transcripts of the pack's metadata.csv (None when it has none): {relative stem of the clip: (text as
    UTF-8 bytes, where it was read: 'metadata.csv:LINE')}. A file that is neither layout is a UserError."""
    path = pack / METADATA
    if not path.is_file():
        return None
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 (invalid byte at offset {e.start}): save it as UTF-8")
    first = next((line for line in lines if line.strip()), "")
    rows: list[tuple[int, str, str]] = []  # (line number, clip's relative stem, text)
    header = next(csv.reader([first])) if first else []
    if "file_name" in header:
        column = next((c for c in TEXT_COLUMNS if c in header), None)
        if column is None:
            raise UserError(f"{path}: no text column (found {', '.join(header)}; expected one of "
                            f"{', '.join(TEXT_COLUMNS)})")
        for n, row in enumerate(csv.DictReader(io.StringIO("\n".join(lines))), start=2):
            if row.get("file_name"):
                rows.append((n, os.path.splitext(row["file_name"].replace("\\", "/"))[0], row.get(column) or ""))
    elif "|" in first:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) < 2 or not fields[0].strip():
                raise UserError(f"{path}:{n}: expected <id>|<text>[|<normalized text>], got {line[:60]!r}")
            utt = fields[0].strip()
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            stem = next((s for s in (f"wavs/{utt}", utt) if s in wavs), f"wavs/{utt}")
            rows.append((n, stem, text))
    else:
        raise UserError(f"{path} is neither LJSpeech's <id>|<text>|<normalized text> lines nor an audiofolder CSV "
                        f"with a file_name column")
    out: dict[str, tuple[bytes, str]] = {}
    for n, stem, text in rows:
        if stem in out:
            raise UserError(f"{path}:{n}: {stem} is listed twice (first at {out[stem][1]}); keep one row")
        out[stem] = (text.encode("utf-8"), f"{METADATA}:{n}")
    return out


def check_dirs(pack: Path, out: Path) -> str:
    """Return an error message when the output could touch the pack or someone else's files."""
    p, o = pack.resolve(), out.resolve()
    if p == o or p in o.parents or o in p.parents:
        return f"--out_dir {out} and --pack_dir {pack} overlap; write the pairs somewhere outside the pack"
    if o.exists() and any(o.iterdir()) and not (o / OWNER_MARK).is_file():
        return f"--out_dir {out} is not empty and was not written by this script; choose another folder"
    return ""


def tsv_field(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


@entry_point("convert_raw_pack.py")
def main(argv=None) -> int:
    args = get_args(argv)
    prog = "convert_raw_pack.py"
    pack, out = Path(args.pack_dir), Path(args.out_dir)
    if not pack.is_dir():
        raise UserError(f"raw pack folder not found: {pack}")
    problem = check_dirs(pack, out)
    if problem:
        raise UserError(problem)
    spk = args.spk_id or speaker_from_name(pack.resolve().name)
    if speaker_from_name(spk) != spk:
        raise UserError(f"--spk_id {spk!r} must be letters, digits and '-' only")

    wavs, lab_files = scan_pack(pack)
    # each clip's transcript: (raw bytes, where it was read: the .lab's relative path or metadata.csv:LINE)
    labs = read_metadata(pack, wavs)
    if labs is None:
        labs = {stem: (p.read_bytes(), p.relative_to(pack).as_posix()) for stem, p in lab_files.items()}
    elif lab_files:
        print(f"{prog}: {pack / METADATA} gives the transcripts; the {len(lab_files)} .lab file(s) are not read")
    kept: list[tuple[str, str]] = []  # (relative stem, text)
    dropped: dict[str, tuple[str, str]] = {}
    for stem in sorted(wavs, key=byte_key):
        if len(wavs[stem]) > 1:
            dropped[stem] = ("two_audio", ", ".join(p.name for p in wavs[stem]))
            continue
        if stem not in labs:
            dropped[stem] = ("no_lab", "")
            continue
        reason, detail = classify_text(labs[stem][0])
        if reason:
            dropped[stem] = (reason, detail)
        else:
            kept.append((stem, detail))
    for stem in sorted(set(labs) - set(wavs), key=byte_key):
        dropped[stem] = ("no_wav", "")

    counts = Counter(reason for reason, _ in dropped.values())
    print(f"{prog}: {pack}: {len(wavs)} clip{'' if len(wavs) == 1 else 's'}, kept {len(kept)}, "
          f"dropped {len(wavs) - len(kept)}")
    hint = "" if args.in_cast == "true" else cast_hint(pack, wavs, spk)
    if hint:
        print(f"{prog}: {hint}")
    for reason in REASONS:
        if counts[reason]:
            print(f"{prog}:   {reason:18s} {counts[reason]:6d}  {REASONS[reason]}")
    in_cast = args.in_cast == "true"
    if not kept and not in_cast:
        raise UserError(f"no usable clip in {pack}")
    if not kept:
        print(f"{prog}: note: no usable clip in {pack}: speaker {spk!r} is left out of the cast")

    width = max(4, len(str(len(kept))))
    ids = {stem: f"{spk}_{i:0{width}d}" for i, (stem, _) in enumerate(kept, start=1)}
    try:
        train, test = split_test(list(ids.values()), args.num_test, args.test_ratio, args.seed, in_cast=in_cast)
    except ValueError as e:
        raise UserError(f"{pack}: {e}")
    note = short_split_note(pack, len(kept), len(test), args.num_test, "clip")
    if len(kept) == 1:
        note = f"note: {pack} has 1 usable clip: speaker {spk!r} trains on it and has no test clip"
    if note:
        print(f"{prog}: {note}")
    set_of = {u: args.train_set for u in train} | {u: args.test_set for u in test}

    # everything is written aside and swapped in at the end: a failure leaves the previous output as it was
    out.parent.mkdir(parents=True, exist_ok=True)
    work, old = out.parent / f".{out.name}.new", out.parent / f".{out.name}.old"
    for d in (work, old):
        shutil.rmtree(d, ignore_errors=True)
    work.mkdir()
    (work / OWNER_MARK).write_text(f"{pack.resolve()}\n", encoding="utf-8", errors="backslashreplace")
    for name in (args.train_set, args.test_set):
        (work / name).mkdir()
    for stem, text in kept:
        utt = ids[stem]
        dest = work / set_of[utt]
        src = wavs[stem][0]
        shutil.copyfile(src, dest / f"{utt}{src.suffix.lower()}")
        (dest / f"{utt}{TEXT_SUFFIX}").write_text(text + "\n", encoding="utf-8")
    with open(work / "dropped.tsv", "w", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
        f.write("source\treason\tdetail\n")
        for stem, (reason, detail) in dropped.items():
            src = wavs[stem][0].relative_to(pack).as_posix() if stem in wavs else labs[stem][1]
            f.write(f"{tsv_field(src)}\t{reason}\t{tsv_field(detail)}\n")
    with open(work / "sources.tsv", "w", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
        f.write("utt\tset\tsource\n")
        for stem, _ in kept:
            f.write(f"{ids[stem]}\t{set_of[ids[stem]]}\t{tsv_field(wavs[stem][0].relative_to(pack).as_posix())}\n")
    if out.exists():
        os.rename(out, old)
    os.rename(work, out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"{prog}: wrote {out}/{{{args.train_set},{args.test_set}}}: {len(train)} train, {len(test)} test clips "
          f"of speaker {spk!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
