"""Sampling from a per-call torch.Generator: the same draws as torch.manual_seed with the global RNG (what the
official code and the recorded seeds use), the global RNG untouched, and a clear error for a sampler without it."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from cosyvoice.utils.common import nucleus_sampling, random_sampling, ras_sampling

TEXT = torch.tensor([[11, 402, 77, 1500, 9]], dtype=torch.int32)
EOS = 6561


def _scores(seed=0, n=6564):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("sampler", [
    functools.partial(nucleus_sampling, top_p=0.8, top_k=25),
    lambda s, **kw: random_sampling(s, [], 25, **kw),
    lambda s, **kw: ras_sampling(s, [3, 3, 3], 25, top_p=0.8, top_k=25, win_size=10, tau_r=0.1, **kw),
])
def test_a_generator_draws_what_manual_seed_draws(sampler):
    for seed in range(30):
        scores = _scores(seed)
        torch.manual_seed(seed)
        want = sampler(scores.clone())
        state = torch.get_rng_state()
        got = sampler(scores.clone(), generator=torch.Generator().manual_seed(seed))
        assert got == want
        assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not used


@pytest.fixture(scope="module")
def sampling_llm(tiny_llm):
    """The tiny LLM with the official yaml's sampler (top_k 25), so that the draws matter."""
    m = copy.deepcopy(tiny_llm)
    m.sampling = functools.partial(ras_sampling, top_p=0.8, top_k=25, win_size=10, tau_r=0.1)
    with torch.no_grad():
        m.llm_decoder.bias[EOS] -= 1e4  # no early end: every call decodes max_len tokens
    return m


def _empty_prompt():
    return (torch.zeros(1, 0, dtype=torch.int32), torch.tensor([0], dtype=torch.int32),
            torch.zeros(1, 0, dtype=torch.int32), torch.tensor([0], dtype=torch.int32))


def _sft(llm, **kw):
    return list(llm.inference(TEXT, torch.tensor([TEXT.shape[1]], dtype=torch.int32), *_empty_prompt(),
                              torch.zeros(0, 192), max_token_text_ratio=6, min_token_text_ratio=2, **kw))


def _bistream(llm, **kw):
    pieces = (TEXT[:, i:i + 2] for i in range(0, TEXT.shape[1], 2))
    return list(llm.inference_bistream(pieces, *_empty_prompt(), torch.zeros(0, 192), max_token_text_ratio=6,
                                       **kw))


@pytest.mark.parametrize("decode", [_sft, _bistream])
def test_llm_decoding_with_a_generator_equals_the_globally_seeded_one(sampling_llm, decode):
    torch.manual_seed(1986)
    want = decode(sampling_llm)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    got = decode(sampling_llm, generator=torch.Generator().manual_seed(1986))
    assert torch.equal(torch.get_rng_state(), state)
    assert got == want and len(got) >= 10
    other = decode(sampling_llm, generator=torch.Generator().manual_seed(1987))
    assert other != want  # the draws do matter with this sampler


def test_a_sampler_without_generator_argument_is_named(sampling_llm):
    m = copy.deepcopy(sampling_llm)

    def my_sampler(weighted_scores, decoded_tokens, sampling):
        return int(weighted_scores.argmax())

    m.sampling = my_sampler
    assert len(_sft(m)) == 30  # fine without a generator
    with pytest.raises(TypeError, match="^the yaml's llm sampling function my_sampler takes no generator= argument"):
        _sft(m, generator=torch.Generator().manual_seed(0))
