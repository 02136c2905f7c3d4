"""Activations used by the transformer blocks and the HiFT vocoder."""
from __future__ import annotations

import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(x) (the same function as ``torch.nn.SiLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class Snake(nn.Module):
    """Periodic activation x + sin^2(a x) / a with one learned ``alpha`` per channel, on (B, C, T).

    ``alpha_logscale`` stores log(alpha) (initialised at 0) instead of alpha (initialised at ``alpha``).
    """

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_trainable: bool = True,
                 alpha_logscale: bool = False):
        super().__init__()
        self.in_features = in_features
        self.alpha_logscale = alpha_logscale
        init = torch.zeros(in_features) if alpha_logscale else torch.ones(in_features) * alpha
        self.alpha = nn.Parameter(init)
        self.alpha.requires_grad = alpha_trainable
        self.no_div_by_zero = 1e-9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        if self.alpha_logscale:
            alpha = torch.exp(alpha)
        return x + (1.0 / (alpha + self.no_div_by_zero)) * torch.sin(x * alpha).pow(2)
