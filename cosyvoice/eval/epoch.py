"""Per-epoch evaluation during training (``train.py --eval_every_epoch true``): how the voice sounds, not the loss.

After each epoch, rank 0 synthesizes a small fixed subset of the speaker's test texts with the module being
trained (swapped into a CosyVoice2 built from the pretrained model dir, as the SFT speaker) and scores it: mean
CAM++ similarity to the centroid of the real test clips (``sim``) and to the real clip of the same text
(``sim_to_real``), and with an ASR model the error rates (``error_rate``, ``cer``, ``wer``). The record goes to
``<model_dir>/eval/epoch_<N>.json`` (read by :mod:`cosyvoice.eval.select` to pick checkpoints, and by the report),
and :func:`tracker_scalars` gives the ``eval/*`` scalars for TensorBoard/SwanLab.

Use from the trainer::
    evaluator = EpochEvaluator("exp/sft/model", test_data_dir="data/test", num_utts=4,
                               asr_model_dir=args.asr_model_dir)
    ...
    metrics = evaluator(unwrap(model), "llm", epoch, model_dir=model_dir)   # rank 0, after the epoch's checkpoint
    tracker.log_scalars(tracker_scalars(metrics), step)

``cosyvoice_dir`` is the model dir the other modules come from: the stage-4 output dir (its spk2info.pt holds the
speaker; after the LLM stage it may hold the fine-tuned llm.pt, so flow training is judged with it), or the
pretrained dir plus ``train_data_dir`` (whose stage-1 ``spk2embedding.pt`` gives the speaker embedding).

The evaluation runs on its own seeded random streams (the training streams continue as if it had not run), puts
the module in eval mode for the synthesis and back into the mode it was in, and leaves no inference-mode tensors
cached on it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Dict, Optional

import torch

from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.eval import runner
from cosyvoice.eval.asr import load_asr
from cosyvoice.eval.metrics import SpeakerEmbedder
from cosyvoice.eval.select import write_epoch_eval
from cosyvoice.utils.checkpoint import rng_scope
from cosyvoice.utils.pretrained import CAMPPLUS_FILE, check_pretrained_dir, SPK2INFO_FILE

logger = logging.getLogger(__name__)

EVAL_SEED = 20240702        # the synthesis seed of every epoch: the same subset, the same draws
SCALAR_KEYS = ("sim", "sim_to_real", "error_rate", "cer", "wer", "duration_ratio")


@contextlib.contextmanager
def swapped_module(cosyvoice, name: str, module: torch.nn.Module):
    """Put ``module`` in place of ``cosyvoice.model.<name>`` (llm or flow), in eval mode, for the block."""
    if name not in ("llm", "flow"):
        raise ValueError(f"can evaluate the llm or the flow, not {name!r}")
    old, was_training = getattr(cosyvoice.model, name), module.training
    setattr(cosyvoice.model, name, module.eval())
    try:
        yield cosyvoice
    finally:
        setattr(cosyvoice.model, name, old)
        module.train(was_training)
        clear_inference_tensors(module)


def clear_inference_tensors(module: torch.nn.Module) -> int:
    """Replace tensors that modules cached as plain attributes during inference mode (e.g. extended positional
    tables) by normal copies, so later training can use them in autograd. Returns how many were replaced."""
    n = 0
    for m in module.modules():
        for key, value in list(vars(m).items()):
            if isinstance(value, torch.Tensor) and value.is_inference():
                setattr(m, key, value.clone())
                n += 1
    return n


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def tracker_scalars(metrics: Dict) -> Dict[str, float]:
    """``eval/<key>`` scalars of the metrics that are present."""
    return {f"eval/{k}": float(metrics[k]) for k in SCALAR_KEYS if metrics.get(k) is not None}


class EpochEvaluator:
    """SIM (and CER/WER with an ASR model) of a fixed subset of test texts, synthesized as the SFT speaker.

    ``cosyvoice_dir``: a CosyVoice2 model dir (see the module docstring). ``train_data_dir``: a data dir whose
    ``spk2embedding.pt`` (stage 1) gives the speaker's SFT embedding; needed when ``cosyvoice_dir`` has no
    spk2info.pt entry for the speaker. ``num_utts``: the subset size, spread evenly over the sorted test utterances.
    """

    def __init__(self, cosyvoice_dir: str, test_data_dir: str, train_data_dir: Optional[str] = None,
                 num_utts: int = 4, spk_id: str = "", asr_model_dir: str = "", asr_backend: str = "auto",
                 seed: int = EVAL_SEED, max_token_text_ratio: Optional[float] = None, wav_dir: Optional[str] = None):

        check_pretrained_dir(cosyvoice_dir)
        self.cosyvoice_dir = cosyvoice_dir
        speakers = runner.read_speakers(test_data_dir, spk_id)
        self.spk, items = next(iter(speakers.items()))
        if len(speakers) > 1:
            logger.info("per-epoch evaluation: %s has %d speakers; evaluating the first, %s", test_data_dir,
                        len(speakers), self.spk)
        self.items = runner.spread(items, num_utts)
        self.entry = self._speaker_entry(cosyvoice_dir, train_data_dir, self.spk)
        self.embedding = self.entry["embedding"]  # (1, 192)
        self.seed = seed
        self.max_token_text_ratio = max_token_text_ratio
        self.wav_dir = wav_dir
        self.embedder = SpeakerEmbedder(os.path.join(cosyvoice_dir, CAMPPLUS_FILE))
        self.asr, self.asr_status = load_asr(asr_model_dir, asr_backend)
        self._cosyvoice = None
        self._real_dir = tempfile.TemporaryDirectory(prefix="cosyvoice-epoch-eval-")
        self.real = runner.copy_real(self.items, self._real_dir.name)
        logger.info("per-epoch evaluation: speaker %s, %d text(s) (%s); CER/WER: %s", self.spk, len(self.items),
                    ", ".join(it.utt for it in self.items),
                    "on" if self.asr is not None else f"skipped ({self.asr_status['reason']})")

    @staticmethod
    def _speaker_entry(cosyvoice_dir: str, train_data_dir: Optional[str], spk: str) -> Dict:
        """The SFT entry {'embedding': (1, 192)}: from ``train_data_dir``'s spk2embedding.pt when given, else the
        model dir's spk2info.pt entry (with its speaker tag, for a multi-speaker run)."""

        if train_data_dir:
            path = os.path.join(train_data_dir, "spk2embedding.pt")
            if not os.path.isfile(path):
                raise runner.EvalInputError(f"{path} not found: run stage 1 first (the SFT speaker embedding)")
        else:
            path = os.path.join(cosyvoice_dir, SPK2INFO_FILE)
            if not os.path.isfile(path):
                raise runner.EvalInputError(f"{path} not found: run stage 4 first, or give the evaluation a data dir "
                                            "with spk2embedding.pt (stage 1)")
        table = torch.load(path, map_location="cpu", weights_only=True)
        if spk not in table:
            raise runner.EvalInputError(f"speaker '{spk}' is not in {path} (it has: {', '.join(sorted(table))})")
        entry = dict(table[spk]) if isinstance(table[spk], dict) else {"embedding": table[spk]}
        entry["embedding"] = torch.as_tensor(entry["embedding"], dtype=torch.float32).reshape(1, -1)
        return entry

    @property
    def cosyvoice(self):
        """The CosyVoice2 / CosyVoice3 of ``cosyvoice_dir`` with the speaker registered (built on first use)."""
        if self._cosyvoice is None:
            cv = AutoModel(model_dir=self.cosyvoice_dir)
            cv.frontend.spk2info[self.spk] = {k: v.to(cv.frontend.device) if torch.is_tensor(v) else v
                                              for k, v in self.entry.items()}
            self._cosyvoice = cv
        return self._cosyvoice

    def __call__(self, module: torch.nn.Module, name: str, epoch: int, model_dir: Optional[str] = None) -> Dict:
        """Evaluate ``module`` (the trained llm or flow, unwrapped from DDP/DeepSpeed) after ``epoch``; write
        ``<model_dir>/eval/epoch_<epoch>.json`` when ``model_dir`` is given. Returns the metrics."""

        out_dir = (os.path.join(self.wav_dir, f"epoch_{epoch}") if self.wav_dir
                   else tempfile.mkdtemp(prefix="cosyvoice-epoch-eval-"))
        with rng_scope(self.seed), swapped_module(self.cosyvoice, name, module) as cv:
            runner.limit_speech_tokens(cv.model.llm, self.max_token_text_ratio)
            try:
                synth = runner.synthesize_items(cv, self.items, "sft", out_dir, self.seed)
            finally:
                runner.limit_speech_tokens(cv.model.llm, None)
        summary, _ = runner.score(self.items, {"real": self.real, "sft": synth}, self.embedder, self.asr)
        if not self.wav_dir:
            for entry in synth.values():
                os.remove(entry["wav"])
            os.rmdir(out_dir)
        s = summary["sft"]
        metrics = {"sim": s["sim_centroid"], "sim_to_real": s["sim_real"], "error_rate": s["error_rate"],
                   "cer": s["cer"], "wer": s["wer"], "duration_ratio": s["duration_ratio"], "rtf": s["rtf"],
                   "n_utts": len(self.items), "utts": [it.utt for it in self.items], "asr": self.asr_status,
                   "model": name}
        if model_dir is not None:
            write_epoch_eval(model_dir, epoch, metrics)
        logger.info("epoch %d evaluation (%s): SIM %s, same-text SIM %s, ASR error rate %s", epoch, name,
                    _fmt(metrics["sim"]), _fmt(metrics["sim_to_real"]),
                    "skipped" if metrics["error_rate"] is None else f"{100 * metrics['error_rate']:.2f}%")
        return metrics
