"""Label-smoothed cross-entropy (KL to a smoothed one-hot target), as the speech-token LM uses it."""
from __future__ import annotations

import torch
from torch import nn


class LabelSmoothingLoss(nn.Module):
    """KL(smoothed target || softmax(x)) summed over non-padding positions.

    The target puts ``1 - smoothing`` on the label and ``smoothing / (size - 1)`` on every other class.
    Positions whose target is ``padding_idx`` are ignored. The sum is divided by the number of kept
    positions when ``normalize_length`` is true, else by the batch size.
    """

    def __init__(self, size: int, padding_idx: int, smoothing: float, normalize_length: bool = False):
        super().__init__()
        self.criterion = nn.KLDivLoss(reduction="none")
        self.padding_idx = padding_idx
        self.confidence = 1.0 - smoothing
        self.smoothing = smoothing
        self.size = size
        self.normalize_length = normalize_length

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """x: (B, T, size) scores; target: (B, T) class ids, ``padding_idx`` where ignored."""
        if x.size(-1) != self.size:
            raise ValueError(f"LabelSmoothingLoss: scores have {x.size(-1)} classes, expected {self.size}")
        batch_size = x.size(0)
        x = x.reshape(-1, self.size)
        target = target.reshape(-1)
        ignore = target == self.padding_idx
        kept = target.numel() - int(ignore.sum().item())
        true_dist = torch.full_like(x, self.smoothing / (self.size - 1))
        true_dist.scatter_(1, target.masked_fill(ignore, 0).unsqueeze(1), self.confidence)
        kl = self.criterion(torch.log_softmax(x, dim=1), true_dist)
        denom = kept if self.normalize_length else batch_size
        return kl.masked_fill(ignore.unsqueeze(1), 0).sum() / denom
