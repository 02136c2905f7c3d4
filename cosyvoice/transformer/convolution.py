"""Conformer convolution module: pointwise GLU -> depthwise conv -> norm/activation -> pointwise."""
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
