"""No module of the package imports a higher layer (the layers of docs/ARCHITECTURE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cosyvoice"

# Lowest first. A module belongs to the first entry that is a prefix of its dotted name (longer prefixes are listed
# before the package that holds them).
LAYERS = [
    ("base", ["cosyvoice.utils.errors", "cosyvoice.utils.fileio", "cosyvoice.utils.cli", "cosyvoice.utils.common",
              "cosyvoice.utils.mask", "cosyvoice.utils.fingerprint", "cosyvoice.utils.lifeline",
              "cosyvoice.utils.frontend_utils", "cosyvoice.utils.pretrained", "cosyvoice.utils.scheduler",
              "cosyvoice.utils.checkpoint", "cosyvoice.utils.divergence", "cosyvoice.utils.config_keys",
              "cosyvoice.utils.config", "cosyvoice.utils", "cosyvoice"]),
    ("signal", ["cosyvoice.audio", "cosyvoice.tokenizer", "cosyvoice.text", "cosyvoice.utils.onnx"]),
    ("layers", ["cosyvoice.transformer"]),
    ("models", ["cosyvoice.llm", "cosyvoice.flow", "cosyvoice.hifigan"]),
    ("data", ["cosyvoice.dataset", "cosyvoice.utils.stage"]),
    ("inference", ["cosyvoice.cli"]),
    ("evaluation", ["cosyvoice.eval"]),
    ("training", ["cosyvoice.utils.train_utils", "cosyvoice.utils.executor", "cosyvoice.utils.trackers"]),
    ("entry", ["cosyvoice.bin", "cosyvoice.server"]),
]


def layer_of(module: str) -> int:
    best, level = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, level = p, i
    assert level is not None, f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
    return level


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), path


def imported(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("cosyvoice"):
                yield node.module
                for alias in node.names:  # "from cosyvoice.utils import checkpoint" imports a module
                    sub = f"{node.module}.{alias.name}"
                    if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file():
                        yield sub
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cosyvoice"):
                    yield alias.name


def test_no_module_imports_a_higher_layer():
    up = []
    for name, path in modules():
        mine = layer_of(name)
        for target in imported(path):
            theirs = layer_of(target)
            if theirs > mine:
                up.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert up == []
