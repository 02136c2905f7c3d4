"""Building blocks of the CosyVoice3 DiT estimator (``cosyvoice.flow.DiT.dit.DiT``), with the official parameter
names: time embedding, causal convolutional position embedding, rotary position embedding, adaptive-LayerNorm DiT
blocks.

The official estimator takes its rotary embedding from x-transformers; :class:`RotaryEmbedding` and
:func:`apply_rotary_pos_emb` here compute the same (interleaved pairs; applied to the first ``dim`` channels of a
tensor, which on the un-split (B, T, heads * dim_head) projections means head 0 only).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice.flow.decoder import SinusoidalPosEmb

LN_EPS = 1e-6


class TimestepEmbedding(nn.Module):
    """(B,) flow times -> (B, dim): a ``freq_embed_dim`` sinusoid of 1000 t, then Linear-SiLU-Linear."""

    def __init__(self, dim: int, freq_embed_dim: int = 256):
        super().__init__()
        self.time_embed = SinusoidalPosEmb(freq_embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(freq_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_embed(timestep).to(timestep.dtype))


class CausalConvPositionEmbedding(nn.Module):
    """Two grouped convs over time, each after ``kernel_size - 1`` zeros of left padding and followed by Mish:
    (B, T, dim) -> (B, T, dim), output t sees inputs <= t. ``mask`` (B, T) bool zeroes padded frames in and out."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CausalConvPositionEmbedding needs an odd kernel_size, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=0), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=0), nn.Mish())

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        h = x.transpose(1, 2)
        h = self.conv1(F.pad(h, (self.kernel_size - 1, 0)))
        h = self.conv2(F.pad(h, (self.kernel_size - 1, 0)))
        out = h.transpose(1, 2)
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        return out


class RotaryEmbedding(nn.Module):
    """Rotary angles for ``dim`` channels: ``inv_freq`` (dim / 2,) is a persistent buffer (it is in the official
    flow.pt), frequencies base^(-2i/dim), each used for a pair of neighbouring channels."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward_from_seq_len(self, seq_len: int) -> Tuple[torch.Tensor, float]:
        """(angles (1, seq_len, dim) laid out f0 f0 f1 f1 ..., scale 1.0) for positions 0..seq_len-1."""
        positions = torch.arange(seq_len, device=self.inv_freq.device).to(self.inv_freq.dtype)
        freqs = torch.outer(positions, self.inv_freq)
        return torch.stack((freqs, freqs), dim=-1).flatten(-2).unsqueeze(0), 1.0


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Rotate the first ``freqs.size(-1)`` channels of ``t`` (B, T, C) by the angles ``freqs`` (1, >=T, d), in
    float32; the other channels pass unchanged."""
    rot, dtype = freqs.size(-1), t.dtype
    freqs = freqs[:, -t.size(-2):, :]
    head, tail = t[..., :rot], t[..., rot:]
    head = head * freqs.cos() * scale + _rotate_pairs(head) * freqs.sin() * scale
    return torch.cat((head, tail), dim=-1).to(dtype)


class AdaLayerNormZero(nn.Module):
    """LayerNorm (no affine) modulated by the time embedding: returns the modulated x for the attention and the
    gate of the attention, shift, scale and gate of the feed-forward (chunks shift, scale, gate, shift, scale,
    gate of Linear(SiLU(emb)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(self.silu(emb)).chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLayerNormZero_Final(nn.Module):  # noqa: N801 (official name)
    """The last modulation: LayerNorm (no affine) scaled and shifted by the time embedding (chunks scale, shift)."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(emb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear (keys ``ff.0.0``, ``ff.2``)."""

    def __init__(self, dim: int, dim_out: Optional[int] = None, mult: float = 4, dropout: float = 0.0,
                 approximate: str = "none"):
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate=approximate)),
                                nn.Dropout(dropout), nn.Linear(inner, dim_out if dim_out is not None else dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions on q and k (before the head split) and the output zeroed
    at padded frames. ``mask`` (B, 1, T, T) bool (True: query may see key), or (B, T) key padding."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.inner_dim = dim_head * heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, self.inner_dim)
        self.to_k = nn.Linear(dim, self.inner_dim)
        self.to_v = nn.Linear(dim, self.inner_dim)
        self.to_out = nn.ModuleList([nn.Linear(self.inner_dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                rope: Optional[Tuple[torch.Tensor, float]] = None) -> torch.Tensor:
        batch = x.size(0)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if rope is not None:
            freqs, scale = rope
            q_scale, k_scale = (scale, scale ** -1.0) if scale is not None else (1.0, 1.0)
            q = apply_rotary_pos_emb(q, freqs, q_scale)
            k = apply_rotary_pos_emb(k, freqs, k_scale)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, self.heads, t.size(-1) // self.heads).transpose(1, 2)

        attn_mask = mask
        if mask is not None and mask.dim() == 2:
            attn_mask = mask[:, None, None, :].expand(batch, self.heads, x.size(1), x.size(1))
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=attn_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, self.inner_dim).to(q.dtype)
        out = self.to_out[1](self.to_out[0](out))
        if mask is not None:
            valid = mask if mask.dim() == 2 else mask[:, 0, -1]  # the last query row: every valid key
            out = out.masked_fill(~valid.unsqueeze(-1), 0.0)
        return out


class DiTBlock(nn.Module):
    """Adaptive-LayerNorm transformer block: modulated attention and a modulated GELU(tanh) feed-forward, each
    added back through a time-dependent gate."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: float = 4, dropout: float = 0.1):
        super().__init__()
        self.attn_norm = AdaLayerNormZero(dim)
        self.attn = Attention(dim=dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)
        self.ff = FeedForward(dim=dim, mult=ff_mult, dropout=dropout, approximate="tanh")

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: Optional[torch.Tensor] = None,
                rope: Optional[Tuple[torch.Tensor, float]] = None) -> torch.Tensor:
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(x, emb=t)
        x = x + gate_msa.unsqueeze(1) * self.attn(norm, mask=mask, rope=rope)
        norm = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp.unsqueeze(1) * self.ff(norm)
