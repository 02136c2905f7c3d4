#!/usr/bin/env python3
"""Stage 1: CAM++ speaker embeddings of every utterance in a Kaldi data dir.

    python tools/extract_embedding.py --data_dir data/train --onnx_path <pretrained>/campplus.onnx [--num_workers 2]

Reads wav.scp and utt2spk; writes utt2embedding.pt ({utt: 192 floats}) and spk2embedding.pt ({spk: the mean of its
utterances' embeddings}) into the data dir, both dicts of python lists as the official tool writes them. The fbank
is the same code inference uses (cosyvoice.utils.onnx.EmbeddingExtractor).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List

import torch

from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.stage import (StageInputError, extraction_args, map_utts, read_table, require_file,
                                   require_writable_dir, save_pt, speaker_means)
from cosyvoice.audio.io import load_wav
from cosyvoice.utils.onnx import EmbeddingExtractor

TOOL = "extract_embedding"


def get_args(argv=None):
    return extraction_args(__doc__, "wav.scp, utt2spk", "campplus.onnx", argv)


@entry_point(TOOL)
def main(argv=None) -> int:
    return run(get_args(argv))


def run(args) -> int:
    utt2wav = read_table(os.path.join(args.data_dir, "wav.scp"), TOOL)
    utt2spk = read_table(os.path.join(args.data_dir, "utt2spk"), TOOL)
    require_file(args.onnx_path, TOOL)
    no_spk = sorted(set(utt2wav) - set(utt2spk))
    if no_spk:
        raise StageInputError(f"{TOOL}: {len(no_spk)} utterance(s) of {args.data_dir}/wav.scp have no speaker in "
                              f"utt2spk (e.g. {', '.join(no_spk[:5])}); fix the data dir (stage 0)")
    require_writable_dir(args.data_dir, TOOL)


    torch.set_num_threads(1)  # parallelism comes from the worker threads
    extractor = EmbeddingExtractor(args.onnx_path)

    def job(utt: str) -> List[float]:
        try:
            speech = load_wav(utt2wav[utt], 16000)
        except Exception as e:
            raise StageInputError(f"{TOOL}: cannot read audio of utt {utt} ({utt2wav[utt]}): {e}") from e
        return extractor.embed(speech)

    results = map_utts(job, utt2wav, args.num_workers, "CAM++ embeddings")
    utt2embedding = {utt: results[utt] for utt in sorted(results)}
    spk2embedding = speaker_means(utt2embedding, utt2spk)
    save_pt(utt2embedding, os.path.join(args.data_dir, "utt2embedding.pt"))
    save_pt(spk2embedding, os.path.join(args.data_dir, "spk2embedding.pt"))
    logging.info("wrote embeddings of %d utterances and %d speakers into %s",
                 len(utt2embedding), len(spk2embedding), args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
