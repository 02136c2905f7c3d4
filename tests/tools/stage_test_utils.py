"""Helpers for the stage-tool tests: the tools as modules, synthetic 16-bit wavs, Kaldi data dirs."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def load_tool(name: str):
    """Import tools/<name>.py as a module (tools/ is not a package; its scripts import each other by name)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def run_tool(name: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def sweep(seconds: float, f0: float, f1: float, sr: int = 16000, amp: float = 0.4, seed: int = 0) -> np.ndarray:
    """A linear chirp f0 -> f1 Hz with a 2nd harmonic and faint noise."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    x = amp * (np.sin(phase) + 0.3 * np.sin(2 * phase))
    return (x + 0.003 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int = 16000) -> Path:
    sf.write(str(path), audio, sr, subtype="PCM_16")
    return path


def make_data_dir(root: Path, utts: dict, spk_of=lambda utt: utt.split("_")[0]) -> Path:
    """A Kaldi data dir root/data with wav.scp, text, utt2spk, spk2utt for {utt: (audio, sr)} (tables byte-sorted)."""
    wav_dir, data = root / "wavs", root / "data"
    wav_dir.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    keys = sorted(utts, key=lambda u: u.encode())
    spk2utt = {}
    with open(data / "wav.scp", "w") as w, open(data / "text", "w") as t, open(data / "utt2spk", "w") as u:
        for utt in keys:
            audio, sr = utts[utt]
            wav = write_wav(wav_dir / f"{utt}.wav", audio, sr)
            w.write(f"{utt} {wav}\n")
            t.write(f"{utt} text of {utt}, 你好.\n")
            u.write(f"{utt} {spk_of(utt)}\n")
            spk2utt.setdefault(spk_of(utt), []).append(utt)
    with open(data / "spk2utt", "w") as f:
        for spk in sorted(spk2utt, key=lambda s: s.encode()):
            f.write(f"{spk} {' '.join(spk2utt[spk])}\n")
    return data


def call_tool(name: str, *args) -> tuple:
    """Run tools/<name>.py's main() in this process (no interpreter start-up); returns (exit status, stderr text).

    Log records go to pytest's caplog, not to the returned text.
    """
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = load_tool(name).main([str(a) for a in args])
    return rc, err.getvalue()


def run_stages_1_4(root: Path, utts: dict, pretrained: Path, tokenizer: str, extra: dict = None) -> dict:
    """Stages 1-4 (embeddings, speech tokens, parquet lists, spk2info + model dir) through the tools' command lines,
    on a data dir of ``utts`` under ``root``, with the stand-in ``pretrained`` and its ``tokenizer`` ONNX file;
    ``extra``: tool name -> more arguments. Returns the data, model and pretrained dirs."""
    data = make_data_dir(root, utts)
    model_dir = root / "exp" / "model"
    steps = {
        "extract_embedding": ["--data_dir", data, "--onnx_path", pretrained / "campplus.onnx"],
        "extract_speech_token": ["--data_dir", data, "--onnx_path", pretrained / tokenizer],
        "make_parquet_list": ["--src_dir", data, "--des_dir", data / "parquet"],
        "save_spk2info": ["--data_dir", data, "--pretrained_model_dir", pretrained, "--model_dir", model_dir],
    }
    for tool, args in steps.items():
        rc, err = call_tool(tool, *args, *(extra or {}).get(tool, ()))
        assert rc == 0, f"{tool} failed: {err}"
    return {"data": data, "model_dir": model_dir, "pretrained": pretrained}
