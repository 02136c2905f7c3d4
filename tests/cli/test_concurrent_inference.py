"""Seeded inference is reproducible per call, also when several threads synthesize on one CosyVoice2 object at once
(issue 15): each thread's result equals the sequential one, none is empty, nothing touches the global RNG."""
from __future__ import annotations

import threading

import pytest
import torch

from cli_helpers import PROMPT_TEXT, run_with_timeout

SEED = 1986
TEXTS = ["你好", "今天天气很好", "hello world", "我们走吧"]


def _synthesize(cosyvoice, prompt_wav, text, stream):
    chunks = [o["tts_speech"] for o in cosyvoice.inference_zero_shot(text, PROMPT_TEXT, prompt_wav, stream=stream,
                                                                     seed=SEED)]
    return chunks


def _concurrently(fn, n):
    """Run ``fn(i)`` for i < n in n threads started together; return the results in order (re-raise any error)."""
    results, errors = [None] * n, []
    start = threading.Barrier(n)

    def target(i):
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a concurrent call hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("stream", [False, True])
def test_four_threads_on_one_object_equal_the_sequential_results(cosyvoice, prompt_wav, make_tiny_pretrained,
                                                                  stream):
    llm = cosyvoice.model.llm
    # lift the stand-in's end-of-speech bias so that utterances are long enough to stream in several chunks
    lift = make_tiny_pretrained.EOS_LOGIT_BIAS if stream else 0.0
    with torch.no_grad():
        llm.llm_decoder.bias[llm.speech_token_size] -= lift
    try:
        sequential = [run_with_timeout(lambda t=t: _synthesize(cosyvoice, prompt_wav, t, stream)) for t in TEXTS]
        rng_before = torch.get_rng_state()
        concurrent = _concurrently(lambda i: _synthesize(cosyvoice, prompt_wav, TEXTS[i], stream), len(TEXTS))
        rng_after = torch.get_rng_state()
    finally:
        with torch.no_grad():
            llm.llm_decoder.bias[llm.speech_token_size] += lift
    for text, want, got in zip(TEXTS, sequential, concurrent):
        assert all(c.shape[1] > 0 for c in got), f"{text}: an empty chunk"
        assert [c.shape[1] for c in got] == [c.shape[1] for c in want], text
        assert all(torch.equal(a, b) for a, b in zip(got, want)), f"{text}: audio differs from the sequential call"
    if stream:
        assert any(len(chunks) >= 2 for chunks in sequential), "expected a streamed chunk before the last one"
    # the texts give different utterances: a mix-up between calls would show
    assert len({sum(c.shape[1] for c in chunks) for chunks in sequential}) > 1
    assert torch.equal(rng_before, rng_after)  # seeded calls neither read nor write the global torch RNG
    assert not cosyvoice.model.tts_speech_token_dict and not cosyvoice.model._jobs


def test_same_seed_same_audio_different_seed_different_tokens(cosyvoice, prompt_wav):
    a = run_with_timeout(lambda: _synthesize(cosyvoice, prompt_wav, "今天天气很好", False))
    b = run_with_timeout(lambda: _synthesize(cosyvoice, prompt_wav, "今天天气很好", False))
    c = run_with_timeout(lambda: [o["tts_speech"] for o in cosyvoice.inference_zero_shot(
        "今天天气很好", PROMPT_TEXT, prompt_wav, seed=SEED + 1)])
    assert torch.equal(torch.cat(a, 1), torch.cat(b, 1))
    assert not torch.equal(torch.cat(a, 1), torch.cat(c, 1))
