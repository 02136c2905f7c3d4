"""Chunk masks of cosyvoice.utils.mask (used by the encoder and the flow estimator)."""
from __future__ import annotations

import torch

from cosyvoice.utils.mask import add_optional_chunk_mask, subsequent_chunk_mask, subsequent_mask


def test_subsequent_mask_is_lower_triangular():
    assert torch.equal(subsequent_mask(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))


def test_subsequent_chunk_mask_full_left_context():
    expected = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(subsequent_chunk_mask(5, 2), expected)
    assert torch.equal(subsequent_chunk_mask(5, 2, num_left_chunks=-1), expected)


def test_subsequent_chunk_mask_limited_left_chunks():
    m = subsequent_chunk_mask(6, 2, num_left_chunks=1)
    assert m[5].tolist() == [False, False, True, True, True, True]
    assert m[1].tolist() == [True, True, False, False, False, False]


def test_add_optional_chunk_mask_static_and_padding():
    xs = torch.zeros(2, 4, 3)
    pad = torch.tensor([[[True, True, True, True]], [[True, True, True, False]]])
    static = add_optional_chunk_mask(xs, pad, False, False, 0, 2, -1)
    assert static.shape == (2, 4, 4)
    assert static[1, 0].tolist() == [True, True, False, False]
    assert static[1, 3].tolist() == [True, True, True, False]
    full = add_optional_chunk_mask(xs, pad, False, False, 0, 0, -1)
    assert torch.equal(full, pad)


def test_add_optional_chunk_mask_opens_blind_rows_without_touching_input():
    xs = torch.zeros(2, 3, 1)
    pad = torch.tensor([[[True, True, True]], [[False, False, False]]])
    out = add_optional_chunk_mask(xs, pad, False, False, 0, 0, -1)
    assert out[1].all() and not pad[1].any()


def test_dynamic_chunk_uses_decoding_chunk_size():
    xs = torch.zeros(1, 6, 1)
    pad = torch.ones(1, 1, 6, dtype=torch.bool)
    out = add_optional_chunk_mask(xs, pad, True, False, 3, 0, -1)
    assert torch.equal(out[0], subsequent_chunk_mask(6, 3))
    assert add_optional_chunk_mask(xs, pad, True, False, -1, 0, -1).all()
