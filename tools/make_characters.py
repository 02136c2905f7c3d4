#!/usr/bin/env python3
"""Stage 6 of a LoRA run: one character folder per trained speaker, ``<out_dir>/<spk>/``.

    python tools/make_characters.py --model_dir exp/alice/model --pretrained_model_dir <pretrained> \\
        --out_dir exp/alice/characters --llm_adapter exp/alice/adapters/llm.adapter.pt --llm_train_dir exp/alice/llm \\
        [--flow exp/alice/model/flow.pt | --flow_adapter exp/alice/adapters/flow.adapter.pt --flow_train_dir ...]

Each speaker of ``<model_dir>/spk2info.pt`` (stage 4) gets a folder (cosyvoice/cli/character.py) holding the llm
adapter, the fine-tuned flow (or its adapter), its spk2info entry and character.json: the sha256 of the base
model's llm.pt and flow.pt (``--pretrained_model_dir``), the LoRA settings (from the training dirs' config.yaml),
what was averaged (the training dirs' ``average.json``, stage 6). All speakers of one run share its adapter and flow;
the files are hard links where the file system allows. Each folder is written aside and swapped in.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from cosyvoice.cli.character import write_character
from cosyvoice.utils import lora
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.pretrained import SPK2INFO_FILE
from cosyvoice.utils.stage import StageInputError, load_pt_table, require_writable_dir

TOOL = "make_characters"


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="the run's model dir (stage 4: spk2info.pt)")
    p.add_argument("--pretrained_model_dir", required=True, help="the base model the run trained from")
    p.add_argument("--out_dir", required=True, help="where the character folders go (<exp_dir>/characters)")
    p.add_argument("--llm_adapter", default="", help="the averaged llm adapter (stage 6) [none: the base llm]")
    p.add_argument("--llm_train_dir", default="", help="the llm training dir (its config.yaml: the LoRA settings)")
    p.add_argument("--flow", default="", help="the fine-tuned flow.pt [none: the base flow]")
    p.add_argument("--flow_adapter", default="", help="the averaged flow adapter (LoRA flow) [none]")
    p.add_argument("--flow_train_dir", default="", help="the flow training dir (with --flow_adapter)")
    return p.parse_args(argv)


def _average_record(train_dir: str):
    """What stage 6 averaged from a training dir (its average.json), or None."""
    record = os.path.join(train_dir, "average.json") if train_dir else ""
    if record and os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            return json.load(f)
    return None


def run(args) -> int:

    if args.flow and args.flow_adapter:
        raise StageInputError(f"{TOOL}: give --flow (a fine-tuned flow) or --flow_adapter (LoRA), not both")
    for option, path in (("--llm_adapter", args.llm_adapter), ("--flow", args.flow),
                         ("--flow_adapter", args.flow_adapter)):
        if path and not os.path.isfile(path):
            raise StageInputError(f"{TOOL}: {option} {path} not found: run stage 6 first (--stage 6)")
    spk2info = load_pt_table(os.path.join(args.model_dir, SPK2INFO_FILE), TOOL)
    if not spk2info:
        raise StageInputError(f"{TOOL}: {args.model_dir}/{SPK2INFO_FILE} has no speaker; rerun stage 4")
    llm_lora = lora.training_dir_settings(args.llm_train_dir, "llm").to_dict() if args.llm_adapter else None
    flow_lora = lora.training_dir_settings(args.flow_train_dir, "flow").to_dict() if args.flow_adapter else None
    flow_file = args.flow_adapter or args.flow or None
    flow_kind = "lora" if args.flow_adapter else "full" if args.flow else "base"
    training = {"exp_dir": os.path.abspath(os.path.dirname(os.path.abspath(args.model_dir))),
                "speakers": sorted(spk2info),
                "llm": _average_record(args.llm_train_dir) if args.llm_adapter else None,
                "flow": _average_record(args.flow_train_dir or os.path.join(os.path.dirname(
                    os.path.abspath(args.model_dir)), "flow")) if flow_file else None}
    require_writable_dir(args.out_dir, TOOL)
    for spk in sorted(spk2info):
        out = write_character(os.path.join(args.out_dir, spk), spk, args.pretrained_model_dir, spk2info[spk],
                              llm_adapter=args.llm_adapter or None, llm_lora=llm_lora, flow_file=flow_file,
                              flow_kind=flow_kind, flow_lora=flow_lora, training=training)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2 ** 20
        logging.info("character %s: %s (llm %s, flow %s; %.1f MB)", spk, out,
                     "lora" if args.llm_adapter else "base", flow_kind, size)
    return 0


@entry_point(TOOL)
def main(argv=None) -> int:
    return run(get_args(argv))


if __name__ == "__main__":
    sys.exit(main())
