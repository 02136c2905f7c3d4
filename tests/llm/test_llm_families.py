"""What both LM families check alike against the official golden data: the fixture llm.pt (keys in order, values,
the tied lm_head) and the training forward (the python draws, the path each utterance takes, loss and accuracy)."""
from __future__ import annotations

import pytest
import torch

from llm_helpers import BATCH3_KEYS, BATCH_KEYS, TRAIN3_CASES, TRAIN_CASES, check_training_forward

# family -> (the tiny LM fixture, its safetensors loader fixture, its llm.pt fixture, the batch keys, the training
# cases, the number of llm.pt entries)
FAMILIES = {"cosyvoice2": ("tiny_llm", "llm_fixture", "llm_state", BATCH_KEYS, TRAIN_CASES, 31),
            "cosyvoice3": ("tiny3_llm", "llm3_fixture", "llm3_state", BATCH3_KEYS, TRAIN3_CASES, 29)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llm_pt_keys_in_order_and_tied(request, family):
    llm_name, _, state_name, _, _, n_keys = FAMILIES[family]
    llm, state = request.getfixturevalue(llm_name), request.getfixturevalue(state_name)
    sd = llm.state_dict()
    assert list(sd) == list(state)
    assert len(sd) == n_keys
    for k, v in state.items():
        assert torch.equal(sd[k], v), k
    qwen = llm.llm.model
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight


@pytest.mark.parametrize("family,name,seed,paths",
                         [(family, *case) for family, spec in FAMILIES.items() for case in spec[4]])
def test_training_forward_matches_official(request, family, name, seed, paths):
    llm_name, loader_name, _, keys, _, _ = FAMILIES[family]
    d = request.getfixturevalue(loader_name)(name)
    check_training_forward(request.getfixturevalue(llm_name), {k: d[k] for k in keys}, d, seed, paths)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hidden_states_skip_lm_head(request, family):
    """Decoding and the training forward never run Qwen2's lm_head (151,936 outputs at full size, unused: the
    LM has its own decoder) and give the last hidden state the official Qwen2ForCausalLM call returns."""
    encoder = request.getfixturevalue(FAMILIES[family][0]).llm
    x = torch.randn(1, 5, encoder.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = encoder.model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            prefill, cache = encoder.forward_one_step(x[:, :4])
            step, _ = encoder.forward_one_step(x[:, 4:], cache=cache)
            train, _ = encoder(x, torch.tensor([5]))
        assert calls == []
        with torch.no_grad():
            official = encoder.model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
        assert calls == [1]
    finally:
        hook.remove()
    torch.testing.assert_close(torch.cat([prefill, step], 1), official, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(train, official, rtol=1e-5, atol=1e-5)
