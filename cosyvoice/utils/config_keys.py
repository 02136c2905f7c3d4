"""Strict config: every key of a cosyvoice2.yaml must be one that something reads.

* top level: a key of the official cosyvoice2.yaml / cosyvoice3.yaml (:data:`TOP_LEVEL_KEYS`), or a key that another
  entry refers to (``!ref <key>``);
* ``train_conf``: the keys the trainer reads (:data:`TRAIN_CONF_KEYS`); ``train_conf_gan``: those of the official
  vocoder trainer (:data:`TRAIN_CONF_GAN_KEYS`); ``optim_conf`` (``optim_conf_d``): the arguments of the torch
  optimizer that ``optim`` (``optim_d``) names; ``scheduler_conf``: the arguments of the schedule ``scheduler`` names;
* the arguments under a ``!new:`` / ``!name:`` / ``!apply:`` tag: the parameters of the target's signature (not
  checked for a target that takes ``**kwargs`` or cannot be imported: building it reports that);
* the fields of the fixed-field dicts of :data:`FIXED_FIELDS` (``cfm_params``, ``istft_params``).

Anything else raises :class:`~cosyvoice.utils.config.ConfigError`, one line naming the file, where the key is, and
the closest valid key.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any, Iterable, List, Mapping, Optional

from cosyvoice.utils.config import NAME_MAP, ConfigError
from cosyvoice.utils.divergence import GUARD_DEFAULTS
from cosyvoice.utils.lora import SETTING_KEYS
from cosyvoice.utils.scheduler import SCHEDULERS

# The top-level keys of examples/libritts/cosyvoice2/conf/cosyvoice2.yaml at official commit ace7c47 (the
# cosyvoice3.yaml of that commit has the same ones), without the __set_seed* lines, which the loader drops.
TOP_LEVEL_KEYS = (
    "sample_rate", "llm_input_size", "llm_output_size", "spk_embed_dim", "qwen_pretrain_path", "token_frame_rate",
    "token_mel_ratio", "chunk_size", "num_decoding_left_chunks", "llm", "flow", "hift", "mel_spec_transform1",
    "hifigan", "parquet_opener", "get_tokenizer", "allowed_special", "tokenize", "filter", "resample", "truncate",
    "feat_extractor", "compute_fbank", "compute_whisper_fbank", "compute_f0", "parse_embedding", "shuffle", "sort",
    "batch", "padding", "data_pipeline", "data_pipeline_gan", "train_conf", "train_conf_gan",
)
# What cosyvoice/bin/train.py, cosyvoice/utils/train_utils.py and cosyvoice/utils/executor.py read of train_conf,
# besides the divergence guard's keys (cosyvoice.utils.divergence.GUARD_DEFAULTS, see train_conf_keys).
TRAIN_CONF_KEYS = ("optim", "optim_conf", "scheduler", "scheduler_conf", "max_epoch", "grad_clip", "accum_grad",
                   "log_interval", "save_per_step")
# What the official HiFi-GAN trainer reads of train_conf_gan (this toolkit does not train the vocoder).
TRAIN_CONF_GAN_KEYS = TRAIN_CONF_KEYS + ("optim_d", "optim_conf_d", "scheduler_d")
# train_conf.optim -> the torch.optim class it builds (cosyvoice.utils.train_utils.init_optimizer).
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW"}
# Plain-dict arguments whose fields are fixed: {argument name: fields read}. A DictConfig's fields are its content.
FIXED_FIELDS = {
    "cfm_params": ("sigma_min", "solver", "t_scheduler", "training_cfg_rate", "inference_cfg_rate", "reg_loss_type"),
    "istft_params": ("n_fft", "hop_len"),
}
_DICT_CONFIGS = ("omegaconf.DictConfig", "cosyvoice.utils.config.DictConfig")
_BUILD_TAGS = ("!new:", "!name:", "!apply:")
_REF = re.compile(r"<([A-Za-z_][\w]*)(?:\[[^>]*\])?>")
_COMMENT = re.compile(r"#.*$", re.MULTILINE)


# How the trainer fine-tunes (cosyvoice.utils.lora): optional, a yaml without them trains every weight of one speaker.
FINETUNE_KEYS = ("finetune", "llm_lora", "flow_lora", "speaker_tag")


def train_conf_keys() -> tuple:
    """Every key the trainer reads of train_conf: :data:`TRAIN_CONF_KEYS`, the fine-tuning mode's
    (:data:`FINETUNE_KEYS`) and the divergence guard's."""
    return TRAIN_CONF_KEYS + FINETUNE_KEYS + tuple(GUARD_DEFAULTS)


def suggest(key: str, valid: Iterable[str]) -> str:
    """'; did you mean 'X'?' for the closest valid key, else the list of valid keys."""
    valid = sorted(set(valid))
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (valid: {', '.join(valid)})" if valid else ""


def _unknown(path: str, key: str, place: str, valid: Iterable[str]) -> ConfigError:
    return ConfigError(f"{path}: unknown key '{key}' {place}{suggest(key, valid)}")


def parse_tree(path: str, text: str):
    """The yaml as a ruamel round-trip tree (tags kept, nothing built)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="rt").load(text)
    except YAMLError as e:
        problem = " ".join(str(e).split())
        raise ConfigError(f"{path}: not valid YAML: {problem}") from None


def _tag(node: Any) -> Optional[str]:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return value if isinstance(value, str) else None


def locate(name: str) -> Any:
    """The object a dotted name (an official one mapped by NAME_MAP) stands for, or None if it cannot be imported."""
    parts = NAME_MAP.get(name, name).split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # a missing module here, or a broken one: building the config reports it
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def accepted_arguments(obj: Any, skip: Iterable[str] = ()) -> Optional[List[str]]:
    """The keyword arguments ``obj`` takes, or None when it takes any (``**kwargs``) or has no signature."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in set(skip)]


def check_config_tree(path: str, tree: Any, text: str) -> None:
    """Raise ConfigError for the first key of the parsed yaml ``tree`` that nothing reads (see the module doc)."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{path}: not a cosyvoice2.yaml (its top level is not a mapping of keys)")
    referenced = set(_REF.findall(_COMMENT.sub("", text)))
    for key in tree:
        if key not in TOP_LEVEL_KEYS and key not in referenced:
            raise _unknown(path, key, "at the top level (no part of CosyVoice2 reads it)", TOP_LEVEL_KEYS)
    for key, value in tree.items():
        _check_node(path, value, key, key)
    for key, valid in (("train_conf", train_conf_keys()), ("train_conf_gan", TRAIN_CONF_GAN_KEYS)):
        if isinstance(tree.get(key), Mapping):
            _check_train_conf(path, key, tree[key], valid)


def _check_node(path: str, node: Any, where: str, arg: Optional[str]) -> None:
    tag = _tag(node)
    if isinstance(node, Mapping):
        if tag and tag.startswith(_BUILD_TAGS):
            target = tag.split(":", 1)[1]
            if arg in FIXED_FIELDS and target in _DICT_CONFIGS and isinstance(node.get("content"), Mapping):
                _check_fields(path, node["content"], f"{where}.content", arg)
            valid = accepted_arguments(locate(target))
            for key in node:
                if valid is not None and key not in valid:
                    raise _unknown(path, key, f"in {where} (not an argument of {target})", valid)
        elif arg in FIXED_FIELDS and not tag:
            _check_fields(path, node, where, arg)
        for key, value in node.items():
            _check_node(path, value, f"{where}.{key}", key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_node(path, value, f"{where}[{i}]", None)


def _check_fields(path: str, node: Mapping, where: str, arg: str) -> None:
    for key in node:
        if key not in FIXED_FIELDS[arg]:
            raise _unknown(path, key, f"in {where} (not a field of {arg})", FIXED_FIELDS[arg])


def _check_train_conf(path: str, name: str, conf: Mapping, valid: Iterable[str]) -> None:
    for key in conf:
        if key not in valid:
            raise _unknown(path, key, f"in {name} (the trainer does not read it)", valid)
    for optim, optim_conf in (("optim", "optim_conf"), ("optim_d", "optim_conf_d")):
        kind = conf.get(optim)
        if isinstance(kind, str) and kind in OPTIMIZERS and isinstance(conf.get(optim_conf), Mapping):
            import torch

            args = accepted_arguments(getattr(torch.optim, OPTIMIZERS[kind]), skip=("params",)) or []
            for key in conf[optim_conf]:
                if key not in args:
                    raise _unknown(path, key, f"in {name}.{optim_conf} (not an argument of torch.optim."
                                   f"{OPTIMIZERS[kind]})", args)
    for block in ("llm_lora", "flow_lora"):
        if isinstance(conf.get(block), Mapping):
            for key in conf[block]:
                if key not in SETTING_KEYS:
                    raise _unknown(path, key, f"in {name}.{block} (not a LoRA setting)", SETTING_KEYS)
    kind = conf.get("scheduler")
    if isinstance(kind, str) and isinstance(conf.get("scheduler_conf"), Mapping):
        if kind not in SCHEDULERS:
            return  # init_scheduler names the valid schedules
        # constantlr ignores scheduler_conf (the official SFT yaml keeps warmup_steps there): any schedule's keys do
        classes = SCHEDULERS.values() if kind == "constantlr" else [SCHEDULERS[kind]]
        args = sorted({a for c in classes for a in accepted_arguments(c, skip=("optimizer", "last_epoch")) or []})
        for key in conf["scheduler_conf"]:
            if key not in args:
                raise _unknown(path, key, f"in {name}.scheduler_conf (not an argument of the '{kind}' schedule)",
                               args)
