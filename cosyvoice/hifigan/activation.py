"""Snake activation (Ziyin et al. 2020, as used in BigVGAN): x + sin^2(alpha x) / alpha, one alpha per channel."""
from __future__ import annotations

import torch
from torch import nn


class Snake(nn.Module):
    """Periodic activation for (B, C, T) inputs with a learnable per-channel frequency ``alpha``.

    ``alpha_logscale``: keep ``log(alpha)`` as the parameter (initialised at 0) instead of ``alpha`` (initialised
    at ``alpha``). The state_dict holds a single entry, ``alpha`` of shape (C,).
    """

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_trainable: bool = True,
                 alpha_logscale: bool = False):
        super().__init__()
        self.in_features = in_features
        self.alpha_logscale = alpha_logscale
        init = torch.zeros(in_features) if alpha_logscale else torch.full((in_features,), float(alpha))
        self.alpha = nn.Parameter(init, requires_grad=alpha_trainable)
        self.eps = 1e-9  # keeps 1/alpha finite when alpha reaches 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        if self.alpha_logscale:
            alpha = torch.exp(alpha)
        inv = 1.0 / (alpha + self.eps)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            return x + inv * torch.sin(x * alpha).pow(2)
        # no autograd: the same operations on one temporary, in place (bit-identical, a third fewer passes)
        s = (x * alpha).sin_()
        return s.mul_(s).mul_(inv).add_(x)
