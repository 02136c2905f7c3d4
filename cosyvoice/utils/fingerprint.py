"""Content fingerprints of a stage's inputs: what run.sh's stage markers compare.

    python -m cosyvoice.utils.fingerprint [--cache FILE] ITEM...    # one line per item: "<sha256> <item>"

Each ITEM stands for:

* ``path:P``: the content of the file P, or the names and contents of every file under the folder P (the recipe's own
  bookkeeping files, ``.*.done`` markers and ``.lock`` files, are left out); a missing P counts as "missing";
* ``list:P``: the content of the list file P and of every file it names (one path per line: a parquet
  ``data.list`` names its shards, so two datasets with the same shard paths get different fingerprints);
* ``src:``: the toolkit's own code (``*.py`` and ``*.sh`` under cosyvoice/, tools/ and local/), since a stage's
  result depends on the code that computed it;
* anything else: itself (an option value).

Two inputs get the same fingerprint only when every item is byte for byte the same. Reading multi-GB weights on every
run would be slow, so a file's digest is cached by (real path, size, modification time, inode) in ``--cache``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("cosyvoice", "tools", "local")
SOURCE_SUFFIXES = (".py", ".sh")
_CHUNK = 1 << 20


def _skipped(name: str) -> bool:
    """The recipe's own bookkeeping files inside a data folder, which say nothing about its content."""
    return (name.startswith(".") and (name.endswith(".done") or name.endswith(".lock"))) or name == "__pycache__"


class DigestCache:
    """File digests keyed by (real path, size, mtime_ns, inode), kept in a tab-separated file (appended to)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.table: Dict[str, str] = {}
        self.new: Dict[str, str] = {}
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, digest = line.rstrip("\n").rpartition("\t")
                    if key and len(digest) == 64:
                        self.table[key] = digest

    @staticmethod
    def key(path: str) -> Tuple[str, str]:
        real = os.path.realpath(path)
        st = os.stat(real)
        return real, f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def digest(self, path: str) -> str:
        _, key = self.key(path)
        found = self.table.get(key)
        if found is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
            found = self.table[key] = self.new[key] = h.hexdigest()
        return found

    def save(self) -> None:
        if not self.path or not self.new:
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a", encoding="utf-8", errors="replace") as f:  # one short line per write
                for key, digest in self.new.items():
                    f.write(f"{key}\t{digest}\n")
        except OSError:
            pass  # a cache that cannot be written only costs time
        self.new = {}


def _files_under(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        for name in sorted(filenames):
            if not _skipped(name):
                yield Path(dirpath) / name


def source_files(root: Path = ROOT) -> Iterator[Path]:
    for sub in SOURCE_DIRS:
        for path in _files_under(root / sub):
            if path.suffix in SOURCE_SUFFIXES:
                yield path


def _path_lines(p: str, cache: DigestCache) -> Iterator[str]:
    path = Path(p)
    if path.is_dir():
        for f in _files_under(path):
            yield f"{f.relative_to(path).as_posix()} {cache.digest(str(f))}"
    elif path.is_file():
        yield cache.digest(p)
    else:
        yield "missing"


def _list_lines(p: str, cache: DigestCache) -> Iterator[str]:
    yield from _path_lines(p, cache)
    if not os.path.isfile(p):
        return
    with open(p, encoding="utf-8") as f:
        for line in f:
            name = line.strip()
            if name:
                yield f"{name} {next(iter(_path_lines(name, cache)))}"


def item_lines(item: str, cache: DigestCache) -> Iterator[str]:
    yield item
    if item.startswith("path:"):
        yield from _path_lines(item[len("path:"):], cache)
    elif item.startswith("list:"):
        yield from _list_lines(item[len("list:"):], cache)
    elif item == "src:":
        for f in source_files():
            yield f"{f.relative_to(ROOT).as_posix()} {cache.digest(str(f))}"


def list_content_digest(list_file: str, cache_file: Optional[str] = None) -> str:
    """sha256 of the contents of the files a list names, in order: the same data gives the same digest wherever
    it lies (the paths themselves do not count)."""
    cache = DigestCache(cache_file)
    h = hashlib.sha256()
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            name = line.strip()
            if name:
                h.update(cache.digest(name).encode("ascii") + b"\n")
    cache.save()
    return h.hexdigest()


def item_digests(items: Iterable[str], cache_file: Optional[str] = None) -> list:
    """[(sha256, item)] for each item: which input changed can be told from these."""
    cache = DigestCache(cache_file)
    out = []
    for item in items:
        h = hashlib.sha256()
        for line in item_lines(item, cache):
            h.update(line.encode("utf-8", "surrogateescape") + b"\n")
        out.append((h.hexdigest(), item))
    cache.save()
    return out


def fingerprint(items: Iterable[str], cache_file: Optional[str] = None) -> str:
    """One digest of all the items."""
    h = hashlib.sha256()
    for digest, _ in item_digests(items, cache_file):
        h.update(digest.encode("ascii") + b"\n")
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=None, help="file of cached file digests (created when missing)")
    p.add_argument("items", nargs="*", help="path:P, list:P, src: or a plain value")
    args = p.parse_args(argv)
    for digest, item in item_digests(args.items, args.cache):
        print(f"{digest} {' '.join(item.split())}")  # one line per item, whatever the item holds
    return 0


if __name__ == "__main__":
    sys.exit(main())
