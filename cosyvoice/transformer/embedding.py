"""Sinusoidal positional encodings (absolute, relative, and ESPnet's signed relative table).

The tables are plain tensor attributes computed on the CPU at construction, never in the state_dict,
so a model built on the meta device still gets real tables.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F

Offset = Union[int, torch.Tensor]


def _inverse_frequencies(d_model: int) -> torch.Tensor:
    return torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device="cpu")
                     * -(math.log(10000.0) / d_model))


def _sinusoids(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(N,) float positions -> (N, d_model) table with sin in even and cos in odd columns."""
    angles = positions.unsqueeze(1) * _inverse_frequencies(d_model)
    table = torch.zeros(positions.numel(), d_model, device="cpu")
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class PositionalEncoding(torch.nn.Module):
    """x * sqrt(d_model) + PE[offset:offset+T], then dropout; returns (x, pos_emb)."""

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = 5000, reverse: bool = False):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = torch.nn.Dropout(p=dropout_rate)
        self.max_len = max_len
        self.pe = _sinusoids(torch.arange(max_len, dtype=torch.float32, device="cpu"), d_model).unsqueeze(0)

    def forward(self, x: torch.Tensor, offset: Offset = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        self.pe = self.pe.to(x.device)
        pos_emb = self.position_encoding(offset, x.size(1), False)
        return self.dropout(x * self.xscale + pos_emb), self.dropout(pos_emb)

    def position_encoding(self, offset: Offset, size: int, apply_dropout: bool = True) -> torch.Tensor:
        """PE rows for positions offset .. offset+size-1; a (B,) offset gives (B, size, d_model)."""
        if isinstance(offset, int) or offset.dim() == 0:
            if int(offset) + size > self.max_len:
                raise ValueError(f"positions up to {int(offset) + size} exceed max_len {self.max_len}")
            pos_emb = self.pe[:, int(offset): int(offset) + size]
        else:
            index = (offset.unsqueeze(1) + torch.arange(size, device=offset.device)).clamp(min=0)
            pos_emb = F.embedding(index, self.pe[0])
        return self.dropout(pos_emb) if apply_dropout else pos_emb


class RelPositionalEncoding(PositionalEncoding):
    """Scales x by sqrt(d_model) and returns the PE rows separately (for relative attention)."""

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = 5000):
        super().__init__(d_model, dropout_rate, max_len, reverse=True)

    def forward(self, x: torch.Tensor, offset: Offset = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        self.pe = self.pe.to(x.device)
        pos_emb = self.position_encoding(offset, x.size(1), False)
        return self.dropout(x * self.xscale), self.dropout(pos_emb)


class NoPositionalEncoding(torch.nn.Module):
    """No positions: x unchanged (after dropout) and a zero pos_emb."""

    def __init__(self, d_model: int, dropout_rate: float):
        super().__init__()
        self.d_model = d_model
        self.dropout = torch.nn.Dropout(p=dropout_rate)

    def forward(self, x: torch.Tensor, offset: Offset = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.dropout(x), torch.zeros(1, x.size(1), self.d_model, device=x.device, dtype=x.dtype)

    def position_encoding(self, offset: Offset, size: int) -> torch.Tensor:
        return torch.zeros(1, size, self.d_model)


class EspnetRelPositionalEncoding(torch.nn.Module):
    """ESPnet's relative positional encoding: a table over signed offsets +(L-1) .. -(L-1).

    ``pe`` is (1, 2L-1, d_model): row c holds the encoding of relative offset (L-1) - c, so the
    centre row is offset 0. It grows when a longer input arrives.
    """

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = torch.nn.Dropout(p=dropout_rate)
        self.pe = None
        self.extend_pe(torch.zeros(1, max_len, device="cpu"))

    def extend_pe(self, x: torch.Tensor) -> None:
        """Make sure ``pe`` covers length x.size(1) on x's device and dtype."""
        length = x.size(1)
        if self.pe is not None and self.pe.size(1) >= 2 * length - 1:
            if self.pe.dtype != x.dtype or self.pe.device != x.device:
                self.pe = self.pe.to(dtype=x.dtype, device=x.device)
            return
        steps = torch.arange(length, dtype=torch.float32, device="cpu")
        positive = _sinusoids(steps, self.d_model)  # offsets 0 .. L-1
        negative = _sinusoids(-steps, self.d_model)  # offsets 0 .. -(L-1)
        table = torch.cat([positive.flip(0), negative[1:]], dim=0).unsqueeze(0)
        self.pe = table.to(device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor, offset: Offset = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        self.extend_pe(x)
        pos_emb = self.position_encoding(offset=offset, size=x.size(1))
        return self.dropout(x * self.xscale), self.dropout(pos_emb)

    def position_encoding(self, offset: Offset, size: int) -> torch.Tensor:
        """The 2*(size+offset)-1 centre rows of the table (offsets +(size+offset-1) .. -(size+offset-1))."""
        centre = self.pe.size(1) // 2
        span = size + int(offset)
        return self.pe[:, centre - span + 1: centre + span]
