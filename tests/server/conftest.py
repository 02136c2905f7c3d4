"""Fixtures for the speech server tests: a fine-tuned-style model dir on the stand-in (SFT speaker 'demo'), one loaded
CosyVoice2, and the real server (uvicorn) on a free loopback port in a thread of the test process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf
import torch

from server_helpers import API_KEY, run_server

ROOT = Path(__file__).resolve().parents[2]
DEMO_TEST = ROOT / "local" / "demo_voice" / "test"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, stand_in_dir) -> Path:
    """Links to the stand-in plus spk2info.pt with the SFT speaker 'demo', as run.sh stage 4 lays one out."""
    from cosyvoice.audio.io import load_wav
    from cosyvoice.utils.onnx import EmbeddingExtractor

    out = tmp_path_factory.mktemp("exp") / "model"
    out.mkdir()
    for entry in sorted(os.listdir(stand_in_dir)):
        if entry != "spk2info.pt":
            os.symlink(stand_in_dir / entry, out / entry)
    embedding = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx")).extract(
        load_wav(DEMO_TEST / "demo_0005.wav", 16000))
    torch.save({"demo": {"embedding": embedding}}, out / "spk2info.pt")
    return out


@pytest.fixture(scope="session")
def prompt(tmp_path_factory):
    """(wav path, transcript) of a 2 s demo-voice prompt (16 kHz)."""
    wav, sr = sf.read(DEMO_TEST / "demo_0010.wav", dtype="float32")
    path = tmp_path_factory.mktemp("prompt") / "prompt.wav"
    sf.write(path, wav[:2 * sr], sr)
    return path, (DEMO_TEST / "demo_0010.normalized.txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def cosyvoice(model_dir):
    from cosyvoice.cli.cosyvoice import CosyVoice2

    return CosyVoice2(str(model_dir))


@pytest.fixture(scope="session")
def server(cosyvoice):
    """Base URL of the server (API key required), shared by the tests. Direct calls on ``cosyvoice`` are made only
    while no request is in flight: the model is not to be called from two threads at once."""
    from cosyvoice.server.app import ServerConfig, create_app

    app = create_app(cosyvoice, ServerConfig(api_key=API_KEY, max_input_chars=200, max_upload_bytes=2 << 20))
    with run_server(app) as url:
        yield url
