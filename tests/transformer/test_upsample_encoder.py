"""UpsampleConformerEncoder against the official outputs recorded in flow_encoder.safetensors."""
from __future__ import annotations

import pytest
import torch

from cosyvoice.transformer.upsample_encoder import PreLookaheadLayer, UpsampleConformerEncoder

ATOL = 1e-5


@pytest.mark.parametrize("mode", ["nonstream", "stream"])
def test_encoder_matches_official(tiny_encoder, encoder_io, flow_state_dict, mode):
    with torch.no_grad():
        h, h_mask = tiny_encoder(encoder_io["xs"], encoder_io["token_len"], streaming=mode == "stream")
        h_proj = torch.nn.functional.linear(h, flow_state_dict["encoder_proj.weight"],
                                            flow_state_dict["encoder_proj.bias"])
    assert h.shape == (2, 60, 64)
    torch.testing.assert_close(h, encoder_io[f"h_{mode}"], atol=ATOL, rtol=0)
    assert h_mask.dtype == torch.bool and torch.equal(h_mask, encoder_io[f"h_mask_{mode}"])
    torch.testing.assert_close(h_proj, encoder_io[f"h_proj_{mode}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("tokens", [1, 4, 30])
def test_the_layers_after_each_transpose_get_contiguous_input_as_in_the_official_code(tiny_encoder, tokens):
    """The official encoder makes the tensor contiguous after each (B, T, C) <-> (B, C, T) transpose. The values
    are the same either way, but a GEMM over a transposed view can round differently: the flow of a 1-token
    utterance differed from the official one by 1.5e-6 (its up_embed linear saw a view) until they were contiguous."""
    seen = []

    def record(module, args):
        seen.append((type(module).__name__, args[0].is_contiguous()))

    def record_out(module, args, out):
        seen.append((type(module).__name__ + " output", out.is_contiguous()))

    hooks = [tiny_encoder.up_layer.register_forward_pre_hook(record),
             tiny_encoder.up_embed.register_forward_pre_hook(record),
             tiny_encoder.pre_lookahead_layer.register_forward_hook(record_out)]
    try:
        with torch.no_grad():
            tiny_encoder(torch.randn(1, tokens, 64), torch.tensor([tokens], dtype=torch.int32))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [("PreLookaheadLayer output", True), ("Upsample1D", True),
                    (type(tiny_encoder.up_embed).__name__, True)]


def test_streaming_differs_from_full_context(encoder_io):
    """The recorded streaming and full-context outputs differ, so the chunk masks are being exercised."""
    assert (encoder_io["h_stream"] - encoder_io["h_nonstream"]).abs().max() > 1e-3


def test_streaming_output_is_chunk_causal(tiny_encoder):
    """With chunk masks, frames of the first 25-token chunk ignore every later token (beyond the
    3-token look-ahead, which only reaches into the next chunk's first tokens at the chunk edge)."""
    torch.manual_seed(0)
    xs = torch.randn(1, 60, 64)
    lens = torch.tensor([60], dtype=torch.int32)
    xs2 = xs.clone()
    xs2[:, 25 + 3:] += torch.randn_like(xs2[:, 25 + 3:])
    with torch.no_grad():
        a, _ = tiny_encoder(xs, lens, streaming=True)
        b, _ = tiny_encoder(xs2, lens, streaming=True)
        c, _ = tiny_encoder(xs2, lens, streaming=False)
    torch.testing.assert_close(a[:, :50], b[:, :50], atol=1e-5, rtol=0)
    assert (a[:, :50] - c[:, :50]).abs().max() > 1e-3


def test_context_equals_lookahead_on_the_full_input(tiny_encoder):
    """Encoding T tokens with the next 3 as ``context`` gives the first 2T frames of encoding all T+3
    (streaming chunk masks make the tail invisible to the head)."""
    torch.manual_seed(1)
    xs = torch.randn(1, 53, 64)
    with torch.no_grad():
        full, _ = tiny_encoder(xs, torch.tensor([53]), streaming=True)
        part, mask = tiny_encoder(xs[:, :50], torch.tensor([53]), context=xs[:, 50:], streaming=True)
    assert part.shape == (1, 100, 64) and bool(mask.all())
    torch.testing.assert_close(part, full[:, :100], atol=1e-5, rtol=0)


def test_widths_follow_output_size(tiny_encoder_args):
    enc = UpsampleConformerEncoder(**{**tiny_encoder_args, "output_size": 32, "input_size": 32})
    sd = enc.state_dict()
    assert sd["pre_lookahead_layer.conv1.weight"].shape == (32, 32, 4)
    assert sd["up_layer.conv.weight"].shape == (32, 32, 5)
    assert enc.output_size() == 32
    assert not any("pos_enc" in k for k in sd)  # the tables are plain attributes
    assert enc.embed.pos_enc.pe.shape == (1, 9999, 32)


def test_lookahead_context_rejected_in_training():
    layer = PreLookaheadLayer(8, 8, pre_lookahead_len=3).train()
    with pytest.raises(RuntimeError, match="call .eval"):
        layer(torch.zeros(1, 5, 8), context=torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="context has 2 steps, expected 3"):
        layer.eval()(torch.zeros(1, 5, 8), context=torch.zeros(1, 2, 8))


def test_unknown_layer_type_is_named(tiny_encoder_args):
    with pytest.raises(ValueError, match="unknown pos_enc_layer_type 'bogus'"):
        UpsampleConformerEncoder(**{**tiny_encoder_args, "pos_enc_layer_type": "bogus"})


def test_rel_shift_indexes_by_relative_offset():
    from cosyvoice.transformer.attention import RelPositionMultiHeadedAttention

    t1 = 5
    scores = torch.randn(2, 3, t1, 2 * t1 - 1)
    shifted = RelPositionMultiHeadedAttention.rel_shift(scores)
    i = torch.arange(t1).view(-1, 1)
    j = torch.arange(t1).view(1, -1)
    expected = scores[:, :, i, t1 - 1 - i + j]
    assert torch.equal(shifted, expected)


@pytest.mark.parametrize("variant", [
    dict(pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn"),
    dict(pos_enc_layer_type="rel_pos", macaron_style=True, use_cnn_module=True, cnn_module_norm="layer_norm",
         causal=True),
    dict(pos_enc_layer_type="no_pos", selfattention_layer_type="selfattn", normalize_before=False,
         use_cnn_module=True),
])
def test_encoder_variants_run(tiny_encoder_args, variant):
    """The other layer types the constructor offers (absolute/no positions, plain attention, macaron FFN,
    conformer convolution, post-norm) build and give (B, 2T, D) frames and the upsampled mask."""
    torch.manual_seed(0)
    enc = UpsampleConformerEncoder(**{**tiny_encoder_args, **variant}).eval()
    with torch.no_grad():
        h, mask = enc(torch.randn(2, 9, 64), torch.tensor([9, 6]), streaming=True)
    assert h.shape == (2, 18, 64) and torch.isfinite(h).all()
    assert mask[:, 0].sum(-1).tolist() == [18, 12]
    names = "".join(enc.state_dict())
    assert ("conv_module.depthwise_conv" in names) == bool(variant.get("use_cnn_module"))
    assert ("feed_forward_macaron" in names) == bool(variant.get("macaron_style"))
