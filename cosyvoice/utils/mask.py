"""Padding and chunk masks (names match the official cosyvoice.utils.mask)."""
from __future__ import annotations

import torch


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask that is True on padded positions."""
    max_len = max_len if max_len > 0 else int(lengths.max().item())
    steps = torch.arange(max_len, dtype=torch.int64, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.to(torch.int64).unsqueeze(1)
