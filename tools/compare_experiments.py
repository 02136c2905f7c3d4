#!/usr/bin/env python3
"""Put experiments side by side, e.g. the same data fine-tuned in full and with LoRA (stage 8 of each).

    bash run.sh --data_dir D --tag alice_full
    bash run.sh --data_dir D --tag alice_lora --finetune lora
    python tools/compare_experiments.py exp/alice_full exp/alice_lora

Reads each ``<exp>/metrics.json`` (stage 8) and prints one table: how the llm and the flow were fine-tuned, their
trainable parameters, the size of one checkpoint, the median seconds per update and the peak memory of training,
then the fine-tuned voice's speaker similarity (to the speaker's real clips) and ASR error rate, with the base
model's zero-shot figures for reference. Nothing is written. ``--json`` prints the same as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", help="experiment dirs holding metrics.json (run.sh stage 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def _fmt(value, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "rate":
        return f"{100 * value:.1f}%"
    if kind == "params":
        return f"{value / 1e6:.2f}M"
    if kind == "mb":
        return f"{value:.1f} MB"
    if kind == "s":
        return f"{value:.3g} s"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def read_experiment(exp_dir: str) -> Dict:
    path = os.path.join(exp_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run stage 8 for {exp_dir} first (bash run.sh --stage 8 ...)")
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    row: Dict = {"exp_dir": exp_dir}
    for model in ("llm", "flow"):
        facts = ((metrics.get("training") or {}).get(model) or {}).get("facts") or {}
        for key in ("finetune", "trainable_parameters", "checkpoint_mb", "step_s", "peak_memory_mb"):
            row[f"{model}.{key}"] = facts.get(key)
    for system in ("sft", "base"):
        summary = metrics["summary"].get(system, {})
        for key in ("sim_centroid", "sim_real", "error_rate"):
            row[f"{system}.{key}"] = summary.get(key)
    row["asr"] = (metrics.get("asr") or {}).get("status")
    return row


ROWS = [("llm.finetune", "llm fine-tuning", ""), ("llm.trainable_parameters", "llm trainable parameters", "params"),
        ("llm.checkpoint_mb", "llm checkpoint", "mb"), ("llm.step_s", "llm seconds per update", "s"),
        ("llm.peak_memory_mb", "llm training peak memory", "mb"), ("flow.finetune", "flow fine-tuning", ""),
        ("flow.trainable_parameters", "flow trainable parameters", "params"),
        ("flow.checkpoint_mb", "flow checkpoint", "mb"), ("flow.step_s", "flow seconds per update", "s"),
        ("flow.peak_memory_mb", "flow training peak memory", "mb"),
        ("sft.sim_centroid", "fine-tuned: speaker similarity", ""), ("sft.sim_real", "fine-tuned: same-text SIM", ""),
        ("sft.error_rate", "fine-tuned: ASR error rate", "rate"), ("base.sim_centroid", "base zero-shot: SIM", ""),
        ("base.error_rate", "base zero-shot: ASR error rate", "rate")]


def table(rows: List[Dict]) -> str:
    head = "| | " + " | ".join(os.path.basename(os.path.normpath(r["exp_dir"])) for r in rows) + " |"
    lines = [head, "|---" * (len(rows) + 1) + "|"]
    for key, label, kind in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(r.get(key), kind) for r in rows) + " |")
    if any(r["asr"] != "ok" for r in rows):
        lines.append("\n(ASR error rates need run.sh --asr_model_dir; n/a where it was not given)")
    return "\n".join(lines)


@entry_point("compare_experiments.py")
def main(argv: Optional[List[str]] = None) -> int:
    args = get_args(argv)
    try:
        rows = [read_experiment(d) for d in args.exp_dirs]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(str(e)) from e
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
