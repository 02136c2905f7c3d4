"""tools/setup_env.sh picks the torch requirement: reuse an importable torch, else install the tested pin.

Exercised with --dry_run in a copy of the files it reads, so no venv is built here.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from recipe_helpers import ROOT


@pytest.fixture
def project_copy(tmp_path):
    for rel in ("tools/setup_env.sh", "tools/parse_options.sh", "tools/log.sh", "requirements.txt", "pyproject.toml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def setup(project, *args):
    return subprocess.run(["bash", str(project / "tools" / "setup_env.sh"), "--dry_run", "true", *args],
                          capture_output=True, text=True, timeout=120)


def test_reuses_an_importable_torch(project_copy):
    torch = pytest.importorskip("torch")
    r = setup(project_copy, "--python", sys.executable)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(f": reuse torch {torch.__version__} from {sys.executable}")
    assert not (project_copy / ".venv").exists()


def test_installs_the_tested_torch_when_none_imports(project_copy, tmp_path):
    # A python that cannot see its site-packages (-S) cannot import torch either.
    nosite = tmp_path / "python-nosite"
    nosite.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    nosite.chmod(0o755)
    r = setup(project_copy, "--python", str(nosite))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(": install torch==2.13.0")
    r = setup(project_copy, "--python", str(nosite), "--torch", "torch==2.13.0+cu128")
    assert r.stdout.strip().endswith(": install torch==2.13.0+cu128")


def test_missing_or_old_python_is_a_clear_error(project_copy, tmp_path):
    r = setup(project_copy, "--python", "no-such-python3")
    assert r.returncode == 2
    assert r.stderr.strip() == ("setup_env: error: 'no-such-python3' not found: install Python >= 3.10 with pip and "
                                "venv, or pass --python")
    old = tmp_path / "python-old"
    old.write_text('#!/bin/sh\ncase "$1" in -V) echo "Python 3.8.10";; *) exit 1;; esac\n')
    old.chmod(0o755)
    r = setup(project_copy, "--python", str(old))
    assert r.returncode == 2
    assert r.stderr.strip() == "setup_env: error: Python 3.8.10 is too old: Python >= 3.10 is needed (pass --python)"
