"""What a CosyVoice2 pretrained model dir must hold, and the check that names whatever is missing.

The layout is the one of the official CosyVoice2-0.5B download; the stand-in written by tools/make_tiny_pretrained.py
has the same files. Usage from a shell: ``python -m cosyvoice.utils.pretrained <dir>`` (exit status 1 and one line
naming the missing files).
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, List

from cosyvoice.utils.errors import UserError

QWEN_DIR = "CosyVoice-BlankEN"
CONFIG_FILE = "cosyvoice2.yaml"
CAMPPLUS_FILE = "campplus.onnx"
SPEECH_TOKENIZER_FILE = "speech_tokenizer_v2.onnx"
SPK2INFO_FILE = "spk2info.pt"

# Every file our code reads from a pretrained dir (paths relative to the dir).
REQUIRED_FILES = (
    CONFIG_FILE,
    "llm.pt",
    "flow.pt",
    "hift.pt",
    CAMPPLUS_FILE,
    SPEECH_TOKENIZER_FILE,
    f"{QWEN_DIR}/config.json",
    f"{QWEN_DIR}/tokenizer_config.json",
    f"{QWEN_DIR}/vocab.json",
    f"{QWEN_DIR}/merges.txt",
)



def how_to_get(model_dir: str) -> str:
    return (f"download CosyVoice2-0.5B with `python tools/download_pretrained.py --model_dir {model_dir}` "
            f"(run.sh --download_model true), or write the tiny stand-in with "
            f"`python tools/make_tiny_pretrained.py --out_dir {model_dir}`")


class PretrainedDirError(UserError, FileNotFoundError):
    """A pretrained model dir lacks files; the message lists all of them and how to get them."""


def missing_files(model_dir: str, required: Iterable[str] = REQUIRED_FILES) -> List[str]:
    """The entries of ``required`` that are not regular files under ``model_dir``, in the given order."""
    return [rel for rel in required if not os.path.isfile(os.path.join(model_dir, rel))]


def check_pretrained_dir(model_dir: str, required: Iterable[str] = REQUIRED_FILES) -> str:
    """Return ``model_dir`` if it holds every required file; otherwise raise one line naming every missing one."""
    if not os.path.isdir(model_dir):
        raise PretrainedDirError(f"pretrained model dir {model_dir} does not exist: {how_to_get(model_dir)}")
    missing = missing_files(model_dir, required)
    if missing:
        raise PretrainedDirError(
            f"pretrained model dir {model_dir} is missing {len(missing)} file(s): {', '.join(missing)}; "
            f"{how_to_get(model_dir)}")
    return model_dir


STAND_IN_MARK = "STAND-IN"  # in the first line of the yaml tools/make_tiny_pretrained.py writes


def is_stand_in(model_dir: str) -> bool:
    """True for the tiny random stand-in (or a model dir fine-tuned from it, which links or copies its yaml)."""
    try:
        with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as f:
            return STAND_IN_MARK in f.readline()
    except OSError:
        return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m cosyvoice.utils.pretrained <pretrained_model_dir>", file=sys.stderr)
        return 2
    try:
        check_pretrained_dir(argv[0])
    except PretrainedDirError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
