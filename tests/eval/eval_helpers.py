"""Helpers of the evaluation tests: a tiny random Whisper dir built offline, synthetic clips, Kaldi tables."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "local" / "demo_voice"
SPK = "demo"
# short test texts keep the stand-in's synthesis fast (it speaks until its length limit)
TEST_UTTS = {"demo_0010": "这本书非常有意思。", "demo_0035": "Thank you very much for your help."}
PROMPT_UTTS = ("demo_0001", "demo_0002", "demo_0003")

WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


def load_tool(name: str):
    """A script of tools/ imported as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_for_eval_tests", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def link_model_dir(stand_in_dir: Path, out: Path, spk2info: dict) -> Path:
    """A fine-tuned-style model dir (stage 4 layout): links to the stand-in's files plus its own spk2info.pt."""
    import os

    import torch

    out.mkdir()
    for entry in sorted(os.listdir(stand_in_dir)):
        os.symlink(stand_in_dir / entry, out / entry)
    torch.save(spk2info, out / "spk2info.pt")
    return out


def make_tiny_whisper(out: Path, seed: int = 0) -> Path:
    """A Whisper dir with random tiny weights and a byte-level BPE trained on two lines: loads offline through
    WhisperProcessor / WhisperForConditionalGeneration like a real one (its transcripts are noise)."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration)

    out.mkdir(parents=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog", "这本书非常有意思"], trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in WHISPER_SPECIALS])
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in WHISPER_SPECIALS}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "additional_special_tokens": list(WHISPER_SPECIALS[1:]), "model_max_length": 1024}))
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=80, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=48,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=24, is_multilingual=True, no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]})
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


def tone(seconds: float, freq: float = 220.0, sr: int = 16000, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A tone with a little noise (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * amp * rng.standard_normal(t.size)).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sr, subtype="PCM_16")
    return path


def write_table(path: Path, table: Dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(table, key=lambda k: k.encode("utf-8"))
    path.write_text("".join(f"{k} {table[k]}\n" for k in keys), encoding="utf-8")


def write_data_dir(d: Path, utts: Dict[str, tuple]) -> Path:
    """A Kaldi data dir from {utt: (wav path, text, spk)}."""
    write_table(d / "wav.scp", {u: str(v[0]) for u, v in utts.items()})
    write_table(d / "text", {u: v[1] for u, v in utts.items()})
    write_table(d / "utt2spk", {u: v[2] for u, v in utts.items()})
    spk2utt: Dict[str, list] = {}
    for u in sorted(utts, key=lambda k: k.encode("utf-8")):
        spk2utt.setdefault(utts[u][2], []).append(u)
    write_table(d / "spk2utt", {s: " ".join(us) for s, us in spk2utt.items()})
    return d
