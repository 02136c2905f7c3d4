"""Frame-level F0 predictors of the HiFT vocoder: mel (B, C, T) -> f0 in Hz (B, T).

``ConvRNNF0Predictor`` (CosyVoice2) sees one frame either side at each of its five convs;
``CausalConvRNNF0Predictor`` (CosyVoice3) sees 3 frames ahead at its first conv and only the past after that.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cosyvoice.transformer.convolution import CausalConv1d

N_CONVS = 5


class _ConvF0Predictor(nn.Module):
    """Five weight-normed convolutions with ELU, then a per-frame linear head; the output is |head|.

    State_dict keys: ``condnet.{0,2,4,6,8}.*`` (the ELUs take the odd indices) and ``classifier.*``.
    ``make_conv(i, in_channels, out_channels)`` builds conv i.
    """

    def __init__(self, num_class: int, in_channels: int, cond_channels: int,
                 make_conv: Callable[[int, int, int], nn.Module]):
        super().__init__()
        self.num_class = num_class
        layers = []
        for i in range(N_CONVS):
            layers += [weight_norm(make_conv(i, in_channels if i == 0 else cond_channels, cond_channels)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        for layer in list(self.condnet)[1:]:
            h = layer(h)
        return self.classifier(h.transpose(1, 2)).squeeze(-1).abs()


class ConvRNNF0Predictor(_ConvF0Predictor):
    """CosyVoice2's predictor: 3-tap convs padded one frame each side; T frames in, T f0 values out."""

    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512):
        super().__init__(num_class, in_channels, cond_channels,
                         lambda i, c_in, c_out: nn.Conv1d(c_in, c_out, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.condnet[0](x))


class CausalConvRNNF0Predictor(_ConvF0Predictor):
    """CosyVoice3's predictor: a 4-tap conv over each frame and the next 3 (``look_ahead``), then 3-tap convs over
    each frame and the 2 before it.

    ``finalize=True``: T frames in, T f0 values out (zeros stand for the frames after the end).
    ``finalize=False`` (a streaming chunk that is not the last): the last ``look_ahead`` frames are only look-ahead
    context; T - look_ahead values out, equal to the first values of a later call that sees more frames.
    """

    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512):
        super().__init__(num_class, in_channels, cond_channels,
                         lambda i, c_in, c_out: CausalConv1d(c_in, c_out, kernel_size=4 if i == 0 else 3,
                                                             causal_type="right" if i == 0 else "left"))

    @property
    def look_ahead(self) -> int:
        return self.condnet[0].causal_padding

    def forward(self, x: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        if finalize:
            h = self.condnet[0](x)
        else:
            n = self.look_ahead
            h = self.condnet[0](x[:, :, :-n], x[:, :, -n:])
        return self._head(h)
