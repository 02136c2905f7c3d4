"""Small named helpers of ``cosyvoice/bin/train.py``: distributed setup, logging, config, model, data, optimizer.

Each helper does one thing and fails with one clear line; the training loop itself is in
:mod:`cosyvoice.utils.executor`.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shlex
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from cosyvoice.dataset import processor
from cosyvoice.dataset.dataset import _stage_name, check_speech_tokens, Dataset
from cosyvoice.utils.checkpoint import atomic_write_text
from cosyvoice.utils.common import load_checkpoint_strict
from cosyvoice.utils import lora
from cosyvoice.utils.config import (_read, check_config_text, drop_seed_lines, load_config, top_level_keys,
                                    translate_config_text)
from cosyvoice.utils.config_keys import OPTIMIZERS
from cosyvoice.utils.errors import TrainSetupError, UserError  # noqa: F401 (TrainSetupError: part of this API)
from cosyvoice.utils.scheduler import build_scheduler

logger = logging.getLogger(__name__)

MODELS = ("llm", "flow")
QWEN_DIR = "CosyVoice-BlankEN"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------ distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(train_engine: str, dist_backend: str = "auto") -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device and start the process group.

    One process without torchrun runs without a process group (unless DeepSpeed needs one). ``auto`` chooses
    nccl when CUDA is available and gloo on the CPU.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    backend = dist_backend if dist_backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise TrainSetupError("--dist_backend nccl needs CUDA; this machine has no GPU (use gloo or auto)")
    if train_engine == "deepspeed":
        import deepspeed

        if "MASTER_ADDR" not in os.environ:  # a plain `python train.py` run: a one-process group of its own
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                              LOCAL_RANK="0")
        deepspeed.init_distributed(dist_backend=backend)
    elif world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    if not (dist.is_available() and dist.is_initialized()):
        backend = None
    return DistInfo(rank, world_size, local_rank, device, backend)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def barrier(info: DistInfo) -> None:
    if info.backend is not None:
        dist.barrier()


def all_gather_object(obj: Any, info: DistInfo) -> List[Any]:
    if info.backend is None:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_min(value: int, info: DistInfo) -> int:
    """The smallest ``value`` over all ranks (every rank must call it)."""
    if info.backend is None:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_reduce_mean(values: Dict[str, float], info: DistInfo) -> Dict[str, float]:
    """Average each value over the ranks (every rank must call it with the same keys)."""
    if info.backend is None or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def destroy_distributed(info: DistInfo) -> None:
    if info.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ logging
class _FileOnly(logging.Filter):
    """Keeps records logged with ``extra={"file_only": True}`` off the console (train.py prints those itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, world_size: int):
        super().__init__()
        self.tag = f"({rank}/{world_size})"

    def filter(self, record: logging.LogRecord) -> bool:
        record.rankinfo = self.tag
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(rankinfo)s %(message)s"


def init_logging(model_dir: Path, info: DistInfo, level: int = logging.INFO) -> Path:
    """Log to the console and to ``<model_dir>/train.log`` (rank 0) or ``train.rank<N>.log``; returns the file."""
    model_dir.mkdir(parents=True, exist_ok=True)
    name = "train.log" if info.rank == 0 else f"train.rank{info.rank}.log"
    path = model_dir / name
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_cosyvoice_train", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter(LOG_FORMAT)
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_FileOnly())
    for handler in (console, logging.FileHandler(path, encoding="utf-8")):
        handler.setFormatter(fmt)
        handler.addFilter(_RankFilter(info.rank, info.world_size))
        handler._cosyvoice_train = True
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("matplotlib", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


# ------------------------------------------------------------------------------------------------ config
# Training options that may override the yaml, as {option: path of keys in the yaml}. Nothing else can.
TRAIN_OVERRIDES = {
    "max_epoch": ("train_conf", "max_epoch"),
    "lr": ("train_conf", "optim_conf", "lr"),
    "accum_grad": ("train_conf", "accum_grad"),
    "grad_clip": ("train_conf", "grad_clip"),
    "log_interval": ("train_conf", "log_interval"),
    "save_per_step": ("train_conf", "save_per_step"),
    "max_frames_in_batch": ("batch", "max_frames_in_batch"),
}


# train_conf keys a yaml may lack (an official cosyvoice2.yaml does): they then take their defaults, and an option
# may add them (finetune: full; llm_lora / flow_lora: cosyvoice/utils/lora.py's defaults; speaker_tag: false)
OPTIONAL_TRAIN_KEYS = ("finetune", "llm_lora", "flow_lora", "speaker_tag")


def config_overrides(args, finetune: str = "full") -> Dict[str, Any]:
    """Nested hyperpyyaml overrides from ``qwen_pretrain_path``, the options of :data:`TRAIN_OVERRIDES` and
    ``--finetune`` / ``--speaker_tag``. With LoRA (``finetune``: the mode this run trains in) ``--lr`` is the
    adapters' learning rate, ``train_conf.<model>_lora.lr``."""
    out: Dict[str, Any] = {"qwen_pretrain_path": str(Path(args.qwen_pretrain_path).resolve())}

    def put(keys, value):
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    for option, keys in TRAIN_OVERRIDES.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if option == "lr" and finetune == "lora":
            keys = ("train_conf", f"{args.model}_lora", "lr")
        put(keys, value)
    if getattr(args, "finetune", None):
        put(("train_conf", "finetune"), args.finetune)
    if getattr(args, "speaker_tag", None) is not None:
        put(("train_conf", "speaker_tag"), str(args.speaker_tag).lower() == "true")
    return out


def yaml_train_conf_value(src: str, key: str, default: Any = None) -> Any:
    """``train_conf.<key>`` of the yaml ``src`` as written (nothing built), or ``default``."""
    from ruamel.yaml import YAML

    tree = YAML(typ="rt").load(translate_config_text(_read(src)))
    conf = (tree or {}).get("train_conf") or {}
    return conf.get(key, default)


def resolve_qwen_path(args) -> str:
    """``--qwen_pretrain_path``, else ``CosyVoice-BlankEN`` beside ``--checkpoint`` or in ``--pretrained_model_dir``."""
    if args.qwen_pretrain_path:
        path = Path(args.qwen_pretrain_path)
    else:
        candidates = []
        if args.checkpoint:
            candidates.append(Path(args.checkpoint).resolve().parent / QWEN_DIR)
        if args.pretrained_model_dir:
            candidates.append(Path(args.pretrained_model_dir) / QWEN_DIR)
        path = next((c for c in candidates if c.is_dir()), None)
        if path is None:
            raise TrainSetupError("cannot find the Qwen tokenizer dir: give --qwen_pretrain_path "
                                  f"(<pretrained_model_dir>/{QWEN_DIR}) or --pretrained_model_dir")
    if not (path / "config.json").is_file():
        raise TrainSetupError(f"--qwen_pretrain_path {path} has no config.json "
                              f"(point it at the model dir's {QWEN_DIR} folder)")
    return str(path.resolve())


def train_config_text(src: str, overrides: Dict[str, Any]) -> str:
    """The experiment's config.yaml: the yaml ``src`` (its own dotted names, official ones included, and no seed
    lines) with ``overrides`` applied and its ``!ref`` links kept, so it loads with
    :func:`cosyvoice.utils.config.load_config` exactly like the source (and with the official code too). ``src`` is
    checked strictly first (ConfigError, one line). Nothing is written."""
    from hyperpyyaml.core import recursive_update
    from ruamel.yaml import YAML


    text = drop_seed_lines(_read(src))
    check_config_text(src, text)
    unknown = sorted(set(overrides) - set(top_level_keys(text)))
    if unknown:
        raise TrainSetupError(f"{src}: has no top-level {', '.join(unknown)} (is it a cosyvoice2.yaml?)")
    yaml = YAML(typ="rt")
    yaml.width = 120
    yaml.preserve_quotes = True
    yaml.indent(mapping=4, sequence=4, offset=4)
    tree = yaml.load(text)
    _check_override_paths(src, tree, overrides)
    recursive_update(tree, overrides)
    buf = io.StringIO()
    buf.write(f"# Resolved training config: {src} with this run's options applied (written by train.py).\n")
    yaml.dump(tree, buf)
    return buf.getvalue()


def write_train_config(src: str, overrides: Dict[str, Any], out: Path) -> str:
    """Write :func:`train_config_text` to ``out`` (atomically; a bad ``src`` writes nothing). Returns the text."""
    text = train_config_text(src, overrides)
    atomic_write_text(out, text)
    return text


def _check_override_paths(src: str, tree, overrides, prefix: str = "") -> None:
    for key, value in overrides.items():
        if key not in tree:
            if prefix == "train_conf." and key in OPTIONAL_TRAIN_KEYS:
                continue  # an optional train_conf key this yaml lacks: the override adds it
            raise TrainSetupError(f"{src}: has no '{prefix}{key}' to override (is it a cosyvoice2.yaml?)")
        if prefix.startswith(("train_conf.llm_lora", "train_conf.flow_lora")):
            continue  # the LoRA settings are checked when they are used (cosyvoice.utils.lora)
        if isinstance(value, dict):
            _check_override_paths(src, tree[key], value, f"{prefix}{key}.")


def load_train_config(path: Path, model: str) -> Dict[str, Any]:
    """Build the model ``model``, the data pipeline and ``train_conf`` from the experiment's config file."""

    configs = load_config(str(path), keys=[model, "data_pipeline", "train_conf"])
    check_train_conf(configs["train_conf"], path)
    return configs


def check_train_conf(conf: Dict[str, Any], path) -> None:
    need = ["optim", "optim_conf", "scheduler", "max_epoch", "grad_clip", "accum_grad", "log_interval",
            "save_per_step"]
    missing = [k for k in need if k not in conf]
    if missing:
        raise TrainSetupError(f"{path}: train_conf lacks {', '.join(missing)}")
    for key in ("max_epoch", "accum_grad", "log_interval"):
        if int(conf[key]) < 1:
            raise TrainSetupError(f"{path}: train_conf.{key} must be >= 1, got {conf[key]}")

    if lora.finetune_mode(conf, f"{path}: train_conf") == "lora":
        for model in MODELS:
            lora.lora_settings(conf, model, f"{path}: train_conf")


def git_commit(root: Path) -> str:
    """``<sha>`` (``<sha>-dirty`` with uncommitted changes), or ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_experiment(model_dir: Path, argv: List[str]) -> None:
    """Append this run's exact command and git commit to ``<model_dir>/train.cmd`` (one line each per run)."""
    from datetime import datetime

    root = Path(__file__).resolve().parents[2]
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "cosyvoice.bin.train", *argv])
    stamp = datetime.now().isoformat(timespec="seconds")
    launcher = os.environ.get("WORLD_SIZE", "1")
    with open(model_dir / "train.cmd", "a", encoding="utf-8") as f:
        f.write(f"# {stamp} git {git_commit(root)} world_size {launcher} cwd {os.getcwd()}\n{line}\n")


# ------------------------------------------------------------------------------------------------ model / optim
def init_model(model: torch.nn.Module, checkpoint: Optional[str]) -> torch.nn.Module:
    """Load ``checkpoint`` strictly into ``model`` (a missing or mismatched file is an error)."""

    if checkpoint:
        load_checkpoint_strict(model, checkpoint)
        logger.info("loaded %s (strict)", checkpoint)
    else:
        logger.warning("no --checkpoint: training %s from its random initialisation", type(model).__name__)
    n = sum(p.numel() for p in model.parameters())
    logger.info("%s: %.2fM parameters", type(model).__name__, n / 1e6)
    return model


def init_finetune(model: torch.nn.Module, conf: Dict[str, Any], name: str, seed: int) -> torch.nn.Module:
    """``train_conf.finetune``: full: train every weight (nothing to do); lora: freeze the (loaded) weights and add
    the LoRA adapter of ``train_conf.<name>_lora``, its initial weights drawn from ``seed`` (the same on every
    process). Returns ``model``."""
    if lora.finetune_mode(conf) == "full":
        return model
    settings = lora.lora_settings(conf, name)
    lora.add_adapter(model, settings, seed=seed)
    logger.info("finetune lora: %s", lora.describe(settings, model))
    return model


FINETUNE_RECORD = "finetune.json"  # in the training dir: how the model was fine-tuned (read by the report)


def record_finetune(model_dir: Path, model: torch.nn.Module, conf: Dict[str, Any], name: str) -> None:
    """Write ``<model_dir>/finetune.json``: the mode, the trainable and total parameter counts, the LoRA settings."""
    mode = lora.finetune_mode(conf)
    trainable, total = lora.count_parameters(model)
    record = {"model": name, "finetune": mode, "trainable_parameters": trainable, "parameters": total,
              "lora": lora.lora_settings(conf, name).to_dict() if mode == "lora" else None}
    atomic_write_text(Path(model_dir) / FINETUNE_RECORD, json.dumps(record, indent=1) + "\n")


def init_optimizer(model: torch.nn.Module, conf: Dict[str, Any], name: Optional[str] = None) -> torch.optim.Optimizer:
    """Adam or AdamW over the model's trainable parameters with ``train_conf.optim_conf`` (with LoRA, i.e.
    ``finetune: lora``, its ``lr`` is ``<name>_lora.lr`` when that is set).

    Unless ``optim_conf`` names ``fused`` or ``foreach`` itself, the fused implementation (one kernel over all
    parameters) is used where torch has it for the parameters' device and dtype (CPU and CUDA floats): the same
    update up to float rounding, several times faster than the per-parameter loop (tools/benchmark.py prints the
    Adam step with each; BENCHMARKS.md). ``fused: false`` in ``optim_conf`` gives torch's default back.
    """

    kinds = {name: getattr(torch.optim, cls) for name, cls in OPTIMIZERS.items()}
    if conf["optim"] not in kinds:
        raise TrainSetupError(f"unknown train_conf.optim '{conf['optim']}' (use adam or adamw)")
    optim_conf = dict(conf["optim_conf"])
    if name is not None and conf.get("finetune", "full") == "lora":
        settings = lora.lora_settings(conf, name)
        if settings.lr is not None:
            optim_conf["lr"] = settings.lr
    params = [p for p in model.parameters() if p.requires_grad]  # all of them, except with LoRA
    if "fused" not in optim_conf and "foreach" not in optim_conf and fused_supported(params):
        optim_conf["fused"] = True
    try:
        optimizer = kinds[conf["optim"]](params, **optim_conf)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TrainSetupError(f"train_conf.optim_conf {dict(conf['optim_conf'])}: {str(e).splitlines()[0]}") from None
    logger.info("optimizer %s (%s implementation) over %.2fM parameters, %s", conf["optim"],
                optimizer_impl(optimizer), sum(p.numel() for p in params) / 1e6,
                {k: v for k, v in optim_conf.items() if k not in ("fused", "foreach")})
    return optimizer


def optimizer_impl(optimizer: torch.optim.Optimizer) -> str:
    """'fused', 'foreach' or 'torch default' (torch picks foreach or the for-loop itself)."""
    group = optimizer.param_groups[0]
    return "fused" if group.get("fused") else "foreach" if group.get("foreach") else "torch default"


def fused_supported(params: List[torch.Tensor]) -> bool:
    """Whether torch's fused Adam/AdamW kernels take all of ``params`` (floating point, one supported device)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # an older torch: no fused kernels to pick
        return False
    if not params:
        return False
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices <= set(_get_fused_kernels_supported_devices())
            and all(p.is_floating_point() for p in params))


def init_scheduler(optimizer: torch.optim.Optimizer, conf: Dict[str, Any]):
    return build_scheduler(conf["scheduler"], optimizer, conf.get("scheduler_conf"))


def speech_token_check(module: torch.nn.Module, list_files: List[str]):
    """``check(batch)``: one line naming the shard and utterance of a speech token the module has no embedding
    for (None for a module without speech-token input)."""

    if hasattr(module, "speech_token_size"):
        vocab, owner = int(module.speech_token_size), f"the llm (speech_token_size {module.speech_token_size})"
    elif hasattr(module, "vocab_size") and hasattr(module, "input_embedding"):
        vocab, owner = int(module.vocab_size), f"the flow (vocab_size {module.vocab_size})"
    else:
        return None
    v3 = type(module).__name__ in ("CosyVoice3LM", "CausalMaskedDiffWithDiT")
    tokenizer_file = "speech_tokenizer_v3.onnx" if v3 else "speech_tokenizer_v2.onnx"
    return lambda batch: check_speech_tokens(batch, vocab, owner, list_files, tokenizer_file)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    model.to(info.device)
    if not info.distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    # every trainable parameter of Qwen2LM and CausalMaskedDiffWithXvec (or of their LoRA adapters) gets a gradient
    # on every batch
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def unwrap(model) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def autocast(info: DistInfo, amp_dtype: Optional[str]):
    if not amp_dtype:
        return nullcontext()
    return torch.autocast(device_type=info.device.type, dtype=AMP_DTYPES[amp_dtype])


def deepspeed_config(path: str, conf: Dict[str, Any], amp_dtype: Optional[str], out: Path) -> Dict[str, Any]:
    """The DeepSpeed config of ``path`` with accumulation, clipping and precision taken from ``train_conf`` and
    ``--use_amp`` (one source of truth); written to ``out`` for the record."""
    if not os.path.isfile(path):
        raise TrainSetupError(f"--deepspeed_config {path} not found (the recipe ships conf/ds_stage2.json)")
    with open(path, "r", encoding="utf-8") as f:
        cfg = json.load(f)
    if "optimizer" in cfg or "scheduler" in cfg:
        raise TrainSetupError(f"{path}: remove 'optimizer'/'scheduler': train_conf in the yaml chooses them")
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["gradient_accumulation_steps"] = int(conf["accum_grad"])
    cfg["gradient_clipping"] = float(conf["grad_clip"])
    cfg.setdefault("steps_per_print", 10 ** 9)
    cfg.setdefault("fp16", {})["enabled"] = amp_dtype == "fp16"
    cfg.setdefault("bf16", {})["enabled"] = amp_dtype == "bf16"
    atomic_write_text(out, json.dumps(cfg, indent=2) + "\n")
    return cfg


def init_deepspeed(model, optimizer, scheduler, ds_config: Dict[str, Any]):
    import deepspeed

    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=ds_config)
    _drop_every_frozen_name(engine)
    return engine, optimizer, scheduler


def _drop_every_frozen_name(engine) -> None:
    """With ``exclude_frozen_parameters`` (LoRA checkpoints) DeepSpeed drops the frozen weights it finds in
    ``named_parameters()``, which names a tied weight once: Qwen2's ``lm_head.weight`` (the embedding table, half a
    GB at full size) would stay in every checkpoint. Drop every name of a frozen weight."""
    original = engine.module_state_dict

    def module_state_dict(destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        state = original(destination=destination, prefix=prefix, keep_vars=keep_vars,
                         exclude_frozen_parameters=exclude_frozen_parameters)
        if exclude_frozen_parameters:
            for name, param in engine.module.named_parameters(remove_duplicate=False):
                if not param.requires_grad:
                    state.pop(prefix + name, None)
        return state

    engine.module_state_dict = module_state_dict


# ------------------------------------------------------------------------------------------------ data
def init_dataloaders(args, configs: Dict[str, Any]):
    """(train dataset, train loader, cv loader). The train lists are sharded over ranks and shuffled by
    (seed, epoch); CV reads every list on every rank in a fixed order."""
    from torch.utils.data import DataLoader


    pipeline = configs["data_pipeline"]
    if configs["train_conf"].get("speaker_tag", False):
        pipeline = with_speaker_tags(pipeline)
    train_set = Dataset(args.train_data, pipeline, mode="train", shuffle=True, partition=True, seed=args.seed)
    cv_set = Dataset(args.cv_data, pipeline, mode="dev", shuffle=False, partition=False, seed=args.seed)

    def loader(dataset):
        extra = {"prefetch_factor": args.prefetch} if args.num_workers > 0 else {}
        # own generator: creating an iterator must not draw from the global torch RNG (exact resume)
        return DataLoader(dataset, batch_size=None, num_workers=args.num_workers, pin_memory=args.pin_memory,
                          generator=torch.Generator().manual_seed(args.seed), **extra)

    return train_set, loader(train_set), loader(cv_set)


def with_speaker_tags(pipeline):
    """The pipeline with :func:`cosyvoice.dataset.processor.add_speaker_tag` right before ``tokenize`` (multi-speaker
    SFT, ``train_conf.speaker_tag: true``)."""
    names = [_stage_name(stage) for stage in pipeline]
    if "tokenize" not in names:
        raise TrainSetupError("train_conf.speaker_tag needs a tokenize stage in data_pipeline to put the tag before")
    at = names.index("tokenize")
    return list(pipeline[:at]) + [processor.add_speaker_tag] + list(pipeline[at:])
