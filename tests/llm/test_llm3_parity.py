"""CosyVoice3LM against the official golden data (tests/data/cosyvoice3): strict loading, the training forward on
the four layouts, greedy decoding with the official stop rule, and the behaviours the README pins down."""
from __future__ import annotations

import json
import random

import pytest
import torch

from cosyvoice.llm.llm import CosyVoice3LM, Qwen2LM
from cosyvoice.utils.common import CheckpointError, load_checkpoint_strict
from llm_helpers import BATCH3_KEYS as BATCH_KEYS, TRAIN3_CASES as TRAIN_CASES, build_tiny3_llm, valid_positions

DECODE_CASES = [("llm_inference_zero_shot", 19, 6561), ("llm_inference_no_prompt", 18, 6627),
                ("llm_inference_instruct", 1, 6562)]
TOL = 1e-5  # as the CosyVoice2 tests
SOS, EOS, TASK, FILL = 6561, 6562, 6563, 6564


def _batch(d, keys=BATCH_KEYS):
    return {k: d[k] for k in keys}


_valid = valid_positions


@pytest.fixture(scope="module")
def probes(fixtures3_dir):
    return json.loads((fixtures3_dir / "behaviour_probes.json").read_text())


# ------------------------------------------------------------------------------------------------ layout
def test_llm_class_and_unique_numel(tiny3_llm):
    assert type(tiny3_llm) is CosyVoice3LM and isinstance(tiny3_llm, Qwen2LM)
    assert sum(p.numel() for p in tiny3_llm.parameters()) == 2_653_616  # README: unique numel of the tiny llm


def test_id_layout_matches_official(tiny3_llm, probes):
    ids = probes["special_ids"]
    m = tiny3_llm
    assert (m.sos, m.eos_token, m.task_id, m.fill_token, m.speech_token_size) == (
        ids["sos"], ids["eos_token"], ids["task_id"], ids["fill_token"], ids["speech_token_size"])
    stop = probes["stop_token_ids"]
    assert m.stop_token_ids == list(range(stop["first"], stop["last"] + 1)) and len(m.stop_token_ids) == stop["count"]
    assert m.llm_decoder.bias is None and not probes["llm_decoder_has_bias"]
    assert not hasattr(m, "llm_embedding") and not probes["llm_has_llm_embedding"]
    assert m.llm_decoder.out_features == 6761 and m.speech_embedding.num_embeddings == 6761
    # sos and task id are speech-embedding rows
    sos, task = m._sos_task_emb()
    assert torch.equal(sos[0, 0], m.speech_embedding.weight[SOS])
    assert torch.equal(task[0, 0], m.speech_embedding.weight[TASK])
    # the official default bans the id speech_token_size below min_len (sos for CosyVoice3)
    assert m.min_len_mode == "official" and m.min_len_banned_ids == [ids["masked_by_sampling_ids_when_ignore_eos"]]


def test_v2_checkpoint_does_not_load(fixtures_dir, fixtures3_dir, tiny3_qwen_dir):
    llm = build_tiny3_llm(fixtures3_dir, tiny3_qwen_dir)
    with pytest.raises(CheckpointError, match=r"does not fit CosyVoice3LM: unexpected keys: llm_embedding\.weight, "
                                              r"llm_decoder\.bias; wrong shapes: "):
        load_checkpoint_strict(llm, fixtures_dir / "llm.pt")


def test_unknown_min_len_mode_is_refused(fixtures3_dir, tiny3_qwen_dir):
    with pytest.raises(ValueError, match="min_len_mode 'eos' is not one of official, ban_stop_tokens"):
        CosyVoice3LM(16, 16, 6561, llm=None, sampling=None, min_len_mode="eos")


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("name,seed,paths", TRAIN_CASES)
def test_built_sequences_hidden_and_logits_match(tiny3_llm, llm3_fixture, name, seed, paths):
    d = llm3_fixture(name)
    m = tiny3_llm
    with torch.no_grad():
        sos, task = m._sos_task_emb()
        embed = m.llm.model.model.embed_tokens
        random.seed(seed)
        target, lm_input, lm_len = m.prepare_lm_input_target(
            sos, d["text_token"], embed(d["text_token"]), d["text_token_len"], task, d["speech_token"],
            m.speech_embedding(d["speech_token"]), d["speech_token_len"], d["instruct_token"],
            embed(d["instruct_token"]), d["instruct_token_len"])
        hidden, mask = m.llm(lm_input, lm_len)
        logits = m.llm_decoder(hidden)
    assert torch.equal(target, d["lm_target"]) and target.dtype == torch.int64
    assert torch.equal(lm_len, d["lm_input_len"]) and lm_len.dtype == torch.int32
    valid = _valid(lm_len, lm_input.size(1))
    assert torch.equal(mask.squeeze(1), valid)
    assert (lm_input - d["lm_input"])[valid].abs().max().item() < TOL
    assert torch.equal(lm_input[~valid], d["lm_input"][~valid])  # padded with -1.0
    assert (hidden - d["hidden"])[valid].abs().max().item() < TOL
    assert (logits.logsumexp(-1) - d["logits_lse"])[valid].abs().max().item() < TOL
    at_target = logits.gather(-1, target.clamp(min=0)[..., None])[..., 0].masked_fill(target == -1, 0.0)
    assert (at_target - d["logits_at_target"])[valid].abs().max().item() < TOL
    assert torch.equal(logits.argmax(-1)[valid], d["logits_argmax"][valid])
    # targets: eos 6562 once per utterance, fill 6564 only in bi-stream rows, never sos or task id
    for i, p in enumerate(paths):
        assert (target[i] == EOS).sum().item() == 1
        assert bool((target[i] == FILL).any()) == (p == "bi")
        assert not ((target[i] == SOS) | (target[i] == TASK)).any()


def test_instruct_tokens_lead_and_are_ignored(tiny3_llm, llm3_fixture):
    """Layout by hand for the instruct batch: [sos, instruct, ...], instruct positions never targets."""
    d = llm3_fixture("llm_train_instruct")
    emb = tiny3_llm.llm.model.model.embed_tokens.weight
    for i in range(2):
        n = int(d["instruct_token_len"][i])
        assert torch.equal(d["lm_target"][i, :1 + n], torch.full((1 + n,), -1))
        assert (d["lm_input"][i, 1:1 + n] - emb[d["instruct_token"][i, :n]]).abs().max().item() < TOL
        assert (d["lm_input"][i, 0] - tiny3_llm.speech_embedding.weight[SOS]).abs().max().item() < TOL


# Defined where the official forward raises (behaviour_probes.json): a batch without instruct tokens trains without
# instructions, and the float all-empty column that official padding() makes counts as empty.
def test_batch_without_instruct_token_trains_without_instructions(tiny3_llm, llm3_fixture, probes):
    assert probes["llm_forward_without_instruct_token"]["error"] == "KeyError: 'instruct_token'"  # official
    d = llm3_fixture("llm_train_mixed")
    random.seed(1)
    with torch.no_grad():
        out = tiny3_llm(_batch(d, BATCH_KEYS[:4]), torch.device("cpu"))
    assert abs(out["loss"].item() - d["loss"].item()) < TOL and abs(out["acc"].item() - d["acc"].item()) < TOL


def test_all_empty_float_instruct_column_counts_as_empty(tiny3_llm, llm3_fixture, probes):
    official = probes["padding_then_llm_forward.all_instruct_empty"]
    assert official["raised"] and official["instruct_token_dtype"] == "torch.float32"
    d = llm3_fixture("llm_train_bistream")
    batch = _batch(d)
    batch["instruct_token"] = torch.zeros(2, 0, dtype=torch.float32)
    random.seed(4)
    with torch.no_grad():
        out = tiny3_llm(batch, torch.device("cpu"))
    assert abs(out["loss"].item() - d["loss"].item()) < TOL
    batch["instruct_token"] = torch.ones(2, 3)
    batch["instruct_token_len"] = torch.tensor([3, 3], dtype=torch.int32)
    with pytest.raises(TypeError, match="instruct_token must hold integer ids, got torch.float32"):
        tiny3_llm(batch, torch.device("cpu"))
    del batch["instruct_token_len"]
    batch["instruct_token"] = d["instruct_token"]
    with pytest.raises(KeyError, match="'instruct_token' but no 'instruct_token_len'"):
        tiny3_llm(batch, torch.device("cpu"))


def test_one_empty_instruct_equals_that_utterance_without_instruct(tiny3_llm, llm3_fixture):
    """An utterance with an empty instruction is laid out exactly like one in a batch without instructions."""
    d = llm3_fixture("llm_train_instruct")
    batch = _batch(d)
    batch["instruct_token_len"] = torch.tensor([11, 0], dtype=torch.int32)
    m = tiny3_llm
    embed = m.llm.model.model.embed_tokens
    sos, task = m._sos_task_emb()
    with torch.no_grad():
        random.seed(10)
        target, lm_input, lm_len = m.prepare_lm_input_target(
            sos, batch["text_token"], embed(batch["text_token"]), batch["text_token_len"], task,
            batch["speech_token"], m.speech_embedding(batch["speech_token"]), batch["speech_token_len"],
            batch["instruct_token"], embed(batch["instruct_token"]), batch["instruct_token_len"])
        random.seed(10)
        t0, i0, l0 = m.prepare_lm_input_target(
            sos, batch["text_token"], embed(batch["text_token"]), batch["text_token_len"], task,
            batch["speech_token"], m.speech_embedding(batch["speech_token"]), batch["speech_token_len"])
    n = int(l0[1])
    assert int(lm_len[1]) == n == int(d["lm_input_len"][1]) - 7  # utt 1 loses its 7 instruct tokens
    assert torch.equal(target[1, :n], t0[1, :n]) and torch.equal(lm_input[1, :n], i0[1, :n])
    assert torch.equal(target[0], d["lm_target"][0, :target.size(1)])


def test_training_backward_reaches_every_trained_part(tiny3_llm, llm3_fixture):
    import copy

    m = copy.deepcopy(tiny3_llm).train()
    random.seed(10)
    m(_batch(llm3_fixture("llm_train_instruct")), torch.device("cpu"))["loss"].backward()
    params = dict(m.named_parameters())
    for name in ("llm_decoder.weight", "speech_embedding.weight", "llm.model.model.layers.0.self_attn.q_proj.weight",
                 "llm.model.model.embed_tokens.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    # the sos and task-id rows of speech_embedding are trained (they replace v2's llm_embedding)
    grad = params["speech_embedding.weight"].grad
    assert grad[SOS].abs().sum() > 0 and grad[TASK].abs().sum() > 0


# ------------------------------------------------------------------------------------------------ decoding
def _decode(llm, d, spy=None, **kw):
    seen = []
    original = llm.sampling_ids

    def record(scores, decoded, sampling, ignore_eos=True):
        seen.append(scores.clone())  # before any mask
        return original(scores, decoded, sampling, ignore_eos)

    llm.sampling_ids = record
    try:
        gen = llm.inference(d["text"], d["text_len"].clone(), d["prompt_text"], d["prompt_text_len"],
                            d["prompt_speech_token"], d["prompt_speech_token_len"], d["embedding"],
                            sampling=25, **{"max_token_text_ratio": 20, "min_token_text_ratio": 2, **kw})
        tokens = list(gen)
    finally:
        del llm.sampling_ids
    return tokens, (torch.stack(seen) if seen else torch.zeros(0, 6761))


@pytest.mark.parametrize("name,n_tokens,stop", DECODE_CASES)
def test_greedy_decoding_matches_official(tiny3_llm, llm3_fixture, name, n_tokens, stop):
    d = llm3_fixture(name)
    text_len = d["text_len"].clone()
    tokens, logp = _decode(tiny3_llm, d)
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == d["tokens"].tolist() and len(tokens) == n_tokens
    assert logp.shape[0] == int(d["n_steps"]) == n_tokens + 1  # the last step produced the stop id
    assert int(d["stop_token"]) == stop
    n4 = d["step_logp_first4"].shape[0]
    assert (logp[:n4] - d["step_logp_first4"]).abs().max().item() < TOL
    assert (logp.max(1).values - d["step_max_logp"]).abs().max().item() < TOL
    assert torch.equal(logp.argmax(1), d["step_argmax"])
    assert (logp[:, EOS] - d["step_eos_logp"]).abs().max().item() < TOL
    assert (logp[:, SOS] - d["step_sos_logp"]).abs().max().item() < TOL
    assert (logp[:, SOS:].max(1).values - d["step_stop_max_logp"]).abs().max().item() < TOL
    assert torch.equal(logp[:, SOS:].argmax(1) + SOS, d["step_stop_argmax"])
    assert (logp[:, :SOS].max(1).values - d["step_speech_max_logp"]).abs().max().item() < TOL
    assert torch.equal(d["text_len"], text_len)  # not modified in place (the reference adds prompt_text_len)


def test_official_min_len_masks_sos_not_eos(tiny3_llm, llm3_fixture):
    """README section 4: below min_len only 6561 (sos) is masked; eos and the other stop ids still end decoding."""
    zs = llm3_fixture("llm_inference_zero_shot")
    # raw arg-max 6561 at steps 5 and 12 (< min_len 16) was masked, the next best chosen
    assert [i for i, t in enumerate(zs["step_argmax"].tolist()) if t == SOS] == [5, 12, 19]
    tokens, _ = _decode(tiny3_llm, zs)
    assert tokens[5] != SOS and tokens[12] != SOS
    # no_prompt stops with 6627 at step 18 < min_len 22; instruct with eos at step 1 < min_len 28
    assert len(_decode(tiny3_llm, llm3_fixture("llm_inference_no_prompt"))[0]) == 18 < 22
    assert len(_decode(tiny3_llm, llm3_fixture("llm_inference_instruct"))[0]) == 1 < 28


@pytest.fixture(scope="module")
def fixed_llm(fixtures3_dir, tiny3_qwen_dir, llm3_state):
    """The same weights with the min_len fix (min_len_mode='ban_stop_tokens')."""
    llm = build_tiny3_llm(fixtures3_dir, tiny3_qwen_dir)
    llm.load_state_dict(llm3_state, strict=True)
    fixed = CosyVoice3LM(16, 16, 6561, llm.llm, llm.sampling, min_len_mode="ban_stop_tokens")
    fixed.load_state_dict(llm3_state, strict=True)
    return fixed.eval()


@pytest.mark.parametrize("name,min_len", [("llm_inference_zero_shot", 16), ("llm_inference_no_prompt", 22),
                                          ("llm_inference_instruct", 28)])
def test_fixed_min_len_bans_every_stop_id(fixed_llm, llm3_fixture, name, min_len):
    d = llm3_fixture(name)
    tokens, logp = _decode(fixed_llm, d)
    assert len(tokens) >= min_len
    assert all(0 <= t < SOS for t in tokens)
    # the tokens are the greedy choice among speech ids while < min_len, among all ids afterwards
    want = [int(logp[i, :SOS].argmax()) if i < min_len else int(logp[i].argmax()) for i in range(len(tokens))]
    assert tokens == want
    if len(tokens) < 20 * min_len // 2:  # stopped by a stop id, not by max_len
        assert int(logp[len(tokens)].argmax()) >= SOS
    # the first steps agree with the official run until the official one would have stopped
    official = d["tokens"].tolist()
    assert tokens[:len(official)] == official


def test_fixed_mode_is_the_ids_official_vllm_passes(fixed_llm):
    assert fixed_llm.min_len_banned_ids == fixed_llm.stop_token_ids == list(range(6561, 6761))
    assert FILL not in fixed_llm.streaming_banned_ids and len(fixed_llm.streaming_banned_ids) == 199


def test_fixed_min_len_can_be_set_from_the_yaml(fixtures3_dir, tiny3_qwen_dir, tmp_path):
    text = (fixtures3_dir / "tiny3.yaml").read_text()
    text = text.replace("    mix_ratio: [5, 15]\n", "    mix_ratio: [5, 15]\n    min_len_mode: ban_stop_tokens\n", 1)
    path = tmp_path / "tiny3_fixed.yaml"
    path.write_text(text)
    from cosyvoice.utils.config import load_config

    llm = load_config(str(path), {"qwen_pretrain_path": str(tiny3_qwen_dir)}, keys=["llm"])["llm"]
    assert llm.min_len_mode == "ban_stop_tokens"


def test_max_len_caps_decoding(tiny3_llm, llm3_fixture):
    d = llm3_fixture("llm_inference_zero_shot")
    tokens, _ = _decode(tiny3_llm, d, max_token_text_ratio=1, min_token_text_ratio=1)
    assert tokens == d["tokens"].tolist()[:8]  # 8 new text tokens x 1
    # min_len 0: nothing is masked, and the raw arg-max at step 5 is sos, a stop id
    tokens, _ = _decode(tiny3_llm, d, max_token_text_ratio=1, min_token_text_ratio=0)
    assert tokens == d["tokens"].tolist()[:5]


def test_missing_end_of_prompt_is_a_clear_error(tiny3_llm, llm3_fixture, probes):
    assert probes["llm_inference_without_151646"]["error"].startswith("AssertionError: <|endofprompt|> not detected")
    d = llm3_fixture("llm_inference_zero_shot")
    prompt = d["prompt_text"].clone()
    prompt[prompt == 151646] = 13
    with pytest.raises(ValueError, match=r"no <\|endofprompt\|> \(id 151646\) in the prompt text or text; "
                                         r"CosyVoice3 needs it .*'You are a helpful assistant\.<\|endofprompt\|>'"):
        tiny3_llm.inference(d["text"], d["text_len"], prompt, d["prompt_text_len"], d["prompt_speech_token"],
                            d["prompt_speech_token_len"], d["embedding"])  # raised at the call, not at next()
    # in the text alone is enough (the no-prompt / cross-lingual shape)
    assert 151646 in llm3_fixture("llm_inference_no_prompt")["text"].tolist()[0]


def test_kv_cache_steps_equal_full_forward(tiny3_llm, llm3_fixture):
    """Greedy decoding with the KV cache equals the arg-max of one full forward over the whole sequence."""
    d = llm3_fixture("llm_inference_zero_shot")
    tokens = d["tokens"].tolist()
    m = tiny3_llm
    with torch.no_grad():
        emb = torch.cat([m.speech_embedding.weight[SOS:SOS + 1],
                         m.llm.model.model.embed_tokens(torch.cat([d["prompt_text"], d["text"]], 1)[0]),
                         m.speech_embedding.weight[TASK:TASK + 1],
                         m.speech_embedding(d["prompt_speech_token"][0]), m.speech_embedding.weight[tokens]])
        hidden, _ = m.llm(emb[None], torch.tensor([emb.shape[0]]))
        logp = m.llm_decoder(hidden[0, -len(tokens) - 1:]).log_softmax(-1)
    assert (logp.max(1).values - d["step_max_logp"]).abs().max().item() < TOL


# ------------------------------------------------------------------------------------------------ bi-stream
def _chunks(ids, size):
    for i in range(0, ids.shape[1], size):
        yield ids[:, i:i + size]


def _bistream(llm, d, size, feeds=None):
    if feeds is not None:
        step = llm.llm.forward_one_step

        def spy(xs, masks=None, cache=None):
            feeds.append(xs.shape[1])
            return step(xs, masks, cache)

        llm.llm.forward_one_step = spy
    try:
        return list(llm.inference_bistream(_chunks(d["text"], size), d["prompt_text"], d["prompt_text_len"],
                                           d["prompt_speech_token"], d["prompt_speech_token_len"], d["embedding"],
                                           sampling=25, max_token_text_ratio=20, min_token_text_ratio=2))
    finally:
        if feeds is not None:
            del llm.llm.forward_one_step


def test_bistream_feeds_the_system_prompt_after_sos(fixed_llm, llm3_fixture):
    """Official v3 schedule: [sos, prompt text up to <|endofprompt|>] first; the rest of the prompt text is
    interleaved with the prompt speech (5 text : 15 speech); decoding then starts at once."""
    d = llm3_fixture("llm_inference_zero_shot")  # prompt text 21 ids, <|endofprompt|> at index 6; 25 prompt speech
    feeds = []
    tokens = _bistream(fixed_llm, d, 4, feeds)
    eop = d["prompt_text"][0].tolist().index(151646)
    assert eop == 6
    # chunk 1: 14 prompt-text ids + 4 new text -> 18 >= 5: [sos, 7 prefix] + (5 text + 15 speech) + (5 text + 10)
    assert feeds[0] == 1 + 7 + 20 + 15
    assert all(0 <= t < SOS for t in tokens) and len(tokens) > 0
    # the first decode step equals a full forward over that input
    m = fixed_llm
    pt = d["prompt_text"][0]
    with torch.no_grad():
        emb = torch.cat([m.speech_embedding.weight[SOS:SOS + 1], m.llm.model.model.embed_tokens(pt[:7]),
                         m.llm.model.model.embed_tokens(torch.cat([pt[7:], d["text"][0, :4]])[:5]),
                         m.speech_embedding(d["prompt_speech_token"][0, :15]),
                         m.llm.model.model.embed_tokens(torch.cat([pt[7:], d["text"][0, :4]])[5:10]),
                         m.speech_embedding(d["prompt_speech_token"][0, 15:])])
        hidden, _ = m.llm(emb[None], torch.tensor([emb.shape[0]]))
        first = m.llm_decoder(hidden[0, -1])
    first[m.streaming_banned_ids] = -float("inf")
    assert tokens[0] == int(first.argmax())


def test_bistream_needs_end_of_prompt_in_prompt_text(tiny3_llm, llm3_fixture):
    d = llm3_fixture("llm_inference_no_prompt")  # <|endofprompt|> is in the text, the prompt text is empty
    with pytest.raises(ValueError, match=r"no <\|endofprompt\|> .* in the prompt text \(inference_bistream needs"):
        _bistream(tiny3_llm, d, 3)


def test_bistream_official_mode_reports_a_stop_id_while_text_streams(tiny3_llm, llm3_fixture):
    """With the official mask the tiny model emits 6627 mid-text; the reference raises there too."""
    with pytest.raises(ValueError, match=r"stop id 6627 while text was still streaming .*min_len_mode="
                                         r"'ban_stop_tokens' bans"):
        _bistream(tiny3_llm, llm3_fixture("llm_inference_instruct"), 3)


def test_bistream_final_phase_ends_on_any_stop_id(fixed_llm, llm3_fixture):
    """Defined where the reference raises ('should not get token'): after the text has ended any stop id ends
    decoding, as in inference(). A sampler that picks stop id 6600 whenever it is allowed stands in for the model:
    while text streams ban_stop_tokens bans it, so it comes first in the final phase."""
    import copy

    d = llm3_fixture("llm_inference_zero_shot")
    m = copy.copy(fixed_llm)  # shares the weights; only the sampler differs
    picks = []

    def sampler(scores, decoded, sampling):
        pick = 6600 if scores[6600] > -float("inf") else fixed_llm.sampling(scores, decoded, sampling)
        picks.append(pick)
        return pick

    m.sampling = sampler
    tokens = _bistream(m, d, 4)
    assert picks[-1] == 6600 and picks.count(6600) == 1
    assert tokens == [p for p in picks if p < SOS] and len(tokens) > 0
