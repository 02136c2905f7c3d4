"""Every parity path that reads audio at another rate computes, bit for bit, the features of the function that
tests/audio/test_resample.py checks against torchaudio: stage 1 (CAM++ fbank and embedding), stage 2 (whisper
log-mel and tokens), the training pipeline (24 kHz mel, whisper log-mel of its 16 kHz copy) and the evaluation's
speaker embedder, on a 48 kHz stereo file and a 22.05 kHz mono one."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cosyvoice.audio.features import campplus_fbank, mel_spectrogram, whisper_log_mel_spectrogram
from cosyvoice.audio.resample import resample
from cosyvoice.utils.onnx import SAMPLES_PER_TOKEN, EmbeddingExtractor, SpeechTokenizer
from stage_test_utils import call_tool, make_data_dir

MEL_24K = dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=8000,
               center=False)


def _clip(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """(T, channels) float32 speech-like test signal: a gliding harmonic tone, a high partial, faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    cols = [0.3 * np.sin(2 * np.pi * (160 + 30 * ch) * t * (1 + 0.4 * t)) + 0.05 * np.sin(2 * np.pi * 5200 * t + ch)
            + 0.01 * rng.standard_normal(t.size) for ch in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


UTTS = {"spkA_001": (_clip(1.3, 48000, 2, seed=1), 48000), "spkA_002": (_clip(1.1, 22050, 1, seed=2), 22050)}


def official(path, target_sr: int) -> torch.Tensor:
    """The official load_wav steps written out: float32 frames as (C, T), channel mean, then the resampler."""
    frames, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(torch.from_numpy(frames.T.copy()).mean(dim=0, keepdim=True), sr, target_sr)


@pytest.fixture()
def seen(monkeypatch):
    """Record the features each ONNX model is given ({'fbank': [...], 'log_mel': [...]})."""
    record = {"fbank": [], "log_mel": []}
    real_fbank, real_mel = EmbeddingExtractor.from_fbank, SpeechTokenizer.from_log_mel

    def from_fbank(self, feat):
        record["fbank"].append(torch.as_tensor(feat).clone())
        return real_fbank(self, feat)

    def from_log_mel(self, feat):
        record["log_mel"].append(torch.as_tensor(feat).clone())
        return real_mel(self, feat)

    monkeypatch.setattr(EmbeddingExtractor, "from_fbank", from_fbank)
    monkeypatch.setattr(SpeechTokenizer, "from_log_mel", from_log_mel)
    return record


def _wavs(data: Path) -> dict:
    return dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())


def _one_equal(feat: torch.Tensor, recorded) -> bool:
    return sum(r.shape == feat.shape and torch.equal(r, feat) for r in recorded) == 1


def test_stages_1_and_2_equal_the_checked_function(tmp_path, stand_in_dir, seen):
    data = make_data_dir(tmp_path, UTTS)
    for tool, onnx in (("extract_embedding", "campplus.onnx"), ("extract_speech_token", "speech_tokenizer_v2.onnx")):
        rc, err = call_tool(tool, "--data_dir", data, "--onnx_path", stand_in_dir / onnx, "--num_workers", 2)
        assert rc == 0, err
    utt2emb = torch.load(data / "utt2embedding.pt", weights_only=True)
    utt2tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    extractor = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx"))
    tokenizer = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx"))
    assert len(seen["fbank"]) == len(seen["log_mel"]) == 2  # the tools' calls only
    for utt, path in _wavs(data).items():
        x16 = official(path, 16000)
        assert x16.shape[1] == math.ceil(UTTS[utt][0].shape[0] * 16000 / UTTS[utt][1])
        assert _one_equal(campplus_fbank(x16), seen["fbank"])
        pad = -x16.shape[1] % SAMPLES_PER_TOKEN
        assert _one_equal(whisper_log_mel_spectrogram(x16, n_mels=128, padding=pad), seen["log_mel"])
        assert utt2emb[utt] == extractor.embed(x16)
        assert utt2tok[utt] == tokenizer.tokenize(x16, pad_to_token_grid=True)


def test_training_pipeline_equals_the_checked_function(tmp_path):
    from cosyvoice.dataset import processor as P

    path = tmp_path / "stereo48k.wav"
    audio, sr = UTTS["spkA_001"]
    sf.write(path, audio, sr, subtype="PCM_16")
    sample = {"utt": "u", "audio_data": path.read_bytes(), "text_token": [1, 2, 3], "speech_token": [5] * 33}
    feat = lambda wav: mel_spectrogram(wav, **MEL_24K)  # noqa: E731 - the yaml's feat_extractor
    samples = P.filter(iter([sample]), max_length=6000, min_length=0)
    samples = P.resample(samples, resample_rate=24000)
    samples = P.compute_fbank(samples, feat, num_frames=960)
    (out,) = P.compute_whisper_fbank(samples, num_frames=960)
    x24 = official(path, 24000)
    x24 = torch.nn.functional.pad(x24, (0, -x24.shape[1] % 960))  # compute_fbank pads to whole tokens
    assert torch.equal(out["speech"], x24)
    assert torch.equal(out["speech_feat"], feat(x24)[0].transpose(0, 1))
    x16 = resample(x24, 24000, 16000)  # the official pipeline takes its 16 kHz copy from the 24 kHz speech
    assert torch.equal(out["speech_16k"], x16)
    assert torch.equal(out["whisper_feat"], whisper_log_mel_spectrogram(x16, n_mels=128)[0].transpose(0, 1))


def test_speaker_embedder_equals_the_checked_function(tmp_path, stand_in_dir):
    from cosyvoice.eval.metrics import SpeakerEmbedder

    path = tmp_path / "stereo48k.wav"
    sf.write(path, UTTS["spkA_001"][0], 48000, subtype="FLOAT")
    embedder = SpeakerEmbedder(str(stand_in_dir / "campplus.onnx"))
    expected = np.asarray(EmbeddingExtractor(str(stand_in_dir / "campplus.onnx")).embed(official(path, 16000)))
    assert np.array_equal(embedder.embed_file(str(path)), expected)
    x24 = official(path, 24000)
    assert np.array_equal(embedder.embed(x24, 24000),
                          np.asarray(embedder.extractor.embed(resample(x24, 24000, 16000))))
