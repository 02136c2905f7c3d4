"""The CosyVoice3 front end against the official one (tests/data/cosyvoice3/frontend.safetensors): the same
CosyVoiceFrontEnd with the v3 tokenizer and mel, fed the recorded audio, gives the official feeds of the speech
tokenizer and CAM++ and the official zero-shot, instruct2 and cross-lingual model inputs."""
from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from cosyvoice.cli.frontend import CosyVoiceFrontEnd
from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer
from cosyvoice.utils.config import load_config
from cosyvoice.utils.onnx import EmbeddingExtractor, SpeechTokenizer


@pytest.fixture(scope="module")
def official(fixtures3_dir, fixture3_meta, load_io3):
    return load_io3("frontend"), json.loads(fixture3_meta("frontend")["texts"])


@pytest.fixture(scope="module")
def wavs(official, tmp_path_factory):
    """The recorded inputs as float wav files (exact), as a user would pass them."""
    io, _ = official
    d = tmp_path_factory.mktemp("frontend3")
    paths = {}
    for tag, sr in (("wav24", 24000), ("wav48", 48000)):
        paths[tag] = d / f"{tag}.wav"
        sf.write(paths[tag], io[f"{tag}_in"].T.numpy(), sr, subtype="FLOAT")
    return paths


@pytest.fixture()
def frontend(fixtures3_dir, stand_in3_dir, official, monkeypatch):
    """The v3 front end with the fixture tokenizer and mel; the ONNX models record their feeds and return the
    fixed values the official recording used."""
    io, _ = official
    feat_extractor = load_config(str(fixtures3_dir / "tiny3.yaml"), keys=["feat_extractor"])["feat_extractor"]
    fe = CosyVoiceFrontEnd(lambda: get_qwen_tokenizer(str(fixtures3_dir / "tiny_bpe_tokenizer"), True, "cosyvoice3"),
                           feat_extractor, str(stand_in3_dir / "campplus.onnx"),
                           str(stand_in3_dir / "speech_tokenizer_v3.onnx"))
    fe.feeds = {}

    def tokens(self, feat):
        fe.feeds.setdefault("log_mel", []).append(torch.as_tensor(feat).clone())
        return io["zs_fake_speech_tokens"].tolist()

    def embedding(self, fbank):
        fe.feeds.setdefault("fbank", []).append(torch.as_tensor(fbank).clone())
        return io["zs_fake_embedding"].tolist()
    monkeypatch.setattr(SpeechTokenizer, "from_log_mel", tokens)
    monkeypatch.setattr(EmbeddingExtractor, "from_fbank", embedding)
    return fe


def _diff(a, b, where=None):
    d = (a.double() - b.double()).abs()
    return (d if where is None else d[where]).max().item()


@pytest.mark.parametrize("tag", ["wav24", "wav48"])
def test_feeds_and_speech_feat(frontend, official, wavs, tag):
    io, _ = official
    frontend._extract_speech_token(wavs[tag])
    frontend._extract_spk_embedding(wavs[tag])
    (log_mel,), (fbank,) = frontend.feeds["log_mel"], frontend.feeds["fbank"]
    assert log_mel.shape == io[f"{tag}_speech_tokenizer_feats"].shape
    assert _diff(log_mel, io[f"{tag}_speech_tokenizer_feats"]) < 1e-4
    assert fbank.shape == io[f"{tag}_campplus_input"][0].shape and _diff(fbank, io[f"{tag}_campplus_input"][0]) < 1e-3
    feat, feat_len = frontend._extract_speech_feat(wavs[tag])
    expected = io[f"{tag}_speech_feat"]
    assert feat.shape == expected.shape and feat_len.tolist() == io[f"{tag}_speech_feat_len"].tolist()
    assert _diff(feat, expected, expected > -7.0) < 1e-4 and _diff(feat, expected) < 1e-2  # as test_features3


def test_zero_shot_model_input(frontend, official, wavs):
    io, texts = official
    out = frontend.frontend_zero_shot(texts["tts_text"], texts["prompt_text"], wavs["wav24"], 24000, "")
    assert sorted(out) == sorted(k[3:] for k in io if k.startswith("zs_") and not k.startswith("zs_fake"))
    for key, value in out.items():
        ref = io[f"zs_{key}"]
        assert value.shape == ref.shape and value.dtype == ref.dtype, key
        if key == "prompt_speech_feat":
            assert _diff(value, ref, ref > -7.0) < 1e-4 and _diff(value, ref) < 1e-2
        else:
            assert torch.equal(value, ref), key
    assert out["prompt_speech_feat"].shape == (1, 74, 80) and out["flow_prompt_speech_token"].shape == (1, 37)
    assert 151646 in out["prompt_text"][0].tolist()


def test_instruct2_and_cross_lingual_text(frontend, official, wavs, fixture3_meta):
    io, texts = official
    keys = json.loads(fixture3_meta("frontend")["model_input_keys"])
    instruct = frontend.frontend_instruct2(texts["tts_text"], texts["instruct_text"], wavs["wav24"], 24000, "")
    assert sorted(instruct) == sorted(keys["instruct2_keys"])
    assert torch.equal(instruct["prompt_text"], io["instruct2_prompt_text"])
    assert torch.equal(instruct["prompt_text_len"], io["instruct2_prompt_text_len"])
    cross = frontend.frontend_cross_lingual(texts["cross_text"], wavs["wav24"], 24000, "")
    assert sorted(cross) == sorted(keys["cross_lingual_keys"])
    assert torch.equal(cross["text"], io["cross_lingual_text"])
    assert torch.equal(cross["text_len"], io["cross_lingual_text_len"])
    zero_shot = frontend.frontend_zero_shot(texts["tts_text"], texts["prompt_text"], wavs["wav24"], 24000, "")
    assert sorted(zero_shot) == sorted(keys["zero_shot_keys"])
