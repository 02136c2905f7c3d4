"""Average the weights of several training checkpoints into one ``llm.pt`` / ``flow.pt``.

    python -m cosyvoice.bin.average_model --src_path exp/sft/llm --dst_model exp/sft/model/llm.pt \\
        --num 5 --val_best

``--val_best``: the ``--num`` checkpoints with the lowest CV loss (from their ``.ckpt.json`` sidecars); without it
the ``--num`` newest (all of them, with a warning, when there are fewer). Checkpoints of the same step (a step checkpoint at the end of an epoch and the epoch's own)
count once. Every file is checked against its recorded sha256 first. The average is taken in float64 and stored
in each tensor's dtype; the result has exactly the keys of the trained module, checked by loading it strictly into
the model built from ``<src_path>/config.yaml``, and is written atomically. What was averaged is recorded in
``<src_path>/average.json`` (beside the checkpoints, so the model dir holds only the official files). The
checkpoints of a run that the divergence guard stopped are refused. From the shell, a bad input (a diverged run, a
damaged checkpoint, a full disk) is one line on stderr and exit status 2.

A LoRA run (``train.py --finetune lora``) averages its adapters the same way (each adapter tensor, A and B alike,
like any other weight) and checks the result by loading it strictly into the adapter of the module built from
config.yaml; ``--merged_model`` also writes the run's base weights (its ``--checkpoint``) with the averaged
adapter folded in: a plain ``llm.pt`` / ``flow.pt`` with exactly the pretrained keys.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from cosyvoice.eval.select import load_epoch_records, select_best
from cosyvoice.utils import checkpoint as ckpt, lora
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import load_checkpoint_strict
from cosyvoice.utils.config import load_config
from cosyvoice.utils.divergence import DIVERGED_FILE, read_diverged
from cosyvoice.utils.errors import UserError

logger = logging.getLogger("cosyvoice.bin.average_model")
AVERAGE_RECORD = "average.json"  # written into --src_path: which checkpoints made --dst_model


def get_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Average training checkpoints into one model file.")
    p.add_argument("--src_path", required=True, help="a training model dir (train.py --model_dir)")
    p.add_argument("--dst_model", required=True, help="output file, e.g. <model dir>/llm.pt")
    p.add_argument("--num", type=int, default=5, help="how many checkpoints to average (at most)")
    p.add_argument("--val_best", action="store_true", help="the best --num by CV loss (= --select_by cv_loss)")
    p.add_argument("--select_by", choices=["newest", "cv_loss", "sim", "cer"], default=None,
                   help="newest; cv_loss: lowest CV loss; sim: highest per-epoch speaker similarity; cer: lowest "
                        "per-epoch ASR error rate (sim and cer need training with --eval_every_epoch true) "
                        "[cv_loss with --val_best, else newest]")
    p.add_argument("--model", choices=["llm", "flow"], help="module to check the result against [from train.cmd]")
    p.add_argument("--merged_model", default="",
                   help="LoRA runs: also write the base weights with the averaged adapter merged in, e.g. "
                        "<model dir>/flow.pt (the base is the run's --checkpoint, from train_data.json)")
    return p.parse_args(argv)


class AverageError(UserError, ValueError):
    """Checkpoints that must not or cannot be averaged; the message names them and the fix."""


def refuse_diverged(src: Path) -> None:
    """Raise AverageError when the run of ``src`` was stopped by the divergence guard."""
    record = read_diverged(src)
    marked = [c.name for c in ckpt.list_checkpoints(src) if c.diverged] if src.is_dir() else []
    if record is None and not marked:
        return
    where = f"at epoch {record.get('epoch')} step {record.get('step')}" if record else f"({', '.join(marked)} marked)"
    cause = (record or {}).get("cause") or f"see {src / DIVERGED_FILE} and train.log"
    raise AverageError(f"{src}: training diverged {where}, so its checkpoints are not averaged (likely cause: "
                       f"{cause}); retrain into a fresh model dir (run.sh --stage 5 --force true) after the fix")


def select_checkpoints(src: Path, num: int, val_best: bool,
                       select_by: Optional[str] = None) -> List[ckpt.CheckpointInfo]:
    """The checkpoints to average, best (or newest) first."""
    if num < 1:
        raise AverageError(f"--num must be >= 1, got {num}")
    select_by = select_by or ("cv_loss" if val_best else "newest")
    by_step: Dict[int, ckpt.CheckpointInfo] = {}  # a step saved twice (epoch end + every N steps) counts once
    for info in ckpt.list_checkpoints(src):
        kept = by_step.get(info.step)
        if kept is None or (info.name.endswith("_whole") and not kept.name.endswith("_whole")):
            by_step[info.step] = info
    pool = {c.name: c for c in by_step.values()}
    if not pool:
        raise FileNotFoundError(f"no checkpoint (*.ckpt.json) in {src}: run training (train.py) first")
    if select_by == "newest":
        if len(pool) < num:
            logger.warning("%s has %d distinct checkpoint(s), fewer than --num %d: averaging all of them",
                           src, len(pool), num)
        return sorted(pool.values(), key=lambda c: -c.step)[:num]

    records = [r for r in load_epoch_records(src) if r["name"] in pool]
    return [pool[r["name"]] for r in select_best(records, select_by, num)]


def average_states(src: Path, chosen: List[ckpt.CheckpointInfo]) -> Dict[str, torch.Tensor]:
    total: Dict[str, torch.Tensor] = {}
    first: Dict[str, torch.Tensor] = {}
    for info in chosen:
        try:
            ckpt.verify_checkpoint(src, info, need_state=False)
        except ckpt.CheckpointCorrupt as e:
            raise ckpt.CheckpointCorrupt(
                f"{e}: checkpoint {info.name} cannot be averaged; leave it out by deleting "
                f"{ckpt.sidecar_path(src, info.name)} (or rerun training, stage 5, to write it again)") from e
        state = torch.load(src / info.model_file, map_location="cpu", weights_only=True)
        if first and state.keys() != first.keys():
            raise AverageError(f"{src / info.model_file} has other keys than {src / chosen[0].model_file}")
        for k, v in state.items():
            if k not in first:
                first[k] = v
            elif not v.is_floating_point() and not torch.equal(v, first[k]):
                raise AverageError(f"{src / info.model_file}: non-float tensor {k} differs between checkpoints")
            if v.is_floating_point():
                total[k] = total.get(k, 0) + v.double()
    out: Dict[str, torch.Tensor] = {}
    shared: Dict[tuple, torch.Tensor] = {}
    for k, v in first.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        # keys that are one tensor in the checkpoints (the tied Qwen2 embed_tokens / lm_head) stay one tensor, so
        # the average is saved once, as the checkpoints and the official llm.pt are
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if alias not in shared:
            shared[alias] = (total[k] / len(chosen)).to(v.dtype)
        out[k] = shared[alias]
    return out


def finetune_of(chosen: List[ckpt.CheckpointInfo]) -> str:
    """'full' or 'lora': what the chosen checkpoints hold (they must agree)."""
    kinds = sorted({c.finetune for c in chosen})
    if len(kinds) != 1:
        names = ", ".join(f"{c.name} ({c.finetune})" for c in chosen)
        raise AverageError(f"the checkpoints to average mix full weights and LoRA adapters ({names}): average one run")
    return kinds[0]


def check_against_model(src: Path, model: str, state: Dict[str, torch.Tensor],
                        finetune: str = "full") -> torch.nn.Module:
    """Load ``state`` strictly into the module built from the experiment's config.yaml (with LoRA: into its
    adapter). Returns the module."""

    module = load_config(str(src / "config.yaml"), keys=[model])[model]
    if finetune == "lora":
        lora.add_adapter(module, lora.training_dir_settings(src, model), trainable=False)
        lora.load_adapter_state_dict(module, state)
    else:
        load_checkpoint_strict(module, state)
    return module


def write_merged(src: Path, model: str, module: torch.nn.Module, dst: Path) -> None:
    """``dst``: the run's base weights (its --checkpoint) with the adapter on ``module`` merged in."""

    record = src / "train_data.json"
    base = json.loads(record.read_text(encoding="utf-8")).get("checkpoint") if record.is_file() else None
    if not base:
        raise AverageError(f"--merged_model: {record} does not name the run's base weights (its --checkpoint)")
    plain = load_config(str(src / "config.yaml"), keys=[model])[model]
    load_checkpoint_strict(plain, base)
    merged = lora.merge_adapter(plain, lora.adapter_state_dict(module), lora.training_dir_settings(src, model))
    dst.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_torch_save(merged, dst)
    logger.info("wrote %s: %s with the averaged adapter merged in", dst, base)


def guess_model(src: Path) -> str:
    cmd = src / "train.cmd"
    text = cmd.read_text(encoding="utf-8") if cmd.is_file() else ""
    for name in ("llm", "flow"):
        if f"--model {name}" in text:
            return name
    raise AverageError(f"cannot tell which model {src} trained (no train.cmd): pass --model llm|flow")


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args(argv)
    src, dst = Path(args.src_path), Path(args.dst_model)
    refuse_diverged(src)
    chosen = select_checkpoints(src, args.num, args.val_best, args.select_by)
    for c in chosen:
        cv = f"CV loss {c.cv_loss:.5f}" if c.cv_loss is not None else "no CV loss"
        logger.info("averaging %s (epoch %d, step %d, %s)", c.name, c.epoch, c.step, cv)
    finetune = finetune_of(chosen)
    state = average_states(src, chosen)
    model = args.model or guess_model(src)
    module = check_against_model(src, model, state, finetune)
    if args.merged_model and finetune != "lora":
        raise AverageError(f"--merged_model: {src} holds full weights, not LoRA adapters: --dst_model is the model")
    dst.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_torch_save(state, dst)
    if args.merged_model:
        write_merged(src, model, module, Path(args.merged_model))
    record = {"src_path": str(src.resolve()), "dst_model": str(dst.resolve()), "val_best": args.val_best,
              "select_by": args.select_by, "num": args.num, "finetune": finetune,
              "merged_model": str(Path(args.merged_model).resolve()) if args.merged_model else None,
              "checkpoints": [{"name": c.name, "epoch": c.epoch, "step": c.step, "cv": c.cv} for c in chosen]}
    ckpt.atomic_write_text(src / AVERAGE_RECORD, json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s (average of %d checkpoints)", dst, len(chosen))
    return 0


# the command line: a bad input is one line (exit status 2), not a traceback
cli = entry_point("average_model.py")(main)


if __name__ == "__main__":
    sys.exit(cli())
