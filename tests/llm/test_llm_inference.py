"""Qwen2LM decoding beyond the golden run: SFT (no prompt), length limits, stop tokens, bi-stream text input."""
from __future__ import annotations

import copy

import pytest
import torch

EOS, STOP2, FILL = 6561, 6562, 6563


def _empty_prompt():
    return (torch.zeros(1, 0, dtype=torch.int32), torch.tensor([0], dtype=torch.int32),
            torch.zeros(1, 0, dtype=torch.int32), torch.tensor([0], dtype=torch.int32))


def _sft(llm, text, **kw):
    pt, ptl, ps, psl = _empty_prompt()
    return list(llm.inference(text, torch.tensor([text.shape[1]], dtype=torch.int32), pt, ptl, ps, psl,
                              torch.zeros(0, 192), **kw))


def _with_bias(llm, **bias):
    """A copy of the model whose decoder bias is shifted for some ids (e.g. make eos very likely)."""
    m = copy.deepcopy(llm)
    with torch.no_grad():
        for tok, shift in bias.items():
            m.llm_decoder.bias[{"eos": EOS, "stop2": STOP2, "fill": FILL}[tok]] += shift
    return m


TEXT = torch.tensor([[11, 402, 77, 1500, 9]], dtype=torch.int32)


def test_sft_inference_runs_and_matches_full_forward(tiny_llm):
    tokens = _sft(tiny_llm, TEXT, max_token_text_ratio=4, min_token_text_ratio=2)
    assert 10 <= len(tokens) <= 20
    assert all(0 <= t < EOS for t in tokens)
    # greedy (top_k 1) with KV cache == arg-max of a full forward over [sos, text, task_id, tokens]
    with torch.no_grad():
        emb = torch.cat([tiny_llm.llm_embedding.weight[:1], tiny_llm.llm.model.model.embed_tokens(TEXT[0]),
                         tiny_llm.llm_embedding.weight[1:2], tiny_llm.speech_embedding.weight[tokens[:-1]]])
        hidden, _ = tiny_llm.llm(emb[None], torch.tensor([emb.shape[0]]))
        logp = tiny_llm.llm_decoder(hidden[0, -len(tokens):]).log_softmax(-1)
    logp[:10, EOS] = -float("inf")
    assert logp.argmax(-1).tolist() == tokens


def test_min_len_bans_eos_then_eos_stops(tiny_llm):
    m = _with_bias(tiny_llm, eos=1e4)
    assert len(_sft(m, TEXT, max_token_text_ratio=20, min_token_text_ratio=2)) == 10
    assert len(_sft(m, TEXT, max_token_text_ratio=20, min_token_text_ratio=1.5)) == 7  # int(5 * 1.5)
    assert len(_sft(m, TEXT, max_token_text_ratio=20, min_token_text_ratio=0)) == 0


def test_max_len_caps_generation(tiny_llm):
    m = _with_bias(tiny_llm, eos=-1e4, stop2=-1e4, fill=-1e4)
    assert len(_sft(m, TEXT, max_token_text_ratio=3, min_token_text_ratio=0)) == 15
    assert len(_sft(m, TEXT[:, :2], max_token_text_ratio=2.5, min_token_text_ratio=0)) == 5


@pytest.mark.parametrize("which", ["stop2", "fill"])
def test_other_stop_tokens_end_decoding_unemitted(tiny_llm, which):
    m = _with_bias(tiny_llm, **{which: 1e4})
    assert _sft(m, TEXT, max_token_text_ratio=20, min_token_text_ratio=2) == []


def test_prompt_counts_only_new_text(tiny_llm, llm_fixture):
    d = llm_fixture("llm_inference")
    m = _with_bias(tiny_llm, eos=-1e4, stop2=-1e4, fill=-1e4)
    tokens = list(m.inference(d["text"], d["text_len"].clone(), d["prompt_text"], d["prompt_text_len"],
                              d["prompt_speech_token"], d["prompt_speech_token_len"], d["embedding"],
                              max_token_text_ratio=3, min_token_text_ratio=1))
    assert len(tokens) == 18  # 6 new text tokens x 3, the 4 prompt text tokens do not count


def _chunks(ids, size):
    for i in range(0, ids.shape[1], size):
        yield ids[:, i:i + size]


def test_bistream_block_schedule(tiny_llm):
    """Prompt of 4 text + 20 speech tokens, text arriving 3 tokens at a time (12 in all).

    Expected feeds (mix 5:15): [sos, 5 text, 15 speech, 5 text, 5 speech] = 31 at once; a forced fill after 10
    new tokens (the prompt's partial block); then 5 text and up to 15 tokens until the next fill; at the end the
    remaining text and task_id (after the input already fed when fill came, as the reference does).
    """
    m = _with_bias(tiny_llm, fill=-1e4, stop2=-1e4, eos=-1e4)
    feeds = []
    step = m.llm.forward_one_step

    def spy(xs, masks=None, cache=None):
        feeds.append(xs.shape[1])
        return step(xs, masks, cache)

    m.llm.forward_one_step = spy
    prompt_text = torch.tensor([[5, 6, 7, 8]], dtype=torch.int32)
    prompt_speech = torch.arange(100, 120, dtype=torch.int32)[None]
    text = torch.tensor([[21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]], dtype=torch.int32)
    tokens = list(m.inference_bistream(_chunks(text, 3), prompt_text, torch.tensor([4], dtype=torch.int32),
                                       prompt_speech, torch.tensor([20], dtype=torch.int32), torch.zeros(1, 192),
                                       sampling=25, max_token_text_ratio=4, min_token_text_ratio=2))
    assert all(0 <= t < EOS for t in tokens)
    # 12 new text tokens x ratio 4 = 48 speech tokens at most; eos is made impossible, so the cap ends it
    assert len(tokens) == 48
    assert feeds[:11] == [31] + [1] * 10
    assert feeds[11:27] == [5] + [1] * 15
    # the text ends: the input fed when fill came again, the 1 text token left (16 - 15 consumed), task_id
    assert feeds[27] == 1 + 1 + 1
    assert sum(f == 1 for f in feeds[28:]) == len(feeds) - 28


def test_bistream_without_prompt_speech_ends_with_eos(tiny_llm):
    m = _with_bias(tiny_llm, fill=-1e4, stop2=-1e4)
    pt, ptl, ps, psl = _empty_prompt()
    text = torch.tensor([[21, 22, 23, 24, 25, 26, 27]], dtype=torch.int32)
    tokens = list(m.inference_bistream(_chunks(text, 2), pt, ptl, ps, psl, torch.zeros(0, 192)))
    # 5 text tokens, then a forced fill after 15 speech tokens; eos is not allowed while text streams
    assert len(tokens) >= 15
    assert all(0 <= t < EOS for t in tokens)


def test_bistream_final_phase_ends_on_any_stop_id(tiny_llm):
    """Defined where the reference raises: once the text has ended, a stop id other than eos ends decoding too.
    The stand-in sampler picks 6562 whenever eos is not banned, i.e. only in the final phase."""
    m = copy.copy(tiny_llm)
    picks = []

    def sampler(scores, decoded, sampling):
        pick = STOP2 if scores[EOS] > -float("inf") else tiny_llm.sampling(scores, decoded, sampling)
        picks.append(pick)
        return pick

    m.sampling = sampler
    pt, ptl, ps, psl = _empty_prompt()
    text = torch.tensor([[21, 22, 23, 24, 25, 26, 27]], dtype=torch.int32)
    tokens = list(m.inference_bistream(_chunks(text, 2), pt, ptl, ps, psl, torch.zeros(0, 192)))
    assert picks[-1] == STOP2 and picks.count(STOP2) == 1
    assert tokens == [p for p in picks if p < EOS] and len(tokens) >= 15
