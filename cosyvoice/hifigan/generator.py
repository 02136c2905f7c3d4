"""HiFT vocoder (HiFTNet: neural source-filter excitation + iSTFT HiFi-GAN), mel (B, 80, T) -> 24 kHz waveform.

``HiFTGenerator`` (CosyVoice2) and ``CausalHiFTGenerator`` (CosyVoice3) load the official ``hift.pt`` strictly and
compute the same numbers as the official generators; they share one implementation and differ in their convs
(one-sided in the causal one, which can also decode streaming chunks) and in where the excitation's randomness
comes from. HiFTGenerator draws it at every call: every draw can be routed through an explicit ``torch.Generator``
(or an int seed), and with ``generator=None`` the global RNG is used, drawing exactly what the official code draws.
CausalHiFTGenerator in eval mode draws nothing: it uses noise tables fixed at construction (see
:class:`CausalSourceNoise`).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from cosyvoice.flow.flow_matching import NOISE_FRAMES, NOISE_SEED
from cosyvoice.hifigan.activation import Snake
from cosyvoice.transformer.convolution import CausalConv1d, CausalConv1dDownSample, CausalConv1dUpsample
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
    """Residual stack of (Snake, dilated conv, Snake, conv) pairs, one pair per dilation, lengths preserved.

    ``causal``: the convs see only the past (:class:`CausalConv1d`), as in the CosyVoice3 HiFT.
    """

    def __init__(self, channels: int = 512, kernel_size: int = 3, dilations: List[int] = (1, 3, 5),
                 causal: bool = False):
        super().__init__()
        self.causal = causal

        def conv(dilation: int) -> nn.Module:
            if causal:
                return CausalConv1d(channels, channels, kernel_size, 1, dilation=dilation, causal_type="left")
            return nn.Conv1d(channels, channels, kernel_size, 1, dilation=dilation,
                             padding=get_padding(kernel_size, dilation))

        self.convs1 = nn.ModuleList(weight_norm(conv(d)) for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(conv(1)) for _ in dilations)
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
    """Harmonic sine excitation whose phase is integrated at frame rate (the 24 kHz CosyVoice 2/3 variant).

    f0 (B, L, 1) in Hz, L = frames x ``upsample_scale`` -> (sine_waves (B, L, H+1), uv (B, L, 1),
    noise (B, L, H+1)). The normalised frequency (mod 1) gets an initial phase on its first sample (0 for the
    fundamental), is linearly resampled down by ``upsample_scale``, integrated, and the phase is resampled back up
    (linearly; ``causal``: by repetition, so a sample never depends on later frames).

    Randomness: in training, and always when not ``causal``, it draws ``rand(B, H+1)`` initial phases, then normals
    filling a (B, H+1, L) buffer viewed as (B, L, H+1) (the official order and layout). ``causal`` in eval mode it
    draws nothing: the phases are ``rand_ini`` and the noise is ``sine_waves`` (uniform values, scaled like the
    normals), both fixed at construction (``fixed_noise``, a :class:`CausalSourceNoise`; by default the one of the
    official full-size CosyVoice3 model).
    """

    def __init__(self, samp_rate: int, upsample_scale: int, harmonic_num: int = 0, sine_amp: float = 0.1,
                 noise_std: float = 0.003, voiced_threshold: float = 0, flag_for_pulse: bool = False,
                 causal: bool = False, fixed_noise: Optional["CausalSourceNoise"] = None):
        super().__init__()
        if flag_for_pulse:
            raise NotImplementedError("SineGen2: the pulse-train source (flag_for_pulse=True) is not implemented")
        self.sampling_rate = samp_rate
        self.upsample_scale = int(upsample_scale)
        self.harmonic_num = harmonic_num
        self.dim = harmonic_num + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.flag_for_pulse = flag_for_pulse
        self.causal = causal
        if causal:
            fixed_noise = fixed_noise if fixed_noise is not None else CausalSourceNoise(self.dim)
            self.rand_ini = fixed_noise.rand_ini  # plain attributes, not in the state_dict (as official)
            self.sine_waves = fixed_noise.sine_waves

    def _fixed(self) -> bool:
        return self.causal and not self.training

    def _f02uv(self, f0: torch.Tensor) -> torch.Tensor:
        return (f0 > self.voiced_threshold).type(torch.float32)

    def _f02sine(self, f0_values: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        rad = (f0_values / self.sampling_rate) % 1  # cycles per sample; whole turns do not change the phase
        if self._fixed():
            ini = self.rand_ini.to(rad.device)
        else:
            ini = torch.rand(f0_values.shape[0], f0_values.shape[2], generator=generator, device=f0_values.device)
            ini[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + ini
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.upsample_scale, mode="linear")
        phase = torch.cumsum(rad, dim=2) * 2 * np.pi
        phase = F.interpolate(phase * self.upsample_scale, scale_factor=self.upsample_scale,
                              mode="nearest" if self.causal else "linear")
        return torch.sin(phase.transpose(1, 2))

    def forward(self, f0: torch.Tensor, generator: GeneratorLike = None):
        generator = resolve_generator(generator, f0.device)
        harmonics = torch.arange(1, self.harmonic_num + 2, dtype=torch.float32, device=f0.device)
        sine_waves = self._f02sine(f0 * harmonics, generator) * self.sine_amp
        uv = self._f02uv(f0)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        if self._fixed():
            noise = noise_amp * self.sine_waves[:, :sine_waves.shape[1]].to(sine_waves.device)
        else:
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
    :class:`SineGen` (22.05 kHz models), anything else :class:`SineGen2`. The noise branch is a normal draw, or
    (``causal`` in eval mode) the fixed ``uv`` table scaled the same way.
    """

    def __init__(self, sampling_rate: int, upsample_scale: int, harmonic_num: int = 0, sine_amp: float = 0.1,
                 add_noise_std: float = 0.003, voiced_threshod: float = 0, sinegen_type: str = "1",
                 causal: bool = False, fixed_noise: Optional["CausalSourceNoise"] = None):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = add_noise_std
        if causal and fixed_noise is None:
            fixed_noise = CausalSourceNoise(harmonic_num + 1)
        if sinegen_type == "1":
            if causal:
                raise NotImplementedError("SourceModuleHnNSF: the causal source needs sinegen_type '2' (SineGen2)")
            self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshod)
        else:
            self.l_sin_gen = SineGen2(sampling_rate, upsample_scale, harmonic_num, sine_amp, add_noise_std,
                                      voiced_threshod, causal=causal, fixed_noise=fixed_noise)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()
        self.causal = causal
        if causal:
            self.uv = fixed_noise.uv

    def forward(self, x: torch.Tensor, generator: GeneratorLike = None, noise: bool = True):
        """``noise=False`` leaves out the noise branch (None) when it would come from the fixed table (its first
        read costs a pass over the 300 s sine table); a drawn noise branch is always drawn, so the RNG advances
        exactly as in the official code."""
        generator = resolve_generator(generator, x.device)
        with torch.no_grad():
            sine_waves, uv, _ = self.l_sin_gen(x, generator=generator)
        sine_merge = self.l_tanh(self.l_linear(sine_waves))
        if self.causal and not self.training:
            branch = self.uv[:, :uv.shape[1]].to(uv.device) * self.sine_amp / 3 if noise else None
        else:
            branch = torch.randn(uv.shape, generator=generator, dtype=uv.dtype, device=uv.device) * self.sine_amp / 3
        return sine_merge, branch, uv


# --- the fixed noise of the causal (CosyVoice3) source -----------------------------------------------------------
# In eval mode the official causal source draws nothing: it uses three tensors of torch.rand values drawn once at
# construction from the global RNG: the initial harmonic phases (1, H+1), a (1, 300 s, H+1) table that scales the
# additive noise, and a (1, 300 s, 1) table for the (discarded) noise branch. Their values follow from the RNG state
# at that point, which the official yaml fixes: CausalConditionalCFM.__init__ seeds 0 and draws its (1, 80, 15000)
# normal noise, then only parameter initialisers draw until the HiFT source (the flow's input embedding and speaker
# projection, then the HiFT's f0 predictor). CausalSourceNoise replays that sequence on a private generator, so the
# numbers are those of the official CosyVoice3 model without touching (or depending on) the global RNG.
OFFICIAL_FLOW_INIT = {"embedding": (6561, 80), "linear": (192, 80)}  # CausalMaskedDiffWithDiT: vocab x mel, spk -> mel
SOURCE_SECONDS = 300  # the tables cover 300 s
SOURCE_SAMPLE_RATE = 24000  # official: 300 * 24000 samples whatever the sampling rate


def init_draw_shapes(module: Optional[nn.Module]) -> List[Tuple[int, ...]]:
    """Shapes of the uniform draws the default initialisers of ``module``'s Conv1d/Linear layers make, in order
    (weight then bias, layer by layer)."""
    shapes: List[Tuple[int, ...]] = []
    if module is None:
        return shapes
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            shapes.append(tuple(m.weight.shape))
            if m.bias is not None:
                shapes.append(tuple(m.bias.shape))
    return shapes


def _causal_f0_predictor_shapes(in_channels: int = 80, cond_channels: int = 512) -> List[Tuple[int, ...]]:
    """init_draw_shapes of the official CausalConvRNNF0Predictor(in_channels, cond_channels)."""
    shapes = [(cond_channels, in_channels, 4), (cond_channels,)]
    shapes += [(cond_channels, cond_channels, 3), (cond_channels,)] * 4
    return shapes + [(1, cond_channels), (1,)]


def _advance_uniform(gen: torch.Generator, shapes: Sequence[Tuple[int, ...]]) -> None:
    for shape in shapes:
        torch.empty(shape, device="cpu").uniform_(generator=gen)


class FixedUniformNoise:
    """Stands for a (1, rows, channels) float32 tensor of ``torch.rand`` values drawn from a CPU generator state,
    computed when read (the official code holds such tables in memory: 260 MB for the 300 s sine noise).

    ``table[:, a:b]`` (any slice of the rows) returns exactly the values the full draw has there; reads from the
    start are kept (up to ``cache_rows`` rows), others are streamed. The start state is ``state``, or (``after``)
    the state right after another table plus the uniform draws of ``then_shapes``, found when first needed.
    """

    dtype = torch.float32
    device = torch.device("cpu")
    CHUNK_ROWS = 1 << 18

    def __init__(self, rows: int, channels: int, state: Optional[torch.Tensor] = None,
                 after: Optional["FixedUniformNoise"] = None, then_shapes: Sequence[Tuple[int, ...]] = (),
                 cache_rows: int = 60 * SOURCE_SAMPLE_RATE):
        if (state is None) == (after is None):
            raise ValueError("FixedUniformNoise needs exactly one of state and after")
        self.rows = int(rows)
        self.channels = int(channels)
        self.cache_rows = int(cache_rows)
        self._state = state
        self._after = after
        self._then_shapes = list(then_shapes)
        # (rows kept from the start, generator state after them), replaced as one tuple so that concurrent readers
        # never see rows and a state that do not belong together
        self._kept: Tuple[torch.Tensor, Optional[torch.Tensor]] = (
            torch.zeros(1, 0, self.channels, device="cpu"), None)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([1, self.rows, self.channels])

    def _generator(self, state: torch.Tensor) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.set_state(state)
        return gen

    def start_state(self) -> torch.Tensor:
        if self._state is None:
            gen = self._generator(self._after.end_state())
            _advance_uniform(gen, self._then_shapes)
            self._state = gen.get_state()
        return self._state

    def end_state(self) -> torch.Tensor:
        """The generator state after all rows."""
        gen = self._draw_rows(self._kept, self.rows, keep_from=self.rows)[1]
        return gen.get_state()

    def _draw_rows(self, kept, stop: int, keep_from: int) -> Tuple[torch.Tensor, torch.Generator]:
        """Rows keep_from..stop-1 (drawn past the ``kept`` rows in chunks) and the generator positioned at ``stop``."""
        rows, end = kept
        have = rows.size(1)
        gen = self._generator(end if have else self.start_state())
        kept, row = [], have
        while row < stop:
            n = min(self.CHUNK_ROWS, stop - row)
            block = torch.rand(1, n, self.channels, generator=gen, device="cpu")
            lo = max(keep_from - row, 0)
            if lo < n:
                kept.append(block[:, lo:])
            row += n
        return (torch.cat(kept, dim=1) if kept else torch.zeros(1, 0, self.channels, device="cpu")), gen

    def prefix(self, n: int) -> torch.Tensor:
        """The first n rows, (1, n, channels)."""
        return self[:, :n]

    def __getitem__(self, index) -> torch.Tensor:
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) < 2 or index[0] != slice(None) or not isinstance(index[1], slice) or \
                (index[1].step or 1) < 0:
            raise IndexError("FixedUniformNoise supports table[:, a:b:step] (a forward slice of rows) only")
        rows = range(self.rows)[index[1]]
        rest = (slice(None), slice(None)) + index[2:]
        if len(rows) == 0:
            return torch.zeros(1, 0, self.channels, device="cpu")[rest]
        lo, hi = rows[0], rows[-1] + 1
        kept = self._kept
        have = kept[0].size(1)
        if have < hi <= self.cache_rows:
            new, gen = self._draw_rows(kept, hi, keep_from=have)
            kept = self._kept = (torch.cat([kept[0], new], dim=1), gen.get_state())
            have = hi
        if hi <= have:
            block = kept[0][:, lo:hi]
        else:  # beyond what is kept: stream the rest from the end of the kept rows
            block = torch.cat([kept[0][:, lo:], self._draw_rows(kept, hi, keep_from=max(lo, have))[0]], dim=1)
        return block[:, ::rows.step][rest]


class CausalSourceNoise:
    """The fixed tensors of the official causal source for a HiFT built after the official CosyVoice3 flow:
    ``rand_ini`` (1, H+1) (0 for the fundamental), ``sine_waves`` (1, 300 s, H+1) and ``uv`` (1, 300 s, 1), the
    last two as :class:`FixedUniformNoise`.

    ``f0_predictor_shapes``: :func:`init_draw_shapes` of the HiFT's f0 predictor (the draws between the flow and the
    source); None means the official full-size one, CausalConvRNNF0Predictor(80, 512).
    """

    def __init__(self, harmonics: int = 9, f0_predictor_shapes: Optional[Sequence[Tuple[int, ...]]] = None,
                 samples: int = SOURCE_SECONDS * SOURCE_SAMPLE_RATE, n_mels: int = 80):
        gen = torch.Generator(device="cpu").manual_seed(NOISE_SEED)
        torch.empty(1, n_mels, NOISE_FRAMES, device="cpu").normal_(generator=gen)  # flow.decoder.rand_noise
        torch.empty(OFFICIAL_FLOW_INIT["embedding"], device="cpu").normal_(generator=gen)  # flow.input_embedding
        spk, mel = OFFICIAL_FLOW_INIT["linear"]
        _advance_uniform(gen, [(mel, spk), (mel,)])  # flow.spk_embed_affine_layer
        if f0_predictor_shapes is None:
            f0_predictor_shapes = _causal_f0_predictor_shapes()
        _advance_uniform(gen, f0_predictor_shapes)
        self.rand_ini = torch.rand(1, harmonics, generator=gen, device="cpu")
        self.rand_ini[:, 0] = 0
        self.sine_waves = FixedUniformNoise(samples, harmonics, state=gen.get_state())
        # between the two tables: the initialiser of the source's Linear(harmonics, 1)
        self.uv = FixedUniformNoise(samples, 1, after=self.sine_waves, then_shapes=[(1, harmonics), (1,)])


class HiFTGenerator(nn.Module):
    """HiFTNet generator: F0 predictor -> harmonic source -> source-conditioned HiFi-GAN -> iSTFT.

    Constructor arguments, sub-module names and public methods follow the official
    ``cosyvoice.hifigan.generator.HiFTGenerator``; ``hift.pt`` loads with ``strict=True``.
    """

    causal = False

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
        self._build(in_channels, base_channels, nb_harmonics, sampling_rate, nsf_alpha, nsf_sigma,
                    nsf_voiced_threshold, upsample_rates, upsample_kernel_sizes, istft_params, resblock_kernel_sizes,
                    resblock_dilation_sizes, source_resblock_kernel_sizes, source_resblock_dilation_sizes,
                    lrelu_slope, audio_limit, f0_predictor)

    def _build(self, in_channels, base_channels, nb_harmonics, sampling_rate, nsf_alpha, nsf_sigma,
               nsf_voiced_threshold, upsample_rates, upsample_kernel_sizes, istft_params, resblock_kernel_sizes,
               resblock_dilation_sizes, source_resblock_kernel_sizes, source_resblock_dilation_sizes, lrelu_slope,
               audio_limit, f0_predictor, conv_pre_look_right: int = 0) -> None:
        """The layers of both generators, in the official order (the order fixes the state_dict and the RNG draws
        of the initialisers); ``self.causal`` picks one-sided convs."""
        causal = self.causal
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
        self.upsample_rates = upsample_rates
        self.upsample_scale = int(np.prod(upsample_rates)) * hop  # waveform samples per mel frame

        fixed_noise = None
        if causal:
            fixed_noise = CausalSourceNoise(nb_harmonics + 1, init_draw_shapes(f0_predictor),
                                            samples=SOURCE_SECONDS * SOURCE_SAMPLE_RATE)
        self.m_source = SourceModuleHnNSF(
            sampling_rate=sampling_rate,
            upsample_scale=self.upsample_scale,
            harmonic_num=nb_harmonics,
            sine_amp=nsf_alpha,
            add_noise_std=nsf_sigma,
            voiced_threshod=nsf_voiced_threshold,
            sinegen_type="1" if sampling_rate == 22050 else "2",
            causal=causal,
            fixed_noise=fixed_noise,
        )
        self.f0_upsamp = nn.Upsample(scale_factor=self.upsample_scale)

        if causal:
            conv_pre = CausalConv1d(in_channels, base_channels, conv_pre_look_right + 1, 1, causal_type="right")
        else:
            conv_pre = nn.Conv1d(in_channels, base_channels, 7, 1, padding=3)
        self.conv_pre = weight_norm(conv_pre)

        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            c_in, c_out = base_channels // 2 ** i, base_channels // 2 ** (i + 1)
            if causal:
                up = CausalConv1dUpsample(c_in, c_out, k, u)
            else:
                up = nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)
            self.ups.append(weight_norm(up))

        # The source STFT (n_fft + 2 channels at hop rate) is brought down to the rate after each upsampling.
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = np.cumprod([1] + upsample_rates[::-1][:-1])[::-1]
        for i, (u, k, d) in enumerate(zip(down_rates, source_resblock_kernel_sizes, source_resblock_dilation_sizes)):
            u, ch = int(u), base_channels // 2 ** (i + 1)
            if u == 1:
                if causal:
                    down = CausalConv1d(n_fft + 2, ch, 1, 1, causal_type="left")
                else:
                    down = nn.Conv1d(n_fft + 2, ch, 1, 1)
            elif causal:
                down = CausalConv1dDownSample(n_fft + 2, ch, u * 2, u)
            else:
                down = nn.Conv1d(n_fft + 2, ch, u * 2, u, padding=u // 2)
            self.source_downs.append(down)
            self.source_resblocks.append(ResBlock(ch, k, d, causal=causal))

        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base_channels // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d, causal=causal))

        if causal:
            conv_post = CausalConv1d(ch, n_fft + 2, 7, 1, causal_type="left")
        else:
            conv_post = nn.Conv1d(ch, n_fft + 2, 7, 1, padding=3)
        self.conv_post = weight_norm(conv_post)
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)
        self.reflection_pad = nn.ReflectionPad1d((1, 0))
        self.stft_window = periodic_hann(n_fft)  # plain attribute: not in the state_dict
        if causal:
            self.conv_pre_look_right = conv_pre_look_right
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
        s, _, _ = self.m_source(s, generator=generator, noise=False)
        return s.transpose(1, 2)

    def _synthesize(self, x: torch.Tensor, s_stft: torch.Tensor) -> torch.Tensor:
        """conv_pre output (B, C, T) and the source STFT (B, n_fft + 2, frames) -> waveform before clamping."""
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
        return self._istft(magnitude, phase)

    def decode(self, x: torch.Tensor, s: torch.Tensor = torch.zeros(1, 1, 0)) -> torch.Tensor:
        """mel (B, C, T) and source (B, 1, T * upsample_scale) -> waveform (B, T * upsample_scale)."""
        s_real, s_imag = self._stft(s.squeeze(1))
        x = self._synthesize(self.conv_pre(x), torch.cat([s_real, s_imag], dim=1))
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


class CausalHiFTGenerator(HiFTGenerator):
    """The CosyVoice3 HiFT: :class:`HiFTGenerator` with one-sided convs, so it can vocode a growing mel chunk by
    chunk, and a source without random draws in eval mode.

    Constructor arguments, sub-module names and public methods follow the official
    ``cosyvoice.hifigan.generator.CausalHiFTGenerator``; ``hift.pt`` loads with ``strict=True``.
    ``conv_pre_look_right``: mel frames of look-ahead of the first conv. The f0 predictor (a
    :class:`~cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor`) looks ``look_ahead`` (3) frames ahead.

    Eval-mode randomness: none. The initial phases and the noise come from the tables the official model draws at
    construction (:class:`CausalSourceNoise`: the values of the official CosyVoice3 model, whatever was built
    before it and without touching the global RNG). In train mode the source draws like the official one
    (``generator`` as in HiFTGenerator).
    """

    causal = True

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
        conv_pre_look_right: int = 4,
        f0_predictor: Optional[nn.Module] = None,
    ):
        nn.Module.__init__(self)
        if sampling_rate == 22050:
            raise ValueError("CausalHiFTGenerator needs the frame-rate sine source (SineGen2): sampling_rate 22050 "
                             "selects the 22.05 kHz one; use 24000 as in cosyvoice3.yaml")
        self._build(in_channels, base_channels, nb_harmonics, sampling_rate, nsf_alpha, nsf_sigma,
                    nsf_voiced_threshold, upsample_rates, upsample_kernel_sizes, istft_params, resblock_kernel_sizes,
                    resblock_dilation_sizes, source_resblock_kernel_sizes, source_resblock_dilation_sizes,
                    lrelu_slope, audio_limit, f0_predictor, conv_pre_look_right)

    @property
    def f0_look_ahead(self) -> int:
        """Mel frames the f0 predictor looks ahead (its first conv's context)."""
        return int(self.f0_predictor.condnet[0].causal_padding)

    def decode(self, x: torch.Tensor, s: torch.Tensor = torch.zeros(1, 1, 0), finalize: bool = True) -> torch.Tensor:
        """mel (B, C, T) and source (B, 1, T * upsample_scale) -> waveform.

        ``finalize=True``: T * upsample_scale samples. ``finalize=False``: the last ``conv_pre_look_right`` frames
        are only look-ahead, and the last frame before them is held back too (its samples still depend on the
        look-ahead through the iSTFT overlap): (T - conv_pre_look_right - 1) * upsample_scale samples, equal to the
        start of a later call on more frames.
        """
        s_real, s_imag = self._stft(s.squeeze(1))
        if finalize:
            x = self.conv_pre(x)
        else:
            look = self.conv_pre_look_right
            x = self.conv_pre(x[:, :, :-look], x[:, :, -look:])
            cut = int(np.prod(self.upsample_rates)) * look  # STFT frames of the look-ahead mel frames
            s_real, s_imag = s_real[:, :, :-cut], s_imag[:, :, :-cut]
        x = self._synthesize(x, torch.cat([s_real, s_imag], dim=1))
        if not finalize:
            x = x[:, :-self.upsample_scale]
        return torch.clamp(x, -self.audio_limit, self.audio_limit)

    def predict_f0(self, speech_feat: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """f0 (B, T or T - f0_look_ahead) in float64, computed as the official inference does.

        Official difference (defined here): the official inference casts ``f0_predictor`` to float64 in place, so
        its parameters (and state_dict) stay float64 after the first call. The same float64 computation runs here
        on float64 copies of the parameters; the module keeps its dtype.
        """
        params = {name: p.to(torch.float64) for name, p in self.f0_predictor.named_parameters()}
        params.update({name: b.to(torch.float64) if b.is_floating_point() else b
                       for name, b in self.f0_predictor.named_buffers()})
        return torch.func.functional_call(self.f0_predictor, params, (speech_feat.to(torch.float64),),
                                          {"finalize": finalize})

    @torch.inference_mode()
    def inference(self, speech_feat: torch.Tensor, finalize: bool = True,
                  generator: GeneratorLike = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """mel (B, C, T) -> (speech (B, n), source (B, 1, m)).

        ``finalize=True`` (the whole mel, or the last chunk): n = m = T * upsample_scale.
        ``finalize=False`` (a growing mel that is not complete): the last ``f0_look_ahead`` frames are look-ahead
        for the f0 and the source, m = (T - f0_look_ahead) * upsample_scale, and the decoder holds back
        ``conv_pre_look_right + 1`` more frames: n = (T - 8) * upsample_scale with the official sizes. Each output is
        the start of the output of a later call on a longer mel.

        Official difference (defined here): where the official code crashes because the mel is too short for a
        conv (no frames with ``finalize=True``; T <= 7 frames with ``finalize=False``) this returns the outputs
        such a length has: no samples, and the source of the frames that have one (none when T <= 3).
        """
        batch, frames = speech_feat.size(0), speech_feat.size(2)
        n_source = frames if finalize else frames - self.f0_look_ahead
        if n_source <= 0:
            return speech_feat.new_zeros(batch, 0), speech_feat.new_zeros(batch, 1, 0)
        f0 = self.predict_f0(speech_feat, finalize=finalize).to(speech_feat.dtype)
        s = self.excitation(f0, generator=generator)
        x = speech_feat if finalize else speech_feat[:, :, :n_source]
        if not finalize and n_source <= self.conv_pre_look_right:
            return speech_feat.new_zeros(batch, 0), s
        return self.decode(x=x, s=s, finalize=finalize), s


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
