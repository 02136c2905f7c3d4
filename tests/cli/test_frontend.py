"""CosyVoiceFrontEnd on the stand-in: every feature equals the one implementation in cosyvoice.audio.features /
cosyvoice.utils.onnx, the zero-shot prompt alignment, the per-mode inputs, and its error messages."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cosyvoice.audio.features import mel_spectrogram
from cosyvoice.audio.io import load_wav
from cosyvoice.cli.frontend import PromptError, SpeakerError, with_end_of_prompt
from cosyvoice.text.normalizer import TextFrontend
from cosyvoice.utils.onnx import EmbeddingExtractor, SpeechTokenizer


@pytest.fixture(scope="module")
def frontend(cosyvoice):
    return cosyvoice.frontend


def test_text_token(frontend):
    token, token_len = frontend._extract_text_token("你好，world")
    ids = frontend.tokenizer.encode("你好，world")
    assert token.dtype == torch.int32 and token.shape == (1, len(ids)) and token[0].tolist() == ids
    assert token_len.dtype == torch.int32 and token_len.tolist() == [len(ids)]
    empty, empty_len = frontend._extract_text_token("")
    assert empty.shape == (1, 0) and empty_len.tolist() == [0]


def test_text_token_generator(frontend):
    pieces, dummy_len = frontend._extract_text_token(iter(["你好", "world"]))
    ids = [p.item() for p in pieces]
    assert ids == frontend.tokenizer.encode("你好") + frontend.tokenizer.encode("world")
    assert dummy_len.tolist() == [0]


def test_features_come_from_the_feature_module(frontend, stand_in_dir, prompt_wav):
    feat, feat_len = frontend._extract_speech_feat(prompt_wav)
    ref = mel_spectrogram(load_wav(prompt_wav, 24000), n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
                          win_size=1920, fmin=0, fmax=8000, center=False)
    assert feat.shape == (1, 50, 80) and feat_len.tolist() == [50]
    assert torch.equal(feat, ref.transpose(1, 2))

    token, token_len = frontend._extract_speech_token(prompt_wav)
    ref_token, _ = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx")).extract(load_wav(prompt_wav, 16000))
    assert token.dtype == torch.int32 and token.shape == (1, 25) and torch.equal(token, ref_token)
    assert token_len.tolist() == [25] and 0 <= token.min() and token.max() <= 6560

    embedding = frontend._extract_spk_embedding(prompt_wav)
    ref_emb = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx")).extract(load_wav(prompt_wav, 16000))
    assert embedding.shape == (1, 192) and torch.equal(embedding, ref_emb)


def test_resampled_prompt_features_equal_the_checked_resampler(frontend, stand_in_dir, tmp_path, monkeypatch):
    """A 48 kHz stereo prompt: the front end's log-mel, fbank, tokens, embedding and 24 kHz mel are, bit for bit,
    those of the official load_wav steps (channel mean, then cosyvoice.audio.resample, checked against torchaudio
    in tests/audio/test_resample.py)."""
    from cosyvoice.audio.features import campplus_fbank, whisper_log_mel_spectrogram
    from cosyvoice.audio.resample import resample

    t = np.arange(int(1.2 * 48000)) / 48000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 190 * t * (1 + 0.3 * t)), 0.2 * np.sin(2 * np.pi * 310 * t)
                       + 0.04 * np.sin(2 * np.pi * 6100 * t)], axis=1)
    path = tmp_path / "prompt48k.wav"
    sf.write(path, stereo, 48000, subtype="PCM_16")
    frames, _ = sf.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(frames.T.copy()).mean(dim=0, keepdim=True)
    x16, x24 = resample(mono, 48000, 16000), resample(mono, 48000, 24000)

    seen = {}

    def record(cls, method):  # keep the features each ONNX model is given
        real = getattr(cls, method)

        def wrapped(self, feat):
            seen[method] = torch.as_tensor(feat).clone()
            return real(self, feat)
        monkeypatch.setattr(cls, method, wrapped)
    record(EmbeddingExtractor, "from_fbank")
    record(SpeechTokenizer, "from_log_mel")
    token, _ = frontend._extract_speech_token(path)
    assert torch.equal(seen["from_log_mel"], whisper_log_mel_spectrogram(x16, n_mels=128))
    assert token[0].tolist() == SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx")).tokenize(x16)
    embedding = frontend._extract_spk_embedding(path)
    assert torch.equal(seen["from_fbank"], campplus_fbank(x16))
    assert torch.equal(embedding, EmbeddingExtractor(str(stand_in_dir / "campplus.onnx")).extract(x16))
    feat, feat_len = frontend._extract_speech_feat(path)
    assert feat.shape == (1, 60, 80) and feat_len.tolist() == [60]
    assert torch.equal(feat, mel_spectrogram(x24, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
                                             win_size=1920, fmin=0, fmax=8000, center=False).transpose(1, 2))


@pytest.mark.parametrize("extra_tokens", [0, 3, -4])
def test_zero_shot_prompt_alignment(frontend, prompt_wav, monkeypatch, extra_tokens):
    """mel frames and tokens are cut to n = min(frames // 2, tokens): 2n frames, n tokens."""
    real = frontend._extract_speech_token
    token, _ = real(prompt_wav)
    n_tok = token.shape[1] + extra_tokens
    fake = torch.arange(n_tok, dtype=torch.int32).reshape(1, -1)
    monkeypatch.setattr(frontend, "_extract_speech_token",
                        lambda wav: (fake.clone(), torch.tensor([n_tok], dtype=torch.int32)))
    feat, _ = frontend._extract_speech_feat(prompt_wav)
    n = min(feat.shape[1] // 2, n_tok)
    inp = frontend.frontend_zero_shot("你好", "prompt", prompt_wav, 24000, "")
    assert n == min(25, 25 + extra_tokens)
    assert inp["prompt_speech_feat"].shape == (1, 2 * n, 80) and inp["prompt_speech_feat_len"].tolist() == [2 * n]
    assert torch.equal(inp["prompt_speech_feat"], feat[:, :2 * n])
    assert inp["flow_prompt_speech_token"].tolist() == [list(range(n))] == inp["llm_prompt_speech_token"].tolist()
    assert inp["flow_prompt_speech_token_len"].tolist() == [n]
    # only CosyVoice2 (24 kHz) aligns
    other = frontend.frontend_zero_shot("你好", "prompt", prompt_wav, 22050, "")
    assert other["prompt_speech_feat"].shape[1] == feat.shape[1] and other["flow_prompt_speech_token"].shape[1] == n_tok


def test_zero_shot_inputs(frontend, prompt_wav):
    inp = frontend.frontend_zero_shot("你好", "The quick brown fox.", prompt_wav, 24000, "")
    assert inp["text"][0].tolist() == frontend.tokenizer.encode("你好")
    assert inp["prompt_text"][0].tolist() == frontend.tokenizer.encode("The quick brown fox.")
    assert torch.equal(inp["llm_embedding"], inp["flow_embedding"]) and inp["flow_embedding"].shape == (1, 192)
    assert set(inp) == {"text", "text_len", "prompt_text", "prompt_text_len", "llm_prompt_speech_token",
                        "llm_prompt_speech_token_len", "flow_prompt_speech_token", "flow_prompt_speech_token_len",
                        "prompt_speech_feat", "prompt_speech_feat_len", "llm_embedding", "flow_embedding"}


def test_cross_lingual_and_instruct2_inputs(frontend, prompt_wav):
    cross = frontend.frontend_cross_lingual("Hello.", prompt_wav, 24000, "")
    assert set(cross) == {"text", "text_len", "flow_prompt_speech_token", "flow_prompt_speech_token_len",
                          "prompt_speech_feat", "prompt_speech_feat_len", "llm_embedding", "flow_embedding"}
    instruct = frontend.frontend_instruct2("你好", "用开心的语气说", prompt_wav, 24000, "")
    expected = frontend.tokenizer.encode("用开心的语气说<|endofprompt|>")
    assert instruct["prompt_text"][0].tolist() == expected
    assert expected[-1] == frontend.tokenizer.tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    assert "llm_prompt_speech_token" not in instruct and "flow_prompt_speech_token" in instruct
    again = frontend.frontend_instruct2("你好", "用开心的语气说<|endofprompt|>", prompt_wav, 24000, "")
    assert again["prompt_text"][0].tolist() == expected  # not appended twice
    assert with_end_of_prompt("说 ") == "说<|endofprompt|>"


def test_sft_inputs_and_unknown_speaker(frontend):
    inp = frontend.frontend_sft("你好", "demo")
    assert torch.equal(inp["llm_embedding"], frontend.spk2info["demo"]["embedding"])
    assert set(inp) == {"text", "text_len", "llm_embedding", "flow_embedding"}
    known = ", ".join(sorted(frontend.spk2info))
    with pytest.raises(SpeakerError, match=f"^unknown speaker 'nobody' for sft; known speakers: {known}$"):
        frontend.frontend_sft("你好", "nobody")
    with pytest.raises(SpeakerError, match="speaker 'demo' cannot be used for zero-shot: it has only an SFT embedding"):
        frontend.frontend_zero_shot("你好", "", "", 24000, "demo")


def test_text_normalize_delegates(frontend):
    ref = TextFrontend(frontend.tokenizer.encode)
    for text in ["今天是2024年3月5日，气温25度。", "I paid $3.50 for 2 apples.", "。。。"]:
        assert frontend.text_normalize(text, split=True) == ref.normalize(text, split=True)
        assert frontend.text_normalize(text, split=False) == ref.normalize(text, split=False)
    assert frontend.text_normalize("a<|endofprompt|>b", split=True) == ["a<|endofprompt|>b"]


def test_prompt_errors(frontend, tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(PromptError, match=f"^prompt wav not found: {missing} \\(give the path of an existing"):
        frontend._extract_speech_feat(missing)
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    with pytest.raises(PromptError, match=f"^prompt wav: cannot read audio file {broken}: "):
        frontend._extract_spk_embedding(broken)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(31 * 16000, np.float32), 16000)
    with pytest.raises(PromptError, match=f"^prompt wav {long} is 31.0 s long; the speech tokenizer takes at most "
                                          f"30 s"):
        frontend._extract_speech_token(long)
    low = tmp_path / "8k.wav"
    sf.write(low, np.zeros(8000, np.float32), 8000)
    with pytest.raises(PromptError, match="sampled at 8000 Hz, below the required 16000 Hz"):
        frontend._extract_speech_feat(low)
    with pytest.raises(TypeError, match="prompt_wav must be the path of an audio file, got Tensor"):
        frontend._extract_speech_token(torch.zeros(1, 16000))
