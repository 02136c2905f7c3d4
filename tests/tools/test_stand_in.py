"""The stand-in pretrained dir (tools/make_tiny_pretrained.py): official layout, loadable, deterministic per seed."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cosyvoice.utils.pretrained import REQUIRED_FILES, check_pretrained_dir
from stage_test_utils import ROOT, call_tool, sweep


def test_required_files_and_size(stand_in_dir):
    assert check_pretrained_dir(str(stand_in_dir)) == str(stand_in_dir)
    assert "NOT a real model" in (stand_in_dir / "README.md").read_text()
    assert (stand_in_dir / "CosyVoice-BlankEN" / "model.safetensors").is_file()
    total = sum(p.stat().st_size for p in stand_in_dir.rglob("*") if p.is_file())
    assert total < 72 << 20  # the flow encoder is 512 wide (the official code hard-codes it): ~59 MB of flow.pt
    for name in ("campplus.onnx", "speech_tokenizer_v2.onnx"):
        assert (stand_in_dir / name).stat().st_size < 2 << 20


def test_onnx_front_end_through_the_shared_wrappers(stand_in_dir):
    """The files work through cosyvoice.utils.onnx, which finds inputs/outputs by position as the official code does."""
    from cosyvoice.utils.onnx import AudioTooLongError, EmbeddingExtractor, SpeechTokenizer

    wav = torch.from_numpy(sweep(1.0, 200, 700)).unsqueeze(0)
    emb = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx")).extract(wav)
    assert emb.shape == (1, 192) and emb.dtype == torch.float32
    tok = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx"))
    tokens, lengths = tok.extract(wav)
    assert tokens.dtype == torch.int32 and tokens.shape == (1, 25) and lengths.tolist() == [25]
    assert len(tok.tokenize(wav[:, :16000 - 600])) == 24  # 15400 samples: 96 mel frames -> 24 tokens
    assert len(tok.tokenize(wav[:, :16000 - 600], pad_to_token_grid=True)) == 25  # padded to 16000 samples
    with pytest.raises(AudioTooLongError, match=r"at most 30 s of audio, got 30.50 s"):
        tok.tokenize(torch.zeros(1, 16000 * 30 + 8000))


def test_online_training_variants(stand_in_dir):
    """EmbeddingExtractor.inference crops > 10 s with the given rng; SpeechTokenizer.inference = per-utterance."""
    import random

    from cosyvoice.audio.features import whisper_log_mel_spectrogram
    from cosyvoice.utils.onnx import EmbeddingExtractor, SpeechTokenizer

    ext = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx"))
    long_wav = torch.from_numpy(np.concatenate([sweep(6.0, 100, 300, seed=1), sweep(6.0, 2000, 3000, seed=2)]))
    start = random.Random(3).randint(0, long_wav.numel() - 160000)
    np.testing.assert_allclose(ext.inference(long_wav, rng=random.Random(3)).numpy(),
                               ext.extract(long_wav[start:start + 160000])[0].numpy(), atol=1e-6)
    assert ext.inference(long_wav[:16000]).shape == (192,)

    tok = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx"))
    a, b = sweep(1.0, 200, 400, seed=4), sweep(0.6, 900, 500, seed=5)
    feats = [whisper_log_mel_spectrogram(torch.from_numpy(x).unsqueeze(0), n_mels=128)[0].T for x in (a, b)]
    batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (2, T, 128)
    tokens, lengths = tok.inference(batch, torch.tensor([f.shape[0] for f in feats]), "cpu")
    assert lengths.tolist() == [25, 15] and tokens.dtype == torch.int32 and tokens.shape == (2, 25)
    assert tokens[0].tolist() == tok.tokenize(torch.from_numpy(a))
    assert tokens[1, :15].tolist() == tok.tokenize(torch.from_numpy(b)) and tokens[1, 15:].eq(0).all()


def test_weights_load_strictly_into_modules_built_from_its_yaml(stand_in_dir):
    from cosyvoice.utils.config import load_config

    cfg = load_config(str(stand_in_dir / "cosyvoice2.yaml"),
                      {"qwen_pretrain_path": str(stand_in_dir / "CosyVoice-BlankEN")}, keys=["llm", "flow", "hift"])
    for name in ("llm", "flow", "hift"):
        state = torch.load(stand_in_dir / f"{name}.pt", map_location="cpu", weights_only=True)
        cfg[name].load_state_dict(state, strict=True)
    assert cfg["llm"].llm_embedding.weight.shape == (2, 64)
    assert cfg["llm"].speech_embedding.weight.shape == (6564, 64)
    assert cfg["flow"].input_embedding.weight.shape == (6561, 512)  # the official encoder width


def test_qwen_dir_loads_like_the_real_one(stand_in_dir):
    """get_qwen_tokenizer reads it, every id fits the Qwen2 table, and from_pretrained finds the llm.pt weights."""
    import json

    from transformers import Qwen2ForCausalLM

    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    qwen_dir = stand_in_dir / "CosyVoice-BlankEN"
    config = json.loads((qwen_dir / "config.json").read_text())
    tok = get_qwen_tokenizer(str(qwen_dir), skip_special_tokens=True)
    ids = tok.encode("Hello world, 你好世界! [breath] <|endofprompt|>")
    assert len(ids) > 5 and max(ids) < config["vocab_size"]
    assert config["vocab_size"] % 64 == 0 and config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert tok.decode(tok.encode("Hello world, 你好世界!")) == "Hello world, 你好世界!"

    qwen = Qwen2ForCausalLM.from_pretrained(str(qwen_dir))
    llm = torch.load(stand_in_dir / "llm.pt", map_location="cpu", weights_only=True)
    for key, value in qwen.state_dict().items():
        torch.testing.assert_close(value, llm[f"llm.model.{key}"], rtol=0, atol=0)


@pytest.mark.parametrize("fixture,name,tiny_lines", [
    ("stand_in_dir", "cosyvoice2.yaml", ["base_channels: 64", "llm_input_size: 64"]),
    ("stand_in3_dir", "cosyvoice3.yaml", ["dim: 64", "llm_input_size: 16"])])
def test_yaml_is_conf_with_tiny_numbers(request, fixture, name, tiny_lines):
    """Only numbers differ from conf/<name> (same classes, same keys, same data pipeline)."""
    def shape(text: str):
        lines = [re.sub(r"\s+#.*$", "", line) for line in text.splitlines() if not line.lstrip().startswith("#")]
        return [re.sub(r"\d+", "N", line) for line in lines if line.strip()]

    tiny = (request.getfixturevalue(fixture) / name).read_text()
    full = (ROOT / "conf" / name).read_text()
    assert shape(tiny) == shape(full)
    assert tiny != full and all(line in tiny for line in tiny_lines)


def test_widths_override_keys_by_path_and_name_what_is_missing(make_tiny_pretrained, tmp_path):
    text = "a: 1\nb: !new:x.Y\n    c: 2   # note\n    d:\n        c: 3\n"
    got = make_tiny_pretrained.override_widths(text, {"b.c": "20", "b.d.c": "[30]"})
    assert got == "a: 1\nb: !new:x.Y\n    c: 20  # tiny\n    d:\n        c: [30]  # tiny\n"
    with pytest.raises(ValueError, match="^y.yaml has no b.e, c; cannot derive the stand-in yaml$"):
        make_tiny_pretrained.override_widths(text, {"b.c": "20", "b.e": "1", "c": "1"}, "y.yaml")


def test_same_seed_same_files_and_force(stand_in_dir, tmp_path):
    out = tmp_path / "again"
    assert call_tool("make_tiny_pretrained", "--out_dir", out, "--seed", 1986)[0] == 0
    files = sorted(p.relative_to(stand_in_dir) for p in stand_in_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (stand_in_dir / rel).read_bytes(), rel

    rc, err = call_tool("make_tiny_pretrained", "--out_dir", out, "--seed", 7)
    assert rc == 2 and err.strip() == f"make_tiny_pretrained.py: error: {out} exists; pass --force to replace it"
    assert call_tool("make_tiny_pretrained", "--out_dir", out, "--seed", 7, "--force")[0] == 0
    check_pretrained_dir(str(out))
    assert (out / "llm.pt").read_bytes() != (stand_in_dir / "llm.pt").read_bytes()
    assert (out / "speech_tokenizer_v2.onnx").read_bytes() != (stand_in_dir / "speech_tokenizer_v2.onnx").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_required_files_are_the_official_names():
    assert set(REQUIRED_FILES) >= {"cosyvoice2.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx",
                                   "speech_tokenizer_v2.onnx", "CosyVoice-BlankEN/config.json"}
