"""CausalConditionalDecoder (the CFM estimator) against flow_estimator.safetensors."""
from __future__ import annotations

import pytest
import torch

from flow_helpers import check_first_chunk_is_causal
from cosyvoice.flow.decoder import CausalConditionalDecoder, ConditionalDecoder

ATOL = 1e-5


@pytest.mark.parametrize("mode", ["nonstream", "stream"])
def test_estimator_matches_official(tiny_flow, load_io, mode):
    io = load_io("flow_estimator")
    with torch.no_grad():
        out = tiny_flow.decoder.estimator(io["x"], io["mask"], io["mu"], io["t"], io["spks"], io["cond"],
                                          streaming=mode == "stream")
    assert out.shape == (2, 80, 120)
    torch.testing.assert_close(out, io[f"out_{mode}"], atol=ATOL, rtol=0)
    assert out[1, :, 95:].abs().max() == 0  # padded frames of utterance 1 are zero


def test_no_attention_bias_when_nothing_is_masked(tiny_flow, load_io, monkeypatch):
    """Offline with no padding the estimator passes no bias; the official all-zero bias gives the same output."""
    from cosyvoice.flow.decoder import add_optional_chunk_mask, mask_to_bias

    io = load_io("flow_estimator")
    est = tiny_flow.decoder.estimator
    args = [io[k][:1, ..., :95] for k in ("x", "mask", "mu")] + [io["t"][:1], io["spks"][:1], io["cond"][:1, :, :95]]
    assert bool(args[1].bool().all())
    seen = []
    real = est._attention_bias
    monkeypatch.setattr(est, "_attention_bias", lambda *a: seen.append(real(*a)) or seen[-1])
    with torch.no_grad():
        ours = est(*args, streaming=False)
        assert seen and all(b is None for b in seen)
        monkeypatch.setattr(est, "_attention_bias", lambda x, mask, streaming: mask_to_bias(
            add_optional_chunk_mask(x, mask.bool(), False, False, 0, 0, -1), x.dtype))
        official = est(*args, streaming=False)
    torch.testing.assert_close(ours, official, atol=1e-6, rtol=0)


def test_recorded_modes_differ(load_io):
    io = load_io("flow_estimator")
    assert (io["out_stream"] - io["out_nonstream"]).abs().max() > 1e-3


def test_streaming_estimator_is_chunk_causal(tiny_flow):
    """With streaming masks the first 50-frame chunk does not depend on anything after it."""
    check_first_chunk_is_causal(tiny_flow.decoder.estimator)


@pytest.mark.parametrize("cls", [ConditionalDecoder, CausalConditionalDecoder])
def test_widths_come_from_the_constructor(cls):
    """Other mel counts and channel lists work (nothing is tied to 80 bins or 256 channels);
    two down blocks exercise the stride-2 down/upsampling path."""
    est = cls(in_channels=4 * 16, out_channels=16, channels=[32, 32], dropout=0.0, attention_head_dim=8,
              n_blocks=1, num_mid_blocks=1, num_heads=2, act_fn="gelu").eval()
    x = torch.randn(2, 16, 21)
    mask = torch.ones(2, 1, 21)
    mask[1, :, 15:] = 0
    with torch.no_grad():
        out = est(x, mask, torch.randn(2, 16, 21), torch.rand(2), torch.randn(2, 16), torch.randn(2, 16, 21))
    assert out.shape == (2, 16, 21)
    assert out[1, :, 15:].abs().max() == 0
    assert est.state_dict()["time_mlp.linear_1.weight"].shape == (32 * 4, 64)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation_fn 'snake'"):
        CausalConditionalDecoder(in_channels=64, out_channels=16, channels=[32], act_fn="snake")
