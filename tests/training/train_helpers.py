"""Helpers of the training tests: the stand-in model dir, tiny parquet lists, running train.py, reading results."""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[2]
SR = 24000
TOKENS_PER_S = 25
SCHEMA = pa.schema([
    ("utt", pa.string()), ("wav", pa.string()), ("audio_data", pa.binary()), ("text", pa.string()),
    ("spk", pa.string()), ("utt_embedding", pa.list_(pa.float32())), ("spk_embedding", pa.list_(pa.float32())),
    ("speech_token", pa.list_(pa.int32())),
])
TEXTS = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "she sells sea shells by the sea shore every single summer morning",
    "a journey of a thousand miles begins with one small step forward",
    "all that glitters is not gold and all who wander are not lost",
    "the early bird catches the worm but the second mouse gets the cheese",
    "time flies like an arrow while fruit flies like a ripe banana",
]


def make_stand_in(out: Path, seed: int = 1986) -> Path:
    """The tiny stand-in pretrained dir of tools/make_tiny_pretrained.py, built in this process."""
    spec = importlib.util.spec_from_file_location("make_tiny_pretrained_for_tests",
                                                  ROOT / "tools" / "make_tiny_pretrained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_stand_in(out, seed)
    return out


def _wav_bytes(seconds: float, freq: float, rng: np.random.Generator) -> bytes:
    t = np.arange(int(round(seconds * SR))) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_lists(root: Path, files: Dict[str, List[float]], seed: int = 0) -> Path:
    """Parquet files {name: [durations in s]} (one utterance per duration, whole tokens) and their data.list.

    Speech tokens: 25 per second, drawn from a small alphabet so that the llm can learn them quickly; the same
    speaker embedding for every row (one speaker)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    spk = rng.standard_normal(192).astype(np.float32).tolist()
    paths, k = [], 0
    for name, durations in files.items():
        rows = []
        for d in durations:
            n = int(round(d * TOKENS_PER_S))
            rows.append({"utt": f"{name}_{k:03d}", "wav": f"/demo/{name}_{k:03d}.wav",
                         "audio_data": _wav_bytes(d, 150 + 40 * k, rng), "text": TEXTS[k % len(TEXTS)],
                         "spk": "demo", "utt_embedding": rng.standard_normal(192).astype(np.float32).tolist(),
                         "spk_embedding": spk, "speech_token": rng.integers(0, 16, n).astype(np.int32).tolist()})
            k += 1
        path = root / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
        paths.append(path)
    data_list = root / "data.list"
    data_list.write_text("".join(f"{p}\n" for p in paths))
    return data_list


def write_demo_voice_list(root: Path, stand_in: Path, n: int = 4) -> Path:
    """A parquet list of the first ``n`` clips of local/demo_voice/train, with speech tokens and CAM++ embeddings
    from the stand-in's ONNX models (what stages 1-3 compute)."""
    from cosyvoice.audio.io import load_wav
    from cosyvoice.utils.onnx import EmbeddingExtractor, SpeechTokenizer

    clips = sorted((ROOT / "local" / "demo_voice" / "train").glob("*.wav"))[:n]
    tokenizer = SpeechTokenizer(str(stand_in / "speech_tokenizer_v2.onnx"))
    campplus = EmbeddingExtractor(str(stand_in / "campplus.onnx"))
    rows = []
    for wav in clips:
        speech = load_wav(wav, 16000)
        rows.append({"utt": wav.stem, "wav": str(wav), "audio_data": wav.read_bytes(),
                     "text": wav.with_suffix(".normalized.txt").read_text(encoding="utf-8").strip(), "spk": "demo",
                     "utt_embedding": campplus.embed(speech),
                     "speech_token": tokenizer.tokenize(speech, pad_to_token_grid=True)})
    spk = np.mean([r["utt_embedding"] for r in rows], axis=0).astype(np.float32).tolist()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "demo.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, spk_embedding=spk) for r in rows], schema=SCHEMA), path)
    (root / "data.list").write_text(f"{path}\n")
    return root / "data.list"


def train_args(model: str, stand_in: Path, train_list: Path, cv_list: Path, model_dir: Path, *extra) -> List[str]:
    return ["--model", model, "--config", str(stand_in / "cosyvoice2.yaml"), "--checkpoint",
            str(stand_in / f"{model}.pt"), "--train_data", str(train_list), "--cv_data", str(cv_list),
            "--model_dir", str(model_dir), "--swanlab", "off", *map(str, extra)]


def run_train(argv: List[str]) -> int:
    """train.py's main in this process (one process, no process group)."""
    from cosyvoice.bin import train

    return train.main(argv)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # as the in-process runs of the tests (conftest one_thread)
    return env


def train_command_line(argv: List[str]) -> subprocess.CompletedProcess:
    """``python -m cosyvoice.bin.train ARGV`` as a user runs it (one process), captured."""
    return subprocess.run([sys.executable, "-m", "cosyvoice.bin.train", *argv], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


def torchrun(nproc: int, argv: List[str], timeout: int = 240, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "cosyvoice.bin.train", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, **kw)


def deepspeed_run(ddp_run, model_dir: Path) -> List[str]:
    """Run the argv of the two-process fixture ``ddp_run`` ((dir, argv)) again with DeepSpeed ZeRO-2 into
    ``model_dir``; asserts that it exits 0. Returns the DeepSpeed run's argv."""
    _, argv = ddp_run
    argv = list(argv)
    argv[argv.index("--model_dir") + 1] = str(model_dir)
    argv += ["--train_engine", "deepspeed", "--deepspeed_config", str(ROOT / "conf" / "ds_stage2.json")]
    r = torchrun(2, argv, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return argv


def load_state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def max_abs_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


# ---------------------------------------------------------------------------------------------------------------
# Session-wide artefacts, built once per pytest session (tests/training and tests/bin share them through the
# session's base temp dir).
LLM_TRAIN = ["--max_epoch", 2, "--lr", 0.002, "--accum_grad", 2, "--log_interval", 1, "--max_frames_in_batch", 160,
             "--save_per_step", 4]
FLOW_TRAIN = ["--max_epoch", 1, "--lr", 0.002, "--accum_grad", 1, "--log_interval", 1, "--max_frames_in_batch", 160,
              "--save_per_step", 1]
SAMPLE_TEXT = "ok."


class one_thread:
    """One intra-op torch thread inside the block (see conftest.one_thread)."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _shared(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.getbasetemp() / f"shared_{name}"


def get_stand_in(tmp_path_factory) -> Path:
    """The stand-in model dir plus spk2info.pt (speaker 'demo'), as the recipe's stage 4 lays it out."""
    out = _shared(tmp_path_factory, "stand_in")
    if not (out / "spk2info.pt").is_file():
        with one_thread():
            make_stand_in(out)
        torch.save({"demo": {"embedding": torch.randn(1, 192, generator=torch.Generator().manual_seed(5))}},
                   out / "spk2info.pt")
    return out


def get_lists(tmp_path_factory) -> Dict[str, Path]:
    """train: 5 + 3 utterances -> 5 batches of <= 160 frames per epoch; cv: 2; even: 2 + 2 of equal length;
    demo: 4 clips of the demo voice."""
    root = _shared(tmp_path_factory, "lists")
    lists = {"train": root / "train" / "data.list", "cv": root / "cv" / "data.list",
             "even": root / "even" / "data.list", "demo": root / "demo" / "data.list", "texts": root / "texts.json"}
    if not lists["texts"].is_file():
        write_demo_voice_list(root / "demo", get_stand_in(tmp_path_factory))
        write_lists(root / "train", {"a": [1.2, 1.2, 1.6, 1.6, 2.0], "b": [1.2, 1.4, 1.8]}, seed=0)
        write_lists(root / "cv", {"c": [1.2, 1.6]}, seed=1)
        write_lists(root / "even", {"r0": [1.2, 1.2], "r1": [1.2, 1.2]}, seed=2)
        lists["texts"].write_text('{"short": "%s"}\n' % SAMPLE_TEXT)
    return lists


def get_llm_run(tmp_path_factory) -> Path:
    """An uninterrupted llm run (2 epochs, 3 steps each, checkpoints at steps 3, 4, 6), with TensorBoard, SwanLab
    (offline, when installed) and one SFT sample per epoch."""
    stand_in, lists = get_stand_in(tmp_path_factory), get_lists(tmp_path_factory)
    model_dir = _shared(tmp_path_factory, "llm_run")
    if not (model_dir / "epoch_1_whole.ckpt.json").is_file():
        swanlab = "offline" if importlib.util.find_spec("swanlab") else "off"
        args = train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *LLM_TRAIN,
                          "--sample_texts", lists["texts"], "--sample_model_dir", stand_in)
        args[args.index("--swanlab") + 1] = swanlab
        with one_thread():
            assert run_train(args) == 0
    return model_dir


def get_flow_run(tmp_path_factory) -> Path:
    """A flow run (1 epoch of 5 steps, a checkpoint after each); samples pair it with the base and the tuned llm."""
    stand_in, lists = get_stand_in(tmp_path_factory), get_lists(tmp_path_factory)
    llm_dir = get_llm_run(tmp_path_factory)
    model_dir = _shared(tmp_path_factory, "flow_run")
    if not (model_dir / "epoch_0_whole.ckpt.json").is_file():
        args = train_args("flow", stand_in, lists["train"], lists["cv"], model_dir, *FLOW_TRAIN,
                          "--sample_texts", lists["texts"], "--sample_model_dir", stand_in,
                          "--sample_llm", llm_dir)  # the dir: its newest checkpoint
        with one_thread():
            assert run_train(args) == 0
    return model_dir


def get_lora_llm_run(tmp_path_factory) -> Path:
    """An llm run with LoRA (--finetune lora; otherwise as get_llm_run, without samples)."""
    stand_in, lists = get_stand_in(tmp_path_factory), get_lists(tmp_path_factory)
    model_dir = _shared(tmp_path_factory, "lora_llm_run")
    if not (model_dir / "epoch_1_whole.ckpt.json").is_file():
        args = train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *LLM_TRAIN, "--finetune", "lora")
        with one_thread():
            assert run_train(args) == 0
    return model_dir
