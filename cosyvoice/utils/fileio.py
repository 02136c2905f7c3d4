"""Files written so that nothing is ever half-written, and the Kaldi tables of a data dir.

Every output of the toolkit is written to a temporary name beside it (``.NAME.tmp<pid>``) and renamed into place,
so a crash leaves either the complete new file or the old one. A write that fails because the disk is full or the
folder cannot be written removes its temporary file and raises a one-line :class:`WriteError`. The temporary files
of killed processes are removed by :func:`clean_stale_temp` (``python -m cosyvoice.utils.fileio clean_stale DIR...``;
run.sh and the trainer call it at start).

Kaldi tables (``wav.scp``, ``text``, ``utt2spk``, ...) hold one ``<key> <value>`` per line, UTF-8, sorted in byte
order (``LC_ALL=C sort``) with unique keys; :func:`read_table` refuses anything else, naming the file and line.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from cosyvoice.utils.errors import UserError, WriteError, write_error

PathLike = Union[str, os.PathLike]
TMP_SUFFIX = re.compile(r"\.tmp(\d+)$")  # what temp_name() ends with: the writer's process id


class TableError(UserError, ValueError):
    """A Kaldi table (or data dir) that later stages must not read; the message names the file, the line and the
    fix."""


# ------------------------------------------------------------------------------------------------ atomic writes
def temp_name(path: PathLike) -> Path:
    """The temporary name beside ``path`` that this process writes before renaming it onto ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write ``path``'s content to (a file, or a folder); renamed onto ``path`` when the block
    ends without an error, removed otherwise. ``suffix`` is appended to the temporary name, for writers that pick
    the format from the extension (soundfile)."""
    path = Path(path)
    tmp = temp_name(path).with_name(temp_name(path).name + suffix)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())  # some writers create 0600 files
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
    _fsync_dir(path.parent)


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "w") -> None:
    """``write(f)`` to a temporary file opened with ``mode`` beside ``path``, fsync, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> None:
    atomic_write(path, lambda f: f.writelines(line + "\n" for line in lines), "w")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through a file object (the same object gives the same bytes), atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), "wb")


def require_writable_dir(path: PathLike, what: str) -> None:
    """Create ``path`` if needed and check that files can be made in it, before any work; else a one-line
    :class:`WriteError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", suffix=f".tmp{os.getpid()}", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise write_error(path, e, hint=f" ({what})") from e


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def clean_stale_temp(dirs: Iterable[PathLike], recursive: bool = True) -> List[Path]:
    """Remove the temp files (and folders) named ``*.tmp<pid>`` that processes no longer alive left in ``dirs``.

    Entries of live processes (this one included) are kept. Folders are searched recursively unless ``recursive``
    is False; symbolic links are never followed (a model dir links into the pretrained dir). Missing dirs are
    skipped. Returns the paths removed."""
    removed: List[Path] = []
    me = os.getpid()

    def consider(parent: str, name: str) -> None:
        m = TMP_SUFFIX.search(name)
        if not m or int(m.group(1)) == me or _pid_alive(int(m.group(1))):
            return
        path = Path(parent) / name
        try:
            _remove(path)
        except FileNotFoundError:
            return
        removed.append(path)

    for top in dirs:
        if not os.path.isdir(top):
            continue
        for parent, subdirs, files in os.walk(top, followlinks=False):
            for name in files:
                consider(parent, name)
            kept = []
            for name in subdirs:
                consider(parent, name)
                if (Path(parent) / name).is_dir():
                    kept.append(name)
            subdirs[:] = kept if recursive else []
    return removed


# ------------------------------------------------------------------------------------------------ Kaldi tables
def byte_key(s: str) -> bytes:
    """Sort key giving the order of ``LC_ALL=C sort`` for UTF-8 text (undecodable file-name bytes kept)."""
    return s.encode("utf-8", "surrogateescape")


def write_table(path: PathLike, entries: Dict[str, str]) -> None:
    """Write ``key value`` lines sorted in byte order, atomically."""
    atomic_write_lines(path, (f"{key} {entries[key]}" for key in sorted(entries, key=byte_key)))


def read_table(path: PathLike) -> List[Tuple[str, str]]:
    """The ``(key, value)`` lines of a table; a :class:`TableError` on a missing file, a malformed, unsorted or
    duplicated entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{path} not found: run stage 0 first (it writes the data dir)") from None
    except OSError as e:
        raise TableError(f"{path}: cannot read ({e.strerror})") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TableError(f"{path} line {line}: not valid UTF-8") from None
    if not content:
        raise TableError(f"{path}: empty table")
    if not content.endswith("\n"):
        raise TableError(f"{path}: last line has no newline")
    entries: List[Tuple[str, str]] = []
    prev: Optional[str] = None
    for n, line in enumerate(content[:-1].split("\n"), start=1):
        if "\r" in line:
            raise TableError(f"{path} line {n}: carriage return (write the table with Unix line ends)")
        key, sep, value = line.partition(" ")
        if not key or not sep or not value.strip() or line != line.strip() or value[0].isspace() or any(
            c.isspace() for c in key
        ):
            raise TableError(f"{path} line {n}: expected '<key> <value>', got {line!r}")
        if prev is not None:
            if key == prev:
                raise TableError(f"{path} line {n}: duplicate key {key!r}")
            if byte_key(key) < byte_key(prev):
                raise TableError(f"{path} line {n}: {key!r} comes after {prev!r}; tables must be sorted in byte "
                                 f"order (LC_ALL=C sort)")
        prev = key
        entries.append((key, value))
    return entries


def read_table_dict(path: PathLike) -> Dict[str, str]:
    return dict(read_table(path))


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m cosyvoice.utils.fileio clean_stale DIR...``: remove stale temp files of dead processes."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cosyvoice.utils.fileio",
                                description="Remove the *.tmp<pid> files that killed processes left behind.")
    sub = p.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("clean_stale", help="remove *.tmp<pid> entries of dead processes (recursively)")
    clean.add_argument("dirs", nargs="+", help="folders to clean (missing ones are skipped)")
    clean.add_argument("--no_recursive", action="store_true", help="only the entries directly in each folder")
    args = p.parse_args(argv)
    removed = clean_stale_temp(args.dirs, recursive=not args.no_recursive)
    if removed:
        shown = ", ".join(str(r) for r in removed[:5]) + (f" (+{len(removed) - 5} more)" if len(removed) > 5 else "")
        print(f"removed {len(removed)} stale temp file(s) of killed processes: {shown}")
    return 0


__all__ = ["PathLike", "TMP_SUFFIX", "TableError", "WriteError", "temp_name", "atomic_path", "atomic_write",
           "atomic_write_text", "atomic_write_lines", "atomic_torch_save", "require_writable_dir",
           "clean_stale_temp", "byte_key", "write_table", "read_table", "read_table_dict"]

if __name__ == "__main__":
    sys.exit(main())
