"""Training checkpoints: atomic writes, a JSON sidecar per checkpoint, integrity checks, exact-resume state.

A checkpoint named ``NAME`` (``epoch_3_whole``, ``epoch_4_step_1200``, ...) in a model dir is:

* ``NAME.pt``: the model's ``state_dict`` only, with exactly the keys of the pretrained ``llm.pt``/``flow.pt``
  (so it loads strictly anywhere a pretrained file does, and ``average_model.py`` averages these); with LoRA
  (sidecar ``finetune: lora``) the adapter's tensors only (see cosyvoice/utils/lora.py), a few MB;
* the resume state: ``NAME.state.pt`` (optimizer, scheduler, grad scaler, position, RNG states of every rank), or
  for DeepSpeed the engine's checkpoint folder ``NAME.ds/`` (which holds the same things in its own format);
* ``NAME.ckpt.json``: the sidecar: epoch, step, data position, CV loss/acc, and the sha256 of every file above.

Every file is written to a temporary name (``.NAME.pt.tmp<pid>``) and renamed into place, and the sidecar is written
last: a crash at any moment leaves either a complete new checkpoint or none, and the previous ones intact. A write
that fails (disk full, read-only folder) removes what it had written and raises a one-line
:class:`cosyvoice.utils.errors.WriteError`; the temp files of killed processes are removed by
:func:`cosyvoice.utils.fileio.clean_stale_temp` (``python -m cosyvoice.utils.fileio clean_stale DIR...``, and the
trainer at start).
A run stopped by the divergence guard marks its sidecars (``diverged``: the reason) so that they are not averaged.
On resume the newest checkpoint whose files all match their recorded sha256 (and load) is used; a damaged newer one
is reported with a warning naming it and the reason, and skipped.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from cosyvoice.utils import fileio
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.fileio import (TMP_SUFFIX, atomic_torch_save, atomic_write_text, clean_stale_temp,  # noqa: F401
                                    temp_name)
from cosyvoice.utils.common import set_all_random_seed

logger = logging.getLogger(__name__)

SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".ckpt.json"


class CheckpointCorrupt(UserError, RuntimeError):
    """A checkpoint whose files are missing, truncated or altered."""


# atomic writes live in cosyvoice.utils.fileio; these names are used here and by the callers of this module
_tmp_name = temp_name


def sha256_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def hash_files(root: Path, paths: List[Path]) -> Dict[str, str]:
    """{path relative to root: sha256} of files and of every file under folders."""
    out = {}
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            out[q.relative_to(root).as_posix()] = sha256_file(q)
    return out


# ------------------------------------------------------------------------------------------------ RNG states
def get_rng_state() -> Dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) generator states, as torch-loadable plain data."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class rng_scope:
    """Run a block on its own seeded random streams and restore the caller's afterwards.

    CV and the sample rendering use it, so their numbers are comparable from epoch to epoch and the training
    streams continue exactly as if they had not run.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.saved = get_rng_state()
        set_all_random_seed(self.seed)
        return self

    def __exit__(self, *exc):
        set_rng_state(self.saved)
        return False


# ------------------------------------------------------------------------------------------------ sidecars
@dataclass
class CheckpointInfo:
    """What a sidecar records. ``epoch``: the epoch the checkpoint was taken in; ``step``: optimizer updates done;
    ``resume_epoch``/``resume_batch``: where training continues (epoch, batches of it already used)."""

    name: str
    epoch: int
    step: int
    resume_epoch: int
    resume_batch: int
    world_size: int
    train_engine: str
    cv: Dict[str, float] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)
    state: Optional[str] = None        # the resume state (a file or DeepSpeed folder), None once pruned
    saved_at: str = ""
    diverged: Optional[str] = None     # set when the run was stopped by the divergence guard: why
    finetune: str = "full"             # full: NAME.pt holds every weight; lora: the LoRA adapter only
    version: int = SIDECAR_VERSION

    @property
    def model_file(self) -> str:
        return f"{self.name}.pt"

    @property
    def cv_loss(self) -> Optional[float]:
        return self.cv.get("loss")

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path) -> "CheckpointInfo":
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != SIDECAR_VERSION:
            raise CheckpointCorrupt(f"{path}: sidecar version {data.get('version')} is not {SIDECAR_VERSION}")
        return cls(**data)


def sidecar_path(model_dir, name: str) -> Path:
    return Path(model_dir) / f"{name}{SIDECAR_SUFFIX}"


def list_checkpoints(model_dir) -> List[CheckpointInfo]:
    """Every checkpoint of ``model_dir`` with a readable sidecar, oldest first (by step, then epoch, then time).

    Unreadable sidecars are reported with a warning and left out.
    """
    out = []
    for p in sorted(Path(model_dir).glob(f"*{SIDECAR_SUFFIX}")):
        if p.name.startswith("."):
            continue
        try:
            info = CheckpointInfo.read(p)
        except (OSError, ValueError, TypeError, CheckpointCorrupt) as e:
            logger.warning("ignoring %s: not a readable checkpoint sidecar (%s)", p, e)
            continue
        out.append(info)
    return sorted(out, key=lambda c: (c.step, c.resume_epoch, c.resume_batch, c.saved_at))


def verify_checkpoint(model_dir, info: CheckpointInfo, need_state: bool = True) -> None:
    """Raise :class:`CheckpointCorrupt` unless every recorded file exists with its recorded sha256."""
    root = Path(model_dir)
    if need_state and info.state is None:
        raise CheckpointCorrupt(f"{info.name} holds weights only (its resume state was pruned)")
    wanted = {k: v for k, v in info.files.items()
              if need_state or not (info.state and (k == info.state or k.startswith(info.state + "/")))}
    if info.model_file not in wanted:
        raise CheckpointCorrupt(f"{info.name}: the sidecar lists no {info.model_file}")
    for rel, digest in sorted(wanted.items()):
        path = root / rel
        if not path.is_file():
            raise CheckpointCorrupt(f"{path} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise CheckpointCorrupt(f"{path} is damaged (sha256 {actual[:12]}... but {digest[:12]}... was written)")


def save_checkpoint(model_dir, info: CheckpointInfo, model_state: Optional[Dict[str, torch.Tensor]],
                    train_state: Optional[Dict[str, Any]]) -> Path:
    """Write ``NAME.pt`` (+ ``NAME.state.pt`` for torch; the DeepSpeed folder is written by the engine before)
    and then the sidecar. Called on rank 0 only. Returns the sidecar path."""
    root = Path(model_dir)
    paths, written = [], []
    try:
        if model_state is not None:
            atomic_torch_save(model_state, root / info.model_file)
            written.append(root / info.model_file)
        paths.append(root / info.model_file)
        if train_state is not None:
            info.state = f"{info.name}.state.pt"
            atomic_torch_save(train_state, root / info.state)
            written.append(root / info.state)
        if info.state is not None:
            paths.append(root / info.state)
        info.files = hash_files(root, paths)
        info.saved_at = datetime.datetime.now().isoformat(timespec="seconds")
        side = sidecar_path(root, info.name)
        atomic_write_text(side, info.to_json())
    except BaseException:
        for p in written:  # without its sidecar the checkpoint does not exist: leave no orphan weights behind
            p.unlink(missing_ok=True)
        raise
    return side


def load_train_state(model_dir, info: CheckpointInfo) -> Dict[str, Any]:
    path = Path(model_dir) / info.state
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch says, the file is unusable
        raise CheckpointCorrupt(f"{path} cannot be loaded: {type(e).__name__}: {e}") from e


def find_resume_checkpoint(model_dir) -> Optional[CheckpointInfo]:
    """The newest checkpoint that passes :func:`verify_checkpoint` (with its resume state); ``None`` when the dir
    holds no checkpoint at all. Damaged newer ones are skipped with a warning; if every one is damaged, raise."""
    candidates = [c for c in list_checkpoints(model_dir) if c.state is not None]
    problems = []
    for info in reversed(candidates):
        try:
            verify_checkpoint(model_dir, info)
        except CheckpointCorrupt as e:
            logger.warning("checkpoint %s is unusable: %s; trying the one before it", info.name, e)
            problems.append(f"{info.name}: {e}")
            continue
        if problems:
            logger.warning("resuming from %s instead of the newer damaged checkpoint(s)", info.name)
        return info
    if problems:
        raise CheckpointCorrupt(f"no usable checkpoint in {model_dir}: " + "; ".join(problems)
                                + " (start afresh without --resume, or into a new model dir)")
    return None


def prune_train_states(model_dir, keep: int) -> List[str]:
    """Delete the resume state of all but the newest ``keep`` resumable checkpoints (weights and sidecars stay,
    so they can still be averaged). Returns the names pruned. ``keep <= 0`` keeps everything."""
    if keep <= 0:
        return []
    root = Path(model_dir)
    resumable = [c for c in list_checkpoints(root) if c.state is not None]
    pruned = []
    for info in resumable[:-keep]:
        state = root / info.state
        info.files = {k: v for k, v in info.files.items()
                      if not (k == info.state or k.startswith(info.state + "/"))}
        info.state = None
        atomic_write_text(sidecar_path(root, info.name), info.to_json())
        if state.is_dir():
            shutil.rmtree(state, ignore_errors=True)
        elif state.exists():
            state.unlink()
        pruned.append(info.name)
    return pruned


# ------------------------------------------------------------------------------------------------ stale temp files
def main(argv: Optional[List[str]] = None) -> int:
    """``python -m cosyvoice.utils.checkpoint clean_stale DIR...`` (the same as ``python -m cosyvoice.utils.fileio``)."""
    return fileio.main(argv)


if __name__ == "__main__":
    sys.exit(main())
