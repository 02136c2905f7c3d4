"""The one config loader: every entry point reads a cosyvoice2.yaml through here.

It loads an official CosyVoice2 yaml unchanged and our own conf/cosyvoice2.yaml the same way:

* names the official yaml takes from Matcha-TTS or omegaconf are mapped onto this package's own code;
* the yaml's ``__set_seed*: !apply:...seed`` lines are dropped, so building a model never reseeds the
  caller's random number generators (seed explicitly where you mean to);
* the file is strict (cosyvoice.utils.config_keys): an unknown key at the top level, in ``train_conf`` or among a
  module's arguments is an error naming the key and the closest valid one, and so is an override for a key the yaml
  does not define.

Model dirs and experiment dirs keep the official names in the yaml they hold, so the official code loads them too;
only this loader maps them.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from cosyvoice.utils.cli import report
from cosyvoice.utils.errors import UserError

# Official dotted names that point outside the cosyvoice package, and where they live here.
NAME_MAP = {
    "matcha.utils.audio.mel_spectrogram": "cosyvoice.audio.features.mel_spectrogram",
    "matcha.hifigan.models.MultiPeriodDiscriminator": "cosyvoice.hifigan.discriminator.MultiPeriodDiscriminator",
    "omegaconf.DictConfig": "cosyvoice.utils.config.DictConfig",
}

_SEED_FUNCS = ("random.seed", "numpy.random.seed", "torch.manual_seed", "torch.cuda.manual_seed_all")
_SEED_LINE = re.compile(
    r"^[A-Za-z_][\w]*\s*:\s*!apply:(?:" + "|".join(re.escape(f) for f in _SEED_FUNCS) + r")\s.*$",
    re.MULTILINE,
)
_TOP_KEY = re.compile(r"^([A-Za-z_][\w]*)\s*:", re.MULTILINE)
_REF = re.compile(r"<([A-Za-z_][\w]*)(?:\[[^>]*\])?>")
_COMMENT = re.compile(r"#.*$", re.MULTILINE)
_TAG_NAME = re.compile(r"!(?:new|name|apply):([A-Za-z_][\w.]*)")


class ConfigError(UserError, ValueError):
    """A config file or an override that cannot be used; the message names the file and the fix."""


class DictConfig(dict):
    """Attribute-access dict standing in for ``omegaconf.DictConfig`` (the yaml builds ``cfm_params`` with it)."""

    def __init__(self, content: Optional[Mapping[str, Any]] = None, **kwargs: Any):
        super().__init__(content or {}, **kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _read(path: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path} (pass the path of a cosyvoice2.yaml)")
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def drop_seed_lines(text: str) -> str:
    """The yaml without its ``__set_seed*: !apply:...seed`` lines (everything else unchanged)."""
    return _SEED_LINE.sub("", text)


def translate_config_text(text: str) -> str:
    """Map foreign dotted names onto ours and drop the global-seed lines."""
    text = drop_seed_lines(text)
    for old, new in NAME_MAP.items():
        text = re.sub(r"(!(?:new|name|apply):)" + re.escape(old) + r"\b", r"\g<1>" + new, text)
    return text


def top_level_keys(text: str) -> list:
    return _TOP_KEY.findall(text)


def select_keys(text: str, keys) -> str:
    """Keep the top-level entries named in ``keys`` plus every entry that builds nothing (plain values).

    Lets an entry point build only what it uses (e.g. llm/flow/hift for inference, not the GAN discriminators).
    """
    wanted = set(keys)
    blocks, current = [], []
    for line in text.splitlines(keepends=True):
        if _TOP_KEY.match(line) and current:
            blocks.append(current)
            current = []
        current.append(line)
    if current:
        blocks.append(current)
    named = {}
    for block in blocks:
        m = _TOP_KEY.match(block[0])
        named[m.group(1) if m else None] = "".join(block)
    refs = {k: set(_REF.findall(_COMMENT.sub("", body))) for k, body in named.items()}
    keep = {None} | (wanted & set(named))
    todo = list(keep - {None})
    while todo:  # whatever a wanted entry refers to is built too
        for r in refs[todo.pop()]:
            if r in named and r not in keep:
                keep.add(r)
                todo.append(r)
    changed = True
    while changed:  # plain values are kept when everything they refer to is kept
        changed = False
        for k, body in named.items():
            if k not in keep and not _TAG_NAME.search(body) and refs[k] <= keep:
                keep.add(k)
                changed = True
    kept = [body for k, body in named.items() if k in keep]
    missing = wanted - set(top_level_keys(text))
    if missing:
        raise ConfigError(f"config has no key(s) {', '.join(sorted(missing))}")
    return "".join(kept)


def _check_overrides(path: str, tree: Any, overrides: Mapping[str, Any], prefix: str = "") -> None:
    """Every override (nested dicts: every path) names a key the yaml has."""
    from cosyvoice.utils.config_keys import suggest  # config_keys imports this module

    for key, value in overrides.items():
        if not isinstance(tree, Mapping) or key not in tree:
            known = list(tree) if isinstance(tree, Mapping) else []
            raise ConfigError(f"{path}: override '{prefix}{key}' is not a key of this config{suggest(key, known)}")
        if isinstance(value, Mapping) and isinstance(tree[key], Mapping):
            _check_overrides(path, tree[key], value, f"{prefix}{key}.")


def check_config_text(path: str, text: str, overrides: Optional[Mapping[str, Any]] = None) -> None:
    """The strict-config checks (cosyvoice.utils.config_keys) and the override check, on the yaml ``text`` of
    ``path`` as written (official names), without building anything. Raises ConfigError (one line)."""
    from cosyvoice.utils.config_keys import check_config_tree, parse_tree  # config_keys imports this module

    text = drop_seed_lines(text)
    tree = parse_tree(path, text)
    check_config_tree(path, tree, text)
    _check_overrides(path, tree, dict(overrides or {}))


def _check_names(path: str, text: str) -> None:
    for name in _TAG_NAME.findall(text):
        root = name.split(".")[0]
        if root in ("matcha", "whisper", "torchaudio", "omegaconf"):
            raise ConfigError(
                f"{path}: '{name}' is not provided by this toolkit; use a name under cosyvoice. "
                f"(known mappings: {', '.join(NAME_MAP)})"
            )


def _prepare(path: str, overrides: Optional[Mapping[str, Any]], keys) -> Tuple[str, Dict[str, Any]]:
    """Read, check strictly, drop the seed lines, map the names, keep ``keys``: (text, overrides for that text)."""
    raw = drop_seed_lines(_read(path))
    overrides = dict(overrides or {})
    check_config_text(path, raw, overrides)
    text = translate_config_text(raw)
    _check_names(path, text)
    if keys is not None:
        text = select_keys(text, keys)
        kept = set(top_level_keys(text))
        overrides = {k: v for k, v in overrides.items() if k in kept}
    return text, overrides


def resolve_config_text(path: str, overrides: Optional[Mapping[str, Any]] = None, keys=None) -> str:
    """The yaml with our names, no seed lines and the overrides applied, references resolved, nothing built."""
    from hyperpyyaml import resolve_references

    text, overrides = _prepare(path, overrides, keys)
    return resolve_references(io.StringIO(text), overrides=overrides).getvalue()


def load_config(path: str, overrides: Optional[Mapping[str, Any]] = None, keys=None) -> Dict[str, Any]:
    """Build the objects the yaml declares (official or ours) and return the dict of top-level keys.

    The whole file is checked first (an unknown key anywhere is a ConfigError naming it and the closest valid one);
    ``keys``: build only these entries (plus plain values); ``None`` builds everything.
    """
    from hyperpyyaml import load_hyperpyyaml

    text, overrides = _prepare(path, overrides, keys)
    try:
        return load_hyperpyyaml(text, overrides=overrides)
    except ImportError as e:
        raise ConfigError(f"{path}: cannot build this config: {e}") from e


def main(argv=None) -> int:
    """``python -m cosyvoice.utils.config <yaml>...``: check each file strictly, build nothing; exit status 2 and one
    line naming the file, the key and the closest valid one at the first problem."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths or paths[0] in ("-h", "--help"):
        print("usage: python -m cosyvoice.utils.config <cosyvoice2.yaml>...", file=sys.stderr)
        return 2
    for path in paths:
        try:
            raw = drop_seed_lines(_read(path))
            check_config_text(path, raw)
            _check_names(path, translate_config_text(raw))
        except ConfigError as e:
            return report("cosyvoice.utils.config", e)
    return 0


if __name__ == "__main__":  # run the imported module's main, so that its ConfigError is the one raised
    from cosyvoice.utils.config import main as _main

    raise SystemExit(_main())
