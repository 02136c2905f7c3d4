"""Experiment trackers: TensorBoard always, SwanLab when it is installed.

SwanLab's mode is always chosen here, never left to its default (which prompts on a terminal and fails without
one):

* ``cloud``   when the user is logged in (``swanlab login``) or ``SWANLAB_API_KEY`` is set, and the SwanLab API
  answers within a few seconds; the key is never read from or written to a yaml;
* ``local``   otherwise, when the local dashboard (``pip install 'swanlab[dashboard]'``) is installed;
* ``offline`` otherwise: the run is written under ``<model_dir>/swanlog/run-*/`` (scalars in ``run-*.swanlab``,
  audio under ``media/audio/``); ``swanlab sync <dir>`` uploads it later. No network is needed.

Only rank 0 tracks. A tracker that fails logs one warning and is switched off; training goes on.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import urlparse

import numpy as np

logger = logging.getLogger(__name__)

SWANLAB_MODES = ("auto", "cloud", "local", "offline", "off")
NETWORK_TIMEOUT_S = 3.0


class Tracker:
    """Receives scalars and audio; the base class drops everything."""

    name = "none"

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        pass

    def log_audio(self, tag: str, wav: np.ndarray, sample_rate: int, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def log_scalars(self, scalars, step):
        for k, v in scalars.items():
            self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def log_audio(self, tag, wav, sample_rate, step):
        import torch

        samples = torch.as_tensor(np.asarray(wav, dtype=np.float32).reshape(1, -1)).clamp(-1.0, 1.0)
        self.writer.add_audio(tag, samples, step, sample_rate=sample_rate)
        self.writer.flush()

    def close(self):
        self.writer.close()


class SwanLabTracker(Tracker):
    name = "swanlab"

    def __init__(self, mode: str, log_dir: Path, project: str, experiment: str, config: Dict[str, Any]):
        import swanlab

        self.swanlab = swanlab
        self.mode = mode
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = swanlab.init(mode="online" if mode == "cloud" else mode, project=project, name=experiment,
                                log_dir=str(self.log_dir), config=config,
                                settings=swanlab.Settings(interactive=False), reinit=True)

    def log_scalars(self, scalars, step):
        self.swanlab.log({k: float(v) for k, v in scalars.items()}, step=step)

    def log_audio(self, tag, wav, sample_rate, step):
        audio = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self.swanlab.log({tag: self.swanlab.Audio(audio, sample_rate=sample_rate)}, step=step)

    def close(self):
        self.swanlab.finish()


class MultiTracker(Tracker):
    """Fans out to several trackers; one that raises is reported once and dropped."""

    def __init__(self, trackers: List[Tracker]):
        self.trackers = list(trackers)

    @property
    def names(self) -> List[str]:
        return [t.name for t in self.trackers]

    def _each(self, method: str, *args) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker must never stop training
                logger.warning("%s tracker failed in %s (%s: %s); it is switched off for this run",
                               t.name, method, type(e).__name__, e)
                self.trackers.remove(t)

    def log_scalars(self, scalars, step):
        self._each("log_scalars", scalars, step)

    def log_audio(self, tag, wav, sample_rate, step):
        self._each("log_audio", tag, wav, sample_rate, step)

    def close(self):
        self._each("close")


def swanlab_logged_in() -> bool:
    """True when ``SWANLAB_API_KEY`` is set or ``swanlab login`` saved a key (read from SwanLab's own settings)."""
    if os.environ.get("SWANLAB_API_KEY"):
        return True
    try:
        import swanlab

        return swanlab.Settings().api_key is not None
    except Exception:  # noqa: BLE001 - an unreadable login counts as none
        return False


def _api_reachable(timeout: float = NETWORK_TIMEOUT_S) -> bool:
    try:
        import swanlab

        url = urlparse(swanlab.Settings().api_host)
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - DNS failure, refused, timed out: all mean offline
        return False


def choose_swanlab_mode(requested: str = "auto") -> Optional[str]:
    """The SwanLab mode to use (``cloud``/``local``/``offline``), or ``None`` when SwanLab is off or missing."""
    if requested not in SWANLAB_MODES:
        raise ValueError(f"--swanlab must be one of {', '.join(SWANLAB_MODES)}, got '{requested}'")
    if requested == "off":
        return None
    if importlib.util.find_spec("swanlab") is None:
        logger.info("SwanLab is not installed (pip install swanlab); tracking with TensorBoard only")
        return None
    if requested in ("auto", "cloud"):
        if swanlab_logged_in():
            if _api_reachable():
                return "cloud"
            logger.warning("SwanLab cloud is not reachable within %.0f s; logging locally instead", NETWORK_TIMEOUT_S)
        elif requested == "cloud":
            logger.warning("--swanlab cloud needs `swanlab login` or SWANLAB_API_KEY; logging locally instead")
    if requested in ("auto", "cloud", "local"):
        if importlib.util.find_spec("swanboard") is not None:
            return "local"
        if requested == "local":
            logger.warning("SwanLab local mode needs `pip install 'swanlab[dashboard]'`; using offline mode")
    return "offline"


def init_tracker(model_dir: Path, tensorboard_dir: Path, swanlab: str = "auto", project: str = "cosyvoice2-sft",
                 experiment: str = "", config: Optional[Dict[str, Any]] = None, is_main: bool = True) -> MultiTracker:
    """TensorBoard in ``tensorboard_dir`` plus SwanLab (see the module docstring) under ``<model_dir>/swanlog``.

    Non-main ranks get an empty tracker.
    """
    if not is_main:
        return MultiTracker([])
    trackers: List[Tracker] = [TensorBoardTracker(tensorboard_dir)]
    mode = choose_swanlab_mode(swanlab)
    if mode is not None:
        try:
            trackers.append(SwanLabTracker(mode, Path(model_dir) / "swanlog", project,
                                           experiment or Path(model_dir).name, config or {}))
        except Exception as e:  # noqa: BLE001 - tracking is optional, training is not
            logger.warning("SwanLab (%s mode) could not start (%s: %s); TensorBoard only", mode, type(e).__name__, e)
            mode = None
    tracker = MultiTracker(trackers)
    where = f"TensorBoard {tensorboard_dir}"
    if mode is not None:
        where += f", SwanLab {mode} mode ({Path(model_dir) / 'swanlog'})"
    logger.info("tracking to %s", where)
    return tracker
