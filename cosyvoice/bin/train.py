"""Fine-tune the CosyVoice2 or CosyVoice3 speech-token LLM or flow-matching decoder on parquet data lists.

One process (CPU or one GPU)::
    python -m cosyvoice.bin.train --model llm --config <pretrained>/cosyvoice2.yaml \\
        --checkpoint <pretrained>/llm.pt --train_data data/train/parquet/data.list \\
        --cv_data data/test/parquet/data.list --model_dir exp/sft/llm

(a CosyVoice3 model: its cosyvoice3.yaml; the trainer is the same.)

Several processes: ``torchrun --nproc_per_node N -m cosyvoice.bin.train ...`` (nccl on GPUs, gloo on the CPU);
``--train_engine deepspeed --deepspeed_config conf/ds_stage2.json`` for DeepSpeed ZeRO-2.

The model dir receives: ``config.yaml`` (the yaml with this run's options: what average/export read),
``train.cmd`` (every command with its git commit), ``train.log``, checkpoints ``epoch_N_whole.pt`` /
``epoch_N_step_S.pt`` with their ``.ckpt.json`` sidecars and resume states, ``tensorboard/``, ``swanlog/`` and,
with ``--sample_texts``, SFT samples ``samples/epoch_N/*.wav`` (the samples and ``--eval_every_epoch`` synthesize
with one shared model: cosyvoice/eval/epoch.py). With ``--finetune lora`` the weights are frozen and
LoRA adapters are trained instead; the checkpoints then hold the adapter only (see cosyvoice/utils/lora.py).
``--speaker_tag true`` trains a multi-speaker SFT model: each text is read after its speaker's
``<spk><|endofprompt|>``. ``--resume`` continues from the newest intact
checkpoint exactly as if the run had not stopped. A run that diverges (see cosyvoice/utils/divergence.py) stops
with one line and exit status 2 and leaves ``diverged.json``; so does any bad input (exit status 2, no traceback).
Temp files that killed runs left in the model dir are removed at start.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch

from cosyvoice.dataset.dataset import check_parquet_lists
from cosyvoice.eval.epoch import EpochEvaluator, EpochModel, read_sample_texts, SampleRenderer, tracker_scalars
from cosyvoice.utils import checkpoint as ckpt, train_utils as tu
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import set_all_random_seed
from cosyvoice.utils.divergence import DIVERGED_FILE, read_diverged
from cosyvoice.utils.errors import one_line
from cosyvoice.utils.executor import Executor
from cosyvoice.utils.fingerprint import list_content_digest
from cosyvoice.utils.lifeline import die_with_torchrun_agent
from cosyvoice.utils.trackers import init_tracker, SWANLAB_MODES

logger = logging.getLogger("cosyvoice.bin.train")
DS_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "ds_stage2.json"
DATA_RECORD = "train_data.json"  # which data the checkpoints of a model dir were trained on


def get_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune the CosyVoice2 or CosyVoice3 llm or flow.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=tu.MODELS, help="which model to train")
    p.add_argument("--config", required=True, help="cosyvoice2.yaml or cosyvoice3.yaml (official format)")
    p.add_argument("--train_data", required=True, help="data.list of training parquet files")
    p.add_argument("--cv_data", required=True, help="data.list of CV parquet files")
    p.add_argument("--model_dir", required=True, help="experiment dir for this model (checkpoints, logs)")
    p.add_argument("--checkpoint", help="initial weights (e.g. <pretrained>/llm.pt), loaded strictly")
    p.add_argument("--pretrained_model_dir", help="pretrained model dir (Qwen tokenizer, sample rendering)")
    p.add_argument("--qwen_pretrain_path", help="CosyVoice-BlankEN dir [<checkpoint dir>/CosyVoice-BlankEN]")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in model_dir")
    p.add_argument("--train_engine", default="torch_ddp", choices=["torch_ddp", "deepspeed"])
    p.add_argument("--deepspeed_config", default=str(DS_CONFIG), help="DeepSpeed json (deepspeed engine)")
    p.add_argument("--dist_backend", default="auto", choices=["auto", "nccl", "gloo"],
                   help="auto: nccl on GPUs, gloo on the CPU")
    p.add_argument("--use_amp", nargs="?", const="bf16", default=None, choices=sorted(tu.AMP_DTYPES),
                   help="mixed precision (bf16, or fp16 with a grad scaler); off when not given")
    p.add_argument("--seed", type=int, default=1986, help="seed of data order, init and every random draw")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes per rank")
    p.add_argument("--prefetch", type=int, default=100, help="batches prefetched per worker")
    p.add_argument("--pin_memory", action="store_true")
    p.add_argument("--keep_states", type=int, default=2,
                   help="resume states kept (newest N checkpoints; weights are always kept); <= 0 keeps all")
    p.add_argument("--finetune", default=None, choices=["full", "lora"],
                   help="full: train every weight; lora: LoRA adapters (train_conf.<model>_lora) on the frozen "
                        "weights, checkpoints hold the adapter only [the yaml's train_conf.finetune, else full]")
    p.add_argument("--speaker_tag", default=None, choices=["true", "false"],
                   help="train on '<spk><|endofprompt|>' + text (multi-speaker SFT) [the yaml's train_conf."
                        "speaker_tag, else false]")
    for option, keys in tu.TRAIN_OVERRIDES.items():
        kind = float if option in ("lr", "grad_clip") else int
        extra = " (with --finetune lora: train_conf.<model>_lora.lr)" if option == "lr" else ""
        p.add_argument(f"--{option}", type=kind, default=None, help=f"override {'.'.join(keys)} of the yaml{extra}")
    p.add_argument("--tensorboard_dir", help="TensorBoard dir [<model_dir>/tensorboard]")
    p.add_argument("--swanlab", default="auto", choices=SWANLAB_MODES,
                   help="SwanLab: auto = cloud when logged in, else local/offline; off = TensorBoard only")
    p.add_argument("--swanlab_project", default="cosyvoice2-sft")
    p.add_argument("--sample_texts", help="json list (or {name: text}) of texts to synthesize after each epoch")
    p.add_argument("--sample_model_dir", help="model dir with spk2info.pt to synthesize with [--pretrained_model_dir]")
    p.add_argument("--sample_spk", help="speaker id of spk2info.pt for the samples [the first one]")
    p.add_argument("--sample_llm", help="fine-tuned llm (an llm.pt, or an llm training dir: its newest checkpoint) "
                   "to pair with the new flow in samples (llm_flow); a dir without checkpoints is skipped")
    p.add_argument("--eval_every_epoch", default="false", choices=["true", "false"],
                   help="after each epoch, synthesize a fixed subset of the test texts and log SIM (and CER)")
    p.add_argument("--eval_model_dir", help="model dir to evaluate in, with spk2info.pt (stage 4) [--pretrained_model_dir]")
    p.add_argument("--eval_data_dir", help="Kaldi data dir of the speaker's test clips (e.g. data/test)")
    p.add_argument("--eval_spk_data_dir", help="data dir with spk2embedding.pt, when --eval_model_dir has no spk2info.pt")
    p.add_argument("--eval_num_utts", type=int, default=4, help="texts in the per-epoch subset")
    p.add_argument("--asr_model_dir", default="", help="Whisper/Paraformer dir for the per-epoch CER [none]")
    p.add_argument("--eval_max_token_text_ratio", type=float, default=None, help="speech-token cap per text token")
    return p.parse_args(argv)


def setup_run(args, info: tu.DistInfo):
    """Check options, write config.yaml and train.cmd, build model/data/config. Returns (configs, model_dir)."""
    model_dir = Path(args.model_dir)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise tu.TrainSetupError(f"--checkpoint {args.checkpoint} not found (pass the pretrained "
                                 f"{args.model}.pt, or leave it out to train from scratch)")
    existing = ckpt.list_checkpoints(model_dir) if model_dir.is_dir() else []
    if existing and not args.resume:
        raise tu.TrainSetupError(f"{model_dir} already holds checkpoints ({existing[-1].name}, ...): pass --resume "
                                 "to continue, or choose a new --model_dir")
    data = check_training_data(args, model_dir, resuming=bool(existing))
    diverged = read_diverged(model_dir)
    if diverged is not None and args.resume:
        raise tu.TrainSetupError(f"{model_dir} holds a run that diverged at epoch {diverged.get('epoch')} step "
                                 f"{diverged.get('step')} ({model_dir / DIVERGED_FILE}): do not resume it; start over "
                                 f"in a new --model_dir, or delete this one (run.sh --force true), with the fix")
    if diverged is not None and info.is_main:  # a fresh run in the dir of an old diverged one without checkpoints
        (model_dir / DIVERGED_FILE).unlink()
    args.qwen_pretrain_path = tu.resolve_qwen_path(args)
    config_path = model_dir / "config.yaml"
    # every rank checks the yaml (strictly), so a bad one fails all of them alike, before anything is written
    finetune = args.finetune or tu.yaml_train_conf_value(args.config, "finetune", "full")
    text = tu.train_config_text(args.config, tu.config_overrides(args, finetune))
    if info.is_main:
        ckpt.atomic_write_text(model_dir / DATA_RECORD, json.dumps(data, indent=1) + "\n")
        before = config_path.read_text(encoding="utf-8") if existing and config_path.is_file() else None
        ckpt.atomic_write_text(config_path, text)
        if before is not None and before != text:
            changed = sorted(set(text.splitlines()) ^ set(before.splitlines()))
            logger.warning("config.yaml differs from the checkpointed run's (%s): the run continues with the new "
                           "one, so it is no longer an exact continuation", "; ".join(changed[:6]))
        tu.record_experiment(model_dir, sys.argv[1:] if args.argv is None else args.argv)
    tu.barrier(info)
    return tu.load_train_config(config_path, args.model), model_dir


def check_training_data(args, model_dir: Path, resuming: bool) -> dict:
    """What this run trains on (the lists and a digest of their shards' content); resuming checkpoints that were
    trained on other data is refused, naming both."""
    for option, path in (("--train_data", args.train_data), ("--cv_data", args.cv_data)):
        if not Path(path).is_file():
            raise tu.TrainSetupError(f"{option} {path} not found: make it with stage 3 (tools/make_parquet_list.py)")
    for path in (args.train_data, args.cv_data):
        check_parquet_lists(path)  # a missing or truncated shard: one line naming it
    try:
        data = {"train_data": os.path.abspath(args.train_data), "train_sha256": list_content_digest(args.train_data),
                "cv_data": os.path.abspath(args.cv_data), "cv_sha256": list_content_digest(args.cv_data),
                "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None}
    except OSError as e:
        raise tu.TrainSetupError(f"cannot read a parquet shard listed in {args.train_data} or {args.cv_data}: "
                                 f"{e}; rerun stage 3") from e
    record = model_dir / DATA_RECORD
    if resuming and record.is_file():
        before = json.loads(record.read_text(encoding="utf-8"))
        if before.get("train_sha256") != data["train_sha256"]:
            raise tu.TrainSetupError(
                f"--resume: the checkpoints in {model_dir} were trained on {before.get('train_data')} "
                f"(content {str(before.get('train_sha256'))[:12]}), not on {data['train_data']} "
                f"(content {data['train_sha256'][:12]}): start over in a new --model_dir (run.sh: --force true or "
                f"another --tag)")
    return data


def main(argv: Optional[List[str]] = None) -> int:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker: end with the agent (run.sh stopped, agent killed)
        die_with_torchrun_agent()
    args = get_args(argv)
    args.argv = argv
    info = tu.init_distributed(args.train_engine, args.dist_backend)
    log_file = tu.init_logging(Path(args.model_dir), info)
    logger.info("train.py %s", " ".join(sys.argv[1:] if argv is None else argv))
    if info.is_main:
        stale = ckpt.clean_stale_temp([args.model_dir])
        if stale:
            logger.info("removed %d temp file(s) that killed runs left: %s", len(stale), ", ".join(map(str, stale)))
    set_all_random_seed(args.seed + info.rank)
    try:
        configs, model_dir = setup_run(args, info)
    except Exception as e:
        e.same_on_every_rank = True  # options, files and config are checked alike on every rank (see cli)
        raise
    conf = configs["train_conf"]
    model = tu.init_model(configs[args.model], args.checkpoint)
    model = tu.init_finetune(model, conf, args.model, args.seed).to(info.device)
    if info.is_main:
        tu.record_finetune(model_dir, model, conf, args.model)
    train_set, train_loader, cv_loader = tu.init_dataloaders(args, configs)
    optimizer = tu.init_optimizer(model, conf, args.model)
    scheduler = tu.init_scheduler(optimizer, conf)
    scaler = None
    if args.train_engine == "deepspeed":
        ds_config = tu.deepspeed_config(args.deepspeed_config, conf, args.use_amp, model_dir / "ds_config.json")
        model, optimizer, scheduler = tu.init_deepspeed(model, optimizer, scheduler, ds_config)
    else:
        model = tu.wrap_ddp(model, info)
        if args.use_amp == "fp16":
            scaler = torch.amp.GradScaler(info.device.type)
    tracker = init_tracker(model_dir, Path(args.tensorboard_dir or model_dir / "tensorboard"), args.swanlab,
                           args.swanlab_project, model_dir.name, {"args": vars(args), "train_conf": conf},
                           is_main=info.is_main)
    epoch_models = EpochModels()
    renderer = make_renderer(args, model, tracker, model_dir, info, epoch_models)
    evaluator = make_epoch_evaluator(args, model, tracker, model_dir, info, epoch_models)
    hooks = [h for h in (renderer, evaluator) if h is not None]
    executor = Executor(model, optimizer, scheduler, conf, info, model_dir, train_engine=args.train_engine,
                        amp_dtype=args.use_amp, scaler=scaler, tracker=tracker, keep_states=args.keep_states,
                        on_epoch_end=(lambda epoch, step: [h(epoch, step) for h in hooks]) if hooks else None,
                        check_batch=tu.speech_token_check(tu.unwrap(model), [args.train_data, args.cv_data]))
    if args.resume:
        found = ckpt.find_resume_checkpoint(model_dir)
        if found is None:
            logger.warning("--resume: %s holds no checkpoint yet; starting from the beginning", model_dir)
        else:
            executor.resume(found)
    try:
        executor.fit(train_set, train_loader, cv_loader)
    finally:
        tracker.close()
    if info.is_main:
        report_outputs(args, model_dir, log_file, tracker)
    tu.destroy_distributed(info)
    return 0


def report_outputs(args, model_dir: Path, log_file: Path, tracker) -> None:
    tb = Path(args.tensorboard_dir or model_dir / "tensorboard")
    checkpoints = ckpt.list_checkpoints(model_dir)
    size = (model_dir / checkpoints[-1].model_file).stat().st_size / 2 ** 20 if checkpoints else 0.0
    what = "LoRA adapter only" if checkpoints and checkpoints[-1].finetune == "lora" else "all weights"
    logger.info("done: %d checkpoint(s) %s/epoch_*.pt of %.2f MB each (%s), log %s", len(checkpoints), model_dir,
                size, what, log_file)
    logger.info("curves: tensorboard --logdir %s%s", tb, "".join(
        f"; SwanLab {t.mode}: {t.log_dir}" for t in getattr(tracker, "trackers", []) if t.name == "swanlab"))
    if args.sample_texts:
        logger.info("SFT samples of each epoch: %s/samples/epoch_*/", model_dir)


class EpochModels:
    """One :class:`EpochModel` per model dir, shared by the sample and evaluation hooks (one extra model, not two)."""

    def __init__(self):
        self.models = {}

    def __call__(self, model_dir: str, seed: int) -> EpochModel:
        key = os.path.realpath(model_dir)
        if key not in self.models:
            self.models[key] = EpochModel(model_dir, seed)
        return self.models[key]


def make_renderer(args, model, tracker, model_dir: Path, info: tu.DistInfo, epoch_models: EpochModels):
    """The per-epoch SFT sample hook (rank 0 only), or None without ``--sample_texts``."""
    if not args.sample_texts:
        return None

    sample_dir = args.sample_model_dir or args.pretrained_model_dir
    if not sample_dir:
        raise tu.TrainSetupError("--sample_texts needs --sample_model_dir (a model dir with spk2info.pt)")
    read_sample_texts(args.sample_texts)  # a bad file fails now, not after the first epoch
    tuned_llm = sample_llm_file(args.sample_llm) if args.model == "flow" and args.sample_llm else None
    if not info.is_main:
        return None
    renderer = SampleRenderer(args.model, sample_dir, args.sample_texts, model_dir / "samples",
                              spk_id=args.sample_spk, base_llm=tuned_llm, seed=args.seed,
                              epoch_model=epoch_models(sample_dir, args.seed))
    return lambda epoch, step: renderer(tu.unwrap(model), epoch, step, tracker)


def make_epoch_evaluator(args, model, tracker, model_dir: Path, info: tu.DistInfo, epoch_models: EpochModels):
    """The per-epoch SIM/CER hook (rank 0 only), or None without ``--eval_every_epoch true``."""
    if args.eval_every_epoch != "true":
        return None
    eval_model_dir = args.eval_model_dir or args.pretrained_model_dir
    if not eval_model_dir or not args.eval_data_dir:
        raise tu.TrainSetupError("--eval_every_epoch true needs --eval_data_dir (the test clips) and "
                                 "--eval_model_dir (the stage-4 model dir) or --pretrained_model_dir")
    if not info.is_main:
        return None

    evaluator = EpochEvaluator(eval_model_dir, args.eval_data_dir, args.eval_spk_data_dir,
                               num_utts=args.eval_num_utts, asr_model_dir=args.asr_model_dir,
                               max_token_text_ratio=args.eval_max_token_text_ratio,
                               epoch_model=epoch_models(eval_model_dir, args.seed))

    def hook(epoch: int, step: int) -> None:
        metrics = evaluator(tu.unwrap(model), args.model, epoch, model_dir=str(model_dir))
        tracker.log_scalars(tracker_scalars(metrics), step)

    return hook


def sample_llm_file(path: str) -> Optional[str]:
    """--sample_llm: the file itself, or the newest intact checkpoint of an llm training dir (None if it has none)."""
    p = Path(path)
    if p.is_file():
        return str(p)
    if not p.is_dir():
        raise tu.TrainSetupError(f"--sample_llm {path} not found (an llm.pt, or the llm's training dir)")
    for info in reversed(ckpt.list_checkpoints(p)):
        try:
            ckpt.verify_checkpoint(p, info, need_state=False)
        except ckpt.CheckpointCorrupt as e:
            logger.warning("--sample_llm: skipping %s (%s)", info.name, e)
            continue
        logger.info("samples pair the new flow with the fine-tuned llm %s", p / info.model_file)
        return str(p / info.model_file)
    logger.info("--sample_llm %s holds no checkpoint: samples use the base llm only", path)
    return None


def _told_once(e: BaseException) -> bool:
    """Into train.log always; on the console once: a setup error is the same on every rank (rank 0 says it), any
    other is said by the rank it happened on."""
    logger.error("%s", one_line(e), extra={"file_only": True})  # the console gets the one line of entry_point
    return os.environ.get("RANK", "0") == "0" or not getattr(e, "same_on_every_rank", False)


# a bad option, file, checkpoint or data, a full disk or a diverging run: one line (exit status 2), not a traceback
cli = entry_point("train.py", on_error=_told_once, logging_setup=None)(main)


if __name__ == "__main__":
    sys.exit(cli())
