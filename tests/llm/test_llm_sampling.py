"""Token samplers (nucleus, repetition-aware, random) and the cross-fade helper from cosyvoice.utils.common."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from cosyvoice.utils.common import fade_in_out, nucleus_sampling, random_sampling, ras_sampling

PROBS = [0.10, 0.50, 0.15, 0.25]  # sorted: id1 .50, id3 .25, id2 .15, id0 .10


def _scores(probs=PROBS):
    return torch.tensor([math.log(p) for p in probs])


def _drawn(fn, n=300):
    out = set()
    for seed in range(n):
        torch.manual_seed(seed)
        out.add(fn())
    return out


def test_top_k_one_is_argmax():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = torch.randn(6564, generator=g)
        assert nucleus_sampling(s.clone(), top_p=0.8, top_k=1) == int(s.argmax())


def test_ties_keep_the_lower_id_first():
    s = torch.tensor([0.0, 3.0, 3.0, 3.0])
    assert _drawn(lambda: nucleus_sampling(s, top_p=0.9, top_k=1), 50) == {1}


@pytest.mark.parametrize("top_p,top_k,allowed", [
    (0.7, 25, {1, 3}),      # mass before id3 is .50 < .7, before id2 is .75 >= .7
    (0.5, 25, {1}),         # .50 is not below .5: only the first
    (0.95, 25, {0, 1, 2, 3}),
    (0.95, 2, {1, 3}),
    (1e-6, 25, {1}),        # the first candidate is always admitted
])
def test_nucleus_candidate_set(top_p, top_k, allowed):
    assert _drawn(lambda: nucleus_sampling(_scores(), top_p=top_p, top_k=top_k)) == allowed


@pytest.mark.parametrize("top_p,top_k", [(0.0, 25), (0.8, 0)])
def test_nucleus_with_nothing_to_sample_fails_clearly(top_p, top_k):
    with pytest.raises(ValueError, match="nothing to sample from"):
        nucleus_sampling(_scores(), top_p=top_p, top_k=top_k)


def test_nucleus_draws_one_multinomial_over_the_kept_probabilities():
    probs = _scores().softmax(0)
    for seed in range(20):
        torch.manual_seed(seed)
        got = nucleus_sampling(_scores(), top_p=0.7, top_k=25)
        torch.manual_seed(seed)
        pick = torch.stack([probs[1], probs[3]]).multinomial(1, replacement=True).item()
        assert got == [1, 3][pick]


def test_random_sampling_is_softmax_multinomial():
    s = _scores()
    for seed in range(10):
        torch.manual_seed(seed)
        got = random_sampling(s, [], 25)
        torch.manual_seed(seed)
        assert got == s.softmax(0).multinomial(1, replacement=True).item()


def test_ras_keeps_nucleus_choice_without_repetition():
    s = _scores()
    assert ras_sampling(s.clone(), [], 25, top_p=0.8, top_k=1, win_size=10, tau_r=0.1) == 1
    # fixture setting: tau_r 2.0 -> needs 20 repeats in a window of 10, never fires
    assert ras_sampling(s.clone(), [1] * 50, 25, top_p=0.8, top_k=1, win_size=10, tau_r=2.0) == 1


def test_ras_falls_back_to_random_sampling_on_repetition():
    s = _scores()
    # one repeat of id1 in the last 10 reaches 10 * 0.1: id1 is banned and the draw covers all other ids
    scores = s.clone()
    assert ras_sampling(scores, [7, 1], 25, top_p=0.8, top_k=1, win_size=10, tau_r=0.1) != 1
    assert scores[1] == -float("inf")  # banned in place, as the reference does
    assert _drawn(lambda: ras_sampling(s.clone(), [1], 25, top_p=0.8, top_k=1, win_size=10, tau_r=0.1)) == {0, 2, 3}
    # only the last win_size tokens count: an old repetition does not fire
    assert ras_sampling(s.clone(), [1] + [7] * 10, 25, top_p=0.8, top_k=1, win_size=10, tau_r=0.1) == 1
    # 2 repeats needed with tau_r 0.2: one is not enough
    assert ras_sampling(s.clone(), [1, 7], 25, top_p=0.8, top_k=1, win_size=10, tau_r=0.2) == 1


def test_ras_as_configured_in_yaml_is_a_partial():
    sampler = functools.partial(ras_sampling, top_p=0.8, top_k=1, win_size=10, tau_r=2.0)
    assert sampler(_scores(), [], 25) == 1


def test_fade_in_out():
    fade_in = torch.arange(12, dtype=torch.float32).reshape(1, 2, 6)
    fade_out = torch.full((1, 2, 5), 10.0)
    window = np.hamming(6)
    before = fade_in.clone()
    out = fade_in_out(fade_in, fade_out, window)
    assert torch.equal(fade_in, before)  # input untouched
    w = torch.from_numpy(window)
    want = fade_in.clone()
    want[..., :3] = (fade_in[..., :3].double() * w[:3] + 10.0 * w[3:]).float()
    assert out.dtype == torch.float32 and out.shape == (1, 2, 6)
    assert torch.equal(out, want)
    assert torch.equal(out[..., 3:], fade_in[..., 3:])
    # a torch window works the same
    assert torch.equal(fade_in_out(fade_in, fade_out, torch.from_numpy(window)), want)
