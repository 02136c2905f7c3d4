"""CausalMaskedDiffWithDiT (CosyVoice3): the recorded inference calls, the look-ahead layer, seeded training losses
(and the official crash on a mel one frame off, with its defined result), strict loading and the full-size key
manifest."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from cosyvoice.flow.DiT.dit import DiT
from cosyvoice.flow.flow import CausalMaskedDiffWithDiT, align_feat_to_tokens
from cosyvoice.utils.common import CheckpointError, load_checkpoint_strict
from flow_helpers import (ATOL, BATCH_KEYS, TRAIN, check_inference, check_recorded_training_loss,
                          check_training_loss)

CONF3 = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice3.yaml"


def _calls(fixture3_meta):
    return json.loads(fixture3_meta("flow_inference")["calls"])


# --- checkpoint format -------------------------------------------------------------------------------------------
def test_flow_pt_loads_strictly_in_official_order(tiny3_flow, fixtures3_dir):
    state = torch.load(fixtures3_dir / "flow.pt", map_location="cpu", weights_only=True)
    assert isinstance(tiny3_flow, CausalMaskedDiffWithDiT) and isinstance(tiny3_flow.decoder.estimator, DiT)
    assert list(tiny3_flow.state_dict()) == list(state)
    assert "decoder.estimator.rotary_embed.inv_freq" in state  # the persistent x-transformers buffer
    assert not any(k.startswith(("encoder", "encoder_proj")) for k in state)


def test_strict_load_names_the_bad_key(tiny3_flow, fixtures3_dir):
    state = torch.load(fixtures3_dir / "flow.pt", map_location="cpu", weights_only=True)
    missing = {k: v for k, v in state.items() if k != "decoder.estimator.rotary_embed.inv_freq"}
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.estimator\.rotary_embed\.inv_freq"):
        load_checkpoint_strict(tiny3_flow, missing)
    bad = dict(state)
    bad["pre_lookahead_layer.conv1.weight"] = torch.zeros(64, 80, 3)
    with pytest.raises(CheckpointError, match=r"wrong shapes: pre_lookahead_layer\.conv1\.weight \(checkpoint "
                                              r"\[64, 80, 3\] vs model \[64, 80, 4\]\)"):
        load_checkpoint_strict(tiny3_flow, bad)


def test_full_size_flow_matches_manifest(fixtures3_dir, load_io3, full_size_module):
    """conf/cosyvoice3.yaml's flow, built on the meta device, has exactly the official state_dict (names in order,
    shapes, dtypes, counts); the build draws no random numbers and still gets the real fixed noise."""
    flow, manifest = full_size_module(CONF3, "flow", fixtures3_dir / "manifest_full.json")
    assert len(flow.state_dict()) == manifest["num_state_dict_entries"] == 330
    assert sum(p.numel() for p in flow.parameters()) == manifest["num_parameters_unique"]
    persistent = [k for k, _ in flow.named_buffers() if k in flow.state_dict()]
    assert persistent == manifest["persistent_buffers_in_state_dict"]
    for attr in manifest["plain_tensor_attributes_not_in_state_dict"]:
        obj = flow
        for part in attr["name"].split("."):
            obj = getattr(obj, part)
        assert list(obj.shape) == attr["shape"] and obj.device.type == "cpu"
    fixed = load_io3("fixed_noise_full")
    assert torch.equal(flow.decoder.rand_noise[:, :, :200], fixed["rand_noise_first200"])


def test_fixed_noise_is_the_official_draw(tiny3_flow, load_io3, fixtures3_dir):
    probes = json.loads((fixtures3_dir / "behaviour_probes.json").read_text())
    assert list(tiny3_flow.decoder.rand_noise.shape) == probes["flow_rand_noise_shape"] == [1, 80, 15000]
    assert torch.equal(tiny3_flow.decoder.rand_noise[:, :, :1000], load_io3("flow_rand_noise")["rand_noise_first1000"])


# --- look-ahead layer ----------------------------------------------------------------------------------------------
def test_prelookahead_matches_official(tiny3_flow, load_io3):
    io = load_io3("flow_prelookahead")
    layer = tiny3_flow.pre_lookahead_layer
    with torch.no_grad():
        x = tiny3_flow._embed_tokens(io["token"], io["token_len"], torch.float32)
        context = tiny3_flow.input_embedding(io["context_token"])
        torch.testing.assert_close(x, io["x"], atol=0, rtol=0)
        torch.testing.assert_close(context, io["context"], atol=0, rtol=0)
        torch.testing.assert_close(layer(io["x"]), io["out_nocontext"], atol=ATOL, rtol=0)
        torch.testing.assert_close(layer(io["x"], io["context"]), io["out_context"], atol=ATOL, rtol=0)


def test_prelookahead_context_in_train_mode_is_refused(tiny3_flow, load_io3, fixtures3_dir):
    """Official: AssertionError 'you have passed context ...'; here a RuntimeError saying what to do."""
    probes = json.loads((fixtures3_dir / "behaviour_probes.json").read_text())
    assert probes["prelookahead_context_in_train_mode"]["raised"]
    io = load_io3("flow_prelookahead")
    layer = tiny3_flow.pre_lookahead_layer
    layer.train()
    try:
        with pytest.raises(RuntimeError, match=r"look-ahead context is for inference; call \.eval\(\) first"):
            layer(io["x"], io["context"])
    finally:
        layer.eval()


# --- inference -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chunk1", "chunk2", "final_nonstream", "stream_final"])
def test_inference_matches_official(tiny3_flow, load_io3, fixture3_meta, record_calls, name):
    io = load_io3("flow_inference")
    (n_tokens, streaming, finalize), = [c[1:] for c in _calls(fixture3_meta) if c[0] == name]
    with record_calls(tiny3_flow.decoder) as rec:
        feat, extra = tiny3_flow.inference(io["token"][:, :n_tokens], torch.tensor([n_tokens], dtype=torch.int32),
                                           io["prompt_token"], io["prompt_token_len"], io["prompt_feat"],
                                           io["prompt_feat_len"], io["embedding"], streaming=streaming,
                                           finalize=finalize)
    check_inference(io, name, feat, extra, rec, streaming)


def test_recorded_schedule_is_the_streaming_one(load_io3, fixture3_meta):
    """chunk1 is a prefix of chunk2 (chunk-causal streaming), the final non-streaming call is not."""
    io = load_io3("flow_inference")
    assert [c[1] for c in _calls(fixture3_meta)] == [38, 88, 140, 140]
    torch.testing.assert_close(io["feat_chunk1"], io["feat_chunk2"][:, :, :70], atol=2e-6, rtol=0)
    assert (io["feat_final_nonstream"] - io["feat_stream_final"]).abs().max() > 1e-2


def test_inference_with_nothing_to_produce_is_empty(tiny3_flow, load_io3):
    """Official: crashes (look-ahead conv on 0 tokens, or its length assert); defined here: no frames."""
    io = load_io3("flow_inference")
    none = torch.zeros(1, 0, dtype=torch.int32)
    args = (io["prompt_feat_len"], io["embedding"])
    cases = [
        (none, io["prompt_token"], io["prompt_feat"], True),                       # zero tokens after a prompt
        (none, none, torch.zeros(1, 0, 80), True),                                 # zero tokens, no prompt
        (io["token"][:, :3], none, torch.zeros(1, 0, 80), False),                  # only look-ahead
        (io["token"][:, :2], io["prompt_token"], io["prompt_feat"], False),        # prompt frames not reached
    ]
    for token, prompt_token, prompt_feat, finalize in cases:
        feat, _ = tiny3_flow.inference(token, torch.tensor([token.size(1)], dtype=torch.int32), prompt_token,
                                       torch.tensor([prompt_token.size(1)], dtype=torch.int32), prompt_feat, *args,
                                       streaming=True, finalize=finalize)
        assert feat.shape == (1, 80, 0) and feat.dtype == torch.float32
    feat, _ = tiny3_flow.inference(io["token"][:, :4], torch.tensor([4], dtype=torch.int32), none,
                                   torch.tensor([0], dtype=torch.int32), torch.zeros(1, 0, 80), *args,
                                   streaming=True, finalize=False)
    assert feat.shape == (1, 80, 2)  # one token past the look-ahead


def test_inference_takes_one_utterance(tiny3_flow, load_io3):
    io = load_io3("flow_inference")
    with pytest.raises(ValueError, match="flow.inference takes one utterance, got a batch of 2"):
        tiny3_flow.inference(io["token"].repeat(2, 1), io["prompt_token_len"], io["prompt_token"],
                             io["prompt_token_len"], io["prompt_feat"], io["prompt_feat_len"], io["embedding"],
                             streaming=False, finalize=True)


# --- training ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TRAIN))
def test_training_loss_matches_official(tiny3_flow, load_io3, record_calls, kind):
    io = load_io3(f"flow_train_loss_{kind}")
    args, kwargs = check_recorded_training_loss(tiny3_flow, io, kind, record_calls)
    assert kwargs["streaming"] is bool(io["streaming"]) is bool(io["est_streaming"])
    y, mask, mu, t_in, spks, cond = args
    for got, key in ((y, "est_y"), (mask, "est_mask"), (mu, "est_mu"), (t_in, "est_t"), (spks, "est_spks"),
                     (cond, "est_cond")):
        torch.testing.assert_close(got, io[key], atol=ATOL, rtol=0)
    assert torch.equal(mask[:, 0].sum(1), 2 * io["speech_token_len"].float())
    dropped = io["cfg_rand"] <= 0.2
    assert torch.equal(mu.abs().amax(dim=(1, 2)) == 0, dropped)


@pytest.mark.parametrize("case", ["plus1", "minus1"])
def test_mel_one_frame_off_gets_the_defined_loss(tiny3_flow, load_io3, fixture3_meta, record_calls, case):
    """Official: RuntimeError in the DiT input concatenation (recorded); defined here: each utterance cut to
    min(tokens, frames // 2) tokens and twice that many frames, then the official forward (the harness's expected
    loss and draws)."""
    io = load_io3("flow_train_loss_mismatch")
    meta = fixture3_meta("flow_train_loss_mismatch")
    assert "Sizes of tensors must match" in meta[f"{case}_official_error"]
    aligned = align_feat_to_tokens(*(io[f"{case}_{k}"] for k in BATCH_KEYS[:4]), ratio=2)
    for got, key in zip(aligned, BATCH_KEYS[:4]):
        assert got.dtype == io[f"{case}_aligned_{key}"].dtype
        torch.testing.assert_close(got, io[f"{case}_aligned_{key}"], atol=0, rtol=0)

    expected = {k: io[f"{case}_expected_{k}"] for k in ("loss", "py_draw_values", "py_draw_kinds", "t", "z", "cfg_rand")}
    args, _ = check_training_loss(tiny3_flow, {k: io[f"{case}_{k}"] for k in BATCH_KEYS},
                                  {**expected, "feat_len": io[f"{case}_aligned_speech_feat_len"]},
                                  int(meta["python_random_seed"]), int(meta["torch_seed"]), record_calls)
    assert args[0].shape == (2, 80, io[f"{case}_aligned_speech_feat"].size(1))


def test_extra_frame_of_a_shorter_utterance_is_official(tiny3_flow, load_io3, record_calls):
    """Only the padded lengths decide: a mel one frame longer than twice its tokens, in an utterance that is not
    the longest, does not crash officially, so nothing is cut (its frame is outside the token mask)."""
    io = load_io3("flow_train_loss_stream")
    batch = {k: io[k].clone() for k in BATCH_KEYS}
    batch["speech_feat_len"][1] += 1  # 39 frames for 19 tokens, inside the padded 50
    random.seed(1)
    torch.manual_seed(2024)
    with record_calls(tiny3_flow.decoder.estimator) as rec, torch.no_grad():
        tiny3_flow(batch, torch.device("cpu"))
    (args, _), = rec.calls
    assert args[0].shape == (2, 80, 50) and torch.equal(args[1][:, 0].sum(1), torch.tensor([50.0, 38.0]))


def test_training_batch_without_tokens_is_reported(tiny3_flow):
    with pytest.raises(KeyError, match="CausalMaskedDiffWithDiT.forward: the batch has no 'speech_token'"):
        tiny3_flow({"speech_feat": torch.zeros(1, 4, 80)}, torch.device("cpu"))


def test_training_step_backpropagates(tiny3_flow, load_io3):
    import copy

    flow = copy.deepcopy(tiny3_flow).train()
    io = load_io3("flow_train_loss_stream")
    random.seed(0)
    torch.manual_seed(0)
    loss = flow({k: io[k] for k in BATCH_KEYS}, torch.device("cpu"))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert flow.input_embedding.weight.grad is not None and flow.pre_lookahead_layer.conv1.weight.grad is not None
    assert flow.decoder.estimator.proj_out.weight.grad.abs().sum() > 0


def test_missing_parts_are_reported():
    with pytest.raises(ValueError, match="needs a pre_lookahead_layer and a decoder"):
        CausalMaskedDiffWithDiT()
