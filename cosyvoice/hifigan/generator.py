"""HiFT vocoder (HiFTNet: neural source-filter excitation + iSTFT HiFi-GAN), mel (B, 80, T) -> 24 kHz waveform.

Loads the official CosyVoice2 ``hift.pt`` strictly and computes the same numbers as the official generator.
Randomness lives only in the excitation (initial harmonic phases and additive noise); every draw can be routed
through an explicit ``torch.Generator`` (or an int seed) so that synthesis is reproducible without touching the
global RNG. With ``generator=None`` the global RNG is used, drawing exactly what the official code draws.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from cosyvoice.hifigan.activation import Snake
from cosyvoice.utils.common import check_state_dict, get_padding, init_weights, read_state_dict

GeneratorLike = Union[None, int, torch.Generator]


def resolve_generator(generator: GeneratorLike, device: torch.device) -> Optional[torch.Generator]:
    """None -> None (global RNG); an int -> a fresh generator on ``device`` seeded with it; a generator as is."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator(device=device).manual_seed(int(generator))
    raise TypeError(f"generator must be None, an int seed or a torch.Generator, got {type(generator).__name__}")


def periodic_hann(n: int) -> torch.Tensor:
    """Periodic ("fftbins") Hann window of length n, computed in float64 and returned as float32."""
    k = np.arange(n, dtype=np.float64)
    return torch.from_numpy((0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(np.float32))


class ResBlock(nn.Module):
    """Residual stack of (Snake, dilated conv, Snake, conv) pairs, one pair per dilation, lengths preserved."""

    def __init__(self, channels: int = 512, kernel_size: int = 3, dilations: List[int] = (1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                  padding=get_padding(kernel_size, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                  padding=get_padding(kernel_size, 1)))
            for _ in dilations
        )
        self.convs1.apply(init_weights)
        self.convs2.apply(init_weights)
        self.activations1 = nn.ModuleList(Snake(channels, alpha_logscale=False) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels, alpha_logscale=False) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = x + conv2(act2(conv1(act1(x))))
        return x

    def remove_weight_norm(self) -> None:
        for conv in list(self.convs1) + list(self.convs2):
            parametrize.remove_parametrizations(conv, "weight")


class SineGen(nn.Module):
    """Harmonic sine excitation at full rate (the 22.05 kHz CosyVoice 1 variant).

    f0 (B, L, 1) in Hz -> (sine_waves (B, L, H+1), uv (B, L, 1), noise (B, L, H+1)). Random phase per
    harmonic (the fundamental starts at phase 0), Gaussian noise: ``noise_std`` where voiced, sine_amp/3 elsewhere.
    """

    def __init__(self, samp_rate: int, harmonic_num: int = 0, sine_amp: float = 0.1, noise_std: float = 0.003,
                 voiced_threshold: float = 0):
        super().__init__()
        self.sampling_rate = samp_rate
        self.harmonic_num = harmonic_num
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold

    def _f02uv(self, f0: torch.Tensor) -> torch.Tensor:
        return (f0 > self.voiced_threshold).type(torch.float32)

    @torch.no_grad()
    def forward(self, f0: torch.Tensor, generator: GeneratorLike = None):
        generator = resolve_generator(generator, f0.device)
        f0 = f0.transpose(1, 2)  # (B, 1, L)
        dim = self.harmonic_num + 1
        freqs = torch.zeros((f0.size(0), dim, f0.size(-1)), device=f0.device)
        for i in range(dim):
            freqs[:, i:i + 1, :] = f0 * (i + 1) / self.sampling_rate
        theta = 2 * np.pi * (torch.cumsum(freqs, dim=-1) % 1)
        low, high = torch.tensor(-math.pi), torch.tensor(math.pi)
        # drawn on the CPU (as official) unless the caller's generator lives on another device
        u = torch.rand((f0.size(0), dim, 1), generator=generator,
                       device=generator.device if generator is not None else "cpu")
        phase = (low + u * (high - low)).to(freqs.device)
        phase[:, 0, :] = 0
        sine_waves = self.sine_amp * torch.sin(theta + phase)
        uv = self._f02uv(f0)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        noise = noise_amp * torch.randn(sine_waves.shape, generator=generator, dtype=sine_waves.dtype,
                                        device=sine_waves.device)
        sine_waves = sine_waves * uv + noise
        return sine_waves.transpose(1, 2), uv.transpose(1, 2), noise


class SineGen2(nn.Module):
    """Harmonic sine excitation whose phase is integrated at frame rate (the 24 kHz CosyVoice 2 variant).

    f0 (B, L, 1) in Hz, L = frames x ``upsample_scale`` -> (sine_waves (B, L, H+1), uv (B, L, 1),
    noise (B, L, H+1)). The normalised frequency (mod 1) gets a random initial phase on its first sample (0 for
    the fundamental), is linearly resampled down by ``upsample_scale``, integrated, and the phase is linearly
    resampled back up. Draws, in order: ``rand(B, H+1)``, then normals filling a (B, H+1, L) buffer viewed as (B, L, H+1).
    """

    def __init__(self, samp_rate: int, upsample_scale: int, harmonic_num: int = 0, sine_amp: float = 0.1,
                 noise_std: float = 0.003, voiced_threshold: float = 0, flag_for_pulse: bool = False,
                 causal: bool = False):
        super().__init__()
        if flag_for_pulse or causal:
            raise NotImplementedError("SineGen2: only the non-causal sine source (CosyVoice2) is implemented "
                                      "(flag_for_pulse=False, causal=False)")
        self.sampling_rate = samp_rate
        self.upsample_scale = int(upsample_scale)
        self.harmonic_num = harmonic_num
        self.dim = harmonic_num + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.flag_for_pulse = flag_for_pulse
        self.causal = causal

    def _f02uv(self, f0: torch.Tensor) -> torch.Tensor:
        return (f0 > self.voiced_threshold).type(torch.float32)

    def _f02sine(self, f0_values: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        rad = (f0_values / self.sampling_rate) % 1  # cycles per sample; whole turns do not change the phase
        ini = torch.rand(f0_values.shape[0], f0_values.shape[2], generator=generator, device=f0_values.device)
        ini[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + ini
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.upsample_scale, mode="linear")
        phase = torch.cumsum(rad, dim=2) * 2 * np.pi
        phase = F.interpolate(phase * self.upsample_scale, scale_factor=self.upsample_scale, mode="linear")
        return torch.sin(phase.transpose(1, 2))

    def forward(self, f0: torch.Tensor, generator: GeneratorLike = None):
        generator = resolve_generator(generator, f0.device)
        harmonics = torch.arange(1, self.harmonic_num + 2, dtype=torch.float32, device=f0.device)
        sine_waves = self._f02sine(f0 * harmonics, generator) * self.sine_amp
        uv = self._f02uv(f0)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        # The sines live in (B, H+1, L) memory viewed as (B, L, H+1). The official randn_like keeps that
        # non-contiguous layout, and torch fills a non-contiguous tensor with a different normal stream than a
        # contiguous one; normal_ on the same layout reproduces those draws.
        b, n, h = sine_waves.shape
        normal = torch.empty((b, h, n), dtype=sine_waves.dtype, device=sine_waves.device).transpose(1, 2)
        noise = noise_amp * normal.normal_(generator=generator)
        sine_waves = sine_waves * uv + noise
        return sine_waves, uv, noise


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise source: sine harmonics merged by a linear layer and tanh into one excitation.

    f0 (B, L, 1) -> (sine_merge (B, L, 1), noise (B, L, 1), uv (B, L, 1)). ``sinegen_type`` '1' picks
    :class:`SineGen` (22.05 kHz models), anything else :class:`SineGen2`.
    """

    def __init__(self, sampling_rate: int, upsample_scale: int, harmonic_num: int = 0, sine_amp: float = 0.1,
                 add_noise_std: float = 0.003, voiced_threshod: float = 0, sinegen_type: str = "1",
                 causal: bool = False):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = add_noise_std
        if sinegen_type == "1":
            self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshod)
        else:
            self.l_sin_gen = SineGen2(sampling_rate, upsample_scale, harmonic_num, sine_amp, add_noise_std,
                                      voiced_threshod, causal=causal)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()
        self.causal = causal

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None):
        generator = resolve_generator(generator, x.device)
        with torch.no_grad():
            sine_waves, uv, _ = self.l_sin_gen(x, generator=generator)
        sine_merge = self.l_tanh(self.l_linear(sine_waves))
        noise = torch.randn(uv.shape, generator=generator, dtype=uv.dtype, device=uv.device) * self.sine_amp / 3
        return sine_merge, noise, uv


class HiFTGenerator(nn.Module):
    """HiFTNet generator: F0 predictor -> harmonic source -> source-conditioned HiFi-GAN -> iSTFT.

    Constructor arguments, sub-module names and public methods follow the official
    ``cosyvoice.hifigan.generator.HiFTGenerator``; ``hift.pt`` loads with ``strict=True``.
    """

    def __init__(
        self,
        in_channels: int = 80,
        base_channels: int = 512,
        nb_harmonics: int = 8,
        sampling_rate: int = 22050,
        nsf_alpha: float = 0.1,
        nsf_sigma: float = 0.003,
        nsf_voiced_threshold: float = 10,
        upsample_rates: List[int] = (8, 8),
        upsample_kernel_sizes: List[int] = (16, 16),
        istft_params: Dict[str, int] = None,
        resblock_kernel_sizes: List[int] = (3, 7, 11),
        resblock_dilation_sizes: List[List[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        source_resblock_kernel_sizes: List[int] = (7, 11),
        source_resblock_dilation_sizes: List[List[int]] = ((1, 3, 5), (1, 3, 5)),
        lrelu_slope: float = 0.1,
        audio_limit: float = 0.99,
        f0_predictor: Optional[nn.Module] = None,
    ):
        super().__init__()
        istft_params = dict(istft_params or {"n_fft": 16, "hop_len": 4})
        upsample_rates = [int(u) for u in upsample_rates]
        n_fft, hop = int(istft_params["n_fft"]), int(istft_params["hop_len"])
        self.out_channels = 1
        self.nb_harmonics = nb_harmonics
        self.sampling_rate = sampling_rate
        self.istft_params = istft_params
        self.lrelu_slope = lrelu_slope
        self.audio_limit = audio_limit
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upsample_scale = int(np.prod(upsample_rates)) * hop  # waveform samples per mel frame

        self.m_source = SourceModuleHnNSF(
            sampling_rate=sampling_rate,
            upsample_scale=self.upsample_scale,
            harmonic_num=nb_harmonics,
            sine_amp=nsf_alpha,
            add_noise_std=nsf_sigma,
            voiced_threshod=nsf_voiced_threshold,
            sinegen_type="1" if sampling_rate == 22050 else "2",
            causal=False,
        )
        self.f0_upsamp = nn.Upsample(scale_factor=self.upsample_scale)

        self.conv_pre = weight_norm(nn.Conv1d(in_channels, base_channels, 7, 1, padding=3))

        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            self.ups.append(weight_norm(nn.ConvTranspose1d(
                base_channels // 2 ** i, base_channels // 2 ** (i + 1), k, u, padding=(k - u) // 2)))

        # The source STFT (n_fft + 2 channels at hop rate) is brought down to the rate after each upsampling.
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = np.cumprod([1] + upsample_rates[::-1][:-1])[::-1]
        for i, (u, k, d) in enumerate(zip(down_rates, source_resblock_kernel_sizes, source_resblock_dilation_sizes)):
            u, ch = int(u), base_channels // 2 ** (i + 1)
            if u == 1:
                self.source_downs.append(nn.Conv1d(n_fft + 2, ch, 1, 1))
            else:
                self.source_downs.append(nn.Conv1d(n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))

        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base_channels // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))

        self.conv_post = weight_norm(nn.Conv1d(ch, n_fft + 2, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)
        self.reflection_pad = nn.ReflectionPad1d((1, 0))
        self.stft_window = periodic_hann(n_fft)  # plain attribute: not in the state_dict
        self.f0_predictor = f0_predictor

    # ----------------------------------------------------------------------------------------------------------
    def remove_weight_norm(self) -> None:
        """Fold every weight norm into a plain weight (faster inference; the state_dict keys change)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight")

    def _stft(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n_fft, hop = self.istft_params["n_fft"], self.istft_params["hop_len"]
        spec = torch.stft(x, n_fft, hop, n_fft, window=self.stft_window.to(x.device), return_complex=True)
        spec = torch.view_as_real(spec)
        return spec[..., 0], spec[..., 1]

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        n_fft, hop = self.istft_params["n_fft"], self.istft_params["hop_len"]
        magnitude = torch.clip(magnitude, max=1e2)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return torch.istft(spec, n_fft, hop, n_fft, window=self.stft_window.to(magnitude.device))

    def excitation(self, f0: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """Frame-rate f0 (B, T) -> sample-rate source excitation (B, 1, T * upsample_scale)."""
        s = self.f0_upsamp(f0[:, None]).transpose(1, 2)
        s, _, _ = self.m_source(s, generator=generator)
        return s.transpose(1, 2)

    def decode(self, x: torch.Tensor, s: torch.Tensor = torch.zeros(1, 1, 0)) -> torch.Tensor:
        """mel (B, C, T) and source (B, 1, T * upsample_scale) -> waveform (B, T * upsample_scale)."""
        s_real, s_imag = self._stft(s.squeeze(1))
        s_stft = torch.cat([s_real, s_imag], dim=1)

        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, self.lrelu_slope)
            x = self.ups[i](x)
            if i == self.num_upsamples - 1:
                x = self.reflection_pad(x)
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs = None
            for j in range(self.num_kernels):
                y = self.resblocks[i * self.num_kernels + j](x)
                xs = y if xs is None else xs + y
            x = xs / self.num_kernels

        x = F.leaky_relu(x)  # default slope (0.01) here, as in the official model
        x = self.conv_post(x)
        n_bins = self.istft_params["n_fft"] // 2 + 1
        magnitude = torch.exp(x[:, :n_bins, :])
        phase = torch.sin(x[:, n_bins:, :])
        x = self._istft(magnitude, phase)
        return torch.clamp(x, -self.audio_limit, self.audio_limit)

    def forward(self, batch: Dict[str, Any], device: torch.device,
                generator: GeneratorLike = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """GAN training step: ``batch['speech_feat']`` (B, T, C) -> (generated speech (B, T*scale), f0 (B, T))."""
        speech_feat = batch["speech_feat"].transpose(1, 2).to(device)
        f0 = self.f0_predictor(speech_feat)
        s = self.excitation(f0, generator=generator)
        return self.decode(x=speech_feat, s=s), f0

    @torch.inference_mode()
    def inference(self, speech_feat: torch.Tensor, cache_source: torch.Tensor = torch.zeros(1, 1, 0),
                  generator: GeneratorLike = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """mel (B, C, T) -> (speech (B, T*scale), source (B, 1, T*scale)).

        ``cache_source``: the source of the previous streaming chunk; it overwrites the start of the new source
        so that overlapping audio stays continuous. ``generator``: None (global RNG, as official), an int seed or
        a ``torch.Generator`` on the mel's device.
        """
        f0 = self.f0_predictor(speech_feat)
        s = self.excitation(f0, generator=generator)
        if cache_source.shape[2] != 0:
            s[:, :, :cache_source.shape[2]] = cache_source
        return self.decode(x=speech_feat, s=s), s


# ----------------------------------------------------------------------------------------------------------------
_LEGACY_SUFFIXES = ((".weight_g", ".parametrizations.weight.original0"),
                    (".weight_v", ".parametrizations.weight.original1"))


def load_hift_state_dict(checkpoint: Union[str, os.PathLike, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """A clean HiFT state_dict from a ``hift.pt`` path or an already loaded dict.

    As the official loader does, every ``generator.`` in a key is removed (checkpoints saved from the GAN
    wrapper); legacy weight-norm names ``*.weight_g`` / ``*.weight_v`` become
    ``*.parametrizations.weight.original0`` / ``original1``.
    """
    _, state = read_state_dict(checkpoint)
    return _clean_hift_keys(state)


def _clean_hift_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    clean = {}
    for key, value in state.items():
        key = key.replace("generator.", "")
        for old, new in _LEGACY_SUFFIXES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        clean[key] = value
    return clean


def load_hift(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, torch.Tensor]]) -> nn.Module:
    """Load a HiFT checkpoint strictly into ``model``; a wrong checkpoint fails with one line naming the keys."""
    name, state = read_state_dict(checkpoint)
    state = _clean_hift_keys(state)
    check_state_dict(model, state, name)
    model.load_state_dict(state, strict=True)
    return model
