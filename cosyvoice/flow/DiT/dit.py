"""The CosyVoice3 flow-matching estimator: a diffusion transformer (DiT) over mel frames, conditioned on the flow
time, the token features ``mu``, the speaker and the prompt mel ``cond``; chunk-causal attention when streaming."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cosyvoice.flow.DiT.modules import (AdaLayerNormZero_Final, CausalConvPositionEmbedding, DiTBlock,
                                        RotaryEmbedding, TimestepEmbedding)
from cosyvoice.utils.mask import add_optional_chunk_mask


class InputEmbedding(nn.Module):
    """Linear over [x, cond, mu, speaker] per frame, plus its causal conv position embedding."""

    def __init__(self, mel_dim: int, text_dim: int, out_dim: int, spk_dim: Optional[int] = None):
        super().__init__()
        self.spk_dim = 0 if spk_dim is None else spk_dim
        self.proj = nn.Linear(mel_dim * 2 + text_dim + self.spk_dim, out_dim)
        self.conv_pos_embed = CausalConvPositionEmbedding(dim=out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text_embed: torch.Tensor,
                spks: Optional[torch.Tensor]) -> torch.Tensor:
        """x, cond (B, T, mel_dim), text_embed (B, T, text_dim), spks (B, spk_dim) -> (B, T, out_dim)."""
        parts = [x, cond, text_embed]
        if self.spk_dim > 0:
            parts.append(spks.unsqueeze(1).expand(-1, x.size(1), -1))
        x = self.proj(torch.cat(parts, dim=-1))
        return self.conv_pos_embed(x) + x


class DiT(nn.Module):
    """Estimator of the flow's vector field (official ``cosyvoice.flow.DiT.dit.DiT``, same arguments and keys).

    ``forward(x, mask, mu, t, spks, cond, streaming)``: x, mu, cond (B, mel_dim, T); mask (B, 1, T); t (B,) or a
    scalar; spks (B, spk_dim) -> (B, mel_dim, T). Padded frames are masked as attention keys and zeroed after each
    attention, but the output itself is not masked (as official). ``streaming`` limits attention to keys before
    the end of the query's chunk of ``static_chunk_size`` frames (every chunk to the left is seen: the official
    DiT passes -1 left chunks whatever ``num_decoding_left_chunks`` says, and so does this one).
    ``out_channels`` is the number of mel bins the CFM sizes its noise with.
    """

    def __init__(self, *, dim: int, depth: int = 8, heads: int = 8, dim_head: int = 64, dropout: float = 0.1,
                 ff_mult: float = 4, mel_dim: int = 80, mu_dim: Optional[int] = None,
                 long_skip_connection: bool = False, spk_dim: Optional[int] = None,
                 out_channels: Optional[int] = None, static_chunk_size: int = 50, num_decoding_left_chunks: int = 2):
        super().__init__()
        self.time_embed = TimestepEmbedding(dim)
        if mu_dim is None:
            mu_dim = mel_dim
        self.input_embed = InputEmbedding(mel_dim, mu_dim, dim, spk_dim)
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.dim = dim
        self.depth = depth
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(dim=dim, heads=heads, dim_head=dim_head, ff_mult=ff_mult, dropout=dropout) for _ in range(depth))
        self.long_skip_connection = nn.Linear(dim * 2, dim, bias=False) if long_skip_connection else None
        self.norm_out = AdaLayerNormZero_Final(dim)
        self.proj_out = nn.Linear(dim, mel_dim)
        self.mel_dim = mel_dim
        self.out_channels = out_channels
        self.static_chunk_size = static_chunk_size
        self.num_decoding_left_chunks = num_decoding_left_chunks

    def attention_mask(self, x: torch.Tensor, mask: torch.Tensor, streaming: bool) -> torch.Tensor:
        """(B, 1, T, T) bool: query row i may see key j (key valid; and in a chunk up to i's when streaming)."""
        keep = mask.bool()
        if streaming:
            allowed = add_optional_chunk_mask(x, keep, False, False, 0, self.static_chunk_size, -1)
        else:
            allowed = add_optional_chunk_mask(x, keep, False, False, 0, 0, -1).repeat(1, x.size(1), 1)
        return allowed.unsqueeze(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                streaming: bool = False) -> torch.Tensor:
        x, mu, cond = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2)
        batch, seq_len = x.shape[0], x.shape[1]
        if t.ndim == 0:
            t = t.repeat(batch)
        t = self.time_embed(t)
        x = self.input_embed(x, cond, mu, spks)
        rope = self.rotary_embed.forward_from_seq_len(seq_len)
        residual = x
        attn_mask = self.attention_mask(x, mask, streaming)
        for block in self.transformer_blocks:
            x = block(x, t, mask=attn_mask, rope=rope)
        if self.long_skip_connection is not None:
            x = self.long_skip_connection(torch.cat((x, residual), dim=-1))
        x = self.norm_out(x, t)
        return self.proj_out(x).transpose(1, 2)
