"""GAN discriminators for HiFT vocoder training.

* :class:`MultiPeriodDiscriminator` - HiFi-GAN's MPD (the official yaml takes it from Matcha-TTS; its weight-normed
  convs keep that code's legacy ``weight_g`` / ``weight_v`` state_dict keys);
* :class:`MultiResSpecDiscriminator` - 2-D conv stacks on STFT magnitudes at three resolutions;
* :class:`MultiResolutionDiscriminator` - band-split complex-spectrogram discriminator (DAC / Vocos style);
* :class:`MultipleDiscriminator` - runs an MPD and a spectral discriminator and concatenates their outputs.

Every discriminator's ``forward(y, y_hat)`` returns ``(real_scores, fake_scores, real_fmaps, fake_fmaps)``, lists
with one entry per sub-discriminator.

Compatibility only: the official cosyvoice2.yaml / cosyvoice3.yaml build ``hifigan`` (vocoder GAN training) from
these, so they are here for those yamls to load and for training HiFT by hand; the recipe fine-tunes the llm and the
flow and never calls them.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from cosyvoice.utils.common import get_padding

LRELU_SLOPE = 0.1

Outputs = Tuple[List[torch.Tensor], List[torch.Tensor], List[List[torch.Tensor]], List[List[torch.Tensor]]]



def _conv_stack(convs, post: nn.Module, x: torch.Tensor):
    """(flattened scores, feature maps) of leaky-ReLU conv layers then a last conv, every output kept as a map."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap

class LegacyWeightNormConv2d(nn.Conv2d):
    """Conv2d with weight = g * v / ||v|| (norm over all but dim 0), stored as ``weight_g`` / ``weight_v``.

    These are the state_dict names of torch's original (pre-parametrization) ``weight_norm``, which the official
    MPD uses, so discriminator checkpoints keep their key structure.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        v = self.weight.detach().clone()
        del self.weight
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True))
        self.weight_v = nn.Parameter(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias)


def _run_pairs(discriminators: Sequence[nn.Module], y: torch.Tensor, y_hat: torch.Tensor) -> Outputs:
    real, fake, real_maps, fake_maps = [], [], [], []
    for d in discriminators:
        score_r, fmap_r = d(y)
        score_g, fmap_g = d(y_hat)
        real.append(score_r)
        fake.append(score_g)
        real_maps.append(fmap_r)
        fake_maps.append(fmap_g)
    return real, fake, real_maps, fake_maps


# ----------------------------------------------------------------------------------------------------------------
class DiscriminatorP(nn.Module):
    """Period discriminator: the waveform folded into (T / period, period) and convolved along time."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False):
        super().__init__()
        self.period = period

        def conv(c_in, c_out, k, s, pad):
            if use_spectral_norm:
                return torch.nn.utils.spectral_norm(nn.Conv2d(c_in, c_out, k, s, padding=pad))
            return LegacyWeightNormConv2d(c_in, c_out, k, s, padding=pad)

        pad = (get_padding(5, 1), 0)
        self.convs = nn.ModuleList([
            conv(1, 32, (kernel_size, 1), (stride, 1), pad),
            conv(32, 128, (kernel_size, 1), (stride, 1), pad),
            conv(128, 512, (kernel_size, 1), (stride, 1), pad),
            conv(512, 1024, (kernel_size, 1), (stride, 1), pad),
            conv(1024, 1024, (kernel_size, 1), 1, (2, 0)),
        ])
        self.conv_post = conv(1024, 1, (3, 1), 1, (1, 0))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(B, 1, T) -> (scores (B, N), feature maps)."""
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t += n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN MPD with periods 2, 3, 5, 7, 11; inputs (B, 1, T)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11)):
        super().__init__()
        self.discriminators = nn.ModuleList(DiscriminatorP(p) for p in periods)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> Outputs:
        return _run_pairs(self.discriminators, y, y_hat)


# ----------------------------------------------------------------------------------------------------------------
def stft_magnitude(x: torch.Tensor, fft_size: int, hop_size: int, win_length: int,
                   window: torch.Tensor) -> torch.Tensor:
    """|STFT| of (B, T), centred: (B, frames, fft_size // 2 + 1)."""
    spec = torch.stft(x, fft_size, hop_size, win_length, window, return_complex=True)
    return spec.abs().transpose(2, 1)


class SpecDiscriminator(nn.Module):
    """2-D conv stack on one STFT magnitude resolution."""

    def __init__(self, fft_size: int = 1024, shift_size: int = 120, win_length: int = 600,
                 window: str = "hann_window", use_spectral_norm: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.fft_size = fft_size
        self.shift_size = shift_size
        self.win_length = win_length
        self.window = getattr(torch, window)(win_length)  # plain attribute, not in the state_dict
        self.discriminators = nn.ModuleList([
            norm(nn.Conv2d(1, 32, kernel_size=(3, 9), padding=(1, 4))),
            norm(nn.Conv2d(32, 32, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            norm(nn.Conv2d(32, 32, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            norm(nn.Conv2d(32, 32, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            norm(nn.Conv2d(32, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))),
        ])
        self.out = norm(nn.Conv2d(32, 1, 3, 1, 1))

    def forward(self, y: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(B, T) or (B, 1, T) -> (scores (B, N), feature maps)."""
        if y.dim() == 3:
            y = y.squeeze(1)
        x = stft_magnitude(y, self.fft_size, self.shift_size, self.win_length, self.window.to(y.device))
        return _conv_stack(self.discriminators, self.out, x.unsqueeze(1))


class MultiResSpecDiscriminator(nn.Module):
    """Three :class:`SpecDiscriminator` at (fft, hop, win) = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240)."""

    def __init__(self, fft_sizes: Sequence[int] = (1024, 2048, 512), hop_sizes: Sequence[int] = (120, 240, 50),
                 win_lengths: Sequence[int] = (600, 1200, 240), window: str = "hann_window"):
        super().__init__()
        self.discriminators = nn.ModuleList(
            SpecDiscriminator(f, h, w, window) for f, h, w in zip(fft_sizes, hop_sizes, win_lengths))

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> Outputs:
        return _run_pairs(self.discriminators, y, y_hat)


# ----------------------------------------------------------------------------------------------------------------
class ComplexSpectrogram(nn.Module):
    """Centred complex STFT with a periodic Hann window kept as a buffer (``window``), (B, T) -> (B, F, frames)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        spec = torch.stft(x.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        return spec.reshape(shape[:-1] + spec.shape[-2:])


class DiscriminatorR(nn.Module):
    """One resolution of the band-split discriminator: real/imag spectrogram in 5 frequency bands."""

    def __init__(self, window_length: int, num_embeddings: Optional[int] = None, channels: int = 32,
                 hop_factor: float = 0.25,
                 bands: Sequence[Tuple[float, float]] = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75),
                                                         (0.75, 1.0))):
        super().__init__()
        self.window_length = window_length
        self.hop_factor = hop_factor
        self.spec_fn = ComplexSpectrogram(window_length, int(window_length * hop_factor), window_length)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]

        def stack():
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, channels, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 3), (1, 1), padding=(1, 1))),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        if num_embeddings is not None:
            self.emb = nn.Embedding(num_embeddings=num_embeddings, embedding_dim=channels)
            nn.init.zeros_(self.emb.weight)
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), (1, 1), padding=(1, 1)))

    def spectrogram(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = x - x.mean(dim=-1, keepdim=True)  # remove DC
        x = 0.8 * x / (x.abs().max(dim=-1, keepdim=True)[0] + 1e-9)  # peak-normalise
        x = torch.view_as_real(self.spec_fn(x))  # (B, F, T, 2)
        x = x.permute(0, 3, 2, 1)  # (B, 2, T, F)
        return [x[..., lo:hi] for lo, hi in self.bands]

    def forward(self, x: torch.Tensor, cond_embedding_id: Optional[torch.Tensor] = None):
        fmap, outs = [], []
        for band, stack in zip(self.spectrogram(x), self.band_convs):
            for i, layer in enumerate(stack):
                band = F.leaky_relu(layer(band), 0.1)
                if i > 0:
                    fmap.append(band)
            outs.append(band)
        x = torch.cat(outs, dim=-1)
        h = 0
        if cond_embedding_id is not None:
            emb = self.emb(cond_embedding_id)
            h = (emb.view(1, -1, 1, 1) * x).sum(dim=1, keepdim=True)
        x = self.conv_post(x)
        fmap.append(x)
        return x + h, fmap


class MultiResolutionDiscriminator(nn.Module):
    """:class:`DiscriminatorR` at several window lengths; optional learned conditioning embedding."""

    def __init__(self, fft_sizes: Sequence[int] = (2048, 1024, 512), num_embeddings: Optional[int] = None):
        super().__init__()
        self.discriminators = nn.ModuleList(DiscriminatorR(window_length=w, num_embeddings=num_embeddings)
                                            for w in fft_sizes)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor, bandwidth_id: Optional[torch.Tensor] = None) -> Outputs:
        real, fake, real_maps, fake_maps = [], [], [], []
        for d in self.discriminators:
            score_r, fmap_r = d(x=y, cond_embedding_id=bandwidth_id)
            score_g, fmap_g = d(x=y_hat, cond_embedding_id=bandwidth_id)
            real.append(score_r)
            fake.append(score_g)
            real_maps.append(fmap_r)
            fake_maps.append(fmap_g)
        return real, fake, real_maps, fake_maps


# ----------------------------------------------------------------------------------------------------------------
class MultipleDiscriminator(nn.Module):
    """An MPD (fed (B, 1, T)) and a spectral discriminator (fed (B, T)); their outputs are concatenated."""

    def __init__(self, mpd: nn.Module, mrd: nn.Module):
        super().__init__()
        self.mpd = mpd
        self.mrd = mrd

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> Outputs:
        real, fake, real_maps, fake_maps = self.mpd(y.unsqueeze(dim=1), y_hat.unsqueeze(dim=1))
        r2, f2, rm2, fm2 = self.mrd(y, y_hat)
        return real + r2, fake + f2, real_maps + rm2, fake_maps + fm2
