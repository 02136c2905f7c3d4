"""The documents a user reads: no placeholder or unfinished marker left in them, and every repository path they
name in backquotes as a file to open exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "BENCHMARKS.md", "docs/ARCHITECTURE.md"]


@pytest.mark.parametrize("name", DOCS)
def test_no_placeholder_is_left(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    markers = re.findall(r"\b[A-Z]+_PLACEHOLDER\b|\bPLACEHOLDER\b|\bTODO\b|\bFIXME\b|\bTBD\b|\bXXX\b", text)
    assert not markers, f"{name}: unfinished text {sorted(set(markers))}"


@pytest.mark.parametrize("name", DOCS)
def test_named_repository_files_exist(name):
    """`tests/...py`, `tools/...py`, `cosyvoice/...py`, `conf/...yaml`, `local/...` in backquotes name files of
    this repository (a `::test` suffix is allowed)."""
    text = (ROOT / name).read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:tests|tools|cosyvoice|conf|local|docs)/[\w./-]+\.(?:py|sh|yaml|json|md))(?:::\w+)?`",
                           text))
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert paths and not missing, f"{name} names files that do not exist: {missing}"
