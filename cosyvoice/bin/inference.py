#!/usr/bin/env python3
"""Synthesize the lines of a text json with a CosyVoice2 or CosyVoice3 model dir: one wav per line and an index.

    python -m cosyvoice.bin.inference --model_dir exp/cosyvoice2_sft/model --mode all \\
        --text_json local/tts_text.json --prompt_wav p.wav --prompt_text "..." --result_dir out

or speak one line given on the command line (``--text``, in ``--mode``; ``all``: every mode that can speak it), or
every line of a plain UTF-8 text file (``--text_file``: one line per utterance, blank lines skipped)::

    python -m cosyvoice.bin.inference --model_dir exp/alice/model --mode sft --text "你好" --result_dir out
    python -m cosyvoice.bin.inference --model_dir exp/alice/model --mode sft --text_file script.txt --result_dir out

The text json maps a speaker to its lines, per mode::
    {"demo": {"sft_inference": ["..."], "zero-shot": ["..."], "cross-lingual": ["..."],
              "instruction-zero-shot": {"instruction": "用开心的语气说", "text": "..."}}}

("instruction-zero-shot" may also be a list of such objects, and its "text" a list of lines.) Each line becomes
``<result_dir>/<mode>_<NN>.wav`` (24 kHz, written atomically); ``<result_dir>/index.tsv`` lists file, mode, number
of chunks, duration, real-time factor and text. Every input is checked before anything is synthesized. The model's
version comes from the model dir (cosyvoice2.yaml or cosyvoice3.yaml); the modes and the text json are the same
for both (CosyVoice3 gets its system prompt where it needs it, see cosyvoice.cli.cosyvoice).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

from tqdm import tqdm

from cosyvoice.audio.io import save_wav
from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.dataset.datadir import audio_suffix
from cosyvoice.text.checks import text_problem
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import set_all_random_seed
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.fileio import atomic_write_lines, read_table_dict
from cosyvoice.cli.character import find_characters, read_character

MODES = ("sft", "zero-shot", "cross-lingual", "instruct")
JSON_KEYS = {"sft": "sft_inference", "zero-shot": "zero-shot", "cross-lingual": "cross-lingual",
             "instruct": "instruction-zero-shot"}
INDEX_FILE = "index.tsv"
logger = logging.getLogger("inference")


class InputError(UserError, ValueError):
    """Bad command-line input; main() prints it as one line."""


@dataclass
class Job:
    mode: str
    index: int
    text: str
    instruction: str = ""
    where: str = ""         # where the line comes from, for errors ("script.txt line 4"); empty: "<mode> line <index>"

    @property
    def name(self) -> str:
        return f"{self.mode}_{self.index:02d}.wav"


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True,
                   help="CosyVoice2 or CosyVoice3 model dir (pretrained, fine-tuned or stand-in)")
    p.add_argument("--mode", default="all", choices=MODES + ("all",), help="inference mode")
    p.add_argument("--text_json", default="", help="json of lines to synthesize, per speaker and mode")
    p.add_argument("--text", default="", help="one line to speak instead of the json's (--mode all: in sft when the "
                                              "model knows the speaker, zero-shot, cross-lingual, and instruct when "
                                              "--instruction is given)")
    p.add_argument("--text_file", default="", help="a UTF-8 text file, one line to speak per line (blank lines "
                                                   "skipped), spoken like --text instead of the json's lines")
    p.add_argument("--instruction", default="", help="instruction of --text (--text_file: of every line) in "
                                                     "instruct mode (e.g. 用开心的语气说)")
    p.add_argument("--spk_id", default="", help="speaker: the SFT speaker of spk2info.pt and the json section it "
                                               "speaks (empty: the model dir's only speaker, else the json's only one)")
    p.add_argument("--prompt_wav", default="", help="prompt audio for zero-shot / cross-lingual / instruct")
    p.add_argument("--prompt_text", default="", help="transcript of --prompt_wav (zero-shot)")
    p.add_argument("--test_data_dir", default="", help="Kaldi data dir or pair folder to take the prompt from "
                                                       "when --prompt_wav is not given")
    p.add_argument("--example_id", default="", help="utterance of --test_data_dir to use (empty: the first)")
    p.add_argument("--result_dir", required=True, help="where the wavs and index.tsv go")
    p.add_argument("--stream", default="false", choices=("true", "false"), help="synthesize in streaming chunks")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate (stream false only)")
    p.add_argument("--seed", type=int, default=1986, help="seed of every random draw")
    p.add_argument("--text_frontend", default="true", choices=("true", "false"), help="normalize the text first")
    p.add_argument("--fp16", default="false", choices=("true", "false"),
                   help="float16 autocast on a CUDA GPU (ignored without one: float32)")
    p.add_argument("--characters", nargs="*", default=[],
                   help="character folders (a LoRA run's <exp>/characters or <exp>/characters/<spk>) loaded onto "
                        "--model_dir; --spk_id picks the one that speaks the SFT lines")
    args = p.parse_args(argv)
    if args.text and not args.text.strip():
        p.error("--text is empty: give the line to speak")
    if args.text and args.text_file:
        p.error("give --text LINE or --text_file FILE, not both")
    own = "--text_file" if args.text_file else "--text" if args.text else ""
    if not args.text_json and not own:
        p.error("give the lines to speak: --text_json FILE, --text LINE or --text_file FILE")
    if args.instruction and not own:
        p.error("--instruction goes with --text or --text_file (a text json gives each instruct line its "
                "instruction)")
    if args.instruction and args.mode not in ("instruct", "all"):
        p.error(f"--instruction is for --mode instruct (or all), not {args.mode}")
    if own and args.mode == "instruct" and not args.instruction.strip():
        p.error(f"--mode instruct with {own} needs --instruction (e.g. --instruction 用开心的语气说)")
    return args


# ---------------------------------------------------------------------------------------------------- inputs
def _as_lines(value, where: str) -> List[str]:
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise InputError(f"{where} must be a string or a list of strings")
    return lines


def load_text_json(path: str, spk_id: str) -> Tuple[str, Dict[str, List[Job]]]:
    """(speaker, {mode: jobs}) from the text json; only the modes the speaker's section has.

    A speaker without a section of its own speaks the json's ``default`` section, or its only section."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except FileNotFoundError:
        raise InputError(f"text json not found: {path} (give --text_json; local/tts_text.json is an example)")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read text json {path}: {e}")
    if not isinstance(table, dict) or not table:
        raise InputError(f"{path} must map speaker ids to their lines (see local/tts_text.json)")
    if not spk_id:
        if len(table) != 1:
            raise InputError(f"{path} has several speakers ({', '.join(table)}): choose one with --spk_id")
        spk_id = next(iter(table))
    section_name = spk_id
    if spk_id not in table:
        if "default" in table:
            section_name = "default"
        elif len(table) == 1:
            section_name = next(iter(table))
        else:
            raise InputError(f"speaker '{spk_id}' not in {path} (it has: {', '.join(table)}); add a section for "
                             f"it or a 'default' one")
        logger.info("%s has no section for speaker '%s': speaking the lines of '%s'", path, spk_id, section_name)
    section = table[section_name]
    unknown = sorted(set(section) - set(JSON_KEYS.values())) if isinstance(section, dict) else []
    if not isinstance(section, dict) or unknown:
        raise InputError(f"{path}: speaker '{section_name}' must map {', '.join(JSON_KEYS.values())} to lines"
                         + (f" (unknown key(s): {', '.join(unknown)})" if unknown else ""))
    jobs: Dict[str, List[Job]] = {}
    for mode, key in JSON_KEYS.items():
        if key not in section:
            continue
        where = f"{path}: {section_name}.{key}"
        if mode == "instruct":
            items = section[key] if isinstance(section[key], list) else [section[key]]
            pairs = []
            for item in items:
                if not isinstance(item, dict) or set(item) != {"instruction", "text"}:
                    raise InputError(f"{where} must be {{\"instruction\": ..., \"text\": ...}} (or a list of them)")
                pairs += [(line, _as_lines(item["instruction"], where + ".instruction")[0])
                          for line in _as_lines(item["text"], where + ".text")]
        else:
            pairs = [(line, "") for line in _as_lines(section[key], where)]
        for text, _ in pairs:
            if not text.strip():
                raise InputError(f"{where} has an empty line")
        jobs[mode] = [Job(mode, i, text, instruction) for i, (text, instruction) in enumerate(pairs)]
    return spk_id, jobs


def read_data_dir(data_dir: str) -> Dict[str, Tuple[str, str]]:
    """{utt: (wav path, transcript)} of a Kaldi data dir (wav.scp + text) or a pair folder (<utt>.wav, or another
    audio suffix stage 0 reads, + <utt>.normalized.txt)."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--test_data_dir {data_dir} is not a folder")
    if os.path.isfile(os.path.join(data_dir, "wav.scp")):
        wavs = read_table_dict(os.path.join(data_dir, "wav.scp"))
        texts = read_table_dict(os.path.join(data_dir, "text"))
        return {u: (w if os.path.isabs(w) else os.path.join(os.getcwd(), w), texts[u])
                for u, w in wavs.items() if u in texts}
    pairs = {}
    for name in sorted(os.listdir(data_dir)):
        if audio_suffix(name):
            utt = os.path.splitext(name)[0]
            txt = os.path.join(data_dir, utt + ".normalized.txt")
            if os.path.isfile(txt):
                with open(txt, encoding="utf-8") as f:
                    pairs[utt] = (os.path.join(data_dir, name), " ".join(f.read().split()))
    return pairs


def data_dir_speakers(data_dir: str) -> Dict[str, str]:
    """{utt: speaker} of a Kaldi data dir's utt2spk (empty when it has none)."""
    path = os.path.join(data_dir, "utt2spk")
    return read_table_dict(path) if os.path.isfile(path) else {}


def resolve_prompt(args, spk_id: str = "") -> Tuple[str, str]:
    """(prompt wav, prompt text) from --prompt_wav/--prompt_text or --test_data_dir/--example_id (by default the
    first utterance of ``spk_id`` there, when the dir says whose each one is)."""
    if args.prompt_wav:
        return args.prompt_wav, args.prompt_text
    if not args.test_data_dir:
        raise InputError("no prompt: give --prompt_wav (and --prompt_text) or --test_data_dir")
    utts = read_data_dir(args.test_data_dir)
    if not utts:
        raise InputError(f"{args.test_data_dir} holds no utterance (wav + transcript)")
    utt = args.example_id
    if not utt:
        utt2spk = data_dir_speakers(args.test_data_dir)
        own = [u for u in sorted(utts) if utt2spk.get(u) == spk_id]
        if utt2spk and spk_id and not own:
            raise InputError(f"{args.test_data_dir} has no utterance of speaker '{spk_id}' to prompt with: give "
                             f"--prompt_wav, or --test_data_dir of this speaker's data")
        utt = (own or sorted(utts))[0]
    if utt not in utts:
        raise InputError(f"--example_id {utt} not in {args.test_data_dir} (e.g. {', '.join(sorted(utts)[:5])})")
    wav, text = utts[utt]
    logger.info("prompt: %s (%s) '%s'", utt, wav, text)
    return wav, args.prompt_text or text


def default_speaker(model_dir: str, characters=()) -> str:
    """The only character given, else the speaker of a fine-tuned model dir whose spk2info.pt holds exactly one;
    else empty."""
    if characters:

        found = find_characters(characters)
        return read_character(found[0], verify=False).spk_id if len(found) == 1 else ""
    path = os.path.join(model_dir, "spk2info.pt")
    if not os.path.isfile(path):
        return ""
    import torch

    try:
        speakers = list(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:  # noqa: BLE001 - the model load below reports a damaged file properly
        return ""
    return speakers[0] if len(speakers) == 1 else ""


def check_prompt_wav(path: str) -> None:
    import soundfile as sf

    if not os.path.isfile(path):
        raise InputError(f"prompt wav not found: {path} (give --prompt_wav an existing audio file)")
    try:
        info = sf.info(path)
    except Exception as e:  # noqa: BLE001 - libsndfile errors vary by format
        raise InputError(f"cannot read prompt wav {path}: {str(e).strip().splitlines()[0]}")
    if info.samplerate < 16000:
        raise InputError(f"prompt wav {path} is sampled at {info.samplerate} Hz; at least 16000 Hz is needed")
    if info.duration > 30:
        raise InputError(f"prompt wav {path} is {info.duration:.1f} s long; at most 30 s (3-10 s is typical)")


def text_jobs(lines, instruction: str, mode: str) -> Dict[str, List[Job]]:
    """{mode: [job per line]} speaking a command-line line (a str) or a text file's lines (``(where, line)`` pairs,
    see :func:`read_text_file`): in ``mode``, or for ``all`` in every mode (instruct only with an instruction)."""
    lines = [("", lines)] if isinstance(lines, str) else lines
    modes = [m for m in MODES if m != "instruct" or instruction.strip()] if mode == "all" else [mode]
    return {m: [Job(m, i, line.strip(), instruction.strip() if m == "instruct" else "", where)
                for i, (where, line) in enumerate(lines)] for m in modes}


def read_text_file(path: str) -> List[Tuple[str, str]]:
    """``("<path> line <n>", line)`` for each non-blank line of a UTF-8 text file (a byte-order mark is dropped), or
    one line naming the problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(f"text file not found: {path} (give --text_file: one line to speak per line)")
    except OSError as e:
        raise InputError(f"cannot read text file {path}: {e.strerror or e}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{path} line {line} is not UTF-8: save the file as UTF-8")
    lines = [(f"{path} line {n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"{path} holds no line to speak (one line per utterance)")
    return lines


def requested_modes(mode: str, jobs: Dict[str, List[Job]], spk_id: str, text_json: str) -> List[str]:
    """``mode``, or for ``all`` every mode the json has lines for."""
    if mode == "all":
        if not jobs:
            raise InputError(f"{text_json}: speaker '{spk_id}' has no lines")
        return [m for m in MODES if m in jobs]
    if mode not in jobs:
        raise InputError(f"{text_json}: speaker '{spk_id}' has no '{JSON_KEYS[mode]}' lines for --mode {mode}")
    return [mode]


def plan_jobs(mode: str, jobs: Dict[str, List[Job]], spk_id: str, known_spks: List[str], text_json: str) -> List[Job]:
    """The jobs to run. ``all``: every mode the json has; SFT only when the model dir knows the speaker."""
    modes = requested_modes(mode, jobs, spk_id, text_json)
    if "sft" in modes and spk_id not in known_spks:
        if mode != "all" and not spk_id:
            raise InputError(f"sft needs a speaker: give --spk_id (the model dir knows: {', '.join(known_spks)})"
                             if known_spks else "sft needs a speaker and the model dir has none (run.sh stage 4 "
                             "writes spk2info.pt for the fine-tuned speaker): use a fine-tuned model dir or zero-shot")
        if mode != "all":
            raise InputError(f"unknown speaker '{spk_id}' for sft; the model dir knows: "
                             f"{', '.join(known_spks) or 'none'} (run.sh stage 4 writes spk2info.pt)")
        if spk_id:
            logger.warning("skipping sft: the model dir's spk2info.pt has no speaker '%s' (known: %s); run.sh stage 4 "
                           "writes it for the fine-tuned speaker", spk_id, ", ".join(known_spks) or "none")
        else:
            logger.warning("skipping sft: no speaker given (--spk_id) and the model dir has %s",
                           f"several: {', '.join(known_spks)}" if known_spks else "none")
        modes.remove("sft")
    return [job for m in modes for job in jobs[m]]


def check_texts(cosyvoice, jobs: List[Job], text_frontend: bool) -> None:
    for job in jobs:
        problem = text_problem(job.text)
        where = job.where or f"{job.mode} line {job.index}"
        if problem and problem[0] != "no_speakable_text":
            raise InputError(f"{where} ({job.text!r}) holds {problem[0].replace('_', ' ')} "
                             f"{problem[1]!r}, which would be read out literally: replace it by the words to say")
        if not [p for p in cosyvoice.frontend.text_normalize(job.text, True, text_frontend) if p.strip()]:
            raise InputError(f"{where} ({job.text!r}) leaves nothing to say after normalization")


# ------------------------------------------------------------------------------------------------- synthesis
def synthesize(cosyvoice, job: Job, spk_id: str, prompt: Tuple[str, str], args):
    """(audio (1, N) float32, number of chunks) for one job."""
    import torch

    common = dict(stream=args.stream == "true", speed=args.speed, text_frontend=args.text_frontend == "true",
                  seed=args.seed)
    wav, text = prompt
    if job.mode == "sft":
        outputs = cosyvoice.inference_sft(job.text, spk_id, **common)
    elif job.mode == "zero-shot":
        outputs = cosyvoice.inference_zero_shot(job.text, text, wav, **common)
    elif job.mode == "cross-lingual":
        outputs = cosyvoice.inference_cross_lingual(job.text, wav, **common)
    else:
        outputs = cosyvoice.inference_instruct2(job.text, job.instruction, wav, **common)
    chunks = [out["tts_speech"] for out in outputs]
    return torch.cat(chunks, dim=1), len(chunks)


def write_index(result_dir: str, rows: List[List[str]]) -> str:
    path = os.path.join(result_dir, INDEX_FILE)
    atomic_write_lines(path, ["file\tmode\tchunks\tduration\trtf\ttext"]
                       + ["\t".join(" ".join(str(x).split()) for x in row) for row in rows])
    return path


def prepare(args):
    """Every input checked and the model loaded, before anything is synthesized: (cosyvoice, speaker, prompt, jobs)."""
    if args.speed <= 0 or (args.stream == "true" and args.speed != 1.0):
        raise InputError(f"--speed {args.speed}: must be > 0, and 1.0 when --stream true")
    spk_id = args.spk_id or default_speaker(args.model_dir, args.characters)
    if args.text or args.text_file:
        jobs = text_jobs(read_text_file(args.text_file) if args.text_file else args.text, args.instruction, args.mode)
    else:
        spk_id, jobs = load_text_json(args.text_json, spk_id)
    source = args.text_file or ("--text" if args.text else args.text_json)
    modes = requested_modes(args.mode, jobs, spk_id, source)
    prompt = ("", "")
    if set(modes) - {"sft"}:
        prompt = resolve_prompt(args, spk_id)
        check_prompt_wav(prompt[0])
        if "zero-shot" in modes and not prompt[1].strip():
            raise InputError("zero-shot needs the prompt's transcript: give --prompt_text")
    # a bad model dir or character: a one-line UserError
    cosyvoice = AutoModel(model_dir=args.model_dir, fp16=args.fp16 == "true", characters=args.characters or None)
    todo = plan_jobs(args.mode, jobs, spk_id, cosyvoice.list_available_spks(), source)
    check_texts(cosyvoice, todo, args.text_frontend == "true")
    if prompt[0]:  # the front end's own checks (too short, silent, ...) before any synthesis
        cosyvoice.frontend._extract_speech_token(prompt[0])
    return cosyvoice, spk_id, prompt, todo


@entry_point("inference.py")
def main(argv=None) -> int:
    args = get_args(argv)
    cosyvoice, spk_id, prompt, todo = prepare(args)
    set_all_random_seed(args.seed)
    os.makedirs(args.result_dir, exist_ok=True)
    rows = []
    for job in tqdm(todo, desc="synthesis", unit="line"):
        start = time.time()
        audio, n_chunks = synthesize(cosyvoice, job, spk_id, prompt, args)
        elapsed = time.time() - start
        seconds = audio.shape[1] / cosyvoice.sample_rate
        save_wav(os.path.join(args.result_dir, job.name), audio, cosyvoice.sample_rate)
        rtf = elapsed / seconds if seconds > 0 else float("nan")
        rows.append([job.name, job.mode, n_chunks, f"{seconds:.3f}", f"{rtf:.3f}", job.text])
    index = write_index(args.result_dir, rows)
    logger.info("wrote %d wav(s) and %s", len(rows), index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
