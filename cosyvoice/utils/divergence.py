"""The divergence / no-learning guard of the trainer.

Training stops with one line naming the epoch, the step and the likely cause (:class:`TrainingDiverged`, exit
status 2), and the run's checkpoints are marked so that ``average_model.py`` refuses them, when:

* the training loss is not finite, or above ``diverge_loss_ratio`` x the CV loss before training, for
  ``diverge_patience`` updates in a row (NaN inputs, or a learning rate that blew the weights up);
* a CV loss is not finite or above ``diverge_loss_ratio`` x the CV loss before training;
* more than ``diverge_skipped_ratio`` of the updates since the previous CV were skipped because the gradient norm
  was nan/inf (nothing is learnt). With a loss scaler (``--use_amp fp16``) an overflow with a finite loss is the
  scaler's normal step-size search and is not counted.

The settings are ``train_conf`` keys (defaults :data:`GUARD_DEFAULTS`, documented in conf/cosyvoice2.yaml);
``diverge_loss_ratio: 0`` turns the loss-ratio checks (and the CV pass before training) off, ``diverge_patience:
0`` the consecutive-update check, ``diverge_skipped_ratio: 1`` the skipped-update check. Every rank takes the same
decision (the training loss is averaged over the ranks first; the gradient norm and CV loss are the same on all).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import torch

from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils.errors import TrainSetupError, UserError

GUARD_DEFAULTS: Dict[str, float] = {
    "diverge_loss_ratio": 10.0,    # loss above this x the CV loss before training is divergence (0: off)
    "diverge_patience": 3,         # updates in a row with a non-finite or exploding training loss (0: off)
    "diverge_skipped_ratio": 0.5,  # share of skipped updates (grad norm nan/inf) between two CVs (1: off)
}
DIVERGED_FILE = "diverged.json"    # in the model dir of a run the guard stopped


class TrainingDiverged(UserError):
    """Training stopped by the guard; the message names the epoch, the step and the likely ``cause``."""

    def __init__(self, message: str, epoch: int = -1, step: int = -1, cause: str = ""):
        super().__init__(message)
        self.epoch, self.step, self.cause = epoch, step, cause


def nonfinite_input(window: List[Dict[str, Any]]) -> Optional[str]:
    """'<key> of utt <utt>' for the first nan/inf value in the floating-point tensors of the batches, or None."""
    for batch in window:
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                row = int(bad.nonzero()[0][0])
                utts = batch.get("utts") or []
                return f"{key} of utt {utts[row]}" if row < len(utts) else key
    return None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class DivergenceGuard:
    """Watches every update and every CV of one training run (see the module docstring)."""

    def __init__(self, conf: Mapping[str, Any], loss_scaled: bool = False):
        values = {k: conf.get(k, v) for k, v in GUARD_DEFAULTS.items()}
        try:
            self.loss_ratio = float(values["diverge_loss_ratio"])
            self.patience = int(values["diverge_patience"])
            self.skipped_ratio = float(values["diverge_skipped_ratio"])
        except (TypeError, ValueError):
            raise TrainSetupError(f"train_conf diverge_*: numbers expected, got {values}") from None
        if not (self.loss_ratio == 0 or self.loss_ratio > 1) or self.patience < 0 or \
                not 0 <= self.skipped_ratio <= 1:
            raise TrainSetupError(f"train_conf: diverge_loss_ratio must be 0 (off) or > 1, diverge_patience >= 0 "
                                  f"and diverge_skipped_ratio in [0, 1]; got {values}")
        self.loss_scaled = loss_scaled
        self.reference: Optional[float] = None   # CV loss before training
        self.bad_in_a_row = 0
        self.updates = 0                          # since the previous CV
        self.skipped = 0
        self.learnt = False                       # some update of this run had a finite loss and gradient
        self.nan_input: Optional[str] = None

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"reference": self.reference, "bad_in_a_row": self.bad_in_a_row, "updates": self.updates,
                "skipped": self.skipped, "learnt": self.learnt}

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        for key, value in (state or {}).items():
            setattr(self, key, value)

    @property
    def wants_reference(self) -> bool:
        return self.loss_ratio > 0 and self.reference is None

    def set_reference(self, cv_loss: Optional[float]) -> None:
        if cv_loss is not None and math.isfinite(cv_loss) and cv_loss > 0:
            self.reference = float(cv_loss)

    # ------------------------------------------------------------------------------------------- checks
    def _exploding(self, loss: float) -> bool:
        return self.loss_ratio > 0 and self.reference is not None and loss > self.loss_ratio * self.reference

    def after_update(self, epoch: int, step: int, loss: float, grad_norm: float, lr: float,
                     window: List[Dict[str, Any]]) -> None:
        """Check one optimizer update: ``loss`` the window's mean training loss averaged over the ranks."""
        finite_loss = math.isfinite(loss)
        skipped = not math.isfinite(grad_norm) and not (self.loss_scaled and finite_loss)
        self.updates += 1
        self.skipped += int(skipped)
        self.learnt = self.learnt or (finite_loss and not skipped)
        if not finite_loss and self.nan_input is None:
            self.nan_input = nonfinite_input(window)
        if finite_loss and not self._exploding(loss):
            self.bad_in_a_row = 0
            return
        self.bad_in_a_row += 1
        if self.patience == 0 or self.bad_in_a_row < self.patience:
            return
        if finite_loss:
            what = (f"the training loss ({_fmt(loss)}) was over {self.loss_ratio:g} x the CV loss before training "
                    f"({_fmt(self.reference)}) for {self.bad_in_a_row} updates in a row")
        else:
            what = f"the training loss was {loss} for {self.bad_in_a_row} updates in a row"
        raise self._diverged(epoch, step, what, lr, finite_loss)

    def after_cv(self, epoch: int, step: int, cv_loss: Optional[float], lr: float) -> None:
        """Check a CV result (and the updates since the previous one)."""
        updates, skipped = self.updates, self.skipped
        self.updates = self.skipped = 0
        if cv_loss is not None and not math.isfinite(cv_loss):
            raise self._diverged(epoch, step, f"the CV loss is {cv_loss}", lr, False)
        if cv_loss is not None and self._exploding(cv_loss):
            what = (f"the CV loss ({_fmt(cv_loss)}) is over {self.loss_ratio:g} x the CV loss before training "
                    f"({_fmt(self.reference)})")
            raise self._diverged(epoch, step, what, lr, True)
        if updates and skipped / updates > self.skipped_ratio:
            what = (f"{skipped} of the {updates} updates since the previous CV were skipped (gradient norm nan/inf), "
                    f"more than train_conf.diverge_skipped_ratio {self.skipped_ratio:g}: nothing is learnt")
            raise self._diverged(epoch, step, what, lr, False)

    def _diverged(self, epoch: int, step: int, what: str, lr: float, exploding: bool) -> TrainingDiverged:
        if self.nan_input is not None:
            cause = (f"NaN/inf in the input: {self.nan_input} (check that utterance's audio and embeddings; "
                     f"rerun stages 1-3)")
        elif exploding or self.learnt:
            cause = (f"the learning rate is too high (lr {lr:.3g} now): lower --lr (train_conf.optim_conf.lr) "
                     f"and train again")
        else:
            cause = ("NaN/inf in the input data (the loss or gradient was never finite; check the features: rerun "
                     "stages 1-3) or a learning rate far too high")
        return TrainingDiverged(f"training diverged at epoch {epoch} step {step}: {what}; likely cause: {cause}. "
                                f"Its checkpoints are marked diverged and are not averaged (stage 6)",
                                epoch=epoch, step=step, cause=cause)


def mark_run_diverged(model_dir, error: TrainingDiverged) -> None:
    """Record in ``model_dir`` that the run diverged: ``diverged.json`` and a ``diverged`` entry in every
    checkpoint sidecar (``average_model.py`` refuses them). Rank 0 only."""
    import datetime
    import json
    from pathlib import Path


    root = Path(model_dir)
    message = str(error)
    record = {"reason": message, "cause": error.cause, "epoch": error.epoch, "step": error.step,
              "at": datetime.datetime.now().isoformat(timespec="seconds")}
    ckpt.atomic_write_text(root / DIVERGED_FILE, json.dumps(record, indent=2) + "\n")
    for info in ckpt.list_checkpoints(root):
        info.diverged = message
        ckpt.atomic_write_text(ckpt.sidecar_path(root, info.name), info.to_json())


def read_diverged(model_dir) -> Optional[Dict[str, Any]]:
    """The record :func:`mark_run_diverged` wrote in ``model_dir``, or None."""
    import json
    from pathlib import Path

    path = Path(model_dir) / DIVERGED_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"reason": f"{path} exists (unreadable)", "cause": "", "epoch": None, "step": None}
