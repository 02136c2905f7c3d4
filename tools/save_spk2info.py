#!/usr/bin/env python3
"""Stage 4: lay out the output model dir like the official one and write its spk2info.pt.

    python tools/save_spk2info.py --data_dir data/train --pretrained_model_dir <pretrained> --model_dir <out>

spk2info.pt is {spk: {'embedding': float32 tensor (1, 192)}}, the speaker's mean CAM++ embedding (from
spk2embedding.pt, stage 1): the official format, which the official front end and ours read for `inference_sft`.
The model dir gets, besides it, links (or copies, --copy) to the pretrained files the official class of the
pretrained model's version loads: CosyVoice2 (cosyvoice2.yaml, speech_tokenizer_v2.onnx) or CosyVoice3
(cosyvoice3.yaml, speech_tokenizer_v3.onnx), and llm.pt, flow.pt, hift.pt, campplus.onnx and CosyVoice-BlankEN/.
With --speaker_tag true (a multi-speaker SFT run) each entry also holds 'speaker_tag', the text the llm was trained
to read before the speaker's texts; the official front end ignores the extra key.
An entry already there (e.g. a fine-tuned llm.pt) is kept, never overwritten; so writers of fine-tuned weights must
replace a link (write a temp file, then rename), not write through it. A link to another pretrained dir (after
--pretrained_model_dir changed) is replaced by one to the current dir, and links to the other version's yaml or
speech tokenizer are removed (a model dir is one model; copies of them are an error). Exported accelerations
(flow.encoder.*.zip, flow.decoder.estimator.*.onnx) are not linked: they would not match fine-tuned weights.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import List

import torch

from cosyvoice.utils.pretrained import (
    COSYVOICE2, SPK2INFO_FILE, VERSIONS, ModelVersion, check_pretrained_dir, model_version)
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.stage import StageInputError, load_pt_table, require_writable_dir, save_pt
from cosyvoice.dataset.processor import speaker_tag

TOOL = "save_spk2info"
# What the official CosyVoice2 class reads from a model dir, besides spk2info.pt (CosyVoice3: its own names).
MODEL_DIR_ENTRIES = COSYVOICE2.model_dir_entries


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="data dir holding spk2embedding.pt (stage 1)")
    p.add_argument("--pretrained_model_dir", required=True,
                   help="CosyVoice2-0.5B or Fun-CosyVoice3-0.5B dir (or a stand-in)")
    p.add_argument("--model_dir", required=True, help="output model dir")
    p.add_argument("--copy", action="store_true", help="copy the pretrained files instead of linking them")
    p.add_argument("--speaker_tag", default="false", choices=["true", "false"],
                   help="multi-speaker SFT: each entry also gets 'speaker_tag' ('<spk><|endofprompt|>'), which "
                        "inference_sft puts before the text as the model was trained")
    return p.parse_args(argv)


def make_spk2info(spk2embedding: dict, speaker_tags: bool = False) -> dict:
    """{spk: {'embedding': (1, 192) float32[, 'speaker_tag': '<spk><|endofprompt|>']}} from {spk: 192 values}."""

    spk2info = {}
    for spk in sorted(spk2embedding):
        emb = torch.as_tensor(spk2embedding[spk], dtype=torch.float32).reshape(1, -1)
        spk2info[spk] = {"embedding": emb}
        if speaker_tags:
            spk2info[spk]["speaker_tag"] = speaker_tag(spk)
    return spk2info


def drop_other_version(model_dir: str, version: ModelVersion) -> List[str]:
    """Remove links to the yaml / speech tokenizer of the other model version (the pretrained dir changed from one
    model to the other); returns what was removed. Such files that are not links are an error."""
    ours = set(version.model_dir_entries)
    removed = []
    for other in VERSIONS.values():
        for name in (other.config_file, other.speech_tokenizer_file):
            path = os.path.join(model_dir, name)
            if name in ours or not os.path.lexists(path):
                continue
            if not os.path.islink(path):
                raise StageInputError(f"{TOOL}: {path} belongs to {other.title}, but --pretrained_model_dir is "
                                      f"{version.title}: a model dir holds one model; remove it (or use another "
                                      f"--model_dir)")
            os.remove(path)
            removed.append(name)
    return removed


def populate_model_dir(pretrained_dir: str, model_dir: str, copy: bool,
                       entries=MODEL_DIR_ENTRIES) -> List[str]:
    """Link (or copy) each pretrained entry of ``entries`` that ``model_dir`` lacks; returns the entries added."""
    os.makedirs(model_dir, exist_ok=True)
    added = []
    for name in entries:
        src, dst = os.path.abspath(os.path.join(pretrained_dir, name)), os.path.join(model_dir, name)
        if os.path.islink(dst) and os.path.realpath(dst) != os.path.realpath(src):
            logging.info("%s linked to %s, not to the current pretrained dir: relinking it", dst,
                         os.path.realpath(dst))  # --pretrained_model_dir changed since the last stage 4
        elif os.path.lexists(dst):
            continue
        tmp = os.path.join(model_dir, f".{name}.tmp")
        if os.path.lexists(tmp):
            shutil.rmtree(tmp) if os.path.isdir(tmp) and not os.path.islink(tmp) else os.remove(tmp)
        if copy:
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, tmp)
        else:  # relative: the link survives moving the project (pretrained and model dir together)
            os.symlink(os.path.relpath(os.path.realpath(src), os.path.realpath(model_dir)), tmp)
        os.replace(tmp, dst)
        added.append(name)
    return added


@entry_point(TOOL)
def main(argv=None) -> int:
    return run(get_args(argv))


def run(args) -> int:
    check_pretrained_dir(args.pretrained_model_dir)
    spk2embedding = load_pt_table(os.path.join(args.data_dir, "spk2embedding.pt"), TOOL)
    if not spk2embedding:
        raise StageInputError(f"{TOOL}: {args.data_dir}/spk2embedding.pt has no speaker; rerun stage 1")
    if os.path.abspath(args.model_dir) == os.path.abspath(args.pretrained_model_dir):
        raise StageInputError(f"{TOOL}: --model_dir must differ from --pretrained_model_dir")
    require_writable_dir(args.model_dir, TOOL)
    spk2info = make_spk2info(spk2embedding, args.speaker_tag == "true")
    version = model_version(args.pretrained_model_dir)
    removed = drop_other_version(args.model_dir, version) if os.path.isdir(args.model_dir) else []
    if removed:
        logging.info("%s: removed the links to another model's %s (the pretrained model is now %s)", args.model_dir,
                     ", ".join(removed), version.title)
    added = populate_model_dir(args.pretrained_model_dir, args.model_dir, args.copy, version.model_dir_entries)
    save_pt(spk2info, os.path.join(args.model_dir, SPK2INFO_FILE))
    logging.info("wrote %s/%s (speakers: %s); %s from %s: %s", args.model_dir, SPK2INFO_FILE, ", ".join(spk2info),
                 "copied" if args.copy else "linked", args.pretrained_model_dir, ", ".join(added) or "nothing new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
