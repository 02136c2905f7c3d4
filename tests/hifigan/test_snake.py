"""Snake: the in-place inference path computes what the autograd path does, bit for bit, and leaves x alone."""
from __future__ import annotations

import torch

from cosyvoice.hifigan.activation import Snake


def test_inference_path_is_the_training_path_bit_for_bit():
    torch.manual_seed(0)
    for logscale in (False, True):
        act = Snake(16, alpha_logscale=logscale)
        with torch.no_grad():
            act.alpha.copy_(torch.rand(16) - 0.5 if logscale else torch.rand(16) + 0.2)
        x = torch.randn(2, 16, 300)
        trained = act(x.clone().requires_grad_(True))
        assert trained.requires_grad
        original = x.clone()
        with torch.inference_mode():
            fast = act(x)
        assert torch.equal(x, original)
        assert torch.equal(fast, trained.detach())
        with torch.no_grad():
            assert torch.equal(act(x), trained.detach())
