"""A Kaldi-style data dir (wav.scp, text, utt2spk, spk2utt, optional utt2dur) and its check.

Every table must be UTF-8, one ``key value`` entry per line, sorted in byte order (LC_ALL=C) with unique keys
(:func:`cosyvoice.utils.fileio.read_table`); wav.scp, text, utt2spk (and utt2dur) must name the same utterances;
spk2utt must be exactly utt2spk inverted. Stage 0 writes such dirs and every later stage checks its input with
:func:`validate_data_dir` (from the shell: ``python tools/validate_data_dir.py DIR...``).
"""
from __future__ import annotations

import os
from pathlib import Path

from cosyvoice.utils import fileio
from cosyvoice.utils.fileio import TableError, byte_key, write_table  # noqa: F401 (the table API of a data dir)

REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")
# The audio files a pair folder or a character pack may hold (soundfile reads them all, as cosyvoice.audio.io does;
# FLAC is lossless, so a .flac gives exactly the samples of the .wav it was made from), and formats that are
# recognised but not read (named to the user with the conversion to make).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
UNREAD_AUDIO_SUFFIXES = (".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif")
UTT_KEYED = ("wav.scp", "text", "utt2spk", "utt2dur")


def audio_suffix(name: str) -> str:
    """The suffix of a file name, lower case, when it is one of ``AUDIO_SUFFIXES`` (with a stem before it);
    else ''."""
    stem, suffix = os.path.splitext(name)
    return suffix.lower() if stem and suffix.lower() in AUDIO_SUFFIXES else ""


class DataDirError(TableError):
    """A data dir that later stages must not read; the message names the file, the line and the fix."""


def read_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """:func:`cosyvoice.utils.fileio.read_table`, its errors raised as :class:`DataDirError`."""
    try:
        return fileio.read_table(path)
    except TableError as e:
        raise DataDirError(str(e)) from None


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
