"""Characters: one fine-tuned voice as a small folder that any number of which share one base model at inference.

A character folder ``characters/<spk>/`` (written by ``tools/make_characters.py``, run.sh stage 6 of a LoRA run)::

    character.json     the manifest (below)
    llm.adapter.pt     the LoRA adapter of the llm (cosyvoice/utils/lora.py's adapter file); absent: the base llm
    flow.pt            the fine-tuned flow (all its weights), or flow.adapter.pt (a LoRA adapter); absent: base flow
    spk2info.pt        {spk: {'embedding': (1, 192)[, 'speaker_tag': '<spk><|endofprompt|>']}}, the official format

``character.json``: ``format`` / ``version``; ``spk_id``; ``base_model`` (the dir it was trained from and the sha256
of its llm.pt and flow.pt: an adapter only fits those exact weights); ``llm`` and ``flow``: ``finetune`` (lora, full
or base), ``file`` and its ``sha256``, and for lora the adapter's settings (``lora``: r, alpha, dropout,
target_modules); ``spk2info`` (file, sha256); ``speaker_tag`` (the prompt of a multi-speaker SFT model, or null);
``training`` (the experiment, the averaged checkpoints); ``metrics`` (stage 8's figures for this speaker, or null).

``CosyVoice2(model_dir, characters=[...])`` (or ``add_character``) loads each character once onto the one base
model: adapters stay unmerged and are switched per call (``inference_sft(text, spk_id)`` picks the character by
its speaker id), flows are held per character. ``cosyvoice.bin.export --merge true`` folds a character's adapter
into a plain official-format ``llm.pt`` instead.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from cosyvoice.utils.checkpoint import atomic_torch_save, atomic_write_text, sha256_file
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.lora import LoraSettings

CHARACTER_FILE = "character.json"
FORMAT = "cosyvoice-character"
VERSION = 1
LLM_ADAPTER_FILE = "llm.adapter.pt"
FLOW_FILE = "flow.pt"
FLOW_ADAPTER_FILE = "flow.adapter.pt"
SPK2INFO_FILE = "spk2info.pt"
KINDS = ("lora", "full", "base")


class CharacterError(UserError, ValueError):
    """A character folder that cannot be used; the message names the file and the fix."""


@dataclass
class Character:
    """A character folder, read and checked (:func:`read_character`)."""

    path: str
    manifest: Dict[str, Any]

    @property
    def spk_id(self) -> str:
        return self.manifest["spk_id"]

    def kind(self, part: str) -> str:
        """How the ``llm`` or ``flow`` was fine-tuned: lora, full or base (not at all)."""
        return self.manifest[part]["finetune"]

    def file(self, part: str) -> str:
        return os.path.join(self.path, self.manifest[part]["file"])

    def sha256(self, part: str) -> str:
        return self.manifest[part]["sha256"]

    def lora_settings(self, part: str):

        return LoraSettings.from_dict(self.manifest[part]["lora"], part,
                                      f"{os.path.join(self.path, CHARACTER_FILE)}: {part}.lora")

    @property
    def speaker_tag(self) -> Optional[str]:
        return self.manifest.get("speaker_tag")

    def spk2info_entry(self) -> Dict[str, Any]:
        import torch

        path = os.path.join(self.path, self.manifest["spk2info"]["file"])
        table = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(table, dict) or self.spk_id not in table:
            raise CharacterError(f"{path} has no entry for speaker '{self.spk_id}': rewrite the character "
                                 f"(run.sh stage 6, tools/make_characters.py)")
        return table[self.spk_id]


def _manifest_path(path: str) -> str:
    return os.path.join(path, CHARACTER_FILE)


def is_character(path: str) -> bool:
    return os.path.isfile(_manifest_path(path))


def find_characters(paths: Iterable[str]) -> List[str]:
    """Character folders from ``paths``: each is a character folder (holding character.json) or a folder of them
    (e.g. ``exp/<tag>/characters``), in sorted order there."""
    found: List[str] = []
    for path in paths:
        path = os.fspath(path)
        if is_character(path):
            found.append(path)
        elif os.path.isdir(path):
            inside = sorted(os.path.join(path, d) for d in os.listdir(path) if is_character(os.path.join(path, d)))
            if not inside:
                raise CharacterError(f"{path} is neither a character folder (with {CHARACTER_FILE}) nor a folder of "
                                     f"them: give exp/<tag>/characters/<spk> (run.sh stage 6 of a --finetune lora "
                                     f"run writes them)")
            found.extend(inside)
        else:
            raise CharacterError(f"character folder {path} not found (run.sh stage 6 of a --finetune lora run writes "
                                 f"exp/<tag>/characters/<spk>)")
    return found


def read_character(path: str, verify: bool = True) -> Character:
    """Read and check ``path``/character.json; with ``verify`` every file it lists must have its sha256."""

    path = os.fspath(path)
    manifest_file = _manifest_path(path)
    if not os.path.isfile(manifest_file):
        raise CharacterError(f"{manifest_file} not found: {path} is not a character folder (run.sh stage 6 of a "
                             f"--finetune lora run writes exp/<tag>/characters/<spk>)")
    try:
        with open(manifest_file, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise CharacterError(f"cannot read {manifest_file}: {e} (rewrite it: run.sh stage 6)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CharacterError(f"{manifest_file} is not a character manifest (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CharacterError(f"{manifest_file}: version {manifest.get('version')} is not {VERSION}: rewrite it with "
                             f"this toolkit (run.sh stage 6)")
    for key in ("spk_id", "base_model", "llm", "flow", "spk2info"):
        if key not in manifest:
            raise CharacterError(f"{manifest_file} lacks '{key}' (rewrite it: run.sh stage 6)")
    character = Character(path, manifest)
    for part in ("llm", "flow"):
        kind = manifest[part].get("finetune")
        if kind not in KINDS or (part == "llm" and kind == "full"):
            raise CharacterError(f"{manifest_file}: {part}.finetune {kind!r} is not one of "
                                 f"{'lora, base' if part == 'llm' else 'lora, full, base'}")
        if kind == "lora":
            character.lora_settings(part)
    parts = [p for p in ("llm", "flow") if manifest[p]["finetune"] != "base"] + ["spk2info"]
    for part in parts:
        file = os.path.join(path, manifest[part]["file"])
        if not os.path.isfile(file):
            raise CharacterError(f"{file} is missing (listed in {manifest_file}): copy the whole character folder")
        if verify and sha256_file(file) != manifest[part]["sha256"]:
            raise CharacterError(f"{file} is damaged or was replaced (its sha256 differs from {manifest_file}): "
                                 f"copy the character folder again, or rewrite it (run.sh stage 6)")
    return character


def _place(src: str, dst: str) -> None:
    """``dst`` as a hard link to ``src`` (same file system), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_character(out_dir: str, spk_id: str, base_model_dir: str, spk2info_entry: Dict[str, Any],
                    llm_adapter: Optional[str] = None, llm_lora: Optional[Dict[str, Any]] = None,
                    flow_file: Optional[str] = None, flow_kind: str = "base",
                    flow_lora: Optional[Dict[str, Any]] = None, training: Optional[Dict[str, Any]] = None) -> str:
    """Write the character folder ``out_dir`` (aside, then swapped in: a failure leaves the previous one).

    ``llm_adapter`` (+ ``llm_lora`` settings): the averaged LoRA adapter of the llm (None: the base llm);
    ``flow_file``: the fine-tuned flow.pt (``flow_kind`` full) or flow adapter (lora, with ``flow_lora``), None:
    the base flow. Files are hard-linked where possible (they are written once and never modified). Returns
    ``out_dir``."""

    if (llm_adapter is None) != (llm_lora is None):
        raise CharacterError("write_character: give the llm adapter together with its LoRA settings")
    if (flow_file is None) != (flow_kind == "base") or (flow_kind == "lora") != (flow_lora is not None):
        raise CharacterError("write_character: flow_file, flow_kind and flow_lora do not agree")
    base = {"dir": os.path.abspath(base_model_dir)}
    for name in ("llm.pt", "flow.pt"):
        base[name] = sha256_file(os.path.join(base_model_dir, name))
    new = os.path.join(os.path.dirname(os.path.abspath(out_dir)), f".{os.path.basename(out_dir)}.new")
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    manifest: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "spk_id": spk_id, "base_model": base,
                                "speaker_tag": spk2info_entry.get("speaker_tag")}
    if llm_adapter is not None:
        _place(llm_adapter, os.path.join(new, LLM_ADAPTER_FILE))
        manifest["llm"] = {"finetune": "lora", "file": LLM_ADAPTER_FILE, "sha256": sha256_file(llm_adapter),
                           "lora": dict(llm_lora)}
    else:
        manifest["llm"] = {"finetune": "base"}
    if flow_file is not None:
        name = FLOW_ADAPTER_FILE if flow_kind == "lora" else FLOW_FILE
        _place(flow_file, os.path.join(new, name))
        manifest["flow"] = {"finetune": flow_kind, "file": name, "sha256": sha256_file(flow_file)}
        if flow_lora is not None:
            manifest["flow"]["lora"] = dict(flow_lora)
    else:
        manifest["flow"] = {"finetune": "base"}
    entry = {k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in spk2info_entry.items()}
    atomic_torch_save({spk_id: entry}, os.path.join(new, SPK2INFO_FILE))
    manifest["spk2info"] = {"file": SPK2INFO_FILE, "sha256": sha256_file(os.path.join(new, SPK2INFO_FILE))}
    manifest["training"] = training or {}
    manifest["metrics"] = None
    manifest["created"] = datetime.datetime.now().isoformat(timespec="seconds")
    atomic_write_text(_manifest_path(new), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    old = os.path.join(os.path.dirname(os.path.abspath(out_dir)), f".{os.path.basename(out_dir)}.old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(out_dir):
        os.rename(out_dir, old)
    os.rename(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def update_metrics(path: str, metrics: Dict[str, Any]) -> None:
    """Record stage 8's figures for the character in its manifest (rewritten atomically)."""

    character = read_character(path, verify=False)
    manifest = dict(character.manifest, metrics=metrics)
    atomic_write_text(_manifest_path(path), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
