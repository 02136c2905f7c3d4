"""Small helpers shared by the models (the names match the official cosyvoice.utils.common)."""
from __future__ import annotations

import random
from typing import List

import numpy as np
import torch

IGNORE_ID = -1


def pad_list(xs: List[torch.Tensor], pad_value: float) -> torch.Tensor:
    """Stack tensors of different first-dim lengths into (B, Tmax, ...), filling the tail with pad_value."""
    longest = max(x.size(0) for x in xs)
    out = xs[0].new_full((len(xs), longest) + tuple(xs[0].shape[1:]), pad_value)
    for i, x in enumerate(xs):
        out[i, : x.size(0)] = x
    return out


def th_accuracy(pad_outputs: torch.Tensor, pad_targets: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """Arg-max accuracy of (B*T, V) scores against (B, T) targets, ignoring ``ignore_label``."""
    pred = pad_outputs.view(pad_targets.size(0), pad_targets.size(1), -1).argmax(-1)
    keep = pad_targets != ignore_label
    hits = (pred[keep] == pad_targets[keep]).sum()
    return (hits / keep.sum()).detach()


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def init_weights(m: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    if "Conv" in type(m).__name__:
        m.weight.data.normal_(mean, std)


def set_all_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Call it where you mean to, never as a side effect."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean keep-mask -> additive attention bias (0 where kept, -1e10 where masked)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask_to_bias wants a bool mask, got {mask.dtype}")
    return (1.0 - mask.to(dtype)) * -1.0e10
