"""Every command line exits the same way on a user error: `<prog>: error: <message>` on one line, exit status 2.
The Python entry points go through cosyvoice.utils.cli.entry_point; a few are run with a bad argument."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("tools/*.py"), *ROOT.glob("local/*.py"), *ROOT.glob("cosyvoice/bin/*.py")])


# launch.py wraps torchrun: it passes on the one line of train.py's entry_point and its exit status 2
FORWARDERS = {"cosyvoice/bin/launch.py"}


def _wrapped_by_entry_point(path: Path):
    """Whether ``main`` is decorated with entry_point(...) or wrapped as ``cli = entry_point(...)(main)``; None
    when the file has no main."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    if not mains:
        return None
    if any(ast.unparse(d).startswith("entry_point(") for d in mains[0].decorator_list):
        return True
    return any(isinstance(n, ast.Assign) and ast.unparse(n.value).startswith("entry_point(")
               and ast.unparse(n.value).endswith("(main)") for n in tree.body)


COMMANDS = [p for p in SCRIPTS if str(p.relative_to(ROOT)) not in FORWARDERS and _wrapped_by_entry_point(p) is not None]


def test_the_commands_are_found():
    names = {p.name for p in COMMANDS}
    assert {"benchmark.py", "train.py", "prepare_data.py", "merge_data_dirs.py", "make_characters.py"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_main_goes_through_entry_point(path):
    assert _wrapped_by_entry_point(path), \
        f"{path.relative_to(ROOT)}: main does not go through cosyvoice.utils.cli.entry_point"


@pytest.mark.parametrize("argv, prog, message", [
    (["tools/compare_experiments.py", "/nonexistent/exp"], "compare_experiments.py", "metrics.json not found"),
    (["tools/benchmark.py", "--stages", "nothing"], "benchmark.py", "unknown --stages nothing"),
    (["tools/benchmark_server.py", "--modes", "x"], "benchmark_server.py", "--modes takes stream and/or whole"),
    (["local/merge_data_dirs.py", "--out_dir", "/tmp/unused", "/nonexistent/part"], "merge_data_dirs.py",
     "/nonexistent/part/wav.scp not found"),
])
def test_bad_input_is_one_line_and_exit_2(argv, prog, message):
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and message in lines[0], r.stderr
