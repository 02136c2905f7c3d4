"""Qwen2LM against the official golden data: checkpoint keys, training forward and greedy decoding."""
from __future__ import annotations

import random

import pytest
import torch

from llm_helpers import BATCH_KEYS, TOL, TRAIN_CASES, valid_positions


def _batch(d):
    return {k: d[k] for k in BATCH_KEYS}


_valid = valid_positions


def test_llm_pt_names(tiny_llm):
    sd = tiny_llm.state_dict()
    assert "llm.model.lm_head.weight" in sd and "llm.model.model.embed_tokens.weight" in sd
    assert tiny_llm.llm_decoder.out_features == 6564 and tiny_llm.speech_embedding.num_embeddings == 6564
    assert tiny_llm.stop_token_ids == [6561, 6562, 6563] and tiny_llm.fill_token == 6563


@pytest.mark.parametrize("name,seed,paths", TRAIN_CASES)
def test_built_sequences_and_hidden_match(tiny_llm, llm_fixture, name, seed, paths):
    d = llm_fixture(name)
    b = _batch(d)
    with torch.no_grad():
        sos = tiny_llm.llm_embedding.weight[0].reshape(1, 1, -1)
        task = tiny_llm.llm_embedding.weight[1].reshape(1, 1, -1)
        text_emb = tiny_llm.llm.model.model.embed_tokens(b["text_token"])
        speech_emb = tiny_llm.speech_embedding(b["speech_token"])
        random.seed(seed)
        target, lm_input, lm_len = tiny_llm.prepare_lm_input_target(
            sos, b["text_token"], text_emb, b["text_token_len"], task, b["speech_token"], speech_emb,
            b["speech_token_len"])
        hidden, mask = tiny_llm.llm(lm_input, lm_len)
    assert torch.equal(target, d["lm_target"])
    assert target.dtype == torch.int64
    assert torch.equal(lm_len, d["lm_input_len"]) and lm_len.dtype == torch.int32
    valid = _valid(lm_len, lm_input.size(1))
    assert torch.equal(mask.squeeze(1), valid)
    assert (lm_input - d["lm_input"])[valid].abs().max().item() < TOL
    assert (hidden - d["hidden"])[valid].abs().max().item() < TOL
    if "logits" in d:
        logits = tiny_llm.llm_decoder(hidden)
        assert (logits - d["logits"])[valid].abs().max().item() < TOL
    # never a target: token 6562; fill tokens only in bi-stream rows
    assert not (target == 6562).any()
    for i, p in enumerate(paths):
        assert bool((target[i] == 6563).any()) == (p == "bi")
        assert (target[i] == 6561).sum().item() == 1


def test_greedy_inference_matches_official(tiny_llm, llm_fixture):
    d = llm_fixture("llm_inference")
    seen = []
    original = tiny_llm.sampling_ids

    def spy(scores, decoded, sampling, ignore_eos=True):
        seen.append(scores.clone())  # before the eos mask
        return original(scores, decoded, sampling, ignore_eos)

    text_len = d["text_len"].clone()
    tiny_llm.sampling_ids = spy
    try:
        gen = tiny_llm.inference(d["text"], text_len, d["prompt_text"], d["prompt_text_len"],
                                 d["prompt_speech_token"], d["prompt_speech_token_len"], d["embedding"],
                                 sampling=25, max_token_text_ratio=20, min_token_text_ratio=2)
        first = next(gen)  # a generator: tokens come one by one
        tokens = [first] + list(gen)
    finally:
        del tiny_llm.sampling_ids
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == d["tokens"].tolist()
    assert len(tokens) == 120
    logp = torch.stack(seen)
    assert logp.shape == (120, 6564)
    assert (logp[:8] - d["step_logp_first8"]).abs().max().item() < TOL
    assert (logp.max(dim=1).values - d["step_max_logp"]).abs().max().item() < TOL
    assert torch.equal(logp.argmax(dim=1), d["step_argmax"])
    assert torch.equal(text_len, d["text_len"])  # not modified in place


def test_kv_cache_steps_equal_full_forward(tiny_llm):
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(1, 9, 64, generator=g)
    with torch.no_grad():
        full, _ = tiny_llm.llm(xs, torch.tensor([9]))
        h1, cache = tiny_llm.llm.forward_one_step(xs[:, :6], torch.ones(1, 6, 6, dtype=torch.bool).tril())
        steps = [h1]
        for t in range(6, 9):
            h, cache = tiny_llm.llm.forward_one_step(xs[:, t:t + 1], torch.ones(1, 1, 1, dtype=torch.bool), cache)
            steps.append(h)
    assert cache.get_seq_length() == 9
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < TOL


def test_tuple_cache_is_rejected(tiny_llm):
    xs = torch.zeros(1, 1, 64)
    with pytest.raises(TypeError, match="transformers Cache"):
        tiny_llm.llm.forward_one_step(xs, None, cache=((xs, xs),))


def test_label_smoothing_and_batch_normalisation(tiny_llm, llm_fixture):
    """lsm_weight > 0 gives KL to the smoothed target; length_normalized_loss=False divides by the batch size."""
    import torch.nn.functional as F

    d = llm_fixture("llm_train_unistream")
    target, logits = d["lm_target"], d["logits"]
    from cosyvoice.llm.llm import _label_smoothing_loss

    eps, vocab = 0.1, logits.size(-1)
    flat_t = target.reshape(-1)
    keep = flat_t != -1
    q = torch.full((flat_t.numel(), vocab), eps / (vocab - 1))
    q.scatter_(1, flat_t.clamp(min=0)[:, None], 1 - eps)
    kl = F.kl_div(torch.log_softmax(logits.reshape(-1, vocab), 1), q, reduction="none")
    total = kl.masked_fill(~keep[:, None], 0).sum()  # the official LabelSmoothingLoss: one sum over the matrix
    got_len = _label_smoothing_loss(logits, target, eps, True)
    got_batch = _label_smoothing_loss(logits, target, eps, False)
    assert torch.equal(got_len, total / int(keep.sum())) and torch.equal(got_batch, total / target.size(0))
    assert abs(got_len.item() - kl.sum(1)[keep].sum().item() / int(keep.sum())) < 1e-4  # the same KL per token
    assert abs(_label_smoothing_loss(logits, target, 0.0, True).item() - d["loss"].item()) < TOL


def test_loss_is_summed_over_the_matrix_as_the_official_one():
    """Without smoothing the loss is the mean negative log-likelihood, but summed in the official order (over the
    (tokens, V) matrix, zeros included), not per token: the two orders differ in the last bits."""
    import torch.nn.functional as F
    from cosyvoice.llm.llm import _label_smoothing_loss

    g = torch.Generator().manual_seed(11)
    logits = 4 * torch.randn(3, 40, 6564, generator=g)
    target = torch.randint(0, 6564, (3, 40), generator=g)
    target[1, 17:] = -1
    target[2, 21:] = -1
    keep = target.reshape(-1) != -1
    logp = torch.log_softmax(logits.reshape(-1, 6564), 1)
    onehot = torch.zeros_like(logp).scatter_(1, target.reshape(-1).clamp(min=0)[:, None], 1.0)
    official = F.kl_div(logp, onehot, reduction="none").masked_fill(~keep[:, None], 0).sum() / int(keep.sum())
    got = _label_smoothing_loss(logits, target, 0.0, True)
    assert torch.equal(got, official)
    per_token = -logp.gather(1, target.reshape(-1).clamp(min=0)[:, None])[keep].sum() / int(keep.sum())
    assert abs(got.item() - per_token.item()) < 1e-5


def _one_utt_batch(t_len, s_len):
    text = torch.arange(100, 100 + t_len, dtype=torch.int64)[None]
    speech = torch.arange(1000, 1000 + s_len, dtype=torch.int64)[None]
    return {"text_token": text, "text_token_len": torch.tensor([t_len], dtype=torch.int32),
            "speech_token": speech, "speech_token_len": torch.tensor([s_len], dtype=torch.int32)}


def _targets(tiny_llm, batch, seed=4):  # seed 4: first draw 0.236 < 0.5
    sos, task = tiny_llm.llm_embedding.weight[0].reshape(1, 1, -1), tiny_llm.llm_embedding.weight[1].reshape(1, 1, -1)
    random.seed(seed)
    with torch.no_grad():
        target, lm_input, lm_len = tiny_llm.prepare_lm_input_target(
            sos, batch["text_token"], tiny_llm.llm.model.model.embed_tokens(batch["text_token"]),
            batch["text_token_len"], task, batch["speech_token"], tiny_llm.speech_embedding(batch["speech_token"]),
            batch["speech_token_len"])
    return target[0].tolist(), lm_input[0], int(lm_len[0])


def test_ratio_test_is_strict(tiny_llm):
    # speech/text == 15/5 exactly: uni-stream even though the draw is < 0.5
    target, _, n = _targets(tiny_llm, _one_utt_batch(5, 15))
    assert target == [-1] * 6 + list(range(1000, 1015)) + [6561] and n == 22


def test_bistream_layout_by_hand(tiny_llm):
    target, lm_input, n = _targets(tiny_llm, _one_utt_batch(5, 16))
    # block 0: 5 text + 15 speech (target: 4 ignored, 15 speech, fill); block 1: no text, task_id, 1 speech, eos
    assert target == [-1] + [-1] * 4 + list(range(1000, 1015)) + [6563] + list(range(1015, 1016)) + [6561]
    assert n == 1 + 5 + 1 + 16 == len(target)
    emb = tiny_llm.llm.model.model.embed_tokens.weight
    sp = tiny_llm.speech_embedding.weight
    assert torch.equal(lm_input[1:6], emb[100:105])
    assert torch.equal(lm_input[6:21], sp[1000:1015])
    assert torch.equal(lm_input[21], tiny_llm.llm_embedding.weight[1])
    assert torch.equal(lm_input[22], sp[1015])


def test_training_backward_reaches_every_trained_part(tiny_llm, llm_fixture):
    import copy

    m = copy.deepcopy(tiny_llm).train()
    random.seed(1)
    out = m(_batch(llm_fixture("llm_train_mixed")), torch.device("cpu"))
    out["loss"].backward()
    for name in ("llm_embedding.weight", "llm_decoder.weight", "speech_embedding.weight",
                 "llm.model.model.layers.0.self_attn.q_proj.weight", "llm.model.model.embed_tokens.weight"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
