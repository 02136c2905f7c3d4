"""The CosyVoice3 front-end features (frontend.safetensors of tests/data/cosyvoice3) from the same feature code as
CosyVoice2: only the yaml's feat_extractor differs (fmax null = 12 kHz instead of 8 kHz)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.audio.features import campplus_fbank, mel_spectrogram, whisper_log_mel_spectrogram
from cosyvoice.utils.config import load_config

ROOT = Path(__file__).resolve().parents[2]
INPUTS = [("wav24", 75), ("wav48", 50)]


@pytest.fixture(scope="module")
def ref(fixtures3_dir):
    return load_file(str(fixtures3_dir / "frontend.safetensors"))


def _feat_extractor(path):
    return load_config(str(path), keys=["feat_extractor"])["feat_extractor"]


def _speech_feat(feat_extractor, wav24k):
    """As the front end does it: (1, T) 24 kHz audio -> (1, frames, 80)."""
    return feat_extractor(wav24k).squeeze(0).transpose(0, 1).unsqueeze(0)


def _diff(a, b, where=None):
    d = (a.double() - b.double()).abs()
    return (d if where is None else d[where]).max().item()


# tolerances as in test_features.py: 1e-4 on bins carrying signal, looser on noise-floor bins (float32 FFT rounding)
@pytest.mark.parametrize("yaml", ["tiny3", "conf"])
@pytest.mark.parametrize("tag,frames", INPUTS)
def test_speech_feat_from_the_v3_yaml_matches(ref, fixtures3_dir, yaml, tag, frames):
    path = fixtures3_dir / "tiny3.yaml" if yaml == "tiny3" else ROOT / "conf" / "cosyvoice3.yaml"
    out = _speech_feat(_feat_extractor(path), ref[f"{tag}_to24k"])
    expected = ref[f"{tag}_speech_feat"]
    assert out.shape == expected.shape == (1, frames, 80) and out.dtype == torch.float32
    assert int(ref[f"{tag}_speech_feat_len"]) == frames
    assert _diff(out, expected, expected > -7.0) < 1e-4
    assert _diff(out, expected) < 1e-2


@pytest.mark.parametrize("tag,frames", INPUTS)
def test_v2_setting_is_the_recorded_contrast_not_the_v3_feature(ref, fixtures_dir, tag, frames):
    v2 = _speech_feat(_feat_extractor(fixtures_dir / "tiny.yaml"), ref[f"{tag}_to24k"])
    contrast = ref[f"{tag}_speech_feat_fmax8000_contrast"]
    assert _diff(v2, contrast, contrast > -7.0) < 1e-4
    assert _diff(v2, ref[f"{tag}_speech_feat"]) > 5.0  # README: up to 5.96 / 10.90 apart, mostly in the top bins
    assert _feat_extractor(fixtures_dir / "tiny.yaml").keywords["fmax"] == 8000


def test_v3_mel_is_the_fmax_none_mel(ref):
    wav = ref["wav24_to24k"]
    a = mel_spectrogram(wav, 1920, 80, 24000, 480, 1920, 0, None, False)
    b = mel_spectrogram(wav, 1920, 80, 24000, 480, 1920, 0, 12000, False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("tag,frames", [("wav24", 150), ("wav48", 100)])
def test_speech_tokenizer_feed_matches(ref, tag, frames):
    """speech_tokenizer_v3.onnx gets the same whisper log-mel as v2: (1, 128, T) and int32 [T]."""
    out = whisper_log_mel_spectrogram(ref[f"{tag}_to16k"], n_mels=128)
    assert out.shape == ref[f"{tag}_speech_tokenizer_feats"].shape == (1, 128, frames)
    assert _diff(out, ref[f"{tag}_speech_tokenizer_feats"]) < 1e-4
    assert ref[f"{tag}_speech_tokenizer_feats_length"].tolist() == [frames]


@pytest.mark.parametrize("tag,frames", [("wav24", 148), ("wav48", 98)])
def test_campplus_feed_matches(ref, tag, frames):
    out = campplus_fbank(ref[f"{tag}_to16k"])
    expected = ref[f"{tag}_campplus_input"][0]
    assert out.shape == expected.shape == (frames, 80)
    assert _diff(out, expected) < 1e-3

