"""HiFT GAN training wrapper: one module holding the generator and the discriminators, with a generator turn and a
discriminator turn chosen by ``batch['turn']``.

Compatibility only: the official cosyvoice2.yaml / cosyvoice3.yaml build ``hifigan`` (vocoder GAN training) from
these, so they are here for those yamls to load and for training HiFT by hand; the recipe fine-tunes the llm and the
flow and never calls them.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice.hifigan.losses import discriminator_loss, feature_loss, generator_loss, mel_loss, tpr_loss


class HiFiGan(nn.Module):
    """State_dict keys: ``generator.*`` (the HiFT, loadable as hift.pt after stripping ``generator.``) and
    ``discriminator.*``.

    Batch: ``speech`` (B, T) real waveform, ``speech_feat`` (B, frames, n_mels), ``pitch_feat`` (B, frames) target
    f0 and ``turn`` ('generator' or 'discriminator').
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 mel_spec_transform: Sequence[Callable[[torch.Tensor], torch.Tensor]],
                 multi_mel_spectral_recon_loss_weight: float = 45, feat_match_loss_weight: float = 2.0,
                 tpr_loss_weight: float = 1.0, tpr_loss_tau: float = 0.04):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.mel_spec_transform = mel_spec_transform
        self.multi_mel_spectral_recon_loss_weight = multi_mel_spectral_recon_loss_weight
        self.feat_match_loss_weight = feat_match_loss_weight
        self.tpr_loss_weight = tpr_loss_weight
        self.tpr_loss_tau = tpr_loss_tau

    def forward(self, batch: dict, device: torch.device) -> Dict[str, torch.Tensor]:
        turn = batch["turn"]
        if turn == "generator":
            return self.forward_generator(batch, device)
        if turn == "discriminator":
            return self.forward_discriminator(batch, device)
        raise ValueError(f"HiFiGan: batch['turn'] must be 'generator' or 'discriminator', got {turn!r}")

    def forward_generator(self, batch: dict, device: torch.device) -> Dict[str, torch.Tensor]:
        real_speech = batch["speech"].to(device)
        pitch_feat = batch["pitch_feat"].to(device)
        generated_speech, generated_f0 = self.generator(batch, device)
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = self.discriminator(real_speech, generated_speech)
        loss_gen, _ = generator_loss(y_d_gs)
        loss_fm = feature_loss(fmap_rs, fmap_gs)
        loss_mel = mel_loss(real_speech, generated_speech, self.mel_spec_transform)
        if self.tpr_loss_weight != 0:
            loss_tpr = tpr_loss(y_d_gs, y_d_rs, self.tpr_loss_tau)
        else:
            loss_tpr = torch.zeros(1, device=device)
        loss_f0 = F.l1_loss(generated_f0, pitch_feat)
        loss = (loss_gen + self.feat_match_loss_weight * loss_fm
                + self.multi_mel_spectral_recon_loss_weight * loss_mel
                + self.tpr_loss_weight * loss_tpr + loss_f0)
        return {"loss": loss, "loss_gen": loss_gen, "loss_fm": loss_fm, "loss_mel": loss_mel,
                "loss_tpr": loss_tpr, "loss_f0": loss_f0}

    def forward_discriminator(self, batch: dict, device: torch.device) -> Dict[str, torch.Tensor]:
        real_speech = batch["speech"].to(device)
        with torch.no_grad():
            generated_speech, _ = self.generator(batch, device)
        y_d_rs, y_d_gs, _, _ = self.discriminator(real_speech, generated_speech.detach())
        loss_disc, _, _ = discriminator_loss(y_d_rs, y_d_gs)
        if self.tpr_loss_weight != 0:
            loss_tpr = tpr_loss(y_d_rs, y_d_gs, self.tpr_loss_tau)
        else:
            loss_tpr = torch.zeros(1, device=device)
        loss = loss_disc + self.tpr_loss_weight * loss_tpr
        return {"loss": loss, "loss_disc": loss_disc, "loss_tpr": loss_tpr}
