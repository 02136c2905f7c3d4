"""Padding and chunk masks (names match the official cosyvoice.utils.mask)."""
from __future__ import annotations

import torch


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask that is True on padded positions."""
    max_len = max_len if max_len > 0 else int(lengths.max().item())
    steps = torch.arange(max_len, dtype=torch.int64, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.to(torch.int64).unsqueeze(1)


def subsequent_mask(size: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(size, size) bool mask where step i may attend to steps 0..i."""
    steps = torch.arange(size, device=device)
    return steps.unsqueeze(0) <= steps.unsqueeze(1)


def subsequent_chunk_mask(
    size: int,
    chunk_size: int,
    num_left_chunks: int = -1,
    device: torch.device = torch.device("cpu"),
) -> torch.Tensor:
    """(size, size) bool mask for chunk-wise streaming attention.

    Step i sees every step up to the end of its own chunk of ``chunk_size`` steps. With
    ``num_left_chunks >= 0`` it also stops seeing chunks more than that many to the left; a negative value
    (what every CosyVoice2 caller passes) keeps the whole left context. (The official ace7c47 version ignores
    ``num_left_chunks``; both agree for negative values.)
    """
    steps = torch.arange(size, device=device)
    chunk_of = torch.div(steps, chunk_size, rounding_mode="trunc")
    end = (chunk_of + 1) * chunk_size
    mask = steps.unsqueeze(0) < end.unsqueeze(1)
    if num_left_chunks >= 0:
        start = (chunk_of - num_left_chunks).clamp(min=0) * chunk_size
        mask &= steps.unsqueeze(0) >= start.unsqueeze(1)
    return mask


def add_optional_chunk_mask(
    xs: torch.Tensor,
    masks: torch.Tensor,
    use_dynamic_chunk: bool,
    use_dynamic_left_chunk: bool,
    decoding_chunk_size: int,
    static_chunk_size: int,
    num_decoding_left_chunks: int,
    enable_full_context: bool = True,
) -> torch.Tensor:
    """Combine the (B, 1, L) padding mask of ``xs`` (B, L, D) with an optional chunk mask.

    * ``use_dynamic_chunk``: decoding_chunk_size < 0 means full context, > 0 that chunk size with
      ``num_decoding_left_chunks``; 0 (training) draws a chunk size with ``torch.randint``: full context
      when the draw is above L/2 (and ``enable_full_context``), else 1..25, plus random left chunks when
      ``use_dynamic_left_chunk``.
    * else ``static_chunk_size > 0``: a fixed chunk mask (B, L, L).
    * else: the padding mask unchanged (B, 1, L).

    Query rows that would see nothing are opened fully (they are padding and masked later).
    """
    if use_dynamic_chunk:
        max_len = xs.size(1)
        if decoding_chunk_size < 0:
            chunk_size, num_left_chunks = max_len, -1
        elif decoding_chunk_size > 0:
            chunk_size, num_left_chunks = decoding_chunk_size, num_decoding_left_chunks
        else:
            chunk_size = int(torch.randint(1, max_len, (1,)).item())
            num_left_chunks = -1
            if chunk_size > max_len // 2 and enable_full_context:
                chunk_size = max_len
            else:
                chunk_size = chunk_size % 25 + 1
                if use_dynamic_left_chunk:
                    max_left_chunks = (max_len - 1) // chunk_size
                    num_left_chunks = int(torch.randint(0, max_left_chunks, (1,)).item())
        chunk_masks = masks & subsequent_chunk_mask(max_len, chunk_size, num_left_chunks, xs.device).unsqueeze(0)
    elif static_chunk_size > 0:
        chunk = subsequent_chunk_mask(xs.size(1), static_chunk_size, num_decoding_left_chunks, xs.device)
        chunk_masks = masks & chunk.unsqueeze(0)
    else:
        chunk_masks = masks
    if chunk_masks.dtype != torch.bool:
        raise TypeError(f"add_optional_chunk_mask wants a bool mask, got {chunk_masks.dtype}")
    blind = chunk_masks.sum(dim=-1) == 0
    if bool(blind.any()):
        chunk_masks = chunk_masks.clone()
        chunk_masks[blind] = True
    return chunk_masks
