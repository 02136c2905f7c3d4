#!/usr/bin/env python3
"""Stage 0: a folder of `<utt>.wav` (or .flac/.ogg/.mp3) + `<utt>.normalized.txt` pairs -> a Kaldi data dir.

Writes wav.scp, text, utt2spk, spk2utt and utt2dur (byte-sorted, checked by tools/validate_data_dir.py) and
rejected.tsv, which lists every utterance that cannot be used with one reason. The source folder is only read.
With --test_des_dir, the kept utterances are split (seeded, deterministic) between --des_dir and --test_des_dir.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from cosyvoice.dataset.datadir import (AUDIO_SUFFIXES, UNREAD_AUDIO_SUFFIXES, audio_suffix, byte_key,
                                       validate_data_dir, write_table)
from cosyvoice.text.checks import TEXT_REASONS, text_problem
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError

TEXT_SUFFIX = ".normalized.txt"
AUDIO_NAMES = "/".join(AUDIO_SUFFIXES)  # ".wav/.flac/.ogg/.mp3"
MIN_RATE = 16000  # the speech tokenizer and CAM++ work at 16 kHz; inference refuses lower-rate prompts too
OUTPUTS = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "rejected.tsv")
# Every reason an utterance can be rejected for, in the order they are checked.
REASONS = {
    "bad_name": "file name is not a usable utterance id",
    "no_transcript": "audio without transcript",
    "no_wav": "transcript without audio",
    "two_audio": "more than one audio file for one utterance id",
    "text_not_utf8": "transcript is not UTF-8",
    "empty_text": "transcript is empty or whitespace",
    **TEXT_REASONS,
    "unreadable_audio": "audio cannot be read",
    "empty_audio": "audio has no samples",
    "low_sample_rate": f"audio sampled below {MIN_RATE} Hz (8 kHz telephone audio cannot train a 24 kHz voice)",
    "too_short": "shorter than --min_dur",
    "too_long": "longer than --max_dur",
}


@dataclass
class Utterance:
    utt: str
    wav: Path
    text: str
    duration: float


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src_dir", required=True,
                   help=f"folder of <utt>.wav (or another of {AUDIO_NAMES}) + <utt>.normalized.txt pairs "
                        "(only read)")
    p.add_argument("--des_dir", required=True, help="data dir to write")
    p.add_argument("--spk_id", default="", help="speaker id of every utterance (default: file-name prefix before '_')")
    p.add_argument("--min_dur", type=float, default=0.5, help="shortest usable clip in seconds")
    p.add_argument("--max_dur", type=float, default=30.0, help="longest usable clip in seconds")
    p.add_argument("--test_des_dir", default="", help="also split the kept utterances into this test data dir")
    p.add_argument("--num_test", type=int, default=0, help="utterances for the test dir (0: use --test_ratio)")
    p.add_argument("--test_ratio", type=float, default=0.05, help="share of utterances for the test dir")
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/test split")
    p.add_argument("--in_cast", default="false", choices=("true", "false"),
                   help="true: one of several datasets trained together: a dataset with no usable utterance is "
                        "written empty (a note, not an error), and a split keeps at least one for training")
    args = p.parse_args(argv)
    if args.spk_id and any(c.isspace() for c in args.spk_id):
        p.error(f"--spk_id must be one token without spaces, got {args.spk_id!r}")
    if not 0 <= args.min_dur < args.max_dur:
        p.error(f"need 0 <= --min_dur < --max_dur, got {args.min_dur} and {args.max_dur}")
    return args


def split_test(ids: list[str], num_test: int, test_ratio: float, seed: int,
               in_cast: bool = False) -> tuple[list[str], list[str]]:
    """Deterministically hold out `num_test` ids (or a `test_ratio` share, at least one) -> (train, test).

    ``in_cast``: the ids are one speaker of several trained together, whose test sets are joined, so a speaker too
    small for the split keeps at least one utterance for training instead of failing (one utterance: no test)."""
    n = len(ids)
    if num_test < 0 or not 0 < test_ratio < 1:
        raise ValueError(f"need --num_test >= 0 and 0 < --test_ratio < 1, got {num_test} and {test_ratio}")
    if n < 2 and not in_cast:
        raise ValueError(f"need at least 2 usable utterances to split off a test set, have {n}: add clips")
    k = num_test if num_test > 0 else max(1, round(n * test_ratio))
    if k >= n:
        if not in_cast:
            raise ValueError(f"--num_test {k} leaves no training utterance (only {n} usable): give a smaller "
                             "--num_test")
        k = max(n - 1, 0)
    order = sorted(ids, key=byte_key)
    random.Random(seed).shuffle(order)
    test = set(order[:k])
    return [u for u in sorted(ids, key=byte_key) if u not in test], sorted(test, key=byte_key)


def short_split_note(where: object, n: int, n_test: int, num_test: int, noun: str) -> str:
    """The note for a cast member of ``n`` usable ``noun``s that held out fewer than --num_test (``split_test``
    with ``in_cast``), or ""; a member of one has its own note."""
    if n < 2 or num_test <= n_test:
        return ""
    return (f"note: {where} has {n} usable {noun}s: {n_test} held out for the test set, not --num_test {num_test}, "
            "so that one is left to train on")


def read_text(path: Path) -> tuple[str | None, str]:
    """Return (reason, text): reason is None when the transcript is usable."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return "text_not_utf8", f"invalid byte at offset {e.start}"
    except OSError as e:
        return "text_not_utf8", f"cannot read: {e.strerror}"
    text = " ".join(text.split())
    return (None, text) if text else ("empty_text", "no text")


def audio_duration(path: Path) -> tuple[str | None, str, float]:
    """Return (reason, detail, seconds) from the header, also checking that the last frame can be read (an MP3 is
    decoded through) and that the rate is at least 16 kHz."""
    try:
        if path.stat().st_size == 0:
            return "empty_audio", "0-byte file", 0.0
        with sf.SoundFile(path) as f:
            frames, rate = f.frames, f.samplerate
            if f.format == "MP3":
                # an MP3's frame count is an estimate and seeking in it is not exact: decode it through instead
                frames = sum(len(block) for block in f.blocks(blocksize=1 << 16, dtype="float32"))
            elif frames > 0:
                f.seek(frames - 1)
                if len(f.read(1)) != 1:
                    return "unreadable_audio", "truncated file", 0.0
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return "unreadable_audio", " ".join(str(e).split()), 0.0
    if frames == 0:
        return "empty_audio", "0 samples", 0.0
    if rate < MIN_RATE:
        return "low_sample_rate", f"{rate} Hz < {MIN_RATE} Hz", frames / rate
    return None, "", frames / rate


def scan_pairs(src_dir: Path) -> tuple[dict[str, dict], int, list[str], list[str]]:
    """Group the folder's files by utterance id -> {utt: {'text': path, 'audio': [paths]}} (two audio files of one
    id are rejected as two_audio); also the number of other files, the names of audio files in formats that are not
    read, and the names of the ``<utt>.txt`` / ``<utt>.lab`` files beside audio that has no
    ``<utt>.normalized.txt``."""
    pairs: dict[str, dict] = {}
    ignored = 0
    other_audio: list[str] = []
    text_like: list[str] = []
    for entry in os.scandir(src_dir):
        if not entry.is_file():
            continue
        name = entry.name
        if name.endswith(TEXT_SUFFIX) and len(name) > len(TEXT_SUFFIX):
            pairs.setdefault(name[: -len(TEXT_SUFFIX)], {})["text"] = Path(entry.path)
        elif audio_suffix(name):
            pairs.setdefault(os.path.splitext(name)[0], {}).setdefault("audio", []).append(Path(entry.path))
        elif name.lower().endswith(UNREAD_AUDIO_SUFFIXES):
            other_audio.append(name)
        else:
            ignored += 1
            if name.lower().endswith((".txt", ".lab")):
                text_like.append(name)
    # a <utt>.txt or <utt>.lab beside audio that has no <utt>.normalized.txt: most likely its transcript
    other_text = [n for n in text_like if (files := pairs.get(os.path.splitext(n)[0])) and "text" not in files]
    return pairs, ignored, sorted(other_audio, key=byte_key), sorted(other_text, key=byte_key)


def name_problem(utt: str) -> str:
    try:
        utt.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if any(c.isspace() for c in utt):
        return "utterance id contains whitespace"
    if utt.startswith("-"):
        return "utterance id starts with '-' (it would read as an option)"
    return ""


def check_utterance(utt: str, files: dict, min_dur: float, max_dur: float):
    """Return (Utterance, None) or (None, (reason, detail))."""
    problem = name_problem(utt)
    if problem:
        return None, ("bad_name", problem)
    if len(files.get("audio", [])) > 1:
        names = ", ".join(sorted((p.name for p in files["audio"]), key=byte_key))
        return None, ("two_audio", f"{names}: keep one of them")
    if "text" not in files:
        return None, ("no_transcript", f"{utt}{TEXT_SUFFIX} not found")
    if "audio" not in files:
        return None, ("no_wav", f"no audio file {utt} with a suffix of {AUDIO_NAMES} found")
    reason, text = read_text(files["text"])
    if reason:
        return None, (reason, text)
    problem = text_problem(text)
    if problem:
        return None, problem
    audio = files["audio"][0]
    reason, detail, dur = audio_duration(audio)
    if reason:
        return None, (reason, detail)
    if dur < min_dur:
        return None, ("too_short", f"{dur:.3f} s < --min_dur {min_dur:g} s")
    if dur > max_dur:
        return None, ("too_long", f"{dur:.3f} s > --max_dur {max_dur:g} s")
    return Utterance(utt, Path(os.path.abspath(audio)), text, dur), None


def clean_dir(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (d / name).unlink(missing_ok=True)


def write_rejected(path: Path, rejected: dict[str, tuple[str, str]]) -> None:
    def field(s: str) -> str:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    with open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
        f.write("utt\treason\tdetail\n")
        for utt in sorted(rejected, key=byte_key):
            reason, detail = rejected[utt]
            f.write(f"{field(utt)}\t{reason}\t{field(detail)}\n")


def _unescape(field: str) -> str:
    return re.sub(r"\\([\\tn])", lambda m: {"\\": "\\", "t": "\t", "n": "\n"}[m.group(1)], field)


def read_rejected(path: Path) -> dict[str, tuple[str, str]]:
    """The entries of a rejected.tsv (written by write_rejected), {utt: (reason, detail)}; empty if none."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        utt, reason, detail = (line.split("\t") + ["", ""])[:3]
        out[_unescape(utt)] = (reason, _unescape(detail))
    return out


def write_data_dir(d: Path, utts: list[Utterance], spk_id: str, utt2spk: dict[str, str] | None = None) -> None:
    """The tables of ``utts``; the speaker is ``spk_id``, else ``utt2spk[utt]``, else the id's prefix before '_'."""
    utt2spk = {u.utt: spk_id or (utt2spk or {}).get(u.utt) or (u.utt.split("_")[0] or u.utt) for u in utts}
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk, key=byte_key):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_table(d / "wav.scp", {u.utt: str(u.wav) for u in utts})
    write_table(d / "text", {u.utt: u.text for u in utts})
    write_table(d / "utt2dur", {u.utt: f"{u.duration:.3f}" for u in utts})
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", {spk: " ".join(us) for spk, us in spk2utt.items()})


@entry_point("prepare_data.py")
def main(argv=None) -> int:
    args = get_args(argv)
    src, des = Path(args.src_dir), Path(args.des_dir)
    prog = "prepare_data.py"
    if not src.is_dir():
        raise UserError(f"source folder not found: {src}")
    pairs, ignored, other_audio, other_text = scan_pairs(src)
    kept: list[Utterance] = []
    rejected: dict[str, tuple[str, str]] = {}
    for utt in sorted(pairs, key=byte_key):
        ok, bad = check_utterance(utt, pairs[utt], args.min_dur, args.max_dur)
        if ok:
            kept.append(ok)
        else:
            rejected[utt] = bad

    sets = [des] + ([Path(args.test_des_dir)] if args.test_des_dir else [])
    for d in sets:
        clean_dir(d)
    write_rejected(des / "rejected.tsv", rejected)
    counts = Counter(reason for reason, _ in rejected.values())
    hours = sum(u.duration for u in kept) / 3600
    print(f"{prog}: {src}: kept {len(kept)} utterances ({hours:.3f} h), rejected {len(rejected)}"
          + (f" (see {des / 'rejected.tsv'})" if rejected else ""))
    for reason in REASONS:
        if counts[reason]:
            print(f"{prog}:   {reason:18s} {counts[reason]:6d}  {REASONS[reason]}")
    if other_audio:
        print(f"{prog}:   ignored {len(other_audio)} audio file(s) in a format that is not read (e.g. "
              f"{other_audio[0]}): only {AUDIO_NAMES} are; convert them to wav (e.g. ffmpeg -i x.m4a x.wav) to use them")
    if ignored:
        print(f"{prog}:   ignored {ignored} other files (neither audio ({AUDIO_NAMES}) nor *{TEXT_SUFFIX})")
    if other_text:
        print(f"{prog}:   {len(other_text)} of them look like the transcripts of audio here (e.g. {other_text[0]}): a transcript must be "
              f"named <utt>{TEXT_SUFFIX}; a pack of <name>.wav + <name>.lab clips is read with --raw_pack_dir")
    in_cast = args.in_cast == "true"
    if not kept and not in_cast:
        raise UserError(f"no usable utterance in {src} (reasons in {des / 'rejected.tsv'})")
    if not kept:
        why = f" (reasons in {des / 'rejected.tsv'})" if rejected else ""
        print(f"{prog}: note: no usable utterance in {src}{why}: it adds nothing to the cast")

    if args.test_des_dir:
        try:
            train_ids, test_ids = split_test([u.utt for u in kept], args.num_test, args.test_ratio, args.seed,
                                             in_cast=in_cast)
        except ValueError as e:
            raise UserError(f"{src}: {e}")
        note = short_split_note(src, len(kept), len(test_ids), args.num_test, "utterance")
        if len(kept) == 1:
            note = f"note: {src} has 1 usable utterance: it is trained on, and none is held out for the test set"
        if note:
            print(f"{prog}: {note}")
        test_set = set(test_ids)
        parts = [(des, [u for u in kept if u.utt not in test_set]), (sets[1], [u for u in kept if u.utt in test_set])]
        write_rejected(sets[1] / "rejected.tsv", {})
    else:
        parts = [(des, kept)]
    for d, utts in parts:
        if not utts:  # in a cast: rejected.tsv alone says the set is empty (Kaldi tables are never empty)
            print(f"{prog}: wrote {d} (no utterance: rejected.tsv only)")
            continue
        write_data_dir(d, utts, args.spk_id)
        info = validate_data_dir(d)
        print(f"{prog}: wrote {d} ({info['utterances']} utterances, {info['speakers']} speaker(s), "
              f"{sum(u.duration for u in utts) / 3600:.3f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
