"""Losses of HiFT GAN training: least-squares GAN, feature matching, multi-mel L1 and TPR (truncated pointwise
relativistic) losses. Score lists are one tensor per sub-discriminator, feature maps one list per sub-discriminator.

Compatibility only: the official cosyvoice2.yaml / cosyvoice3.yaml build ``hifigan`` (vocoder GAN training) from
these, so they are here for those yamls to load and for training HiFT by hand; the recipe fine-tunes the llm and the
flow and never calls them.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn.functional as F


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]], fmap_g: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """2 x the sum over discriminators and layers of mean |real - fake| feature maps."""
    loss = 0
    for maps_r, maps_g in zip(fmap_r, fmap_g):
        for r, g in zip(maps_r, maps_g):
            loss = loss + torch.mean(torch.abs(r - g))
    return loss * 2


def discriminator_loss(disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor]
                       ) -> Tuple[torch.Tensor, List[float], List[float]]:
    """LSGAN discriminator loss: sum of mean (1 - D(real))^2 + mean D(fake)^2; also the per-discriminator terms."""
    loss, r_losses, g_losses = 0, [], []
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
        r_loss = torch.mean((1 - dr) ** 2)
        g_loss = torch.mean(dg ** 2)
        loss = loss + r_loss + g_loss
        r_losses.append(r_loss.item())
        g_losses.append(g_loss.item())
    return loss, r_losses, g_losses


def generator_loss(disc_outputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """LSGAN generator loss: sum of mean (1 - D(fake))^2; also the per-discriminator terms."""
    loss, parts = 0, []
    for dg in disc_outputs:
        part = torch.mean((1 - dg) ** 2)
        parts.append(part)
        loss = loss + part
    return loss, parts


def tpr_loss(disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor],
             tau: float) -> torch.Tensor:
    """Truncated pointwise relativistic loss (StyleTTS 2 / HiFTNet): per discriminator, the mean squared deviation of
    (real - fake) from its median over the points below the median, truncated at ``tau``.

    A discriminator whose differences have no point below the median contributes 0 (the reference code gives NaN).
    """
    loss = 0
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
        diff = dr - dg
        median = torch.median(diff)
        below = diff < median
        if below.any():
            rel = torch.mean(((diff - median) ** 2)[below])
        else:
            rel = diff.sum() * 0.0
        loss = loss + tau - F.relu(tau - rel)
    return loss


def mel_loss(real_speech: torch.Tensor, generated_speech: torch.Tensor,
             mel_transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """Sum over the given mel transforms of the L1 distance between the mels of real and generated speech."""
    loss = 0
    for transform in mel_transforms:
        loss = loss + F.l1_loss(transform(generated_speech), transform(real_speech))
    return loss
