"""The golden data in tests/data is kept byte for byte as it was recorded (tests/data/SHA256SUMS)."""
from __future__ import annotations

import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _listed() -> dict[str, str]:
    sums = {}
    for line in (DATA / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name] = digest
    return sums


def test_every_golden_file_is_listed_and_unchanged():
    listed = _listed()
    present = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.parent != DATA}
    assert sorted(present) == sorted(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, f"tests/data/{name} was changed"
