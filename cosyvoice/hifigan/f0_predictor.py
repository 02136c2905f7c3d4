"""Frame-level F0 predictor of the HiFT vocoder: mel (B, C, T) -> f0 in Hz (B, T)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class ConvRNNF0Predictor(nn.Module):
    """Five weight-normed 3-tap convolutions with ELU, then a per-frame linear head; the output is |head|.

    State_dict keys: ``condnet.{0,2,4,6,8}.*`` (the ELUs take the odd indices) and ``classifier.*``.
    """

    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512):
        super().__init__()
        self.num_class = num_class
        layers = []
        for i in range(5):
            conv = nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, kernel_size=3, padding=1)
            layers += [weight_norm(conv), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.condnet(x).transpose(1, 2)
        return self.classifier(h).squeeze(-1).abs()
