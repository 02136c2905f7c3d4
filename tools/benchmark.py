#!/usr/bin/env python3
"""Speed benchmark: LLM decoding, flow + HiFT token2wav (offline and streaming), training throughput, resampling.

    python tools/benchmark.py                                  # full-size conf/cosyvoice2.yaml, random weights
    python tools/benchmark.py --version cosyvoice3             # full-size conf/cosyvoice3.yaml (Fun-CosyVoice3)
    python tools/benchmark.py --stand_in [--version cosyvoice3]  # a tiny stand-in (written to a temp dir)
    python tools/benchmark.py --model_dir pretrained_models/CosyVoice2-0.5B   # the version is told by the dir
    python tools/benchmark.py --device cuda --dtype bf16       # CUDA, autocast

Every figure is the median of ``--runs`` runs after ``--warmup`` runs. Prints a table and writes JSON
(``--out``, default exp/benchmark/<model>_<device>_<dtype>.json) with the device, dtype, threads, versions and git
commit. Random weights give the same speed as trained ones (same shapes, same work), except that the LLM may stop
early (then fewer tokens are timed) and the streaming schedule depends only on the token count, which is fixed here.

Figures:
* llm: prefill of the prompt (ms), decode ms/token at batch 1, the weights read per token and the measured memory
  bandwidth, hence the bandwidth floor (ms/token) and the fraction of it reached; its RTF (25 tokens per second).
* token2wav: ``CosyVoice2Model.token2wav`` (``CosyVoice3Model``'s for CosyVoice3) on ``--audio_seconds`` of random
  speech tokens, offline (one call) and streaming (``tts`` with the tokens given, the official chunk schedule):
  total RTF, time to the first chunk (p50/p90 over runs), and the flow and HiFT shares.
* ttfa: time to first audio of streaming synthesis, SFT and zero-shot (``--ttfa_prompt_tokens`` of prompt speech),
  through ``tts(stream=True)`` with the LLM in its worker thread, in parts: the text front end (text normalization
  and tokenization; for zero-shot also the prompt's speech tokens, CAM++ embedding and mel; measured when there is
  a model dir, ``--stand_in`` or ``--model_dir``, whose ONNX models it runs), LLM prefill (to the first token), the
  rest of the first chunk's tokens (``token_hop_len`` + look-ahead, + the prompt's padding to a whole hop), and the
  first chunk's token2wav (while the LLM goes on decoding beside it, as in real use).
* train_llm / train_flow: forward + backward + grad clip + Adam on a synthetic batch made by
  ``cosyvoice.dataset.processor.padding``: step time, utterances/s, speech tokens/s (llm) or mel frames/s (flow),
  peak memory, and the Adam step alone with the for-loop, foreach and fused implementations.
* train_llm_lora / train_flow_lora: the same step with LoRA (``--finetune lora``: the yaml's ``llm_lora`` /
  ``flow_lora`` adapters on the frozen weights, what the trainer builds), and the full-vs-LoRA comparison: step time,
  peak memory (and its rise over the memory held before the step), trainable parameters, checkpoint size.
* resample: the official resampler (``cosyvoice.audio.resample``, filters cached) against soxr VHQ on a
  ``--resample_seconds`` clip, 48 -> 16, 48 -> 24 and 44.1 -> 16 kHz: ms per clip, times real time, and how far
  apart the two filters' outputs are (the cost of exactness, and why soxr is not used where parity matters).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
from cosyvoice.audio.resample import resample, resample_filters
from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.cli.model import FLOW_CACHE_FRAMES, CosyVoice2Model, CosyVoice3Model
from cosyvoice.dataset.processor import padding
from cosyvoice.utils import lora
from cosyvoice.utils.config import load_config
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.pretrained import get_version, model_version, version_from_name
from cosyvoice.utils.train_utils import init_optimizer, optimizer_impl

logger = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parents[1]

STAGES = ("llm", "token2wav", "ttfa", "train_llm", "train_llm_lora", "train_flow", "train_flow_lora", "resample")
MODEL_STAGES = ("llm", "token2wav", "ttfa", "train_llm", "train_llm_lora", "train_flow", "train_flow_lora")
RESAMPLE_PAIRS = ((48000, 16000), (48000, 24000), (44100, 16000))
# --undo: a speed change of this toolkit's that has a switch, put back the official way, so that one commit measures
# the figure with and without it (BENCHMARKS.md; the changes without a switch have their figures there too).
UNDO = {
    "stream_cache": "each streaming chunk re-runs the flow on the whole prefix (official token2wav and the "
                    "default, CosyVoice2Model(flow_cache_max_frames=0); the benchmark otherwise opts in)",
    "fused_adam": "training uses torch's default Adam implementation instead of the fused one (optim_conf fused: "
                  "false)",
    "first_chunk_alone": "the LLM keeps decoding while the first streaming chunk is made on a CPU "
                         "(CosyVoice2Model(first_chunk_alone=False))",
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKEN_RATE = 25            # speech tokens per second of audio
SPEECH_TOKEN_SIZE = 6561   # ids 0..6560 are speech tokens


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", default=None,
                     help="build llm/flow/hift from this yaml with random weights [full size: conf/cosyvoice2.yaml, "
                          "or conf/cosyvoice3.yaml with --version cosyvoice3]")
    src.add_argument("--model_dir", help="load a model dir (cosyvoice2.yaml or cosyvoice3.yaml, llm.pt, flow.pt, "
                                         "hift.pt, CosyVoice-BlankEN/) strictly instead")
    src.add_argument("--stand_in", action="store_true",
                     help="write the tiny stand-in (tools/make_tiny_pretrained.py) to a temp dir and load it")
    p.add_argument("--version", choices=("cosyvoice2", "cosyvoice3"), default=None,
                   help="CosyVoice2-0.5B or Fun-CosyVoice3-0.5B [the --model_dir's, else what the --config's name "
                        "says ('cosyvoice3' in it), else cosyvoice2]")
    p.add_argument("--qwen_config", default=str(ROOT / "conf" / "qwen2_0.5b_config.json"),
                   help="Qwen2 config.json for --config (the LLM backbone's shape)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                   help="fp32, or bf16/fp16 autocast (CUDA only; HiFT stays fp32 as in inference)")
    p.add_argument("--tf32", action="store_true", help="CUDA fp32: let matmuls and convolutions use TF32")
    p.add_argument("--rows", nargs="+", metavar="JSON", default=None,
                   help="print the BENCHMARKS.md table rows of these result files and exit (no benchmark is run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    p.add_argument("--runs", type=int, default=3, help="timed runs (figures are their median)")
    p.add_argument("--text_tokens", type=int, default=20, help="LLM prompt: sos + text + task_id positions")
    p.add_argument("--decode_tokens", type=int, default=50, help="LLM decode steps timed per run")
    p.add_argument("--audio_seconds", type=float, default=5.0, help="token2wav length (25 tokens per second)")
    p.add_argument("--prompt_tokens", type=int, default=0,
                   help="flow prompt tokens (0: SFT, no prompt; zero-shot uses a few seconds)")
    p.add_argument("--ttfa_text_tokens", type=int, default=20,
                   help="text tokens of the ttfa stage (the LLM then makes at least twice as many speech tokens)")
    p.add_argument("--ttfa_prompt_tokens", type=int, default=75,
                   help="zero-shot prompt speech tokens of the ttfa stage (75: a 3 s prompt)")
    p.add_argument("--train_batch", type=int, default=4, help="utterances per training batch")
    p.add_argument("--train_text_tokens", type=int, default=18, help="text tokens per training utterance")
    p.add_argument("--train_speech_tokens", type=int, default=125, help="speech tokens per training utterance")
    p.add_argument("--resample_seconds", type=float, default=5.0, help="length of the resampled clip")
    p.add_argument("--no_optimizer_variants", action="store_true",
                   help="skip timing the Adam for-loop / foreach / fused step separately")
    p.add_argument("--bandwidth_mib", type=int, default=256,
                   help="size of the buffer the memory bandwidth is measured on (well above the last-level cache)")
    p.add_argument("--undo", default="",
                   help="comma list of speed changes to put back the official way, to measure each one: "
                        + "; ".join(f"{k}: {v}" for k, v in UNDO.items()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output path")
    args = p.parse_args(argv)
    args.undo_list = [u.strip() for u in args.undo.split(",") if u.strip()]
    return args


# ------------------------------------------------------------------------------------------------------ helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(xs: List[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def timed_runs(fn: Callable[[int], None], warmup: int, runs: int, device: torch.device) -> List[float]:
    """Seconds of each timed call of ``fn(run_index)`` after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + runs):
        sync(device)
        t0 = time.perf_counter()
        fn(i)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


class PeakMemory:
    """Peak memory while the block runs: CUDA max allocated, or the process RSS sampled every 5 ms on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def rss_bytes() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())
            self._stop.wait(0.005)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = self.rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2 ** 20, 1)

    @classmethod
    def now_mb(cls, device: torch.device) -> float:
        """Memory held right now: CUDA allocated, or the process RSS."""
        if device.type == "cuda":
            return round(torch.cuda.memory_allocated(device) / 2 ** 20, 1)
        return round(cls.rss_bytes() / 2 ** 20, 1)


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def git_commit() -> Dict[str, object]:
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "cosyvoice", "tools")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def environment(args, device: torch.device) -> Dict[str, object]:
    import transformers

    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    env.update(git_commit())
    return env


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------------ models
def resolve_version(args) -> str:
    """--version, else the --model_dir's (its yaml), else what the --config's file name says; sets --config's
    default (the version's full-size conf/*.yaml)."""

    if args.model_dir and not args.stand_in:
        found = model_version(args.model_dir).name
        if args.version and args.version != found:
            raise ValueError(f"--version {args.version}, but {args.model_dir} is a {found} model dir")
        args.version = found
    elif not args.version:
        args.version = version_from_name(Path(args.config).stem).name if args.config else "cosyvoice2"
    if not args.config:
        args.config = str(ROOT / "conf" / get_version(args.version).config_file)
    return args.version


def build_models(args, workdir: Path):
    """(CosyVoice2Model or CosyVoice3Model on the device, the model dir's text and prompt front end or None with
    random weights, a description of where the weights came from). ``--undo`` sets the model's speed switches."""

    resolve_version(args)
    if args.stand_in:
        args.model_dir = str(workdir / "stand_in")
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_pretrained.py"), "--version", args.version,
                        "--out_dir", args.model_dir, "--seed", "1986"], check=True, stdout=subprocess.DEVNULL)
    if args.model_dir:
        cosyvoice = AutoModel(model_dir=args.model_dir)  # what inference loads: strict weights, the front end
        model, frontend = cosyvoice.model, cosyvoice.frontend
        source = "stand_in" if args.stand_in else f"model_dir:{args.model_dir}"
    else:
        qwen_dir = workdir / "qwen"
        qwen_dir.mkdir()
        shutil.copy(args.qwen_config, qwen_dir / "config.json")
        torch.manual_seed(args.seed)
        configs = load_config(args.config, {"qwen_pretrain_path": str(qwen_dir)}, keys=["llm", "flow", "hift"])
        engine = CosyVoice3Model if args.version == "cosyvoice3" else CosyVoice2Model
        model, frontend = engine(configs["llm"], configs["flow"], configs["hift"]), None
        source = f"config:{Path(args.config).name} (random weights)"
    model.device = torch.device(args.device)
    for module in (model.llm, model.flow, model.hift):
        module.to(model.device).eval()
    # the stream cache is opt-in (it moves the audio by float rounding); the benchmark measures it switched on
    model.flow_cache_max_frames = 0 if "stream_cache" in args.undo_list else FLOW_CACHE_FRAMES
    if "first_chunk_alone" in args.undo_list:
        model.first_chunk_alone = False
    if args.dtype != "fp32":
        model.amp_dtype = DTYPES[args.dtype]
    return model, frontend, source


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------------ stages
def memory_bandwidth(device: torch.device, mib: int = 256, runs: int = 10) -> Dict[str, float]:
    """Read bandwidth (GB/s): a sum and a matrix-vector product over ``mib`` MiB of float32, best of ``runs``
    each (the floor is a lower bound, so the best rate seen is the honest one); the faster kernel is used."""
    n = max(1, mib * 2 ** 18 // 8192) * 8192
    x = torch.ones(n, device=device)
    w = torch.ones(8192, n // 8192, device=device)
    v = torch.ones(n // 8192, device=device)
    sum_s = min(timed_runs(lambda i: x.sum(), 1, runs, device))
    gemv_s = min(timed_runs(lambda i: torch.mv(w, v), 1, runs, device))
    del x, w, v
    nbytes = n * 4
    return {"sum_gbps": round(nbytes / sum_s / 1e9, 2), "gemv_gbps": round(nbytes / gemv_s / 1e9, 2),
            "gbps": round(nbytes / min(sum_s, gemv_s) / 1e9, 2)}


def llm_weight_bytes(llm) -> int:
    """Bytes of the weights read for one decode step: the Qwen2 layers and final norm, llm_decoder, one embedding
    row (not the 151,936-row text embedding, which is only gathered, nor its tied lm_head, which is not run)."""
    backbone = llm.llm.model.model
    mods = [backbone.layers, backbone.norm, llm.llm_decoder]
    total = sum(p.numel() * p.element_size() for m in mods for p in m.parameters())
    emb = llm.speech_embedding.weight
    return total + emb.size(1) * emb.element_size()


def bench_llm(model, args, device, dtype, bandwidth) -> Dict[str, object]:
    llm = model.llm
    width = llm.llm_input_size
    g = torch.Generator().manual_seed(args.seed)
    text = torch.randint(0, llm.llm.model.config.vocab_size, (1, args.text_tokens), generator=g).to(device)
    with torch.inference_mode():
        sos, task = llm._sos_task_emb()
        lm_input = torch.cat([sos, llm._embed_text(text), task], dim=1)
    assert lm_input.shape == (1, args.text_tokens + 2, width)
    prefill, decode, counts = [], [], []
    # CosyVoice3: any of 200 ids stops decoding and its official rule bans only one below min_len; ban them all for
    # the timed steps so that every run decodes --decode_tokens tokens (the same work per step)
    banned = llm.min_len_banned_ids
    if len(getattr(llm, "stop_token_ids", [])) > len(banned):
        llm.min_len_banned_ids = list(llm.stop_token_ids)

    def run(i):
        torch.manual_seed(args.seed + i)
        n, t_first = 0, None
        with autocast(device, dtype):
            t0 = time.perf_counter()
            for _ in llm.inference_wrapper(lm_input, 25, args.decode_tokens, args.decode_tokens):
                n += 1
                if t_first is None:
                    sync(device)
                    t_first = time.perf_counter()
            sync(device)
            t_end = time.perf_counter()
        if i >= args.warmup:
            prefill.append(t_first - t0)
            if n > 1:
                decode.append((t_end - t_first) / (n - 1))
            counts.append(n)

    try:
        timed_runs(run, args.warmup, args.runs, device)
    finally:
        llm.min_len_banned_ids = banned
    if not decode:
        raise RuntimeError("the LLM stopped after its first token in every run; use more --runs or another --seed")
    ms_tok = median(decode) * 1e3
    wbytes = llm_weight_bytes(llm)
    floor_ms = wbytes / (bandwidth["gbps"] * 1e9) * 1e3
    return {
        "prefill_positions": args.text_tokens + 2,
        "prefill_ms": round(median(prefill) * 1e3, 2),
        "decode_ms_per_token": round(ms_tok, 2),
        "decode_tokens_per_s": round(1e3 / ms_tok, 2),
        "decode_tokens_timed": counts,
        "rtf": round(ms_tok * TOKEN_RATE / 1e3, 4),
        "weight_bytes_per_token": wbytes,
        "bandwidth_floor_ms_per_token": round(floor_ms, 2),
        "fraction_of_floor": round(floor_ms / ms_tok, 3),
        "times_floor": round(ms_tok / floor_ms, 2),
        "params": n_params(llm),
    }


class StageTimer:
    """Wraps the flow's ``inference`` / ``inference_chunk`` and HiFT's ``inference`` to add up the seconds spent in
    each stage (a call made from inside another wrapped call of the same stage is not counted twice), and counts the
    work of the flow estimator: the mel frames of each of its calls (one call = one Euler step of the CFG pair)
    added up, a figure that, unlike the time, does not depend on what else the machine is doing."""

    METHODS = (("flow", "inference"), ("flow", "inference_chunk"), ("hift", "inference"))

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.seconds = {"flow": 0.0, "hift": 0.0}
        self._depth = {"flow": 0, "hift": 0}
        self.estimator_frames = 0
        self._hook = None

    def _wrap(self, name, fn):
        def wrapped(*a, **kw):
            self._depth[name] += 1
            try:
                if self._depth[name] > 1:
                    return fn(*a, **kw)
                sync(self.device)
                t0 = time.perf_counter()
                out = fn(*a, **kw)
                sync(self.device)
                self.seconds[name] += time.perf_counter() - t0
                return out
            finally:
                self._depth[name] -= 1
        return wrapped

    def record(self, times: Dict[str, List[float]], total: float) -> None:
        """Append this run's total, flow and HiFT seconds and estimator frames to ``times``."""
        times["total"].append(total)
        times["flow"].append(self.seconds["flow"])
        times["hift"].append(self.seconds["hift"])
        times["frames"].append(self.estimator_frames)

    def _count(self, x) -> None:
        self.estimator_frames += int(x.size(2))

    def __enter__(self):
        for stage, method in self.METHODS:
            module = getattr(self.model, stage)
            if hasattr(module, method):
                setattr(module, method, self._wrap(stage, getattr(module, method)))
        estimator = getattr(getattr(self.model.flow, "decoder", None), "estimator", None)
        if isinstance(estimator, torch.nn.Module):
            self._hook = estimator.register_forward_pre_hook(lambda m, args: self._count(args[0]))
            if hasattr(estimator, "forward_chunk"):
                real = estimator.forward_chunk

                def counted(x, *a, **kw):
                    self._count(x)
                    return real(x, *a, **kw)
                estimator.forward_chunk = counted
        return self

    def __exit__(self, *exc):
        for stage, method in self.METHODS:  # back to the class methods
            getattr(self.model, stage).__dict__.pop(method, None)
        if self._hook is not None:
            self._hook.remove()
            self.model.flow.decoder.estimator.__dict__.pop("forward_chunk", None)


class TokenClock:
    """Timestamps the speech tokens a ``CosyVoice2Model`` receives from its LLM worker (``_append``)."""

    def __init__(self, model):
        self.model, self.times = model, []

    def __enter__(self):
        real = self.model._append

        def stamped(uuid, token):
            real(uuid, token)
            self.times.append(time.perf_counter())
        self.model._append = stamped
        return self

    def __exit__(self, *exc):
        self.model.__dict__.pop("_append", None)


TTFA_TEXT = "The first chunk of audio should come as soon as it can, before the whole sentence is ready."
TTFA_PROMPT_TEXT = "A short prompt."


def _prompt_wav(seconds: float, path: Path) -> Path:
    """A voiced-looking test prompt (a 150 Hz tone with harmonics) of ``seconds`` at 16 kHz."""
    t = np.arange(int(seconds * 16000)) / 16000
    wav = sum(0.2 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 6))
    sf.write(str(path), wav.astype(np.float32), 16000)
    return path


def bench_ttfa(model, frontend, args, device, dtype, workdir: Path) -> Dict[str, object]:
    llm = model.llm
    g = torch.Generator().manual_seed(args.seed + 2)
    vocab = llm.llm.model.config.vocab_size
    p = args.ttfa_prompt_tokens
    text = torch.randint(0, vocab, (1, args.ttfa_text_tokens), generator=g, dtype=torch.int32)
    if hasattr(llm, "END_OF_PROMPT_ID"):  # CosyVoice3: the system prompt's end marker leads the text
        text[0, 0] = llm.END_OF_PROMPT_ID
    embedding = torch.randn(1, 192, generator=g)
    modes = {
        "sft": dict(text=text, flow_embedding=embedding, llm_embedding=embedding),
        "zero_shot": dict(text=text, flow_embedding=embedding, llm_embedding=embedding,
                          prompt_text=torch.randint(0, vocab, (1, 6), generator=g, dtype=torch.int32),
                          llm_prompt_speech_token=torch.randint(0, SPEECH_TOKEN_SIZE, (1, p), generator=g,
                                                                dtype=torch.int32),
                          flow_prompt_speech_token=torch.randint(0, SPEECH_TOKEN_SIZE, (1, p), generator=g,
                                                                 dtype=torch.int32),
                          prompt_speech_feat=torch.randn(1, 2 * p, 80, generator=g) - 5.0),
    }
    hop, lookahead = model.token_hop_len, model.flow.pre_lookahead_len
    result: Dict[str, object] = {"text_tokens": args.ttfa_text_tokens, "prompt_tokens": p}
    prompt_wav = _prompt_wav(p / TOKEN_RATE, workdir / "ttfa_prompt.wav") if frontend is not None else None
    banned = llm.min_len_banned_ids
    if len(getattr(llm, "stop_token_ids", [])) > len(banned):
        llm.min_len_banned_ids = list(llm.stop_token_ids)  # CosyVoice3: no early stop while timed (see bench_llm)
    try:
        for mode, kwargs in modes.items():
            n_prompt = kwargs.get("flow_prompt_speech_token", torch.zeros(1, 0)).shape[1]
            need = hop + (math.ceil(n_prompt / hop) * hop - n_prompt) + lookahead
            if int(args.ttfa_text_tokens * 2) < need:  # the LLM's min_token_text_ratio: 2 speech tokens per text token
                raise UserError(f"--ttfa_text_tokens {args.ttfa_text_tokens} is too few: the first {mode} chunk needs "
                                f"{need} speech tokens, which the LLM is sure to make from {math.ceil(need / 2)} "
                                f"text tokens")
            parts = {"frontend": [], "prefill": [], "first_chunk_tokens": [], "token2wav": [], "total": []}

            def run(i, kwargs=kwargs, need=need, parts=parts, mode=mode):
                front = None
                if frontend is not None:
                    t0 = time.perf_counter()
                    pieces = frontend.text_normalize(TTFA_TEXT, split=True)
                    if mode == "sft":
                        frontend._extract_text_token(pieces[0])
                    else:
                        frontend.frontend_zero_shot(pieces[0], TTFA_PROMPT_TEXT, str(prompt_wav), 24000, "")
                    front = time.perf_counter() - t0
                with TokenClock(model) as clock, autocast(device, dtype):
                    t0 = time.perf_counter()
                    stream = model.tts(stream=True, seed=i, **kwargs)
                    next(stream)
                    sync(device)
                    t_audio = time.perf_counter()
                    stream.close()  # stops the LLM
                if len(clock.times) < need:
                    raise RuntimeError(f"ttfa ({mode}): the LLM stopped after {len(clock.times)} tokens, before the "
                                       f"first chunk's {need}; use more --ttfa_text_tokens")
                if i >= args.warmup:
                    if front is not None:
                        parts["frontend"].append(front)
                    parts["prefill"].append(clock.times[0] - t0)
                    parts["first_chunk_tokens"].append(clock.times[need - 1] - clock.times[0])
                    parts["token2wav"].append(t_audio - clock.times[need - 1])
                    parts["total"].append(t_audio - t0 + (front or 0.0))

            timed_runs(run, args.warmup, args.runs, device)
            figs = {f"{k}_ms": round(median(v) * 1e3, 1) if v else None for k, v in parts.items()}
            figs["first_chunk_tokens"] = need
            if frontend is None:
                figs["frontend"] = "not measured: no model dir (give --model_dir or --stand_in)"
            result[mode] = figs
    finally:
        llm.min_len_banned_ids = banned
    return result


def token2wav_inputs(model, args, device):
    g = torch.Generator().manual_seed(args.seed + 1)
    n_tok = max(1, round(args.audio_seconds * TOKEN_RATE))
    p = args.prompt_tokens
    return dict(
        tokens=torch.randint(0, SPEECH_TOKEN_SIZE, (1, n_tok), dtype=torch.int32, generator=g),
        prompt_token=torch.randint(0, SPEECH_TOKEN_SIZE, (1, p), dtype=torch.int32, generator=g),
        prompt_feat=torch.randn(1, 2 * p, 80, generator=g) - 5.0,
        embedding=torch.randn(1, 192, generator=g),
    )


def bench_token2wav(model, args, device, dtype) -> Dict[str, object]:
    inputs = token2wav_inputs(model, args, device)
    n_tok = inputs["tokens"].shape[1]
    samples_per_token = model.flow.token_mel_ratio * 480
    audio_s = n_tok * samples_per_token / 24000
    result = {"speech_tokens": n_tok, "prompt_tokens": args.prompt_tokens, "audio_s": audio_s}

    # offline: one token2wav call over every token
    offline = {"total": [], "flow": [], "hift": [], "frames": []}

    def run_offline(i):
        uuid = f"bench-offline-{i}"
        model.hift_cache_dict[uuid] = None
        with StageTimer(model, device) as st, autocast(device, dtype):
            t0 = time.perf_counter()
            wav = model.token2wav(token=inputs["tokens"], prompt_token=inputs["prompt_token"],
                                  prompt_feat=inputs["prompt_feat"], embedding=inputs["embedding"],
                                  token_offset=0, uuid=uuid, stream=False, finalize=True,
                                  generator=torch.Generator(device=device).manual_seed(i))
            sync(device)
            total = time.perf_counter() - t0
        model.hift_cache_dict.pop(uuid)
        if wav.shape[1] != n_tok * samples_per_token:
            raise RuntimeError(f"token2wav gave {wav.shape[1]} samples for {n_tok} tokens")
        if i >= args.warmup:
            st.record(offline, total)

    timed_runs(run_offline, args.warmup, args.runs, device)
    result["offline"] = _t2w_figures(offline, audio_s)

    # streaming: CosyVoice2Model.tts with the tokens given up front (the official chunk schedule)
    stream = {"total": [], "flow": [], "hift": [], "frames": [], "first_chunk": [], "chunks": []}

    def run_stream(i):
        with StageTimer(model, device) as st, autocast(device, dtype):
            t0 = time.perf_counter()
            first, n_chunks, n_samples = None, 0, 0
            for out in model.tts(source_speech_token=inputs["tokens"], flow_embedding=inputs["embedding"],
                                 flow_prompt_speech_token=inputs["prompt_token"],
                                 prompt_speech_feat=inputs["prompt_feat"], stream=True, seed=i):
                n_chunks += 1
                n_samples += out["tts_speech"].shape[1]
                if first is None:
                    first = time.perf_counter() - t0
            total = time.perf_counter() - t0
        if n_samples != n_tok * samples_per_token:
            raise RuntimeError(f"streaming gave {n_samples} samples for {n_tok} tokens")
        if i >= args.warmup:
            st.record(stream, total)
            stream["first_chunk"].append(first)
            stream["chunks"].append(n_chunks)

    timed_runs(run_stream, args.warmup, args.runs, device)
    figs = _t2w_figures(stream, audio_s)
    figs["chunks"] = stream["chunks"][0]
    figs["first_chunk_ms_p50"] = round(percentile(stream["first_chunk"], 50) * 1e3, 1)
    figs["first_chunk_ms_p90"] = round(percentile(stream["first_chunk"], 90) * 1e3, 1)
    result["stream"] = figs
    return result


def _t2w_figures(times: Dict[str, List[float]], audio_s: float) -> Dict[str, float]:
    out = {}
    for key in ("total", "flow", "hift"):
        s = median(times[key])
        out[f"{key}_s"] = round(s, 4)
        out[f"{key}_rtf"] = round(s / audio_s, 4)
    out["estimator_frames"] = int(median(times["frames"]))
    return out


def synthetic_batch(args, token_mel_ratio: int, text_vocab: int, instruct_tokens: int = 0) -> Dict[str, object]:
    """A training batch as cosyvoice.dataset.processor.padding builds it, from random samples (with
    ``instruct_tokens`` instruction ids each: CosyVoice3's system prompt, 7 tokens with the real tokenizer)."""

    g = torch.Generator().manual_seed(args.seed + 2)
    samples = []
    for i in range(args.train_batch):
        n_speech = args.train_speech_tokens
        frames = token_mel_ratio * n_speech
        samples.append({
            "utt": f"bench_{i}", "text": "benchmark",
            "speech": torch.zeros(1, frames * 480),
            "text_token": torch.randint(0, text_vocab, (args.train_text_tokens,), generator=g).tolist(),
            "speech_token": torch.randint(0, SPEECH_TOKEN_SIZE, (n_speech,), generator=g).tolist(),
            "speech_feat": torch.randn(frames, 80, generator=g) - 5.0,
            "utt_embedding": torch.randn(192, generator=g),
            "spk_embedding": torch.randn(192, generator=g),
        })
        if instruct_tokens:
            samples[-1]["instruct_token"] = torch.randint(0, text_vocab, (instruct_tokens,), generator=g).tolist()
    return next(iter(padding([samples], use_spk_embedding=True)))


def bench_train(name: str, module: torch.nn.Module, batch, args, device, dtype) -> Dict[str, object]:
    """forward + backward + clip + the trainer's Adam (cosyvoice.utils.train_utils.init_optimizer: fused where torch
    has it, torch's default with ``--undo fused_adam``) on ``batch``, then each Adam implementation alone."""

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optim_conf = {"lr": 1e-5, **({"fused": False} if "fused_adam" in args.undo_list else {})}
    opt = init_optimizer(module, {"optim": "adam", "optim_conf": optim_conf})
    impl = optimizer_impl(opt)
    parts = {"forward_backward": [], "optimizer": []}

    def step(i):
        random.seed(args.seed + i)
        torch.manual_seed(args.seed + i)
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = module(batch, device)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        sync(device)
        t1 = time.perf_counter()
        opt.step()
        sync(device)
        if i >= args.warmup:
            parts["forward_backward"].append(t1 - t0)
            parts["optimizer"].append(time.perf_counter() - t1)
        if not torch.isfinite(loss):
            logger.warning("%s training loss is %s (random weights)", name, loss.item())

    held = PeakMemory.now_mb(device)  # the weights (and anything else) held before the step
    with PeakMemory(device) as mem:
        times = timed_runs(step, args.warmup, args.runs, device)
    del opt
    step_s = median(times)
    n_utt = batch["speech_token"].shape[0]
    n_tok = int(batch["speech_token_len"].sum())
    result = {
        "batch": n_utt,
        "speech_tokens_per_utt": args.train_speech_tokens,
        "params": sum(p.numel() for p in params),
        "step_s": round(step_s, 4),
        "forward_backward_s": round(median(parts["forward_backward"]), 4),
        "optimizer_s": round(median(parts["optimizer"]), 4),
        "optimizer": f"adam ({impl})",
        "utts_per_s": round(n_utt / step_s, 3),
        "speech_tokens_per_s": round(n_tok / step_s, 1),
        "peak_memory_mb": mem.mb,
        "peak_rise_mb": round(mem.mb - held, 1),
        "trainable_params": sum(p.numel() for p in params),
        "all_params": sum(p.numel() for p in module.parameters()),
        "checkpoint_mb": round(lora.state_bytes(lora.trained_state_dict(module)) / 2 ** 20, 2),
        "finetune": "lora" if lora.is_lora(module) else "full",
    }
    if name == "flow":
        result["mel_frames_per_s"] = round(int(batch["speech_feat_len"].sum()) / step_s, 1)
    if not args.no_optimizer_variants:
        result["adam_step_s"] = adam_variants(params, args, device)
    for p in params:
        p.grad = None
    module.eval()
    return result


def with_lora(module: torch.nn.Module, name: str, args) -> torch.nn.Module:
    """``module`` with the LoRA adapter the trainer adds for ``--finetune lora`` (the settings of the yaml's
    train_conf, in place: every later stage sees the adapter, B = 0, so it computes what it did)."""

    config = str(Path(args.model_dir) / "cosyvoice2.yaml") if args.model_dir else args.config
    conf = load_config(config, keys=["train_conf"])["train_conf"]
    lora.add_adapter(module, lora.lora_settings(conf, name), seed=args.seed)
    return module


def full_vs_lora(full: Dict[str, object], adapted: Dict[str, object]) -> Dict[str, object]:
    """How LoRA compares with full fine-tuning on the same batch."""
    return {"step_s": [full["step_s"], adapted["step_s"]], "speedup": round(full["step_s"] / adapted["step_s"], 2),
            "peak_memory_mb": [full["peak_memory_mb"], adapted["peak_memory_mb"]],
            "peak_rise_mb": [full["peak_rise_mb"], adapted["peak_rise_mb"]],
            "trainable_params": [full["trainable_params"], adapted["trainable_params"]],
            "checkpoint_mb": [full["checkpoint_mb"], adapted["checkpoint_mb"]]}


def adam_variants(params, args, device) -> Dict[str, object]:
    """Seconds of one Adam step on the current gradients with each implementation (median of --runs)."""
    out = {}
    for label, kw in (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        try:
            opt = torch.optim.Adam(params, lr=1e-5, **kw)
            out[label] = round(median(timed_runs(lambda i: opt.step(), 1, args.runs, device)), 4)
        except (RuntimeError, ValueError) as e:  # e.g. fused not implemented for this device or dtype
            out[label] = f"unsupported: {str(e).splitlines()[0][:120]}"
        finally:
            opt = None
    return out


def bench_resample(args, device) -> Dict[str, object]:
    """ms per ``--resample_seconds`` clip: cosyvoice.audio.resample (on ``device``, filters cached after the warm-up)
    and soxr VHQ (CPU), for each rate pair of RESAMPLE_PAIRS."""
    import soxr


    g = torch.Generator().manual_seed(args.seed + 3)
    result: Dict[str, object] = {"clip_s": args.resample_seconds, "soxr": soxr.__version__, "pairs": {}}
    for orig, new in RESAMPLE_PAIRS:
        x = 0.1 * torch.randn(1, int(round(args.resample_seconds * orig)), generator=g)
        x_dev, x_np = x.to(device), x[0].numpy()
        ours = median(timed_runs(lambda i: resample(x_dev, orig, new), max(1, args.warmup), args.runs, device))
        theirs = median(timed_runs(lambda i: soxr.resample(x_np, orig, new, quality="VHQ"), max(1, args.warmup),
                                   args.runs, torch.device("cpu")))
        exact = resample(x_dev, orig, new)[0].cpu().numpy()
        other = soxr.resample(x_np, orig, new, quality="VHQ")
        n = min(exact.size, other.size)
        weight, _ = resample_filters(orig, new)
        result["pairs"][f"{orig}->{new}"] = {
            "phases": int(weight.shape[0]), "taps": int(weight.shape[2]),
            "ms": round(ours * 1e3, 3), "x_real_time": round(args.resample_seconds / ours, 1),
            "soxr_vhq_ms": round(theirs * 1e3, 3), "soxr_x_real_time": round(args.resample_seconds / theirs, 1),
            "time_vs_soxr": round(ours / theirs, 3),
            "samples": int(exact.size), "soxr_samples": int(other.size),
            "max_abs_diff_vs_soxr": float(np.abs(exact[:n] - other[:n]).max()),
        }
    return result


# ------------------------------------------------------------------------------------------------------ output
def print_report(res: Dict[str, object]) -> None:
    env = res["env"]
    print(f"\n== benchmark: {res['model']} on {env['device']} ({env['device_name']}), {env['dtype']}, "
          f"{env['threads']} threads, torch {env['torch']}, commit {str(env['commit'])[:10]}"
          f"{' (dirty)' if env['dirty'] else ''}"
          f"{', undo ' + res['settings']['undo'] if res['settings'].get('undo') else ''}")
    print(f"   memory bandwidth {res['bandwidth']['gbps']} GB/s (sum {res['bandwidth']['sum_gbps']}, "
          f"gemv {res['bandwidth']['gemv_gbps']})")
    if "llm" in res:
        r = res["llm"]
        print(f"llm        prefill {r['prefill_positions']} pos {r['prefill_ms']} ms | decode "
              f"{r['decode_ms_per_token']} ms/token ({r['decode_tokens_per_s']} tok/s, RTF {r['rtf']}) | floor "
              f"{r['bandwidth_floor_ms_per_token']} ms/token for {r['weight_bytes_per_token'] / 1e6:.0f} MB -> "
              f"{r['fraction_of_floor']:.1%} of floor ({r['times_floor']}x)")
    if "token2wav" in res:
        r = res["token2wav"]
        for mode in ("offline", "stream"):
            m = r[mode]
            extra = (f" | first chunk p50 {m['first_chunk_ms_p50']} ms p90 {m['first_chunk_ms_p90']} ms, "
                     f"{m['chunks']} chunks") if mode == "stream" else ""
            print(f"token2wav  {mode:8s} {r['audio_s']:.2f} s audio: {m['total_s']} s (RTF {m['total_rtf']}) | "
                  f"flow {m['flow_s']} s (RTF {m['flow_rtf']}, estimator {m['estimator_frames']} frames x steps) | "
                  f"hift {m['hift_s']} s (RTF {m['hift_rtf']}){extra}")
    if "ttfa" in res:
        for mode in ("sft", "zero_shot"):
            m = res["ttfa"][mode]
            front = f"{m['frontend_ms']} ms" if m["frontend_ms"] is not None else "not measured"
            print(f"ttfa       {mode:9s} first audio {m['total_ms']} ms = front end {front} + LLM prefill "
                  f"{m['prefill_ms']} ms + {m['first_chunk_tokens'] - 1} more tokens {m['first_chunk_tokens_ms']} ms "
                  f"+ first chunk token2wav {m['token2wav_ms']} ms")
    for name in ("llm", "flow", "llm_lora", "flow_lora"):
        key = f"train_{name}"
        if key in res:
            r = res[key]
            rate = (f"{r['mel_frames_per_s']} mel frames/s" if name.startswith("flow")
                    else f"{r['speech_tokens_per_s']} speech tokens/s")
            print(f"train {name:9s} batch {r['batch']}x{r['speech_tokens_per_utt']} tokens: step {r['step_s']} s "
                  f"(fwd+bwd {r['forward_backward_s']} s, adam {r['optimizer_s']} s) | {r['utts_per_s']} utt/s, "
                  f"{rate} | peak {r['peak_memory_mb']} MB (+{r['peak_rise_mb']} MB) | "
                  f"{r['trainable_params'] / 1e6:.2f}M trainable, checkpoint {r['checkpoint_mb']} MB | "
                  f"{r['optimizer']}")
            if "adam_step_s" in r:
                print(f"           adam step alone: {r['adam_step_s']}")
    for name in ("llm", "flow"):
        c = res.get(f"{name}_full_vs_lora")
        if c:
            print(f"{name} full vs LoRA: step {c['step_s'][0]} s vs {c['step_s'][1]} s ({c['speedup']}x) | peak memory "
                  f"{c['peak_memory_mb'][0]} MB vs {c['peak_memory_mb'][1]} MB (rise {c['peak_rise_mb'][0]} vs "
                  f"{c['peak_rise_mb'][1]} MB) | trainable {c['trainable_params'][0] / 1e6:.1f}M vs "
                  f"{c['trainable_params'][1] / 1e6:.2f}M | checkpoint {c['checkpoint_mb'][0]} MB vs "
                  f"{c['checkpoint_mb'][1]} MB")
    if "resample" in res:
        r = res["resample"]
        for pair, m in r["pairs"].items():
            print(f"resample   {r['clip_s']:.2f} s clip {pair}: {m['ms']} ms ({m['x_real_time']}x real time, "
                  f"{m['phases']} phases x {m['taps']} taps) | soxr VHQ {m['soxr_vhq_ms']} ms "
                  f"({m['soxr_x_real_time']}x) | {m['time_vs_soxr']}x soxr's time | "
                  f"max |diff| vs soxr {m['max_abs_diff_vs_soxr']:.2e}")


ROW_HEADER = ("| device | dtype | LLM decode ms/token (floor) | prefill ms | token2wav offline RTF | streaming RTF | "
              "first chunk p50 ms | llm train step s (utt/s) | flow train step s (utt/s) |\n"
              "|---|---|---|---|---|---|---|---|---|")


def table_rows(paths: List[str]) -> str:
    """The BENCHMARKS.md rows of result files (a figure a file lacks is '-')."""
    def get(res, *keys, fmt="{}"):
        for k in keys:
            if not isinstance(res, dict) or k not in res:
                return "-"
            res = res[k]
        return fmt.format(res)

    lines = [ROW_HEADER]
    for path in paths:
        try:
            res = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"--rows {path}: cannot read a benchmark result ({e}); run tools/benchmark.py --out "
                            f"{path} first") from None
        env, settings = res.get("env", {}), res.get("settings", {})
        dtype = settings.get("dtype", "-") + (" +TF32" if settings.get("tf32") else "")
        train = {m: f"{get(res, f'train_{m}', 'step_s')} ({get(res, f'train_{m}', 'utts_per_s')})"
                 for m in ("llm", "flow")}
        lines.append(f"| {env.get('device_name', '-')} | {dtype} | {get(res, 'llm', 'decode_ms_per_token')} "
                     f"({get(res, 'llm', 'bandwidth_floor_ms_per_token')}) | {get(res, 'llm', 'prefill_ms')} | "
                     f"{get(res, 'token2wav', 'offline', 'total_rtf')} | {get(res, 'token2wav', 'stream', 'total_rtf')} "
                     f"| {get(res, 'token2wav', 'stream', 'first_chunk_ms_p50')} | {train['llm']} | {train['flow']} |")
    return "\n".join(lines)


@entry_point("benchmark.py")
def main(argv=None) -> int:
    args = get_args(argv)
    if args.rows:
        print(table_rows(args.rows))
        return 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise UserError(f"unknown --stages {', '.join(unknown)} (known: {', '.join(STAGES)})")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA device; use --device cpu")
    if device.type == "cpu" and args.dtype != "fp32":
        raise UserError(f"--dtype {args.dtype} is for CUDA; the CPU path runs fp32")
    if args.tf32:
        if device.type != "cuda" or args.dtype != "fp32":
            raise UserError("--tf32 is for --device cuda --dtype fp32 (TF32 matmuls on an NVIDIA GPU)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if args.model_dir and not args.stand_in:
        found = model_version(args.model_dir)
        if not (Path(args.model_dir) / found.config_file).is_file():
            raise UserError(f"{args.model_dir}/{found.config_file} not found: --model_dir must be a CosyVoice2 or "
                            "CosyVoice3 model dir")
    try:
        resolve_version(args)
    except ValueError as e:
        raise UserError(str(e)) from e
    bad = sorted(set(args.undo_list) - set(UNDO))
    if bad:
        raise UserError(f"unknown --undo {', '.join(bad)} (known: {', '.join(UNDO)})")
    if "stream_cache" in args.undo_list and args.version == "cosyvoice3":
        raise UserError("--undo stream_cache changes CosyVoice2's flow; CosyVoice3's DiT flow has no such speed "
                        "change")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    with tempfile.TemporaryDirectory(prefix="cosyvoice_bench_") as tmp:
        t0 = time.perf_counter()
        model, frontend, source = None, None, "none (resample only)"
        if any(s in MODEL_STAGES for s in stages):
            logger.info("building the models")
            model, frontend, source = build_models(args, Path(tmp))
        res: Dict[str, object] = {"model": source, "env": environment(args, device),
                                  "settings": {k: v for k, v in vars(args).items() if k not in ("out", "undo_list", "rows")},
                                  "build_s": round(time.perf_counter() - t0, 2)}
        res["bandwidth"] = memory_bandwidth(device, args.bandwidth_mib)
        if "llm" in stages:
            logger.info("llm decoding")
            res["llm"] = bench_llm(model, args, device, dtype, res["bandwidth"])
        if "token2wav" in stages:
            logger.info("token2wav offline and streaming")
            res["token2wav"] = bench_token2wav(model, args, device, dtype)
        if "ttfa" in stages:
            logger.info("time to first audio, SFT and zero-shot")
            res["ttfa"] = bench_ttfa(model, frontend, args, device, dtype, Path(tmp))
        if "llm" in res and "token2wav" in res:
            res["tts_rtf_estimate"] = {mode: round(res["llm"]["rtf"] + res["token2wav"][mode]["total_rtf"], 4)
                                       for mode in ("offline", "stream")}
        if "train_llm" in stages:
            logger.info("llm training steps")
            batch = synthetic_batch(args, model.flow.token_mel_ratio, model.llm.llm.model.config.vocab_size,
                                    instruct_tokens=7 if args.version == "cosyvoice3" else 0)
            res["train_llm"] = bench_train("llm", model.llm, batch, args, device, dtype)
        if "train_llm_lora" in stages:
            logger.info("llm training steps with LoRA")
            batch = synthetic_batch(args, model.flow.token_mel_ratio, model.llm.llm.model.config.vocab_size)
            res["train_llm_lora"] = bench_train("llm", with_lora(model.llm, "llm", args), batch, args, device, dtype)
        if "train_flow" in stages:
            logger.info("flow training steps")
            batch = synthetic_batch(args, model.flow.token_mel_ratio, 100)
            res["train_flow"] = bench_train("flow", model.flow, batch, args, device, dtype)
        if "train_flow_lora" in stages:
            logger.info("flow training steps with LoRA")
            batch = synthetic_batch(args, model.flow.token_mel_ratio, 100)
            res["train_flow_lora"] = bench_train("flow", with_lora(model.flow, "flow", args), batch, args, device,
                                                 dtype)
        for name in ("llm", "flow"):
            if f"train_{name}" in res and f"train_{name}_lora" in res:
                res[f"{name}_full_vs_lora"] = full_vs_lora(res[f"train_{name}"], res[f"train_{name}_lora"])
        if "resample" in stages:
            logger.info("resampling, against soxr")
            res["resample"] = bench_resample(args, device)

    if hasattr(os, "getloadavg"):
        res["env"]["load_average_end"] = os.getloadavg()  # other jobs on the machine skew the figures
    name = "stand_in" if args.stand_in else Path(args.model_dir or args.config).stem
    if args.stand_in and args.version == "cosyvoice3":
        name = "stand_in3"
    if model is None:
        name = "resample"
    undone = "".join(f"_undo-{u}" for u in args.undo_list) + ("_tf32" if args.tf32 else "")
    out = Path(args.out or ROOT / "exp" / "benchmark" / f"{name}_{device.type}_{args.dtype}{undone}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print_report(res)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
