"""Activations of the conformer blocks."""
from __future__ import annotations

import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(x) (the same function as ``torch.nn.SiLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)

