"""Conformer encoder layer: [macaron FFN] -> self-attention -> [convolution] -> FFN, pre- or post-norm."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

_NO_MASK = torch.ones((0, 0, 0), dtype=torch.bool)
_NO_CACHE = torch.zeros((0, 0, 0, 0))


class ConformerEncoderLayer(nn.Module):
    """One conformer block over (B, T, size).

    ``self_attn`` is a (relative) multi-head attention module, ``feed_forward`` and the optional
    ``feed_forward_macaron`` are position-wise FFNs (each counted half when both exist), ``conv_module``
    an optional conformer convolution. ``normalize_before`` picks pre-norm (True) or post-norm.
    """

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: Optional[nn.Module] = None,
                 feed_forward_macaron: Optional[nn.Module] = None, conv_module: Optional[nn.Module] = None,
                 dropout_rate: float = 0.1, normalize_before: bool = True):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.conv_module = conv_module
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)
        if feed_forward_macaron is not None:
            self.norm_ff_macaron = nn.LayerNorm(size, eps=1e-12)
            self.ff_scale = 0.5
        else:
            self.ff_scale = 1.0
        if conv_module is not None:
            self.norm_conv = nn.LayerNorm(size, eps=1e-12)
            self.norm_final = nn.LayerNorm(size, eps=1e-12)
        self.dropout = nn.Dropout(dropout_rate)
        self.size = size
        self.normalize_before = normalize_before

    def _pre(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return norm(x) if self.normalize_before else x

    def _post(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return x if self.normalize_before else norm(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor,
                mask_pad: torch.Tensor = _NO_MASK, att_cache: torch.Tensor = _NO_CACHE,
                cnn_cache: torch.Tensor = _NO_CACHE) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D); mask (B, T, T) or (B, 1, T) bool; mask_pad (B, 1, T) for the convolution.

        Returns (x, mask, new attention cache, new convolution cache).
        """
        if self.feed_forward_macaron is not None:
            out = self.feed_forward_macaron(self._pre(x, self.norm_ff_macaron))
            x = self._post(x + self.ff_scale * self.dropout(out), self.norm_ff_macaron)

        h = self._pre(x, self.norm_mha)
        out, new_att_cache = self.self_attn(h, h, h, mask, pos_emb, att_cache)
        x = self._post(x + self.dropout(out), self.norm_mha)

        new_cnn_cache = torch.zeros((0, 0, 0), dtype=x.dtype, device=x.device)
        if self.conv_module is not None:
            out, new_cnn_cache = self.conv_module(self._pre(x, self.norm_conv), mask_pad, cnn_cache)
            x = self._post(x + self.dropout(out), self.norm_conv)

        out = self.feed_forward(self._pre(x, self.norm_ff))
        x = self._post(x + self.ff_scale * self.dropout(out), self.norm_ff)
        if self.conv_module is not None:
            x = self.norm_final(x)
        return x, mask, new_att_cache, new_cnn_cache
