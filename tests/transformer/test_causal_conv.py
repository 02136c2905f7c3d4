"""The one-sided convs of the causal HiFT (cosyvoice.transformer.convolution)."""
from __future__ import annotations

import pytest
import torch

from cosyvoice.transformer.convolution import CausalConv1d, CausalConv1dDownSample, CausalConv1dUpsample


@pytest.mark.parametrize("kernel,dilation,padding", [(3, 1, 2), (7, 1, 6), (3, 5, 10), (11, 5, 50), (4, 1, 3),
                                                      (5, 1, 4), (1, 1, 0), (4, 2, 7)])
def test_context_length_follows_the_official_rule(kernel, dilation, padding):
    assert CausalConv1d(2, 2, kernel, dilation=dilation).causal_padding == padding


def test_left_conv_is_causal_and_cache_continues_it():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 4, 3, dilation=2, causal_type="left")
    x = torch.randn(1, 3, 20)
    with torch.no_grad():
        full = conv(x)
        tail = conv(x[:, :, 12:], x[:, :, 8:12])  # the 4 frames before are the cache
        changed = x.clone()
        changed[:, :, 15:] += 1
        assert torch.equal(conv(changed)[:, :, :15], full[:, :, :15])
    assert full.shape == (1, 4, 20)
    torch.testing.assert_close(tail, full[:, :, 12:], atol=1e-6, rtol=0)


def test_right_conv_looks_ahead_into_its_context():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 4, 4, causal_type="right")
    x = torch.randn(1, 3, 20)
    with torch.no_grad():
        full = conv(x)
        head = conv(x[:, :, :17], x[:, :, 17:])  # the last 3 frames are only look-ahead
    assert head.shape == (1, 4, 17)
    torch.testing.assert_close(head, full[:, :, :17], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="causal conv context has 2 frames, expected 3"):
        conv(x, x[:, :, :2])


def test_up_and_down_sampling_lengths_and_causality():
    torch.manual_seed(0)
    up, down = CausalConv1dUpsample(3, 2, 7, 5), CausalConv1dDownSample(3, 2, 30, 15)
    x = torch.randn(1, 3, 61)  # like the HiFT source STFT: 15 k + 1 frames -> k outputs
    with torch.no_grad():
        assert up(x[:, :, :6]).shape == (1, 2, 30)
        assert down(x).shape == (1, 2, 4)
        changed = x.clone()
        changed[:, :, 31:] += 1  # output j sees inputs up to 15 j + 15
        assert torch.equal(down(changed)[:, :, :2], down(x)[:, :, :2])
        assert torch.equal(up(changed)[:, :, :155], up(x)[:, :, :155])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="stride 1 only"):
        CausalConv1d(2, 2, 3, stride=2)
    with pytest.raises(ValueError, match="causal_type must be 'left' or 'right'"):
        CausalConv1d(2, 2, 3, causal_type="center")
    with pytest.raises(ValueError, match="multiple of the stride"):
        CausalConv1dDownSample(2, 2, 7, 3)
