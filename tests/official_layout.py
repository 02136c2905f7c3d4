"""The official CosyVoice2/3 model-dir layout (official_layout.json, read off the official code at ace7c47) and the
checks that a dir this toolkit writes is an official one. Used by tests/bin/test_official_layout.py and the recipe
smoke test."""
from __future__ import annotations

import json
import re
from pathlib import Path

OFFICIAL = json.loads(Path(__file__).with_name("official_layout.json").read_text(encoding="utf-8"))
SEED_FUNCS = {"random.seed", "numpy.random.seed", "torch.manual_seed", "torch.cuda.manual_seed_all"}
_TAG = re.compile(r"!(?:new|name|apply):([A-Za-z_][\w.]*)")


def yaml_targets(path: Path) -> set:
    """Every !new:/!name:/!apply: target of the yaml at ``path``: from the parsed tree, checked against the text."""
    from ruamel.yaml import YAML

    text = path.read_text(encoding="utf-8")
    found = set()

    def walk(node):
        tag = getattr(getattr(node, "tag", None), "value", None)
        if isinstance(tag, str) and tag.startswith(("!new:", "!name:", "!apply:")):
            found.add(tag.split(":", 1)[1])
        for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
            walk(child)

    walk(YAML(typ="rt").load(text))
    assert found == set(_TAG.findall(re.sub(r"#.*", "", text)))  # the tree saw every tag of the text
    return found


def check_official_yaml(path: Path, version: str = "cosyvoice2") -> None:
    names = yaml_targets(path)
    assert names, f"{path} builds nothing"
    foreign = sorted(names - set(OFFICIAL[version]["names"]))
    assert not foreign, f"{path} names what the official {version}.yaml does not: {foreign}"


def official_entries(version: str) -> set:
    layout = OFFICIAL[version]["model_dir"]
    return (set(layout["loaded"]) | set(layout["loaded_if_present"]) | set(layout["not_read"])
            | {f for files in layout["accelerations"].values() for f in files})


def check_official_dir(model_dir: Path, want: set, version: str = "cosyvoice2") -> None:
    """``model_dir`` holds exactly ``want`` (hidden files included), all official entries, and an official yaml."""
    layout = OFFICIAL[version]["model_dir"]
    have = {p.name for p in model_dir.iterdir()}
    assert have == want
    assert have <= official_entries(version), sorted(have - official_entries(version))
    assert set(layout["loaded"]) <= have  # what the official class loads unconditionally
    check_official_yaml(model_dir / OFFICIAL[version]["yaml"], version)
    assert (model_dir / "CosyVoice-BlankEN" / "config.json").is_file()
    assert (model_dir / "CosyVoice-BlankEN" / "model.safetensors").is_file()  # Qwen2ForCausalLM.from_pretrained


LOADED = set(OFFICIAL["cosyvoice2"]["model_dir"]["loaded"])
