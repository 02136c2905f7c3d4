#!/usr/bin/env python3
"""Stage 2: discrete speech tokens (25 Hz) of every utterance in a Kaldi data dir.

    python tools/extract_speech_token.py --data_dir data/train --onnx_path <pretrained>/speech_tokenizer_v2.onnx

(CosyVoice3: ``<pretrained>/speech_tokenizer_v3.onnx``; both take the same whisper log-mel feed and give 25 Hz
ids, so one tool serves both.)

Reads wav.scp; writes utt2speech_token.pt ({utt: list of ints}) into the data dir. Each clip is padded with
silence to whole tokens (40 ms) first, so it gets ceil(duration * 25) tokens: exactly half the mel frames that
training computes from the same clip padded to whole tokens. Clips longer than 30 s (the
tokenizer's limit) are not tokenized: they get an empty list, as the official tool gives them (training drops
them), a warning, and a line `<utt>\\t<seconds>` in skipped_speech_token.tsv (empty when none was skipped).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Tuple

import torch

from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.stage import (StageInputError, extraction_args, map_utts, read_table, require_file,
                                   require_writable_dir, save_pt, write_lines)
from cosyvoice.audio.io import load_wav
from cosyvoice.utils.onnx import MAX_TOKENIZER_SECONDS, SAMPLE_RATE, SpeechTokenizer

TOOL = "extract_speech_token"
SKIPPED_FILE = "skipped_speech_token.tsv"


def get_args(argv=None):
    return extraction_args(__doc__, "wav.scp", "speech_tokenizer_v2.onnx (CosyVoice2) or speech_tokenizer_v3.onnx (CosyVoice3)",
                           argv)


@entry_point(TOOL)
def main(argv=None) -> int:
    return run(get_args(argv))


def run(args) -> int:
    utt2wav = read_table(os.path.join(args.data_dir, "wav.scp"), TOOL)
    require_file(args.onnx_path, TOOL)
    require_writable_dir(args.data_dir, TOOL)


    torch.set_num_threads(1)  # parallelism comes from the worker threads
    tokenizer = SpeechTokenizer(args.onnx_path)

    def job(utt: str) -> Tuple[List[int], Optional[float]]:
        """(tokens, None), or ([], seconds) for a clip over the tokenizer's limit."""
        try:
            speech = load_wav(utt2wav[utt], SAMPLE_RATE)
        except Exception as e:
            raise StageInputError(f"{TOOL}: cannot read audio of utt {utt} ({utt2wav[utt]}): {e}") from e
        seconds = speech.shape[1] / SAMPLE_RATE
        if seconds > MAX_TOKENIZER_SECONDS:
            return [], seconds
        return tokenizer.tokenize(speech, pad_to_token_grid=True), None

    results = map_utts(job, utt2wav, args.num_workers, "speech tokens")
    utt2speech_token = {utt: results[utt][0] for utt in sorted(results)}
    skipped = [(utt, results[utt][1]) for utt in sorted(results) if results[utt][1] is not None]
    skipped_path = os.path.join(args.data_dir, SKIPPED_FILE)
    for utt, seconds in skipped:
        logging.warning("utt %s is %.2f s long, over the speech tokenizer's %d s: skipped (listed in %s)",
                        utt, seconds, MAX_TOKENIZER_SECONDS, skipped_path)
    save_pt(utt2speech_token, os.path.join(args.data_dir, "utt2speech_token.pt"))
    write_lines(skipped_path, [f"{utt}\t{seconds:.2f}" for utt, seconds in skipped])
    logging.info("wrote speech tokens of %d utterances into %s (%d skipped as longer than %d s)",
                 len(utt2speech_token) - len(skipped), args.data_dir, len(skipped), MAX_TOKENIZER_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
