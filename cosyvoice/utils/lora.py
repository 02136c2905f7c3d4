"""LoRA adapters (with peft) on the llm or the flow: settings, adapter checkpoints, merging, switching per call.

Fine-tuning with ``train_conf.finetune: lora`` freezes every weight of the pretrained module and trains low-rank
adapters ``W + (alpha / r) * B @ A`` on the layers named by ``train_conf.<model>_lora.target_modules`` (peft's
matching: a module whose name is, or ends with ``.`` +, an entry). For the llm the defaults are the attention and
MLP projections of every Qwen2 layer; ``llm_decoder`` and ``speech_embedding`` may be added to adapt them too.

Adapter files (training checkpoints, ``<exp>/adapters/<model>.adapter.pt``, ``characters/<spk>/llm.adapter.pt``)
hold the adapter tensors only: the module's own state_dict keys of the LoRA tensors without the adapter's name, e.g.
``llm.model.model.layers.0.self_attn.q_proj.lora_A.weight`` (Linear) or ``speech_embedding.lora_embedding_A``
(Embedding). The settings that built them (r, alpha, dropout, target modules) are kept beside them: in the
training dir's ``config.yaml`` and in a character's ``character.json``.

:func:`merged_state_dict` folds an adapter into the base weights and returns a state_dict with exactly the keys of
the plain module, i.e. of the official ``llm.pt`` / ``flow.pt``, which loads strictly into the plain module and the
official code. :class:`AdapterSwitch` lets several adapters live on one module and picks one per call, safely when
calls come from several threads.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from cosyvoice.utils.common import check_state_keys, load_checkpoint_strict, read_state_dict
from cosyvoice.utils.config import load_config
from cosyvoice.utils.errors import UserError

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("full", "lora")
TRAIN_ADAPTER = "default"  # the adapter's name while it is trained
# the peft parameter containers of a LoRA layer; the adapter's name follows them in a state_dict key
LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
DEFAULT_TARGETS = {
    # every projection of every Qwen2 decoder layer (attention and MLP)
    "llm": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    # the flow's conformer encoder (attention, feed-forward) and the estimator's transformer attention
    "flow": ("linear_q", "linear_k", "linear_v", "linear_out", "w_1", "w_2", "to_q", "to_k", "to_v"),
}
SETTING_KEYS = ("r", "alpha", "dropout", "target_modules", "lr")


class LoraError(UserError, ValueError):
    """LoRA settings or an adapter that cannot be used; the message names the setting or file and the fix."""


@dataclass(frozen=True)
class LoraSettings:
    """One adapter's shape: rank ``r``, scale ``alpha / r``, dropout on its input, the layers it adapts, and the
    learning rate it trains with (None: ``train_conf.optim_conf.lr``)."""

    target_modules: Tuple[str, ...]
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    lr: Optional[float] = None

    @classmethod
    def from_dict(cls, conf: Optional[Mapping[str, Any]], model: str, where: str) -> "LoraSettings":
        """From a ``<model>_lora`` mapping (missing keys: the defaults); ``where`` names it in errors."""
        conf = dict(conf or {})
        unknown = sorted(set(conf) - set(SETTING_KEYS))
        if unknown:
            raise LoraError(f"{where}: unknown LoRA setting(s) {', '.join(unknown)} (known: {', '.join(SETTING_KEYS)})")
        targets = conf.get("target_modules", DEFAULT_TARGETS.get(model))
        if isinstance(targets, str):
            targets = [targets]
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoraError(f"{where}: target_modules must be a non-empty list of module names, got {targets!r}")
        try:
            settings = cls(target_modules=tuple(targets), r=int(conf.get("r", cls.r)),
                           alpha=float(conf.get("alpha", cls.alpha)), dropout=float(conf.get("dropout", cls.dropout)),
                           lr=None if conf.get("lr") is None else float(conf["lr"]))
        except (TypeError, ValueError) as e:
            raise LoraError(f"{where}: {e}") from None
        if settings.r < 1:
            raise LoraError(f"{where}: r (the adapter rank) must be >= 1, got {settings.r}")
        if not 0.0 <= settings.dropout < 1.0:
            raise LoraError(f"{where}: dropout must be in [0, 1), got {settings.dropout}")
        if settings.alpha <= 0 or (settings.lr is not None and settings.lr <= 0):
            raise LoraError(f"{where}: alpha and lr must be > 0")
        return settings

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none")


def finetune_mode(train_conf: Mapping[str, Any], where: str = "train_conf") -> str:
    """``train_conf.finetune``: 'full' (every weight; also when the yaml does not say) or 'lora'."""
    mode = train_conf.get("finetune", "full")
    if mode not in FINETUNE_MODES:
        raise LoraError(f"{where}.finetune must be full or lora, got {mode!r}")
    return mode


def lora_settings(train_conf: Mapping[str, Any], model: str, where: str = "train_conf") -> LoraSettings:
    """The LoRA settings of ``model`` (llm or flow): ``train_conf.<model>_lora`` (the defaults when absent)."""
    block = train_conf.get(f"{model}_lora") or {}
    if not isinstance(block, Mapping):
        raise LoraError(f"{where}.{model}_lora must map LoRA settings ({', '.join(SETTING_KEYS)}) to values")
    return LoraSettings.from_dict(block, model, f"{where}.{model}_lora")


# ------------------------------------------------------------------------------------------------ adapters
def _tuner_layers(module: torch.nn.Module) -> List[torch.nn.Module]:
    if not any("lora" in n for n, _ in module.named_parameters()):
        return []  # cheap test first: peft need not be imported for a plain module
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def is_lora(module: torch.nn.Module) -> bool:
    """Whether ``module`` carries LoRA layers."""
    return bool(_tuner_layers(module))


def adapter_names(module: torch.nn.Module) -> List[str]:
    """The names of the adapters on ``module``, sorted."""
    names = set()
    for layer in _tuner_layers(module):
        for part in LORA_PARTS:
            names.update(getattr(layer, part, {}).keys())
    return sorted(names)


def add_adapter(module: torch.nn.Module, settings: LoraSettings, name: str = TRAIN_ADAPTER,
                seed: Optional[int] = None, trainable: bool = True) -> torch.nn.Module:
    """Put a LoRA adapter ``name`` on ``module`` in place (B = 0, so the module computes what it did before) and
    make it the active one. ``trainable``: only its weights require grad (every other weight is frozen); else none
    does. ``seed``: draw the initial A from a generator seeded with it (the same adapter on every process, and the
    global random streams untouched). Returns ``module``."""
    from peft import inject_adapter_in_model

    if name in adapter_names(module):
        raise LoraError(f"{type(module).__name__} already has an adapter named {name!r}")
    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        with warnings.catch_warnings():  # peft notes that a second adapter joins the first: that is the point
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            try:
                inject_adapter_in_model(settings.peft_config(), module, adapter_name=name)
            except ValueError as e:
                layers = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules()
                                 if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))})
                raise LoraError(f"LoRA target_modules {list(settings.target_modules)} do not name layers of "
                                f"{type(module).__name__} ({str(e).splitlines()[0]}); its Linear/Embedding layers "
                                f"are named {', '.join(layers[:20])}") from None
    module.__dict__.pop("peft_config", None)  # peft's bookkeeping; the settings live in our own files
    for layer in _tuner_layers(module):  # injecting makes the new adapter the active one, also where it is absent
        layer.set_adapter([name] if name in _layer_adapters(layer) else [], inference_mode=not trainable)
    for key, param in module.named_parameters():
        param.requires_grad_(trainable and adapter_of(key) == name)
    return module


def _layer_adapters(layer) -> set:
    return {k for part in LORA_PARTS for k in getattr(layer, part, {}).keys()}


def adapter_of(key: str) -> Optional[str]:
    """The adapter name inside a state_dict / parameter key, or None for a key of the base module."""
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in LORA_PARTS:
            return parts[i + 1]
    return None


def _strip(key: str) -> str:
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in LORA_PARTS:
            return ".".join(parts[:i + 1] + parts[i + 2:])
    return key


def adapter_state_dict(module: torch.nn.Module, name: str = TRAIN_ADAPTER) -> Dict[str, torch.Tensor]:
    """The tensors of adapter ``name`` keyed without the name (the adapter file format)."""
    out = {_strip(k): v for k, v in module.state_dict().items() if adapter_of(k) == name}
    if not out:
        raise LoraError(f"{type(module).__name__} has no adapter named {name!r}")
    return out


def load_adapter_state_dict(module: torch.nn.Module, state, name: str = TRAIN_ADAPTER,
                            map_location="cpu") -> None:
    """Load an adapter file (a path, or a state_dict in memory) into adapter ``name`` of ``module``, strictly:
    every tensor of the adapter present with its shape, nothing else."""

    source, state = read_state_dict(state, map_location)
    keys = {_strip(k): k for k in module.state_dict() if adapter_of(k) == name}
    if not keys:
        raise LoraError(f"{type(module).__name__} has no adapter named {name!r} to load {source} into")
    expected = adapter_state_dict(module, name)
    check_state_keys(expected, state, source, f"the LoRA adapter of {type(module).__name__}",
                     hint="an adapter trained with other LoRA settings (r, target_modules) or for another model")
    own = dict(module.named_parameters())
    with torch.no_grad():
        for short, full in keys.items():
            own[full].copy_(state[short].to(own[full].dtype))


def merged_state_dict(module: torch.nn.Module, name: str = TRAIN_ADAPTER) -> Dict[str, torch.Tensor]:
    """The state_dict of the plain module with adapter ``name`` folded into its weights: exactly the keys (in
    order) the module had before adapters were added; ``module`` itself is not changed. The deltas are peft's
    ``get_delta_weight``; the sums are taken in float32 (float64 for float64 weights)."""
    deltas = {}
    tuners = {id(m) for m in _tuner_layers(module)}
    for layer_name, layer in module.named_modules():
        if id(layer) in tuners and name in _layer_adapters(layer):
            with torch.no_grad():
                deltas[f"{layer_name}.base_layer.weight"] = layer.get_delta_weight(name)
    out = {}
    for key, value in module.state_dict().items():
        if adapter_of(key) is not None:
            continue
        plain = key.replace(".base_layer.", ".")
        if key in deltas:
            acc = torch.float64 if value.dtype == torch.float64 else torch.float32
            value = (value.to(acc) + deltas[key].to(acc)).to(value.dtype)
        out[plain] = value.detach().clone()
    return out


def trained_state_dict(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """What a training checkpoint holds: the trained adapter of a LoRA module, else the whole state_dict."""
    return adapter_state_dict(module, TRAIN_ADAPTER) if is_lora(module) else module.state_dict()


def load_trained_state(module: torch.nn.Module, state, map_location="cpu") -> None:
    """Load a checkpoint written from :func:`trained_state_dict` back, strictly."""

    if is_lora(module):
        load_adapter_state_dict(module, state, TRAIN_ADAPTER, map_location)
    else:
        load_checkpoint_strict(module, state, map_location=map_location)


def is_adapter_state(state: Mapping[str, Any]) -> bool:
    """Whether a state_dict holds LoRA adapter tensors (rather than a whole module's weights)."""
    return bool(state) and all(any(f".{p}" in k or k.startswith(p) for p in LORA_PARTS) for k in state)


def count_parameters(module: torch.nn.Module) -> Tuple[int, int]:
    """(trainable, all) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_adapter(plain: torch.nn.Module, adapter, settings: LoraSettings) -> Dict[str, torch.Tensor]:
    """The weights of ``plain`` (a module without adapters, left unchanged) with the adapter file ``adapter`` (a
    path or a state_dict) of ``settings`` folded in: a state_dict in the plain module's layout."""
    import copy

    work = copy.deepcopy(plain)
    add_adapter(work, settings, name=TRAIN_ADAPTER, trainable=False)
    load_adapter_state_dict(work, adapter, TRAIN_ADAPTER)
    return merged_state_dict(work, TRAIN_ADAPTER)


def training_dir_settings(model_dir, model: str) -> LoraSettings:
    """The LoRA settings a training dir (train.py --model_dir, with its config.yaml) trained ``model`` with."""
    import os


    path = os.path.join(os.fspath(model_dir), "config.yaml")
    if not os.path.isfile(path):
        raise LoraError(f"{path} not found: the LoRA settings of the adapters in {model_dir} are recorded there")
    conf = load_config(path, keys=["train_conf"])["train_conf"]
    if finetune_mode(conf, f"{path}: train_conf") != "lora":
        raise LoraError(f"{path}: train_conf.finetune is not lora, so {model_dir} holds no adapters")
    return lora_settings(conf, model, f"{path}: train_conf")


# ------------------------------------------------------------------------------------------------ switching
class AdapterSwitch:
    """Several adapters on one module, one of them (or none) active per call.

    ``with switch.use(name):`` runs the block with adapter ``name`` active (None: the base module alone). Blocks
    for the same name run at the same time; a block for another name waits until those have finished, and
    callers are served in arrival order (a waiting caller is not overtaken by later ones), so no call ever sees
    another adapter's weights and none waits forever. On a module without adapters it does nothing.
    """

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self._cond = threading.Condition()
        self._active: Optional[str] = None  # what the layers compute now (None: base)
        self._users = 0
        self._tickets = 0
        self._waiting: List[Tuple[int, Optional[str]]] = []
        self._layers: Optional[List[torch.nn.Module]] = None

    def refresh(self) -> None:
        """Call after adapters were added to the module: every layer is reset to the active adapter."""
        with self._cond:
            if self._users:
                raise RuntimeError("AdapterSwitch.refresh while calls are running")
            self._layers = _tuner_layers(self.module)
            self._apply(self._active)

    def _apply(self, name: Optional[str]) -> None:
        for layer in self._layers or []:
            layer.set_adapter([name] if name is not None and name in _layer_adapters(layer) else [],
                              inference_mode=True)
        self._active = name

    @contextlib.contextmanager
    def use(self, name: Optional[str]) -> Iterator[None]:
        if self._layers is None:
            self.refresh()
        if not self._layers:
            if name is not None:
                raise LoraError(f"{type(self.module).__name__} has no adapter {name!r}")
            yield
            return
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._waiting.append((ticket, name))
            while not ((self._users == 0 or self._active == name)
                       and all(n == name for t, n in self._waiting if t < ticket)):
                self._cond.wait()
            self._waiting.remove((ticket, name))
            if self._active != name:
                self._apply(name)
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


def describe(settings: LoraSettings, module: Optional[torch.nn.Module] = None) -> str:
    """One line for logs: the settings and, with ``module``, its trainable share."""
    text = (f"LoRA r={settings.r} alpha={settings.alpha:g} dropout={settings.dropout:g} on "
            f"{', '.join(settings.target_modules)}")
    if module is not None:
        trainable, total = count_parameters(module)
        text += f": {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters trainable ({100 * trainable / total:.2f} %)"
    return text


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors of a state_dict (what its file will roughly weigh)."""
    return sum(v.numel() * v.element_size() for v in state.values())


__all__ = ["FINETUNE_MODES", "TRAIN_ADAPTER", "DEFAULT_TARGETS", "LoraError", "LoraSettings", "finetune_mode",
           "lora_settings", "is_lora", "adapter_names", "add_adapter", "adapter_state_dict",
           "load_adapter_state_dict", "merged_state_dict", "trained_state_dict", "load_trained_state",
           "is_adapter_state", "count_parameters", "merge_adapter", "training_dir_settings",
           "AdapterSwitch", "describe", "state_bytes"]
