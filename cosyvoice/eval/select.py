"""Pick checkpoints by CV loss or by what the voice sounds like (speaker similarity, ASR error rate).

Per-epoch records of a training model dir (``train.py --model_dir``) come from two files per epoch:

* ``<model_dir>/<name>.ckpt.json``: the checkpoint sidecar written by training (epoch, step, CV loss/acc);
* ``<model_dir>/eval/epoch_<N>.json``: the per-epoch evaluation (``--eval_every_epoch true``) written by
  :func:`write_epoch_eval`, attached to the checkpoint it names (``epoch_<N>_whole``).

A record is a dict: ``name``, ``epoch``, ``step``, ``cv_loss``, ``cv_acc`` and, when evaluated, ``sim``,
``sim_to_real``, ``error_rate``, ``cer``, ``wer`` (None where absent). Criteria (:data:`CRITERIA`):

* ``cv_loss``: lowest CV loss;
* ``sim``: highest mean CAM++ cosine of the synthesized subset to the speaker's centroid;
* ``cer``: lowest ASR error rate of the subset: characters for Chinese texts, words for English texts, pooled
  (total errors / total reference units); it needs an ASR model (``--asr_model_dir``) during training.

Ties go to the later checkpoint (more training).
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional
from cosyvoice.utils.checkpoint import atomic_write_text, list_checkpoints

logger = logging.getLogger(__name__)

# criterion -> (record key, higher is better)
CRITERIA = {"cv_loss": ("cv_loss", False), "sim": ("sim", True), "cer": ("error_rate", False)}
EVAL_DIR = "eval"
EVAL_KEYS = ("sim", "sim_to_real", "error_rate", "cer", "wer")
_EVAL_FILE = re.compile(r"^epoch_(\d+)\.json$")


def epoch_eval_path(model_dir, epoch: int) -> Path:
    return Path(model_dir) / EVAL_DIR / f"epoch_{int(epoch)}.json"


def write_epoch_eval(model_dir, epoch: int, metrics: Dict[str, Any], checkpoint: Optional[str] = None) -> Path:
    """Write ``<model_dir>/eval/epoch_<epoch>.json`` (atomically): ``metrics`` plus epoch and checkpoint name."""

    path = epoch_eval_path(model_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**metrics, "epoch": int(epoch), "checkpoint": checkpoint or f"epoch_{int(epoch)}_whole"}
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def read_epoch_evals(model_dir) -> Dict[str, Dict[str, Any]]:
    """{checkpoint name: evaluation record} from ``<model_dir>/eval/epoch_*.json`` (unreadable ones warned about)."""
    out: Dict[str, Dict[str, Any]] = {}
    folder = Path(model_dir) / EVAL_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        m = _EVAL_FILE.match(path.name)
        if not m:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            logger.warning("ignoring %s: %s", path, e)
            continue
        out[str(data.get("checkpoint") or f"epoch_{m.group(1)}_whole")] = data
    return out


def load_epoch_records(model_dir) -> List[Dict[str, Any]]:
    """One record per distinct checkpoint step of ``model_dir`` (an epoch's ``_whole`` checkpoint preferred over a
    step checkpoint of the same step), oldest first, with CV numbers and evaluation metrics merged in."""

    by_step: Dict[int, Any] = {}
    for info in list_checkpoints(model_dir):
        kept = by_step.get(info.step)
        if kept is None or (info.name.endswith("_whole") and not kept.name.endswith("_whole")):
            by_step[info.step] = info
    evals = read_epoch_evals(model_dir)
    records = []
    for step in sorted(by_step):
        info = by_step[step]
        record = {"name": info.name, "epoch": info.epoch, "step": info.step,
                  "cv_loss": info.cv.get("loss"), "cv_acc": info.cv.get("acc")}
        found = evals.get(info.name, {})
        record.update({k: found.get(k) for k in EVAL_KEYS})
        records.append(record)
    return records


def _usable(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def select_best(records: List[Dict[str, Any]], select_by: str = "cv_loss", num: int = 1) -> List[Dict[str, Any]]:
    """The ``num`` best records by ``select_by`` (cv_loss | sim | cer), best first; ties: the later step first.

    Records without the metric are left out; fewer than ``num`` with it gives them all (with a warning), none is an
    error saying how to get them.
    """
    if select_by not in CRITERIA:
        raise ValueError(f"--select_by must be one of {', '.join(CRITERIA)}, got {select_by!r}")
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    key, higher = CRITERIA[select_by]
    pool = [r for r in records if _usable(r.get(key))]
    if not pool:
        hint = {"cv_loss": "train with a CV set",
                "sim": "train with --eval_every_epoch true",
                "cer": "train with --eval_every_epoch true and an --asr_model_dir"}[select_by]
        raise ValueError(f"--select_by {select_by}: none of {len(records)} checkpoint(s) has '{key}' ({hint})")
    if len(pool) < num:
        logger.warning("--select_by %s: only %d of %d checkpoint(s) have '%s', fewer than --num %d: using those",
                       select_by, len(pool), len(records), key, num)
    left_out = [r["name"] for r in records if not _usable(r.get(key))]
    if left_out:
        logger.info("--select_by %s: no %s for %s; not considered", select_by, key, ", ".join(left_out))
    sign = -1.0 if higher else 1.0
    pool.sort(key=lambda r: (sign * float(r[key]), -int(r.get("step", 0)), -int(r.get("epoch", 0))))
    return pool[:num]
