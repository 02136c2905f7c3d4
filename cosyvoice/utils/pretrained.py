"""Which model a pretrained model dir holds (CosyVoice2-0.5B or Fun-CosyVoice3-0.5B), what it must hold, and the
check that names whatever is missing. The one place that knows the per-version file names.

The layouts are those of the official downloads; the stand-ins written by tools/make_tiny_pretrained.py have the
same files. A dir is CosyVoice2 when it holds ``cosyvoice2.yaml`` and CosyVoice3 when it holds ``cosyvoice3.yaml``
(as the official ``AutoModel`` decides); a dir that does not exist yet (a download target, a stand-in to write) is
told by its name: ``cosyvoice3`` in it, in any case, means CosyVoice3.

Usage from a shell::

    python -m cosyvoice.utils.pretrained <dir>           # exit status 1 and one line naming the missing files
    python -m cosyvoice.utils.pretrained --shell <dir>   # the version's names as shell assignments (run.sh)

This module needs nothing but the standard library, so the recipe can ask it before the environment is set up.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError

QWEN_DIR = "CosyVoice-BlankEN"
CAMPPLUS_FILE = "campplus.onnx"
SPK2INFO_FILE = "spk2info.pt"
QWEN_FILES = (f"{QWEN_DIR}/config.json", f"{QWEN_DIR}/tokenizer_config.json", f"{QWEN_DIR}/vocab.json",
              f"{QWEN_DIR}/merges.txt")


@dataclass(frozen=True)
class ModelVersion:
    """The file names and sources of one model family."""

    name: str                   # 'cosyvoice2' / 'cosyvoice3': also the tokenizer's ``version`` argument
    title: str                  # the model's name, for messages
    config_file: str            # the yaml every entry point loads
    speech_tokenizer_file: str  # the ONNX speech tokenizer (stage 2 and the front end)
    modelscope_id: str
    huggingface_id: str
    stand_in_dir: str           # the recipe's default path of its tiny stand-in (relative to the working dir)

    @property
    def required_files(self) -> Tuple[str, ...]:
        """Every file our code reads from such a dir (paths relative to the dir)."""
        return (self.config_file, "llm.pt", "flow.pt", "hift.pt", CAMPPLUS_FILE, self.speech_tokenizer_file,
                *QWEN_FILES)

    @property
    def model_dir_entries(self) -> Tuple[str, ...]:
        """What the official class of this version reads from a model dir, besides spk2info.pt."""
        return (self.config_file, "llm.pt", "flow.pt", "hift.pt", CAMPPLUS_FILE, self.speech_tokenizer_file,
                QWEN_DIR)


COSYVOICE2 = ModelVersion("cosyvoice2", "CosyVoice2-0.5B", "cosyvoice2.yaml", "speech_tokenizer_v2.onnx",
                          "iic/CosyVoice2-0.5B", "FunAudioLLM/CosyVoice2-0.5B",
                          "exp/pretrained/CosyVoice2-0.5B-tiny")
COSYVOICE3 = ModelVersion("cosyvoice3", "Fun-CosyVoice3-0.5B", "cosyvoice3.yaml", "speech_tokenizer_v3.onnx",
                          "FunAudioLLM/Fun-CosyVoice3-0.5B-2512", "FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
                          "exp/pretrained/CosyVoice3-0.5B-tiny")
VERSIONS = {v.name: v for v in (COSYVOICE2, COSYVOICE3)}

# CosyVoice2's names, as before the CosyVoice3 support (callers that know they deal with CosyVoice2 use them)
CONFIG_FILE = COSYVOICE2.config_file
SPEECH_TOKENIZER_FILE = COSYVOICE2.speech_tokenizer_file
REQUIRED_FILES = COSYVOICE2.required_files


class PretrainedDirError(UserError, FileNotFoundError):
    """A pretrained model dir lacks files, or is not the model asked for; the message says what to do."""


def get_version(name: str) -> ModelVersion:
    """The :class:`ModelVersion` called ``name`` ('cosyvoice2' or 'cosyvoice3')."""
    if name not in VERSIONS:
        raise ValueError(f"unknown model version '{name}' (use one of {', '.join(VERSIONS)})")
    return VERSIONS[name]


def version_from_name(model_dir: str) -> ModelVersion:
    """The version a dir's name suggests: CosyVoice3 when it contains 'cosyvoice3' (any case), else CosyVoice2."""
    base = os.path.basename(os.path.normpath(os.fspath(model_dir))).lower().replace("-", "").replace("_", "")
    return COSYVOICE3 if "cosyvoice3" in base else COSYVOICE2


def model_version(model_dir: str, default: Optional[ModelVersion] = None) -> ModelVersion:
    """Which model ``model_dir`` holds, by its yaml. A dir with both yamls is an error; a dir with neither gives
    ``default`` when one is given, else the version its name suggests (:func:`version_from_name`)."""
    model_dir = os.fspath(model_dir)
    found = [v for v in VERSIONS.values() if os.path.isfile(os.path.join(model_dir, v.config_file))]
    if len(found) > 1:
        raise PretrainedDirError(
            f"model dir {model_dir} holds both {' and '.join(v.config_file for v in found)}: it must be one model; "
            f"remove the yaml (and files) of the other one")
    if found:
        return found[0]
    return default or version_from_name(model_dir)


def how_to_get(model_dir: str, version: ModelVersion = COSYVOICE2) -> str:
    extra = "" if version is COSYVOICE2 else f" --version {version.name}"
    return (f"download {version.title} with `python tools/download_pretrained.py --model_dir {model_dir}{extra}` "
            f"(run.sh --download_model true), or write the tiny stand-in with "
            f"`python tools/make_tiny_pretrained.py --out_dir {model_dir}{extra}`")


def missing_files(model_dir: str, required: Iterable[str] = REQUIRED_FILES) -> List[str]:
    """The entries of ``required`` that are not regular files under ``model_dir``, in the given order."""
    return [rel for rel in required if not os.path.isfile(os.path.join(model_dir, rel))]


def check_pretrained_dir(model_dir: str, required: Optional[Iterable[str]] = None,
                         version: Optional[ModelVersion] = None) -> str:
    """Return ``model_dir`` if it holds every required file; otherwise raise one line naming every missing one.

    ``version``: the model expected (None: the one the dir holds, see :func:`model_version`); a dir of the other
    model is refused, naming the class that loads it. ``required``: the files to check (default: the version's).
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        guess = version or version_from_name(model_dir)
        raise PretrainedDirError(f"pretrained model dir {model_dir} does not exist: {how_to_get(model_dir, guess)}")
    held = model_version(model_dir, default=version)
    if version is not None and held is not version:
        raise PretrainedDirError(
            f"{model_dir} is a {held.title} model dir ({held.config_file}), not {version.title}: load it with "
            f"{class_name(held)} (or cosyvoice.cli.cosyvoice.AutoModel), or give a {version.title} dir")
    version = held
    missing = missing_files(model_dir, version.required_files if required is None else required)
    if missing:
        raise PretrainedDirError(
            f"pretrained model dir {model_dir} is missing {len(missing)} file(s): {', '.join(missing)}; "
            f"{how_to_get(model_dir, version)}")
    return model_dir


def class_name(version: ModelVersion) -> str:
    """The inference class of ``version`` in cosyvoice.cli.cosyvoice (the official name)."""
    return {"cosyvoice2": "CosyVoice2", "cosyvoice3": "CosyVoice3"}[version.name]


STAND_IN_MARK = "STAND-IN"  # in the first line of the yaml tools/make_tiny_pretrained.py writes


def is_stand_in(model_dir: str) -> bool:
    """True for a tiny random stand-in (or a model dir fine-tuned from one, which links or copies its yaml)."""
    try:
        version = model_version(model_dir)
        with open(os.path.join(model_dir, version.config_file), encoding="utf-8") as f:
            return STAND_IN_MARK in f.readline()
    except OSError:
        return False


def shell_assignments(model_dir: str) -> str:
    """What the recipe needs to know about ``model_dir`` (existing or not), as ``name=value`` shell lines."""
    version = model_version(model_dir) if os.path.isdir(model_dir) else version_from_name(model_dir)
    values = {"model_version": version.name, "model_title": version.title, "config_file": version.config_file,
              "speech_tokenizer_file": version.speech_tokenizer_file, "stand_in_dir": version.stand_in_dir}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


@entry_point("pretrained.py")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m cosyvoice.utils.pretrained [--shell] <pretrained_model_dir>"
    shell = bool(argv) and argv[0] == "--shell"
    if shell:
        argv = argv[1:]
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        return 2
    if shell:
        sys.stdout.write(shell_assignments(argv[0]))
    else:
        check_pretrained_dir(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
