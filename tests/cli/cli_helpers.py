"""Helpers for the inference API tests: a stub LLM, the official streaming schedule, a token2wav spy."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch

PROMPT_TEXT = "The quick brown fox."  # stands for the transcript of the prompt clip


def link_model_dir(src: Path, dst: Path, skip=()) -> Path:
    """A model dir whose entries are links to ``src``'s (minus ``skip``), as run.sh stage 4 lays one out."""
    dst.mkdir(parents=True)
    for entry in sorted(os.listdir(src)):
        if entry not in skip and entry != "spk2info.pt":
            os.symlink(src / entry, dst / entry)
    return dst


class StubLLM:
    """Stands in for Qwen2LM in CosyVoice2Model: yields fixed tokens, optionally slowly, failing, or forever."""

    def __init__(self, tokens: List[int], delay: float = 0.0, fail_after: Optional[int] = None,
                 endless: bool = False):
        self.tokens = list(tokens)
        self.delay = delay
        self.fail_after = fail_after
        self.endless = endless
        self.stopped = threading.Event()
        self.calls = []

    def inference(self, **kwargs):
        self.calls.append(kwargs)
        try:
            i = 0
            while self.endless or i < len(self.tokens):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError(f"stub LLM failed after {i} tokens")
                if self.delay:
                    time.sleep(self.delay)
                yield self.tokens[i % len(self.tokens)]
                i += 1
        finally:
            self.stopped.set()


def random_tokens(n: int, seed: int = 0) -> List[int]:
    return np.random.default_rng(seed).integers(0, 6561, n).tolist()


def official_schedule(n_prompt: int, n_tokens: int, hop: int = 25, max_hop: int = 100, scale: int = 2,
                      lookahead: int = 3):
    """The token2wav calls (tokens given, token_offset, finalize) of the official CosyVoice2Model.tts streaming
    loop, transcribed from its control flow for an LLM that produced ``n_tokens`` in all."""
    calls, offset = [], 0
    pad = int(np.ceil(n_prompt / hop) * hop - n_prompt)
    while True:
        this_hop = hop + pad if offset == 0 else hop
        if n_tokens - offset >= this_hop + lookahead:
            calls.append((offset + this_hop + lookahead, offset, False))
            offset += this_hop
            hop = min(max_hop, hop * scale)
        if n_tokens - offset < this_hop + lookahead:
            break
    calls.append((n_tokens, offset, True))
    return calls


class Token2wavSpy:
    """Wraps a model's token2wav and records (tokens given, token_offset, finalize, stream) of each call."""

    def __init__(self, model, fake: bool = False):
        self.model = model
        self.real = model.token2wav
        self.fake = fake
        self.calls = []
        self.prompt_tokens = []

    def __call__(self, token, prompt_token, prompt_feat, embedding, token_offset, uuid, stream=False,
                 finalize=False, speed=1.0, generator=None):
        self.calls.append((token.shape[1], token_offset, finalize, stream))
        self.prompt_tokens.append(prompt_token.shape[1])
        if self.fake:
            return torch.zeros(1, 480 * 2 * (token.shape[1] - token_offset))
        return self.real(token, prompt_token, prompt_feat, embedding, token_offset, uuid, stream=stream,
                         finalize=finalize, speed=speed, generator=generator)

    @property
    def schedule(self):
        return [c[:3] for c in self.calls]


def run_with_timeout(fn, timeout: float = 120.0):
    """Run ``fn`` in a thread; fail the test if it hangs. Returns its result or re-raises its exception."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below in the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"call did not return within {timeout} s (hung)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def run_mode_checked(cv, synth, prompt_wav, mode: str, stream: bool, monkeypatch):
    """``synth(cv, prompt_wav, stream=, seed=1234)`` (one synthesis mode) with token2wav spied, checking what every
    mode shares: the 1 s prompt's 25 tokens (none for sft), the official chunk schedule (one offline call without
    streaming) and float32 (1, T) chunks. Returns (speech tokens, schedule, the chunks)."""
    spy = Token2wavSpy(cv.model)
    monkeypatch.setattr(cv.model, "token2wav", spy)
    outputs = run_with_timeout(lambda: list(synth(cv, prompt_wav, stream=stream, seed=1234)))
    n_tokens = spy.calls[-1][0]
    n_prompt = 0 if mode == "sft" else 25  # the 1 s prompt: 25 tokens, 50 mel frames
    assert set(spy.prompt_tokens) == {n_prompt}
    schedule = official_schedule(n_prompt, n_tokens) if stream else [(n_tokens, 0, True)]
    assert spy.schedule == schedule
    speech = [o["tts_speech"] for o in outputs]
    assert all(s.dtype == torch.float32 and s.dim() == 2 and s.shape[0] == 1 for s in speech)
    return n_tokens, schedule, speech


def check_voice_conversion(cv, prompt_wav, monkeypatch, samples_per_token: int = 2 * 480):
    """inference_vc of the 1 s prompt onto itself: one offline token2wav of the source's 25 speech tokens, no LLM."""
    spy = Token2wavSpy(cv.model)
    monkeypatch.setattr(cv.model, "token2wav", spy)
    (out,) = run_with_timeout(lambda: list(cv.inference_vc(prompt_wav, prompt_wav, seed=1)))
    assert spy.calls == [(25, 0, True, False)]
    assert out["tts_speech"].shape == (1, 25 * samples_per_token)
