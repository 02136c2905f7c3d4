"""Conformer convolution module (pointwise GLU -> depthwise conv -> norm/activation -> pointwise) and the one-sided
convs of the causal HiFT (``CausalConv1d``, ``CausalConv1dDownSample``, ``CausalConv1dUpsample``)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

_NO_MASK = torch.ones((0, 0, 0), dtype=torch.bool)
_NO_CACHE = torch.zeros((0, 0, 0))


class ConvolutionModule(nn.Module):
    """Conformer convolution over (B, T, channels); ``causal`` pads kernel_size-1 steps on the left."""

    def __init__(self, channels: int, kernel_size: int = 15, activation: nn.Module = nn.ReLU(),
                 norm: str = "batch_norm", causal: bool = False, bias: bool = True):
        super().__init__()
        if norm not in ("batch_norm", "layer_norm"):
            raise ValueError(f"ConvolutionModule norm must be 'batch_norm' or 'layer_norm', got {norm!r}")
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, kernel_size=1, bias=bias)
        if causal:
            padding, self.lorder = 0, kernel_size - 1
        else:
            if (kernel_size - 1) % 2 != 0:
                raise ValueError(f"a non-causal ConvolutionModule needs an odd kernel_size, got {kernel_size}")
            padding, self.lorder = (kernel_size - 1) // 2, 0
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=padding, groups=channels, bias=bias)
        self.use_layer_norm = norm == "layer_norm"
        self.norm = nn.LayerNorm(channels) if self.use_layer_norm else nn.BatchNorm1d(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, kernel_size=1, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor, mask_pad: torch.Tensor = _NO_MASK,
                cache: torch.Tensor = _NO_CACHE) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C); mask_pad (B, 1, T) bool or empty; cache (B, C, lorder) left context or empty."""
        x = x.transpose(1, 2)
        if mask_pad.size(2) > 0:
            x = x.masked_fill(~mask_pad, 0.0)
        new_cache = torch.zeros((0, 0, 0), dtype=x.dtype, device=x.device)
        if self.lorder > 0:
            if cache.size(2) == 0:
                x = nn.functional.pad(x, (self.lorder, 0), "constant", 0.0)
            else:
                x = torch.cat((cache, x), dim=2)
            new_cache = x[:, :, -self.lorder:]
        x = nn.functional.glu(self.pointwise_conv1(x), dim=1)
        x = self.depthwise_conv(x)
        if self.use_layer_norm:
            x = self.activation(self.norm(x.transpose(1, 2))).transpose(1, 2)
        else:
            x = self.activation(self.norm(x))
        x = self.pointwise_conv2(x)
        if mask_pad.size(2) > 0:
            x = x.masked_fill(~mask_pad, 0.0)
        return x.transpose(1, 2), new_cache


def _context(x: torch.Tensor, cache: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` context frames for ``x`` (B, C, T): ``cache`` when it has any, else zeros."""
    if cache.size(-1) == 0:
        return x.new_zeros(x.size(0), x.size(1), n)
    if cache.size(-1) != n:
        raise ValueError(f"causal conv context has {cache.size(-1)} frames, expected {n}")
    return cache.to(x)


class CausalConv1d(nn.Conv1d):
    """Length-preserving stride-1 conv that only looks one way.

    ``causal_type='left'``: output t sees inputs <= t (``causal_padding`` frames of past context on the left);
    ``'right'``: output t sees inputs t .. t + ``causal_padding`` (look-ahead on the right). The context is zeros,
    or the ``cache`` frames given to :meth:`forward` (the previous frames for 'left', the next ones for 'right').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", causal_type: str = "left",
                 device=None, dtype=None) -> None:
        if stride != 1:
            raise ValueError(f"CausalConv1d supports stride 1 only, got {stride}")
        if causal_type not in ("left", "right"):
            raise ValueError(f"CausalConv1d causal_type must be 'left' or 'right', got {causal_type!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        span = (kernel_size - 1) * dilation
        # The official rule: span for odd kernels; for even kernels the even part of span plus one (= span at
        # dilation 1, the only even-kernel case CosyVoice3 has).
        self.causal_padding = span if kernel_size % 2 else span // 2 * 2 + 1
        self.causal_type = causal_type

    def forward(self, x: torch.Tensor, cache: torch.Tensor = _NO_CACHE) -> torch.Tensor:
        ctx = _context(x, cache, self.causal_padding)
        padded = torch.cat([ctx, x], dim=2) if self.causal_type == "left" else torch.cat([x, ctx], dim=2)
        out = super().forward(padded)
        if out.size(2) != x.size(2):
            raise ValueError(f"CausalConv1d: {x.size(2)} frames in, {out.size(2)} out (kernel {self.kernel_size[0]}, "
                             f"dilation {self.dilation[0]}, context {self.causal_padding})")
        return out


class CausalConv1dDownSample(nn.Conv1d):
    """Strided conv (kernel a multiple of the stride) with ``stride - 1`` frames of past context (zeros or
    ``cache``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None) -> None:
        if stride == 1 or dilation != 1 or kernel_size % stride != 0:
            raise ValueError(f"CausalConv1dDownSample needs stride > 1, dilation 1 and a kernel that is a multiple "
                             f"of the stride (got kernel {kernel_size}, stride {stride}, dilation {dilation})")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self.causal_padding = stride - 1

    def forward(self, x: torch.Tensor, cache: torch.Tensor = _NO_CACHE) -> torch.Tensor:
        return super().forward(torch.cat([_context(x, cache, self.causal_padding), x], dim=2))


class CausalConv1dUpsample(nn.Conv1d):
    """Nearest-neighbour upsampling by ``stride``, then a stride-1 conv with ``kernel_size - 1`` frames of past
    context (zeros or ``cache``): T frames in, stride * T out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None) -> None:
        if dilation != 1:
            raise ValueError(f"CausalConv1dUpsample supports dilation 1 only, got {dilation}")
        super().__init__(in_channels, out_channels, kernel_size, 1, padding=0, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self.causal_padding = kernel_size - 1
        self.upsample = nn.Upsample(scale_factor=stride, mode="nearest")

    def forward(self, x: torch.Tensor, cache: torch.Tensor = _NO_CACHE) -> torch.Tensor:
        x = self.upsample(x)
        return super().forward(torch.cat([_context(x, cache, self.causal_padding), x], dim=2))
