"""The training loop: epochs of agreed gradient-accumulation windows, CV, checkpoints and exact resume.

Uneven data across ranks
    Ranks read disjoint shards, so one may run out of batches before another. Before each accumulation window
    every rank takes up to ``accum_grad`` batches and all ranks agree (one ``all_reduce(MIN)`` of that count)
    on how many to use: the smallest. A window shorter than ``accum_grad`` ends the epoch for everyone;
    the few batches some ranks hold beyond it are left unused this epoch. No rank ever waits in a collective the
    others will not reach, so there is no deadlock and no timeout to tune.

Exact resume
    A checkpoint records the optimizer, scheduler, grad scaler, the step count, the data position (epoch and
    number of batches read in it; equal on all ranks by the rule above) and the RNG states of every rank. The data
    order is a pure function of (seed, epoch, rank, worker), so on resume the first batches of the epoch are read
    and skipped and training continues as if never interrupted. CV and sample rendering run on their own seeded
    random streams (:class:`cosyvoice.utils.checkpoint.rng_scope`), so they neither depend on nor disturb the
    training streams.

Divergence
    A fresh run first computes the CV loss of its starting weights (logged at step 0); every update and every CV
    is then checked by :class:`cosyvoice.utils.divergence.DivergenceGuard`, which stops a diverging or non-learning
    run with one line and marks its checkpoints. Batches are checked for speech tokens the model has no
    embedding for (``check_batch``).
"""
from __future__ import annotations

import itertools
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from tqdm import tqdm

from cosyvoice.utils import checkpoint as ckpt, lora
from cosyvoice.utils.divergence import DivergenceGuard, mark_run_diverged, TrainingDiverged
from cosyvoice.utils.train_utils import (DistInfo, TrainSetupError, all_gather_object, all_reduce_mean,
                                         all_reduce_min, autocast, barrier, unwrap)

logger = logging.getLogger(__name__)

CV_SEED = 20240701  # the fixed random streams of every CV pass


def agreed_windows(batches: Iterator, size: int, info: DistInfo) -> Iterator[List[Any]]:
    """Windows of up to ``size`` batches, of the same length on every rank (see the module docstring)."""
    while True:
        window = list(itertools.islice(batches, size))
        n = all_reduce_min(len(window), info)
        if n == 0:
            return
        yield window[:n]
        if n < size:
            return


class Throughput:
    """Training speed between two log lines: optimizer steps, utterances, speech tokens and mel frames read, and
    the wall time spent on them (data loading included; CV and checkpoint writing excluded)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.counts = {"steps": 0.0, "utts": 0.0, "speech_tokens": 0.0, "mel_frames": 0.0, "seconds": 0.0}
        self.mark = time.perf_counter()

    def resume(self) -> None:
        self.mark = time.perf_counter()

    def add_window(self, window: List[Dict[str, Any]]) -> None:
        now = time.perf_counter()
        self.counts["seconds"] += now - self.mark
        self.mark = now
        self.counts["steps"] += 1
        for batch in window:
            self.counts["utts"] += len(batch["utts"]) if "utts" in batch else len(batch["speech_token_len"])
            if "speech_token_len" in batch:
                self.counts["speech_tokens"] += float(batch["speech_token_len"].sum())
            if "speech_feat_len" in batch:
                self.counts["mel_frames"] += float(batch["speech_feat_len"].sum())

    def take(self) -> Dict[str, float]:
        """The counts since the last take (or restart), and start counting again."""
        counts = self.counts
        self.restart()
        return counts

    @staticmethod
    def rates(mean_counts: Dict[str, float], world_size: int) -> Dict[str, float]:
        """Per-rank mean counts -> step_s (wall seconds per optimizer step) and utts/tokens/frames per second summed
        over the ranks."""
        seconds, steps = mean_counts.get("seconds", 0.0), mean_counts.get("steps", 0.0)
        if seconds <= 0 or steps <= 0:
            return {}
        out = {"step_s": seconds / steps}
        for key in ("utts", "speech_tokens", "mel_frames"):
            if mean_counts.get(key, 0.0) > 0:
                out[f"{key}_per_s"] = mean_counts[key] * world_size / seconds
        return out

    @staticmethod
    def describe(speed: Dict[str, float]) -> str:
        if not speed:
            return "speed n/a"
        parts = [f"{speed['step_s']:.3g} s/step"]
        for key, unit in (("utts_per_s", "utt/s"), ("speech_tokens_per_s", "speech tokens/s"),
                          ("mel_frames_per_s", "mel frames/s")):
            if key in speed:
                parts.append(f"{speed[key]:.1f} {unit}")
        if "peak_memory_mb" in speed:
            parts.append(f"peak memory {speed['peak_memory_mb']:.0f} MB")
        return ", ".join(parts)


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this process has used so far: CUDA tensors on a GPU, else the resident set size (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class Executor:
    """Runs epochs for one model (llm or flow) with torch DDP (or one process) or a DeepSpeed engine."""

    def __init__(self, model, optimizer, scheduler, train_conf: Dict[str, Any], info: DistInfo, model_dir: Path,
                 train_engine: str = "torch_ddp", amp_dtype: Optional[str] = None, scaler=None, tracker=None,
                 keep_states: int = 2, on_epoch_end: Optional[Callable[[int, int], None]] = None,
                 check_batch: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.conf = train_conf
        self.info = info
        self.model_dir = Path(model_dir)
        self.engine = train_engine
        self.amp_dtype = amp_dtype
        self.scaler = scaler
        self.tracker = tracker
        self.keep_states = keep_states
        self.on_epoch_end = on_epoch_end
        self.accum = int(train_conf["accum_grad"])
        self.epoch = 0            # epoch being trained
        self.batch_in_epoch = 0   # batches of this epoch already used
        self.step = 0             # optimizer updates so far
        self.last_batches = None  # batches per epoch seen last time (for the progress bar)
        self.meter = Throughput()  # training speed since the last log line
        self.check_batch = check_batch
        # a loss scaler skips overflowing steps by design: those are not "no learning"
        loss_scaled = scaler is not None or (train_engine == "deepspeed" and amp_dtype == "fp16")
        self.guard = DivergenceGuard(train_conf, loss_scaled=loss_scaled)

    # ------------------------------------------------------------------------------------------ training
    def fit(self, train_set, train_loader, cv_loader) -> None:
        max_epoch = int(self.conf["max_epoch"])
        if self.epoch >= max_epoch:
            logger.info("training already finished: %d of max_epoch %d epochs done", self.epoch, max_epoch)
            return
        try:
            if self.guard.wants_reference and self.step == 0 and self.batch_in_epoch == 0:
                self.reference_cv(cv_loader)
            while self.epoch < max_epoch:
                self.train_one_epoch(train_set, train_loader, cv_loader)
        except TrainingDiverged as e:
            logger.error("%s", e)
            if self.info.is_main:
                mark_run_diverged(self.model_dir, e)
            barrier(self.info)
            raise

    def reference_cv(self, cv_loader) -> None:
        """The CV loss of the starting weights: what the divergence guard compares later losses with."""
        cv = self.cv(cv_loader, before_training=True)
        self.guard.after_cv(self.epoch, self.step, cv.get("loss"), self.lr)
        self.guard.set_reference(cv.get("loss"))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_one_epoch(self, train_set, train_loader, cv_loader) -> None:
        epoch, skip = self.epoch, self.batch_in_epoch
        train_set.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        logger.info("epoch %d: start at step %d, lr %.3g%s", epoch, self.step, lr,
                    f", skipping the {skip} batches used before the checkpoint" if skip else "")
        self.model.train()
        batches = itertools.islice(iter(train_loader), skip, None)
        bar = tqdm(total=self.last_batches, initial=skip, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=None if self.info.is_main else True, mininterval=2.0)
        start = time.time()
        self.meter.restart()
        for window in agreed_windows(batches, self.accum, self.info):
            losses, grad_norm = self.train_window(window)
            self.meter.add_window(window)
            self.batch_in_epoch += len(window)
            self.step += 1
            bar.update(len(window))
            if self.step % int(self.conf["log_interval"]) == 0:
                self.log_train(losses, grad_norm)
            mean_loss = all_reduce_mean({"loss": losses.get("loss", float("nan"))}, self.info)["loss"]
            self.guard.after_update(epoch, self.step, mean_loss, grad_norm, self.lr, window)
            save_per_step = int(self.conf.get("save_per_step", -1))
            if save_per_step > 0 and self.step % save_per_step == 0:
                cv = self.cv(cv_loader)
                self.guard.after_cv(epoch, self.step, cv.get("loss"), self.lr)
                self.save(f"epoch_{epoch}_step_{self.step}", cv)
                self.model.train()
                self.meter.resume()  # CV and saving are not training time
        bar.close()
        self.last_batches = self.batch_in_epoch
        logger.info("epoch %d: %d batches, %d steps so far, %.1f s", epoch, self.batch_in_epoch, self.step,
                    time.time() - start)
        cv = self.cv(cv_loader)
        self.guard.after_cv(epoch, self.step, cv.get("loss"), self.lr)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        self.save(f"epoch_{epoch}_whole", cv, epoch=epoch)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, self.step)

    def train_window(self, window: List[Dict[str, Any]]):
        """Forward/backward every batch of the window, then one optimizer update. Returns (mean losses, norm)."""
        sums: Dict[str, float] = {}
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            if self.check_batch is not None:
                self.check_batch(batch)
            if self.engine == "deepspeed":
                self.model.set_gradient_accumulation_boundary(last)
                with autocast(self.info, self.amp_dtype):
                    out = self.model(batch, self.info.device)
                self.model.backward(out["loss"])  # DeepSpeed divides by accum_grad itself
            else:
                sync = self.model.no_sync() if self.info.distributed and not last else nullcontext()
                with sync:
                    with autocast(self.info, self.amp_dtype):
                        out = self.model(batch, self.info.device)
                    loss = out["loss"] / self.accum
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for k, v in out.items():
                if v is not None:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
        grad_norm = self.optimizer_step()
        return {k: v / len(window) for k, v in sums.items()}, grad_norm

    def optimizer_step(self) -> float:
        if self.engine == "deepspeed":
            self.model.step()
            norm = self.model.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.conf["grad_clip"]))
        if torch.isfinite(norm):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
        else:
            logger.warning("step %d: gradient norm is %s; update skipped", self.step + 1, float(norm))
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def log_train(self, losses: Dict[str, float], grad_norm: float) -> None:
        counts = self.meter.take()
        both = all_reduce_mean({**{f"loss/{k}": v for k, v in losses.items()},
                                **{f"count/{k}": v for k, v in counts.items()}}, self.info)
        losses = {k[5:]: v for k, v in both.items() if k.startswith("loss/")}
        speed = Throughput.rates({k[6:]: v for k, v in both.items() if k.startswith("count/")}, self.info.world_size)
        if speed:
            speed["peak_memory_mb"] = peak_memory_mb(self.info.device)
        lr = self.optimizer.param_groups[0]["lr"]
        text = " ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items()))
        logger.info("epoch %d step %d: %s lr %.3g grad_norm %.3f | %s", self.epoch, self.step, text, lr, grad_norm,
                    Throughput.describe(speed))
        if self.tracker is not None:
            scalars = {f"train/{k}": v for k, v in losses.items()}
            scalars.update({"train/lr": lr, "train/grad_norm": grad_norm, "train/epoch": self.epoch})
            scalars.update({f"speed/{k}": v for k, v in speed.items()})
            self.tracker.log_scalars(scalars, self.step)

    # ------------------------------------------------------------------------------------------ CV
    @torch.no_grad()
    def cv(self, cv_loader, before_training: bool = False) -> Dict[str, float]:
        """Utterance-weighted mean of each loss over the whole CV set (same on every rank), on fixed streams."""
        self.model.eval()
        totals: Dict[str, float] = {}
        n_utts = 0
        with ckpt.rng_scope(CV_SEED):
            for batch in cv_loader:
                n = len(batch["utts"])
                if self.check_batch is not None:
                    self.check_batch(batch)
                with autocast(self.info, self.amp_dtype):
                    out = self.model(batch, self.info.device)
                for k, v in out.items():
                    if v is not None:
                        totals[k] = totals.get(k, 0.0) + float(v.detach().float().mean()) * n
                n_utts += n
        if n_utts == 0:
            raise TrainSetupError("the CV set produced no batch (check --cv_data and the data pipeline's filter)")
        cv = {k: v / n_utts for k, v in totals.items()}
        text = " ".join(f"{k} {v:.4f}" for k, v in sorted(cv.items()))
        logger.info("epoch %d step %d: CV %s (%d utterances)%s", self.epoch, self.step, text, n_utts,
                    ", before training" if before_training else "")
        if self.tracker is not None:
            self.tracker.log_scalars({f"cv/{k}": v for k, v in cv.items()}, self.step)
        return cv

    # ------------------------------------------------------------------------------------------ checkpoints
    @property
    def finetune(self) -> str:
        """'lora' when the module carries the LoRA adapter being trained, else 'full'."""
        return "lora" if lora.is_lora(unwrap(self.model)) else "full"

    def weights(self) -> Dict[str, torch.Tensor]:
        """The module's state_dict as the pretrained files hold it: CPU, float32 (a DeepSpeed bf16/fp16 module is
        widened; its exact fp32 master weights stay in the DeepSpeed folder). With LoRA: the adapter's tensors
        only (cosyvoice.utils.lora's adapter file)."""
        return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                for k, v in lora.trained_state_dict(unwrap(self.model)).items()}

    def train_state(self) -> Dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def save(self, name: str, cv: Dict[str, float], epoch: Optional[int] = None) -> None:
        """Write checkpoint ``name`` (every rank calls this; rank 0 writes the files; see checkpoint.py)."""
        info = ckpt.CheckpointInfo(
            name=name, epoch=self.epoch if epoch is None else epoch, step=self.step,
            resume_epoch=self.epoch, resume_batch=self.batch_in_epoch, world_size=self.info.world_size,
            train_engine=self.engine, cv={k: float(v) for k, v in cv.items()}, finetune=self.finetune)
        position = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                    "world_size": self.info.world_size, "rng": all_gather_object(ckpt.get_rng_state(), self.info),
                    "guard": self.guard.state_dict()}
        if self.engine == "deepspeed":
            info.state = f"{name}.ds"
            if self.info.is_main:
                _remove_stale(self.model_dir / info.state)
            barrier(self.info)
            self.model.save_checkpoint(str(self.model_dir), tag=info.state, client_state={"position": position},
                                       save_latest=False, exclude_frozen_parameters=self.finetune == "lora")
            barrier(self.info)
            if self.info.is_main:
                ckpt.save_checkpoint(self.model_dir, info, self.weights(), None)
        elif self.info.is_main:
            ckpt.save_checkpoint(self.model_dir, info, self.weights(), {**self.train_state(), "position": position})
        if self.info.is_main:
            cv_text = f", CV loss {cv['loss']:.4f}" if "loss" in cv else ""
            size = (self.model_dir / f"{name}.pt").stat().st_size / 2 ** 20
            what = "LoRA adapter only" if self.finetune == "lora" else "all weights"
            logger.info("saved checkpoint %s (%.2f MB, %s; step %d%s)", self.model_dir / f"{name}.pt", size, what,
                        self.step, cv_text)
            pruned = ckpt.prune_train_states(self.model_dir, self.keep_states)
            if pruned:
                logger.info("dropped the resume state of %s (weights kept)", ", ".join(pruned))
        barrier(self.info)

    def resume(self, info: ckpt.CheckpointInfo) -> None:
        """Restore everything saved by :meth:`save` from checkpoint ``info`` (already verified)."""
        if info.world_size != self.info.world_size:
            raise TrainSetupError(
                f"checkpoint {info.name} was written by {info.world_size} process(es), this run has "
                f"{self.info.world_size}: exact resume needs the same number (or start a new model dir with "
                f"--checkpoint {self.model_dir / info.model_file})")
        if info.train_engine != self.engine:
            raise TrainSetupError(f"checkpoint {info.name} was written with --train_engine {info.train_engine}, "
                               f"this run uses {self.engine}; resume with the same engine")
        if info.finetune != self.finetune:
            raise TrainSetupError(f"checkpoint {info.name} was written with --finetune {info.finetune}, this run "
                                  f"uses {self.finetune}; resume with the same --finetune")
        if self.engine == "deepspeed":
            _, client = self.model.load_checkpoint(str(self.model_dir), tag=info.state, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True,
                                                   load_module_strict=self.finetune != "lora")
            if client is None:
                raise ckpt.CheckpointCorrupt(f"DeepSpeed could not load {self.model_dir / info.state}")
            position = client["position"]
        else:
            lora.load_trained_state(unwrap(self.model), self.model_dir / info.model_file,
                                    map_location=self.info.device)
            state = ckpt.load_train_state(self.model_dir, info)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None:
                if state["scaler"] is None:
                    raise TrainSetupError(f"checkpoint {info.name} was written without --use_amp fp16 (no grad "
                                       "scaler state); resume with the same precision options")
                self.scaler.load_state_dict(state["scaler"])
            position = state["position"]
        self.epoch = int(position["epoch"])
        self.batch_in_epoch = int(position["batch_in_epoch"])
        self.step = int(position["step"])
        ckpt.set_rng_state(position["rng"][self.info.rank])
        self.guard.load_state_dict(position.get("guard"))  # absent in checkpoints older than the guard
        logger.info("resumed from %s: epoch %d, %d batches into it, step %d", info.name, self.epoch,
                    self.batch_in_epoch, self.step)


def _remove_stale(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
