#!/usr/bin/env python3
"""Stage 8: before/after evaluation of a fine-tuned voice, written as ``report.html`` + ``metrics.json``.

    python -m cosyvoice.bin.evaluate --pretrained_model_dir exp/pretrained/CosyVoice2-0.5B \\
        --model_dir exp/sft/model --test_data_dir data/test --prompt_data_dir data/train --exp_dir exp/sft \\
        [--asr_model_dir pretrained/whisper-large-v3]

Every held-out test text of the speaker is synthesized by the base model (zero-shot, prompted with one training
clip) and by the fine-tuned model (SFT speaker), and scored against the real recording: CAM++ speaker similarity,
CER/WER from the ASR model (skipped, with the reason, when none is given or it cannot be loaded), duration ratio
and real-time factor (see cosyvoice/eval/runner.py). Writes into --exp_dir: ``report_audio/{real,base,sft}/*.wav``,
``report_plots/*.png``, ``metrics.json`` and ``report.html`` (with the training curves of --train_dirs).

A test set of several speakers (a multi-speaker run; no --spk_id) is evaluated per speaker: ``metrics.json``
``speakers.<spk>`` holds each one's summary and prompt (``summary`` pools them all), and ``separation`` whether each
speaker's synthesized clips are closer to its own real clips than to any other speaker's. ``--characters`` (a LoRA
run's ``<exp>/characters/<spk>``) are loaded onto ``--model_dir`` for the fine-tuned system, and stage 8's figures of
each are written into its character.json.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
import sys
from typing import List, Optional

import torch

from cosyvoice.cli.character import find_characters, read_character, update_metrics
from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.eval import runner
from cosyvoice.eval.asr import load_asr
from cosyvoice.eval.metrics import SpeakerEmbedder
from cosyvoice.eval.report import write_report
from cosyvoice.eval.runner import EvalInputError
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import str2bool
from cosyvoice.utils.pretrained import CAMPPLUS_FILE, check_pretrained_dir, is_stand_in, model_version, SPK2INFO_FILE

logger = logging.getLogger("cosyvoice.bin.evaluate")


def get_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained_model_dir", required=True,
                   help="the base CosyVoice2-0.5B or Fun-CosyVoice3-0.5B dir (zero-shot)")
    p.add_argument("--model_dir", required=True, help="the fine-tuned model dir (spk2info.pt with the speaker)")
    p.add_argument("--test_data_dir", required=True, help="Kaldi data dir of the held-out test clips")
    p.add_argument("--prompt_data_dir", required=True, help="Kaldi data dir to take the zero-shot prompt from")
    p.add_argument("--exp_dir", required=True, help="where report.html, metrics.json and the wavs go")
    p.add_argument("--spk_id", default="", help="the speaker [every speaker of the test set]")
    p.add_argument("--characters", nargs="*", default=[],
                   help="character folders (a LoRA run's <exp>/characters/<spk>) loaded onto --model_dir for the "
                        "fine-tuned system")
    p.add_argument("--prompt_utt", default="", help="prompt utterance [the training clip closest to 5 s]")
    p.add_argument("--asr_model_dir", default="", help="Whisper or Paraformer dir for CER/WER [none: skipped]")
    p.add_argument("--asr_backend", default="auto", choices=["auto", "whisper", "paraformer"])
    p.add_argument("--max_utts", type=int, default=0, help="evaluate this many test texts, spread evenly [0: all]")
    p.add_argument("--max_token_text_ratio", type=float, default=None,
                   help="cap speech tokens at this many per text token [the model's default, 20]")
    p.add_argument("--seed", type=int, default=1986, help="seed of every synthesis")
    p.add_argument("--num_threads", type=int, default=0,
                   help="torch CPU threads (1 is fastest for the tiny stand-in on a busy CPU) [0: torch's default]")
    p.add_argument("--train_dirs", nargs="*", default=None,
                   help="training model dirs whose curves the report shows [<exp_dir>/llm <exp_dir>/flow]")
    p.add_argument("--embed_audio", type=str2bool, default=False,
                   help="embed the wavs in report.html (one self-contained file) instead of linking them")
    return p.parse_args(argv)


def check_inputs(args, speakers) -> List[str]:
    """Fail before any synthesis: model dirs complete, every speaker known to the fine-tuned model (its spk2info.pt
    or a character). Returns the speakers of its spk2info.pt (none without one)."""

    check_pretrained_dir(args.pretrained_model_dir)
    check_pretrained_dir(args.model_dir, version=model_version(args.pretrained_model_dir))  # one model, two weights
    known = {read_character(c, verify=False).spk_id: c for c in find_characters(args.characters)}
    table = os.path.join(args.model_dir, SPK2INFO_FILE)
    in_table = list(torch.load(table, map_location="cpu", weights_only=True)) if os.path.isfile(table) else []
    if in_table:
        known.update({spk: table for spk in in_table if spk not in known})
    elif not known:
        raise EvalInputError(f"{table} not found: run stage 4 first (it writes the fine-tuned model dir)")
    for spk in speakers:
        if spk not in known:
            raise EvalInputError(f"speaker '{spk}' is not in {table if os.path.isfile(table) else args.model_dir}"
                                 f"{' or the characters' if args.characters else ''} (it has: "
                                 f"{', '.join(sorted(known))}); pass --spk_id or rerun stage 4")
    return in_table


def evaluate(args) -> dict:

    speakers = {spk: runner.spread(items, args.max_utts)
                for spk, items in runner.read_speakers(args.test_data_dir, args.spk_id).items()}
    if args.prompt_utt and len(speakers) > 1:
        raise runner.EvalInputError(f"--prompt_utt {args.prompt_utt}: {args.test_data_dir} has several speakers "
                                    f"({', '.join(speakers)}): choose one with --spk_id")
    prompts = {spk: runner.choose_prompt(args.prompt_data_dir, spk, args.prompt_utt) for spk in speakers}
    trained = check_inputs(args, speakers)
    untested = [spk for spk in trained if spk not in speakers]
    if untested and not args.spk_id:  # a cast member too small to hold a clip out (local/prepare_data.py --in_cast)
        logger.info("speaker(s) %s: no test text in %s, so not evaluated here", ", ".join(untested),
                    args.test_data_dir)
    items = sorted((it for its in speakers.values() for it in its), key=lambda it: it.utt)
    for spk, its in speakers.items():
        logger.info("speaker %s: %d test text(s); zero-shot prompt %s", spk, len(its), prompts[spk].utt)
    # written aside (report_audio.new) and swapped in by main() once everything is scored: a failed run leaves
    # the previous report and its audio as they were
    audio_dir = os.path.join(os.path.abspath(args.exp_dir), "report_audio.new")
    shutil.rmtree(audio_dir, ignore_errors=True)
    audio = {"real": runner.copy_real(items, os.path.join(audio_dir, "real"))}
    for system, model_dir in (("base", args.pretrained_model_dir), ("sft", args.model_dir)):
        cosyvoice = AutoModel(model_dir=model_dir, characters=args.characters if system == "sft" else None)
        runner.limit_speech_tokens(cosyvoice.model.llm, args.max_token_text_ratio)
        audio[system] = {}
        for spk, its in speakers.items():
            audio[system].update(runner.synthesize_items(cosyvoice, its, system, os.path.join(audio_dir, system),
                                                         args.seed, prompt=prompts[spk]))
        del cosyvoice
        runner.free_memory()
    asr, asr_status = load_asr(args.asr_model_dir, args.asr_backend)
    embedder = SpeakerEmbedder(os.path.join(args.pretrained_model_dir, CAMPPLUS_FILE))
    rows, per_speaker = [], {}
    for spk, its in speakers.items():
        utts = {it.utt for it in its}
        spk_summary, spk_rows = runner.score(its, {k: {u: v for u, v in t.items() if u in utts}
                                                   for k, t in audio.items()}, embedder, asr)
        rows += spk_rows
        prompt = prompts[spk]
        per_speaker[spk] = {"summary": spk_summary, "utts": sorted(utts),
                            "prompt": {"utt": prompt.utt, "text": prompt.text, "wav": prompt.wav}}
    rows.sort(key=lambda r: r["utt"])
    summary = runner.summarize(rows, list(audio), asr is not None)
    first = prompts[next(iter(speakers))]
    metrics = {
        "speaker": ", ".join(speakers), "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "model_version": model_version(args.pretrained_model_dir).name,
        "model_title": model_version(args.pretrained_model_dir).title,
        "pretrained_model_dir": os.path.abspath(args.pretrained_model_dir),
        "model_dir": os.path.abspath(args.model_dir), "test_data_dir": os.path.abspath(args.test_data_dir),
        "characters": [os.path.abspath(c) for c in args.characters],
        "prompt": {"utt": first.utt, "text": first.text, "wav": first.wav}, "seed": args.seed,
        "max_token_text_ratio": args.max_token_text_ratio, "asr": asr_status, "systems": runner.SYSTEMS,
        "summary": summary, "utterances": rows, "speakers": per_speaker,
        "stand_in": {"base": is_stand_in(args.pretrained_model_dir), "sft": is_stand_in(args.model_dir)},
    }
    if len(speakers) > 1:
        metrics["separation"] = runner.speaker_separation(speakers, audio, embedder)
    return metrics


def record_in_characters(metrics: dict, characters) -> None:
    """Each evaluated character's own figures go into its character.json (``metrics``)."""

    for path in find_characters(characters):
        spk = read_character(path, verify=False).spk_id
        if spk in metrics["speakers"]:
            sep = metrics.get("separation", {}).get("sft", {}).get("speakers", {}).get(spk)
            update_metrics(path, {"report": os.path.abspath(os.path.join(metrics["exp_dir"], "report.html")),
                                  "created": metrics["created"], "sft": metrics["speakers"][spk]["summary"]["sft"],
                                  "base": metrics["speakers"][spk]["summary"]["base"], "separation": sep,
                                  "asr": metrics["asr"]})


def swap_in_audio(metrics: dict, audio_dir: str) -> None:
    """Move ``<audio_dir>.new`` (this run's clips) onto ``audio_dir`` and point the metrics' wav paths there."""
    new, old = audio_dir + ".new", audio_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(audio_dir):
        os.rename(audio_dir, old)
    os.rename(new, audio_dir)
    shutil.rmtree(old, ignore_errors=True)
    for row in metrics["utterances"]:
        for entry in row.values():
            if isinstance(entry, dict) and str(entry.get("wav", "")).startswith(new + os.sep):
                entry["wav"] = audio_dir + entry["wav"][len(new):]


@entry_point("evaluate.py")
def main(argv: Optional[List[str]] = None) -> int:
    args = get_args(argv)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    metrics = evaluate(args)  # a bad test set, prompt, speaker, model dir, checkpoint: one line, exit 2
    swap_in_audio(metrics, os.path.join(os.path.abspath(args.exp_dir), "report_audio"))
    metrics["exp_dir"] = os.path.abspath(args.exp_dir)
    train_dirs = args.train_dirs
    if train_dirs is None:
        train_dirs = [d for d in (os.path.join(args.exp_dir, m) for m in ("llm", "flow")) if os.path.isdir(d)]
    report = write_report(args.exp_dir, metrics, train_dirs, embed_audio=args.embed_audio)
    if args.characters:
        record_in_characters(metrics, args.characters)
    for system in ("base", "sft"):
        s = {k: (float("nan") if v is None else v) for k, v in metrics["summary"][system].items()}
        logger.info("%s: SIM %.3f (same text %.3f), error rate %s, duration ratio %.2f, RTF %.3f", system,
                    s["sim_centroid"], s["sim_real"],
                    "skipped" if metrics["summary"][system]["error_rate"] is None else f"{100 * s['error_rate']:.1f}%",
                    s["duration_ratio"], s["rtf"])
    for system, sep in metrics.get("separation", {}).items():
        for spk, row in sep["speakers"].items():
            logger.info("%s: speaker %s's clips are closest to %s's real clips%s", system, spk, row["closest"],
                        "" if row["ok"] else " (not its own)")
    logger.info("report: %s", os.path.abspath(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
