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

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

from cosyvoice.utils.errors import UserError  # noqa: E402
from stage_common import (StageInputError, map_utts, read_table, report_error, require_file,  # noqa: E402
                          require_writable_dir, save_pt, write_lines)

TOOL = "extract_speech_token"
SKIPPED_FILE = "skipped_speech_token.tsv"


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", "--dir", dest="data_dir", required=True, help="Kaldi data dir (wav.scp)")
    p.add_argument("--onnx_path", required=True,
                   help="speech_tokenizer_v2.onnx (CosyVoice2) or speech_tokenizer_v3.onnx (CosyVoice3) of the "
                        "pretrained model dir")
    p.add_argument("--num_workers", "--num_thread", dest="num_workers", type=int, default=2,
                   help="parallel extraction threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s")
    args = get_args(argv)
    try:
        return run(args)
    except UserError as e:
        return report_error(e)


def run(args) -> int:
    utt2wav = read_table(os.path.join(args.data_dir, "wav.scp"), TOOL)
    require_file(args.onnx_path, TOOL)
    require_writable_dir(args.data_dir, TOOL)

    from cosyvoice.audio.io import load_wav
    from cosyvoice.utils.onnx import MAX_TOKENIZER_SECONDS, SAMPLE_RATE, SpeechTokenizer

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
