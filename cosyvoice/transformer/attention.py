"""Multi-head self-attention of the conformer layers, plain and with relative positions (Transformer-XL)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

_NO_MASK = torch.ones((0, 0, 0), dtype=torch.bool)
_NO_CACHE = torch.zeros((0, 0, 0, 0))


class MultiHeadedAttention(nn.Module):
    """Scaled dot-product attention over ``n_head`` heads of width ``n_feat // n_head``."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float, key_bias: bool = True):
        super().__init__()
        if n_feat % n_head != 0:
            raise ValueError(f"attention width {n_feat} is not a multiple of the {n_head} heads")
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.dropout = nn.Dropout(p=dropout_rate)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H*d) -> (B, H, T, d)."""
        return x.view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)

    def forward_qkv(self, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project and split into heads: each (B, H, T, d_k)."""
        return self._heads(self.linear_q(query)), self._heads(self.linear_k(key)), self._heads(self.linear_v(value))

    def forward_attention(self, value: torch.Tensor, scores: torch.Tensor,
                          mask: torch.Tensor = _NO_MASK) -> torch.Tensor:
        """Softmax the (B, H, T1, T2) scores under a bool keep-mask (B, 1 or T1, T2) and mix ``value``."""
        if mask.size(2) > 0:
            blocked = ~mask.unsqueeze(1)[:, :, :, : scores.size(-1)]
            scores = scores.masked_fill(blocked, -float("inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(self.dropout(attn), value)
        out = out.transpose(1, 2).contiguous().view(value.size(0), -1, self.h * self.d_k)
        return self.linear_out(out)

    @staticmethod
    def _with_cache(k: torch.Tensor, v: torch.Tensor, cache: torch.Tensor):
        if cache.size(0) > 0:
            k_cache, v_cache = torch.split(cache, cache.size(-1) // 2, dim=-1)
            k = torch.cat([k_cache, k], dim=2)
            v = torch.cat([v_cache, v], dim=2)
        return k, v, torch.cat((k, v), dim=-1)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor = _NO_MASK, pos_emb: Optional[torch.Tensor] = None,
                cache: torch.Tensor = _NO_CACHE) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the (B, T1, D) output and the new key/value cache (B, H, T2, 2*d_k)."""
        q, k, v = self.forward_qkv(query, key, value)
        k, v, new_cache = self._with_cache(k, v, cache)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask), new_cache


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Attention with relative position scores and the learned biases u, v (Transformer-XL, sec. 3.3)."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float, key_bias: bool = True):
        super().__init__(n_head, n_feat, dropout_rate, key_bias)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T1, 2*T1-1) scores indexed by relative offset -> (B, H, T1, T1) indexed by key position.

        Column c of the input holds offset (T1-1) - c; the output at (i, j) is input (i, T1-1-i+j).
        """
        b, h, t1, n = x.shape
        padded = torch.cat([x.new_zeros(b, h, t1, 1), x], dim=-1).view(b, h, n + 1, t1)
        return padded[:, :, 1:].reshape(b, h, t1, n)[:, :, :, : n // 2 + 1]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor = _NO_MASK, pos_emb: Optional[torch.Tensor] = None,
                cache: torch.Tensor = _NO_CACHE) -> Tuple[torch.Tensor, torch.Tensor]:
        if pos_emb is None:
            raise ValueError("RelPositionMultiHeadedAttention needs pos_emb")
        q, k, v = self.forward_qkv(query, key, value)
        k, v, new_cache = self._with_cache(k, v, cache)
        p = self._heads(self.linear_pos(pos_emb))  # (1 or B, H, P, d_k)
        q = q.transpose(1, 2)  # (B, T1, H, d_k): the biases broadcast over (H, d_k)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if content.shape != position.shape:
            position = self.rel_shift(position)
        scores = (content + position) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask), new_cache
