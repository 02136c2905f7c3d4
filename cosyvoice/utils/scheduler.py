"""Learning-rate schedules named by ``train_conf.scheduler`` in a cosyvoice2.yaml.

* ``constantlr``       -> :class:`ConstantLR`: the optimizer's lr, always.
* ``warmuplr``         -> :class:`WarmupLR`: ESPnet's warmup, peak lr at ``warmup_steps``, then ~ 1/sqrt(step).
* ``NoamHoldAnnealing`` -> :class:`NoamHoldAnnealing`: linear warmup, hold at the peak, then polynomial decay.

The class names, constructor arguments and formulas are those of the official ``cosyvoice.utils.scheduler``, so a
yaml written for it means the same here. Each schedule is a pure function of the update count (``last_epoch``),
so ``state_dict``/``load_state_dict`` (torch's) restore it exactly on resume.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch.optim.lr_scheduler import LRScheduler


class _StepSchedule(LRScheduler):
    """An lr schedule given by ``lr_at(base_lr, step)``; ``step`` is ``last_epoch`` (0 before the first update)."""

    def lr_at(self, base_lr: float, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()

    def set_step(self, step: int) -> None:
        """Jump to update ``step`` (the official API); the optimizer's lr is updated at once."""
        self.last_epoch = step
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class ConstantLR(_StepSchedule):
    """The optimizer's own lr at every step."""

    def __init__(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1):
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr


class WarmupLR(_StepSchedule):
    """``lr = base * warmup_steps**0.5 * min(n**-0.5, n * warmup_steps**-1.5)`` with ``n = step + 1``.

    It rises linearly to ``base`` at ``n = warmup_steps`` and then falls as ``n**-0.5``; with ``warmup_steps=0``
    it is ``base * n**-0.5`` from the start.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: float = 25000, last_epoch: int = -1):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def __repr__(self) -> str:
        return f"WarmupLR(warmup_steps={self.warmup_steps})"

    def lr_at(self, base_lr: float, step: int) -> float:
        n = step + 1
        if self.warmup_steps == 0:
            return base_lr * n ** -0.5
        return base_lr * self.warmup_steps ** 0.5 * min(n ** -0.5, n * self.warmup_steps ** -1.5)


class NoamHoldAnnealing(_StepSchedule):
    """Warmup, hold, then Noam-style decay (Squeezeformer), with the NeMo arguments.

    * warmup (``0 < step <= W``, ``W = warmup_steps`` or ``int(warmup_ratio * max_steps)``):
      ``base * (step + 1) / (W + 1)``;
    * hold (``W <= step < W + H``, ``H = hold_steps`` or ``int(hold_ratio * max_steps)``): ``base``;
    * after ``max_steps``: ``min_lr``;
    * otherwise: ``max(min_lr, base * max(1, W**d) / max(1, (step - H)**d))`` with ``d = decay_rate``
      (0.5 is Noam's decay). A warmup is required.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_steps: int, decay_rate: float = 0.5,
                 min_lr: float = 0.0, last_epoch: int = -1, warmup_steps: Optional[int] = None,
                 warmup_ratio: Optional[float] = None, hold_steps: Optional[int] = None,
                 hold_ratio: Optional[float] = None):
        if warmup_steps is not None and warmup_ratio is not None:
            raise ValueError("NoamHoldAnnealing: give warmup_steps or warmup_ratio, not both")
        if hold_steps is not None and hold_ratio is not None:
            raise ValueError("NoamHoldAnnealing: give hold_steps or hold_ratio, not both")
        if (warmup_ratio is not None or hold_ratio is not None) and max_steps is None:
            raise ValueError("NoamHoldAnnealing: a warmup_ratio/hold_ratio needs max_steps")
        self.max_steps = max_steps
        self.decay_rate = decay_rate
        self.min_lr = min_lr
        if warmup_steps is not None:
            self.warmup_steps = warmup_steps
        elif warmup_ratio is not None:
            self.warmup_steps = int(warmup_ratio * max_steps)
        else:
            self.warmup_steps = 0
        if hold_steps is not None:
            self.hold_len = hold_steps
        elif hold_ratio is not None:
            self.hold_len = int(hold_ratio * max_steps)
        else:
            self.hold_len = None
        # end of the hold phase (0 when no hold phase was asked for)
        self.hold_steps = 0 if self.hold_len is None else self.hold_len + self.warmup_steps
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        warmup = self.warmup_steps
        if warmup > 0 and step <= warmup:
            return base_lr * (step + 1) / (warmup + 1)
        if warmup <= step < self.hold_steps:
            return base_lr
        if step > self.max_steps:
            return self.min_lr
        if not warmup:
            raise ValueError("NoamHoldAnnealing needs warmup_steps (or warmup_ratio) > 0")
        hold = self.hold_steps - warmup if self.hold_steps > 0 else 0
        lr = base_lr * max(1.0, warmup ** self.decay_rate) / max(1.0, (step - hold) ** self.decay_rate)
        return max(lr, self.min_lr)


SCHEDULERS = {"constantlr": ConstantLR, "warmuplr": WarmupLR, "NoamHoldAnnealing": NoamHoldAnnealing}


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, conf: Optional[dict] = None) -> LRScheduler:
    """The schedule ``name`` (``train_conf.scheduler``) with ``conf`` (``train_conf.scheduler_conf``).

    ``constantlr`` takes no arguments (the yaml's ``scheduler_conf`` is ignored for it, as officially).
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown train_conf.scheduler '{name}' (use one of {', '.join(SCHEDULERS)})")
    if name == "constantlr":
        return ConstantLR(optimizer)
    return SCHEDULERS[name](optimizer, **dict(conf or {}))
