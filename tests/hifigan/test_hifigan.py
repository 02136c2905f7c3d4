"""GAN training pieces: discriminators, losses and the HiFiGan wrapper."""
from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import pytest
import torch

from cosyvoice.audio.features import mel_spectrogram
from cosyvoice.hifigan.discriminator import (DiscriminatorP, LegacyWeightNormConv2d, MultiPeriodDiscriminator,
                                             MultipleDiscriminator, MultiResolutionDiscriminator,
                                             MultiResSpecDiscriminator)
from cosyvoice.hifigan.generator import HiFTGenerator, load_hift_state_dict
from cosyvoice.hifigan.hifigan import HiFiGan
from cosyvoice.hifigan.losses import discriminator_loss, feature_loss, generator_loss, mel_loss, tpr_loss
from cosyvoice.utils.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice2.yaml"


def test_full_config_builds_on_meta():
    with torch.device("meta"):
        gan = load_config(str(CONF), keys=["hifigan"])["hifigan"]
    assert isinstance(gan, HiFiGan) and isinstance(gan.generator, HiFTGenerator)
    assert isinstance(gan.discriminator, MultipleDiscriminator)
    assert isinstance(gan.discriminator.mpd, MultiPeriodDiscriminator)
    assert isinstance(gan.discriminator.mrd, MultiResSpecDiscriminator)
    assert (gan.multi_mel_spectral_recon_loss_weight, gan.feat_match_loss_weight) == (45, 2.0)
    assert (gan.tpr_loss_weight, gan.tpr_loss_tau) == (1.0, 0.04)
    assert gan.mel_spec_transform[0].keywords["fmax"] is None
    sd = gan.state_dict()
    gen = {k for k in sd if k.startswith("generator.")}
    assert len(gen) == 328  # the full hift.pt entries, prefixed
    assert set(load_hift_state_dict({k: sd[k] for k in gen})) == set(gan.generator.state_dict())
    mpd = [k for k in sd if k.startswith("discriminator.mpd.")]
    mrd = [k for k in sd if k.startswith("discriminator.mrd.")]
    assert len(mpd) == 5 * 6 * 3 and len(mrd) == 3 * 6 * 3
    # MPD keeps the legacy weight-norm names of the official (Matcha) code, the spectral one the parametrized ones
    assert "discriminator.mpd.discriminators.4.convs.3.weight_v" in sd
    assert tuple(sd["discriminator.mpd.discriminators.4.convs.3.weight_g"].shape) == (1024, 1, 1, 1)
    assert tuple(sd["discriminator.mpd.discriminators.0.conv_post.weight_v"].shape) == (1, 1024, 3, 1)
    assert tuple(sd["discriminator.mrd.discriminators.1.out.parametrizations.weight.original1"].shape) == (1, 32, 3, 3)
    assert sum(v.numel() for k, v in sd.items() if k.startswith("discriminator.")) == 41386672


def test_legacy_weight_norm_conv_matches_torch():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, (5, 1), (3, 1), padding=(2, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.utils.weight_norm(conv)
    ours = LegacyWeightNormConv2d(4, 8, (5, 1), (3, 1), padding=(2, 0))
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["bias", "weight_g", "weight_v"]
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 4, 30, 3)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_period_discriminator_folds_and_pads():
    d = DiscriminatorP(7)
    score, fmap = d(torch.randn(2, 1, 100))  # 100 -> padded to 105 -> (15, 7)
    assert len(fmap) == 6 and fmap[0].shape == (2, 32, 5, 7)
    assert score.shape == (2, fmap[-1][0].numel())


def test_multi_resolution_discriminator_shapes():
    d = MultiResolutionDiscriminator(fft_sizes=(256, 128))
    assert tuple(d.state_dict()["discriminators.0.spec_fn.window"].shape) == (256,)
    real, fake, fr, fg = d(torch.randn(2, 2400), torch.randn(2, 2400))
    assert len(real) == len(fake) == 2 and len(fr[0]) == 5 * 4 + 1
    assert real[0].shape[:2] == (2, 1) and torch.isfinite(real[0]).all()


# --- losses -------------------------------------------------------------------------------------------------------
def test_lsgan_losses_by_hand():
    dr, dg = [torch.tensor([1.0, 0.0]), torch.tensor([[0.5]])], [torch.tensor([0.0, 1.0]), torch.tensor([[2.0]])]
    loss, r, g = discriminator_loss(dr, dg)
    assert r == [0.5, 0.25] and g == [0.5, 4.0]
    assert loss.item() == pytest.approx(5.25)
    gloss, parts = generator_loss(dg)
    assert gloss.item() == pytest.approx(0.5 + 1.0) and len(parts) == 2
    fl = feature_loss([[torch.ones(3), torch.zeros(2)]], [[torch.zeros(3), torch.full((2,), 2.0)]])
    assert fl.item() == pytest.approx(2 * (1.0 + 2.0))


def test_tpr_loss_by_hand():
    dr, dg = torch.tensor([0.0, 1.0, 2.0, 10.0]), torch.zeros(4)
    # median of [0, 1, 2, 10] (lower) = 1; points below: 0 -> (0-1)^2 = 1 -> min(1, tau)
    assert tpr_loss([dr], [dg], 0.04).item() == pytest.approx(0.04)
    assert tpr_loss([dr], [dg], 5.0).item() == pytest.approx(1.0)
    flat = tpr_loss([torch.ones(3)], [torch.zeros(3)], 0.04)  # nothing below the median: 0, not NaN
    assert flat.item() == 0.0


def test_mel_loss_sums_l1_over_transforms():
    t1 = functools.partial(mel_spectrogram, n_fft=64, num_mels=8, sampling_rate=8000, hop_size=16, win_size=64,
                           fmin=0, fmax=None)
    y = torch.randn(1, 800) * 0.1
    assert mel_loss(y, y, [t1]).item() == 0.0
    one = mel_loss(y, 0.5 * y, [t1])
    assert one.item() > 0 and mel_loss(y, 0.5 * y, [t1, t1]).item() == pytest.approx(2 * one.item())


# --- the wrapper --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gan(fixtures_dir):
    hift = load_config(str(fixtures_dir / "tiny.yaml"), keys=["hift"])["hift"]
    hift.load_state_dict(torch.load(fixtures_dir / "hift.pt", weights_only=True), strict=True)
    mel = functools.partial(mel_spectrogram, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
                            win_size=1920, fmin=0, fmax=None, center=False)
    torch.manual_seed(0)
    # two of the five periods keep this CPU test fast; the full MPD is built in test_full_config_builds_on_meta
    disc = MultipleDiscriminator(mpd=MultiPeriodDiscriminator(periods=(2, 11)), mrd=MultiResSpecDiscriminator())
    return HiFiGan(generator=hift, discriminator=disc, mel_spec_transform=[mel])


@pytest.fixture()
def gan_batch(fixtures_dir):
    from safetensors.torch import load_file

    mel = load_file(str(fixtures_dir / "hift_inference.safetensors"))["mel"][:, :, :4]
    g = torch.Generator().manual_seed(3)
    return {"speech_feat": mel.transpose(1, 2).repeat(2, 1, 1),
            "speech": 0.3 * torch.randn(2, 1920, generator=g).clamp(-3, 3) / 3,
            "pitch_feat": torch.full((2, 4), 120.0)}


def test_generator_turn(tiny_gan, gan_batch):
    tiny_gan.train()
    tiny_gan.zero_grad()
    out = tiny_gan({**gan_batch, "turn": "generator"}, torch.device("cpu"))
    assert set(out) == {"loss", "loss_gen", "loss_fm", "loss_mel", "loss_tpr", "loss_f0"}
    assert all(math.isfinite(float(v.detach())) for v in out.values())
    weighted = (out["loss_gen"] + 2.0 * out["loss_fm"] + 45 * out["loss_mel"] + out["loss_tpr"] + out["loss_f0"])
    assert out["loss"].item() == pytest.approx(weighted.item(), rel=1e-6)
    out["loss"].backward()
    assert tiny_gan.generator.conv_post.parametrizations.weight.original1.grad.abs().sum() > 0
    assert tiny_gan.generator.f0_predictor.classifier.weight.grad.abs().sum() > 0  # through the f0 L1 loss


def test_discriminator_turn(tiny_gan, gan_batch):
    tiny_gan.train()
    tiny_gan.zero_grad()
    out = tiny_gan({**gan_batch, "turn": "discriminator"}, torch.device("cpu"))
    assert set(out) == {"loss", "loss_disc", "loss_tpr"}
    assert all(math.isfinite(float(v.detach())) for v in out.values())
    out["loss"].backward()
    assert tiny_gan.discriminator.mpd.discriminators[0].convs[0].weight_v.grad.abs().sum() > 0
    assert tiny_gan.generator.conv_pre.parametrizations.weight.original1.grad is None
    with pytest.raises(ValueError, match="batch\\['turn'\\] must be 'generator' or 'discriminator', got 'both'"):
        tiny_gan({**gan_batch, "turn": "both"}, torch.device("cpu"))
