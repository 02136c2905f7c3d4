"""Per-epoch synthesis during training: the SFT samples (``train.py --sample_texts``) and the evaluation
(``train.py --eval_every_epoch true``), how the voice sounds rather than the loss.

Both synthesize with one :class:`EpochModel`: a CosyVoice2 / CosyVoice3 built once from a model dir, into which the
module being trained is swapped for the block (:meth:`EpochModel.using`) and then swapped out again. The trainer
builds one per model dir and hands it to both hooks, so a run holds one extra model, not two.

:class:`SampleRenderer` speaks the sample texts after each epoch and hands the audio to the trackers.
:class:`EpochEvaluator` synthesizes a small fixed subset of the speaker's test texts as the SFT speaker and scores
it: mean CAM++ similarity to the centroid of the real test clips (``sim``) and to the real clip of the same text
(``sim_to_real``), and with an ASR model the error rates (``error_rate``, ``cer``, ``wer``). The record goes to
``<model_dir>/eval/epoch_<N>.json`` (read by :mod:`cosyvoice.eval.select` to pick checkpoints, and by the report),
and :func:`tracker_scalars` gives the ``eval/*`` scalars for TensorBoard/SwanLab.

Use from the trainer::
    shared = EpochModel("exp/sft/model")
    evaluator = EpochEvaluator("exp/sft/model", test_data_dir="data/test", num_utts=4,
                               asr_model_dir=args.asr_model_dir, epoch_model=shared)
    ...
    metrics = evaluator(unwrap(model), "llm", epoch, model_dir=model_dir)   # rank 0, after the epoch's checkpoint
    tracker.log_scalars(tracker_scalars(metrics), step)

``cosyvoice_dir`` is the model dir the other modules come from: the stage-4 output dir (its spk2info.pt holds the
speaker; after the LLM stage it may hold the fine-tuned llm.pt, so flow training is judged with it), or the
pretrained dir plus ``train_data_dir`` (whose stage-1 ``spk2embedding.pt`` gives the speaker embedding).

Synthesis runs on its own seeded random streams (the training streams continue as if it had not run), puts the
module in eval mode for the block and back into the mode it was in, and leaves no inference-mode tensors cached on
it.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from cosyvoice.audio.io import save_wav
from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.eval import runner
from cosyvoice.eval.asr import load_asr
from cosyvoice.eval.metrics import SpeakerEmbedder
from cosyvoice.eval.select import write_epoch_eval
from cosyvoice.utils import lora
from cosyvoice.utils.checkpoint import rng_scope
from cosyvoice.utils.pretrained import CAMPPLUS_FILE, check_pretrained_dir, SPK2INFO_FILE

logger = logging.getLogger(__name__)

EVAL_SEED = 20240702        # the synthesis seed of every epoch: the same subset, the same draws
SCALAR_KEYS = ("sim", "sim_to_real", "error_rate", "cer", "wer", "duration_ratio")
TRAINED_PARTS = ("llm", "flow")


def _check_part(name: str, doing: str = "synthesize with") -> None:
    if name not in TRAINED_PARTS:
        raise ValueError(f"can {doing} a trained llm or flow, not {name!r}")


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


class EpochModel:
    """The one CosyVoice2 / CosyVoice3 of ``model_dir`` that per-epoch synthesis uses (built on first use, on its
    own random streams seeded with ``seed``). :meth:`using` swaps trained modules in for a block."""

    def __init__(self, model_dir: str, seed: int = EVAL_SEED):
        self.model_dir = model_dir
        self.seed = seed
        self._cosyvoice = None

    @property
    def cosyvoice(self):
        if self._cosyvoice is None:
            with rng_scope(self.seed):  # building the model draws random numbers too
                self._cosyvoice = AutoModel(model_dir=self.model_dir, characters=[])  # the trained modules come in
        return self._cosyvoice

    def speakers(self) -> List[str]:
        return self.cosyvoice.list_available_spks()

    @contextlib.contextmanager
    def using(self, speakers: Optional[Mapping[str, Dict]] = None, **modules: torch.nn.Module):
        """Yield the CosyVoice with each of ``modules`` (``llm=``, ``flow=``: a trained module, unwrapped from
        DDP/DeepSpeed, LoRA adapters and all) in place of the model's own, in eval mode, and the SFT entries
        ``speakers`` ({name: {'embedding': ...}}) registered. Afterwards the model's own modules and entries are
        back and each module is in the mode it was in, with no inference-mode tensor cached on it."""
        for name in modules:
            _check_part(name)
        cv = self.cosyvoice
        spk2info = cv.frontend.spk2info if speakers else {}
        swapped, registered = [], []
        try:
            for name, module in modules.items():
                swapped.append((name, getattr(cv.model, name), module, module.training))
                setattr(cv.model, name, module.eval())
            for spk, entry in (speakers or {}).items():
                registered.append((spk, spk2info.get(spk)))
                spk2info[spk] = {k: v.to(cv.frontend.device) if torch.is_tensor(v) else v for k, v in entry.items()}
            yield cv
        finally:
            for spk, old_entry in reversed(registered):
                if old_entry is None:
                    spk2info.pop(spk, None)
                else:
                    spk2info[spk] = old_entry
            for name, own, module, was_training in reversed(swapped):
                setattr(cv.model, name, own)
                module.train(was_training)
                clear_inference_tensors(module)

    def tuned(self, name: str, path: str) -> torch.nn.Module:
        """A copy of the model's own ``name`` (llm or flow) holding the weights of the checkpoint file ``path``,
        loaded strictly; a LoRA adapter checkpoint is merged onto the model's own weights (its settings are read
        from the training dir's config.yaml beside it)."""
        _check_part(name)
        own = getattr(self.cosyvoice.model, name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if lora.is_adapter_state(state):
            state = lora.merge_adapter(own, state, lora.training_dir_settings(Path(path).parent, name))
        module = copy.deepcopy(own)
        module.load_state_dict(state)
        return module


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def tracker_scalars(metrics: Dict) -> Dict[str, float]:
    """``eval/<key>`` scalars of the metrics that are present."""
    return {f"eval/{k}": float(metrics[k]) for k in SCALAR_KEYS if metrics.get(k) is not None}


def read_sample_texts(path: str) -> Dict[str, str]:
    """{name: text} from a json list of texts (names s00, s01, ...) or a json object {name: text}."""
    with open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, list):
        data = {f"s{i:02d}": t for i, t in enumerate(data)}
    if not isinstance(data, dict) or not data or not all(isinstance(t, str) and t.strip() for t in data.values()):
        raise ValueError(f"{path}: expected a non-empty json list of texts or object {{name: text}}")
    return {str(k): v for k, v in data.items()}


class SampleRenderer:
    """After each epoch, speak the sample texts with the current weights and hand the audio to the trackers.

    ``model_dir``: a model dir laid out like CosyVoice2-0.5B with the speaker in ``spk2info.pt`` (the recipe's
    output model dir); its own llm/flow are the base weights. Training the llm: new llm + base flow (``llm``).
    Training the flow: base llm + new flow (``flow``), and with ``base_llm`` (a fine-tuned llm.pt, or a LoRA adapter
    checkpoint of an llm training dir) also new llm + new flow (``llm_flow``). ``epoch_model``: the
    :class:`EpochModel` of ``model_dir`` to share with the evaluation (one is built otherwise). Rank 0 only; fixed
    seed; runs on its own random streams; an error is logged as a warning and never stops training.
    """

    def __init__(self, model: str, model_dir: str, texts_json: str, out_dir: Path, spk_id: Optional[str] = None,
                 base_llm: Optional[str] = None, seed: int = 1986, epoch_model: Optional[EpochModel] = None):
        _check_part(model, "render samples of")
        self.kind = model
        self.epoch_model = _shared_model(epoch_model, model_dir, seed)
        self.texts = read_sample_texts(texts_json)
        self.out_dir = Path(out_dir)
        self.spk_id = spk_id
        self.base_llm = base_llm if model == "flow" else None
        self.seed = seed
        self._tuned_llm = None
        self._checked = False

    def _check_speaker(self) -> None:
        model_dir = self.epoch_model.model_dir
        speakers = self.epoch_model.speakers()
        if not speakers:
            raise ValueError(f"{model_dir}/spk2info.pt holds no speaker (stage 4 writes it)")
        if self.spk_id is None:
            self.spk_id = speakers[0]
        elif self.spk_id not in speakers:
            raise ValueError(f"speaker '{self.spk_id}' is not in {model_dir}/spk2info.pt ({', '.join(speakers)})")
        self._checked = True

    def __call__(self, module, epoch: int, step: int, tracker=None) -> List[Path]:
        """Render after ``epoch``; ``tracker``: anything with ``log_audio(tag, wav, sample_rate, step)``."""
        try:
            with rng_scope(self.seed):
                return self.render(module, epoch, step, tracker)
        except Exception as e:  # noqa: BLE001 - samples are a convenience; training must go on
            logger.warning("epoch %d: SFT samples failed (%s: %s); training continues", epoch, type(e).__name__, e)
            return []

    def render(self, module, epoch: int, step: int, tracker=None) -> List[Path]:
        if not self._checked:
            self._check_speaker()
        passes = [(self.kind, {self.kind: module})]
        if self.base_llm:
            if self._tuned_llm is None:
                self._tuned_llm = self.epoch_model.tuned("llm", self.base_llm)
            passes.append(("llm_flow", {"llm": self._tuned_llm, "flow": module}))
        written = []
        for tag, modules in passes:
            with self.epoch_model.using(**modules) as cv:
                for name, text in self.texts.items():
                    with rng_scope(self.seed):
                        pieces = [out["tts_speech"] for out in
                                  cv.inference_sft(text, self.spk_id, stream=False, seed=self.seed)]
                    wav = np.concatenate([p.reshape(-1).float().cpu().numpy() for p in pieces])
                    path = self.out_dir / f"epoch_{epoch}" / f"{tag}_{name}.wav"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_wav(path, np.clip(wav, -1.0, 1.0), cv.sample_rate)
                    written.append(path)
                    if tracker is not None:
                        tracker.log_audio(f"sft/{tag}/{name}", wav, cv.sample_rate, step)
        logger.info("epoch %d: %d SFT sample(s) in %s", epoch, len(written), self.out_dir / f"epoch_{epoch}")
        return written


def _shared_model(epoch_model: Optional[EpochModel], model_dir: str, seed: int) -> EpochModel:
    """``epoch_model`` when it is the model of ``model_dir``, a new one when None."""
    if epoch_model is None:
        return EpochModel(model_dir, seed)
    if os.path.realpath(epoch_model.model_dir) != os.path.realpath(model_dir):
        raise ValueError(f"the shared epoch model is of {epoch_model.model_dir}, not {model_dir}")
    return epoch_model


class EpochEvaluator:
    """SIM (and CER/WER with an ASR model) of a fixed subset of test texts, synthesized as the SFT speaker.

    ``cosyvoice_dir``: a CosyVoice2 model dir (see the module docstring). ``train_data_dir``: a data dir whose
    ``spk2embedding.pt`` (stage 1) gives the speaker's SFT embedding; needed when ``cosyvoice_dir`` has no
    spk2info.pt entry for the speaker. ``num_utts``: the subset size, spread evenly over the sorted test utterances.
    """

    def __init__(self, cosyvoice_dir: str, test_data_dir: str, train_data_dir: Optional[str] = None,
                 num_utts: int = 4, spk_id: str = "", asr_model_dir: str = "", asr_backend: str = "auto",
                 seed: int = EVAL_SEED, max_token_text_ratio: Optional[float] = None, wav_dir: Optional[str] = None,
                 epoch_model: Optional[EpochModel] = None):

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
        self.epoch_model = _shared_model(epoch_model, cosyvoice_dir, seed)
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
        """The CosyVoice2 / CosyVoice3 of ``cosyvoice_dir`` that the evaluation synthesizes with (built on first
        use; shared with the samples when the trainer gave both one :class:`EpochModel`)."""
        return self.epoch_model.cosyvoice

    def __call__(self, module: torch.nn.Module, name: str, epoch: int, model_dir: Optional[str] = None) -> Dict:
        """Evaluate ``module`` (the trained llm or flow, unwrapped from DDP/DeepSpeed) after ``epoch``; write
        ``<model_dir>/eval/epoch_<epoch>.json`` when ``model_dir`` is given. Returns the metrics."""

        _check_part(name, "evaluate")
        out_dir = (os.path.join(self.wav_dir, f"epoch_{epoch}") if self.wav_dir
                   else tempfile.mkdtemp(prefix="cosyvoice-epoch-eval-"))
        with rng_scope(self.seed), self.epoch_model.using(speakers={self.spk: self.entry}, **{name: module}) as cv:
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
