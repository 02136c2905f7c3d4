"""Fixtures for the inference API tests: the tiny stand-in model dirs (built once), fine-tuned-style model dirs
with an SFT speaker, a loaded CosyVoice2 and CosyVoice3, and a short prompt clip."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from cli_helpers import link_model_dir

ROOT = Path(__file__).resolve().parents[2]
DEMO_WAV = ROOT / "local" / "demo_voice" / "test" / "demo_0005.wav"


@pytest.fixture(scope="session")
def prompt_wav(tmp_path_factory) -> Path:
    """The first 1.0 s of a demo-voice clip (16 kHz): 25 speech tokens, 50 mel frames at 24 kHz."""
    wav, sr = sf.read(DEMO_WAV, dtype="float32")
    assert sr == 16000
    path = tmp_path_factory.mktemp("prompt") / "prompt.wav"
    sf.write(path, wav[:sr], sr)
    return path


def _sft_model_dir(stand_in: Path, out: Path) -> Path:
    """Links to the stand-in ``stand_in`` plus spk2info.pt with the SFT speaker 'demo' (a demo clip's CAM++)."""
    from cosyvoice.audio.io import load_wav
    from cosyvoice.utils.onnx import EmbeddingExtractor

    out = link_model_dir(stand_in, out)
    embedding = EmbeddingExtractor(str(stand_in / "campplus.onnx")).extract(load_wav(DEMO_WAV, 16000))
    torch.save({"demo": {"embedding": embedding}}, out / "spk2info.pt")
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, stand_in_dir, prompt_wav) -> Path:
    """A fine-tuned-style model dir: links to the stand-in plus spk2info.pt with the SFT speaker 'demo'."""
    return _sft_model_dir(stand_in_dir, tmp_path_factory.mktemp("exp") / "model")


@pytest.fixture(scope="session")
def cosyvoice(model_dir):
    from cosyvoice.cli.cosyvoice import CosyVoice2

    return CosyVoice2(str(model_dir))


@pytest.fixture(scope="session")
def model3_dir(tmp_path_factory, stand_in3_dir) -> Path:
    """A fine-tuned-style CosyVoice3 model dir: links to the v3 stand-in plus spk2info.pt with the SFT speaker."""
    return _sft_model_dir(stand_in3_dir, tmp_path_factory.mktemp("exp3") / "model")


@pytest.fixture(scope="session")
def cosyvoice3(model3_dir):
    from cosyvoice.cli.cosyvoice import CosyVoice3

    return CosyVoice3(str(model3_dir))
