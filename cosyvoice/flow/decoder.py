"""The flow-matching estimator: a 1-D U-Net over mel frames conditioned on time, encoder output,
speaker and prompt features.

Besides the two estimators (``ConditionalDecoder`` and the chunk-aware ``CausalConditionalDecoder`` of
CosyVoice2) this module holds their building blocks, written after Matcha-TTS's
``matcha.models.components.decoder`` (``SinusoidalPosEmb``, ``Block1D``, ``ResnetBlock1D``,
``Downsample1D``, ``TimestepEmbedding``, ``Upsample1D``) with the same parameter names.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice.flow.transformer import BasicTransformerBlock, StepCache
from cosyvoice.utils.common import mask_to_bias
from cosyvoice.utils.mask import add_optional_chunk_mask

_ACTS = {"silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU, "relu": nn.ReLU}


class SinusoidalPosEmb(nn.Module):
    """(B,) diffusion times -> (B, dim) [sin | cos] embedding of ``scale * t``."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"SinusoidalPosEmb needs an even dim, got {dim}")
        self.dim = dim

    def forward(self, x: torch.Tensor, scale: float = 1000) -> torch.Tensor:
        if x.ndim < 1:
            x = x.unsqueeze(0)
        half = self.dim // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device).float() * -step)
        angles = scale * x.unsqueeze(1) * freqs.unsqueeze(0)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    """linear_1 -> activation -> linear_2 (-> optional post activation)."""

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu",
                 out_dim: Optional[int] = None, post_act_fn: Optional[str] = None,
                 cond_proj_dim: Optional[int] = None):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.cond_proj = nn.Linear(cond_proj_dim, in_channels, bias=False) if cond_proj_dim is not None else None
        self.act = _activation(act_fn)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim if out_dim is not None else time_embed_dim)
        self.post_act = _activation(post_act_fn) if post_act_fn is not None else None

    def forward(self, sample: torch.Tensor, condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        if condition is not None:
            sample = sample + self.cond_proj(condition)
        sample = self.linear_2(self.act(self.linear_1(sample)))
        return self.post_act(sample) if self.post_act is not None else sample


def _activation(name: str) -> nn.Module:
    if name not in _ACTS:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(_ACTS)})")
    return _ACTS[name]()


def _call(module: nn.Module, x: torch.Tensor, cache: Optional[StepCache]) -> torch.Tensor:
    """``module(x)``, or with ``cache`` (incremental evaluation: only causal layers take one)."""
    return module(x) if cache is None else module(x, cache=cache)


class Block1D(nn.Module):
    """Masked conv(3) -> GroupNorm -> Mish on (B, C, T). ``cache``: see :class:`CausalConv1d` (the conv is the
    only layer that looks across frames)."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Optional[StepCache] = None) -> torch.Tensor:
        if cache is None:
            return self.block(x * mask) * mask
        conv, *rest = self.block
        x = conv(x * mask, cache=cache)
        for module in rest:
            x = module(x)
        return x * mask


class ResnetBlock1D(nn.Module):
    """Two ``Block1D`` with the time embedding added in between, plus a 1x1 residual projection."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = self.make_block(dim, dim_out, groups)
        self.block2 = self.make_block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def make_block(self, dim: int, dim_out: int, groups: int) -> nn.Module:
        return Block1D(dim, dim_out, groups=groups)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor,
                cache: Optional[StepCache] = None) -> torch.Tensor:
        h = self.block1(x, mask, cache=cache)
        h = h + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask, cache=cache)
        return h + self.res_conv(x * mask)


class Downsample1D(nn.Module):
    """Strided conv(3, stride 2): halves T."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1D(nn.Module):
    """Doubles T: a transposed conv(4, stride 2), or nearest interpolation with an optional conv(3)."""

    def __init__(self, channels: int, use_conv: bool = False, use_conv_transpose: bool = True,
                 out_channels: Optional[int] = None, name: str = "conv"):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_conv_transpose = use_conv_transpose
        self.name = name
        self.conv = None
        if use_conv_transpose:
            self.conv = nn.ConvTranspose1d(channels, self.out_channels, 4, 2, 1)
        elif use_conv:
            self.conv = nn.Conv1d(channels, self.out_channels, 3, padding=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[1] != self.channels:
            raise ValueError(f"Upsample1D: input has {inputs.shape[1]} channels, expected {self.channels}")
        if self.use_conv_transpose:
            return self.conv(inputs)
        out = F.interpolate(inputs, scale_factor=2.0, mode="nearest")
        return self.conv(out) if self.use_conv else out


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int):
        super().__init__()
        self.dim0 = dim0
        self.dim1 = dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.transpose(x, self.dim0, self.dim1)


class CausalConv1d(nn.Conv1d):
    """Stride-1 conv that pads kernel_size-1 zeros on the left only, so output t sees inputs <= t.

    ``cache`` (incremental evaluation): ``x`` holds new frames after earlier ones; the cache gives their last
    ``causal_padding`` inputs in place of the zeros, and is updated with the new frames' last inputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        if stride != 1:
            raise ValueError(f"CausalConv1d supports stride 1 only, got {stride}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self.causal_padding = kernel_size - 1

    def forward(self, x: torch.Tensor, cache: Optional[StepCache] = None) -> torch.Tensor:
        if cache is None:
            return super().forward(F.pad(x, (self.causal_padding, 0), value=0.0))
        ctx = cache.get(self)
        if ctx is None:
            ctx = x.new_zeros(x.size(0), x.size(1), self.causal_padding)
        full = torch.cat([ctx, x], dim=2)
        cache[self] = full[:, :, full.size(2) - self.causal_padding:]
        return super().forward(full)


class CausalBlock1D(Block1D):
    """Masked causal conv(3) -> LayerNorm over channels -> Mish."""

    def __init__(self, dim: int, dim_out: int):
        nn.Module.__init__(self)
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3), Transpose(1, 2), nn.LayerNorm(dim_out), Transpose(1, 2), nn.Mish(),
        )


class CausalResnetBlock1D(ResnetBlock1D):
    def make_block(self, dim: int, dim_out: int, groups: int) -> nn.Module:
        return CausalBlock1D(dim, dim_out)


class ConditionalDecoder(nn.Module):
    """U-Net estimator of the flow's vector field.

    Input channels = x, mu, speaker and cond stacked (``in_channels`` in total); ``channels`` lists the
    widths of the down blocks (each: ResNet block, ``n_blocks`` transformer blocks, downsample), then
    ``num_mid_blocks`` mid blocks and the mirrored up blocks with skip connections.
    """

    causal = False

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int] = (256, 256),
                 dropout: float = 0.05, attention_head_dim: int = 64, n_blocks: int = 1,
                 num_mid_blocks: int = 2, num_heads: int = 4, act_fn: str = "snake"):
        super().__init__()
        self._build(in_channels, out_channels, channels, dropout, attention_head_dim, n_blocks,
                    num_mid_blocks, num_heads, act_fn)
        self.static_chunk_size = 0
        self.num_decoding_left_chunks = -1

    # --- construction -------------------------------------------------------------------------------
    def _resnet(self, dim: int, dim_out: int, time_emb_dim: int) -> nn.Module:
        return (CausalResnetBlock1D if self.causal else ResnetBlock1D)(dim, dim_out, time_emb_dim)

    def _same_length_conv(self, dim: int) -> nn.Module:
        return CausalConv1d(dim, dim, 3) if self.causal else nn.Conv1d(dim, dim, 3, padding=1)

    def _build(self, in_channels, out_channels, channels, dropout, attention_head_dim, n_blocks,
               num_mid_blocks, num_heads, act_fn) -> None:
        channels = tuple(channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.time_embeddings = SinusoidalPosEmb(in_channels)
        time_dim = channels[0] * 4
        self.time_mlp = TimestepEmbedding(in_channels=in_channels, time_embed_dim=time_dim, act_fn="silu")

        def transformers(dim: int) -> nn.ModuleList:
            return nn.ModuleList([
                BasicTransformerBlock(dim=dim, num_attention_heads=num_heads, attention_head_dim=attention_head_dim,
                                      dropout=dropout, activation_fn=act_fn)
                for _ in range(n_blocks)
            ])

        self.down_blocks = nn.ModuleList([])
        self.mid_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])
        width = in_channels
        for i, out in enumerate(channels):
            last = i == len(channels) - 1
            down = self._same_length_conv(out) if last else Downsample1D(out)
            self.down_blocks.append(nn.ModuleList([self._resnet(width, out, time_dim), transformers(out), down]))
            width = out
        for _ in range(num_mid_blocks):
            self.mid_blocks.append(nn.ModuleList([self._resnet(width, width, time_dim), transformers(width)]))
        ups = channels[::-1] + (channels[0],)
        for i in range(len(ups) - 1):
            last = i == len(ups) - 2
            out = ups[i + 1]
            up = self._same_length_conv(out) if last else Upsample1D(out, use_conv_transpose=True)
            self.up_blocks.append(nn.ModuleList([self._resnet(ups[i] * 2, out, time_dim), transformers(out), up]))
        self.final_block = CausalBlock1D(ups[-1], ups[-1]) if self.causal else Block1D(ups[-1], ups[-1])
        self.final_proj = nn.Conv1d(ups[-1], out_channels, 1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    # --- forward -------------------------------------------------------------------------------------
    def supports_chunk_cache(self) -> bool:
        """True when ``forward(..., cache=...)`` is exact: chunk masks on, every conv causal and length-preserving
        (one resolution: a single entry in ``channels``), self-attention only. Never for this non-causal U-Net."""
        if not self.causal or self.static_chunk_size <= 0:
            return False
        for _, _, sampler in list(self.down_blocks) + list(self.up_blocks):
            if not isinstance(sampler, CausalConv1d):
                return False
        for module in self.modules():
            if isinstance(module, CausalConv1d) and (module.dilation != (1,) or module.stride != (1,)):
                return False
            if isinstance(module, BasicTransformerBlock) and (module.attn2 is not None or module.only_cross_attention):
                return False
        return True

    def chunk_bias(self, offset: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, n, offset + n) additive bias of frames offset..offset+n-1 over frames 0..offset+n-1: each sees
        every frame up to the end of its static chunk (the streaming mask, rows offset..)."""
        chunk = self.static_chunk_size
        rows = torch.arange(offset, offset + n, device=device)
        ends = (torch.div(rows, chunk, rounding_mode="trunc") + 1) * chunk
        keep = torch.arange(offset + n, device=device).unsqueeze(0) < ends.unsqueeze(1)
        return mask_to_bias(keep, dtype).view(1, 1, n, offset + n)

    def _attention_bias(self, x: torch.Tensor, mask: torch.Tensor, streaming: bool) -> Optional[torch.Tensor]:
        """Additive bias for x (B, T, C): key padding, plus static chunks when streaming; None when nothing is
        masked (an all-zero bias gives the same attention, only slower)."""
        chunk = self.static_chunk_size if streaming else 0
        if chunk <= 0 and bool(mask.bool().all()):
            return None
        keep = add_optional_chunk_mask(x, mask.bool(), False, False, 0, chunk, -1)
        return mask_to_bias(keep, x.dtype)

    def _run_transformers(self, blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                          streaming: bool, biases: dict, cache: Optional[StepCache], offset: int) -> torch.Tensor:
        """The transformer blocks on x (B, C, T). ``biases`` memoizes the attention bias per (mask, dtype) within
        one forward (every level of a one-resolution U-Net shares the same mask)."""
        x = x.transpose(1, 2).contiguous()
        key = (id(mask), x.dtype)
        if key not in biases:
            biases[key] = (self.chunk_bias(offset, x.size(1), x.device, x.dtype) if cache is not None
                           else self._attention_bias(x, mask, streaming))
        for block in blocks:
            x = block(hidden_states=x, attention_mask=biases[key], timestep=t, cache=cache)
        return x.transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                streaming: bool = False, cache: Optional[StepCache] = None, offset: int = 0) -> torch.Tensor:
        """x, mu, cond (B, n_mels, T); mask (B, 1, T); t (B,); spks (B, spk_dim) -> (B, out_channels, T).

        ``streaming`` limits attention to static chunks of ``static_chunk_size`` frames (causal decoder).
        ``cache`` (incremental streaming; needs :meth:`supports_chunk_cache` and an all-ones mask): the frames are
        offset..offset+T-1 of a stream whose earlier frames left their per-layer state in ``cache`` (empty when
        offset is 0), which is updated in place; exact when ``offset`` is a multiple of ``static_chunk_size``.
        """
        t = self.time_mlp(self.time_embeddings(t).to(t.dtype))
        parts = [x, mu]
        if spks is not None:
            parts.append(spks.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        if cond is not None:
            parts.append(cond)
        x = torch.cat(parts, dim=1)

        skips: List[torch.Tensor] = []
        masks = [mask]
        biases: dict = {}
        for resnet, transformers, downsample in self.down_blocks:
            mask_down = masks[-1]
            x = resnet(x, mask_down, t, cache=cache)
            x = self._run_transformers(transformers, x, mask_down, t, streaming, biases, cache, offset)
            skips.append(x)
            x = _call(downsample, x * mask_down, cache)
            masks.append(mask_down[:, :, ::2])
        masks = masks[:-1]
        mask_mid = masks[-1]
        for resnet, transformers in self.mid_blocks:
            x = resnet(x, mask_mid, t, cache=cache)
            x = self._run_transformers(transformers, x, mask_mid, t, streaming, biases, cache, offset)
        for resnet, transformers, upsample in self.up_blocks:
            mask_up = masks.pop()
            skip = skips.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = resnet(x, mask_up, t, cache=cache)
            x = self._run_transformers(transformers, x, mask_up, t, streaming, biases, cache, offset)
            x = _call(upsample, x * mask_up, cache)
        x = self.final_block(x, mask_up, cache=cache)
        return self.final_proj(x * mask_up) * mask


class CausalConditionalDecoder(ConditionalDecoder):
    """Chunk-aware causal estimator of CosyVoice2: causal convs everywhere, and with ``streaming=True``
    attention limited to static chunks of ``static_chunk_size`` frames (all left chunks visible)."""

    causal = True

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int] = (256, 256),
                 dropout: float = 0.05, attention_head_dim: int = 64, n_blocks: int = 1,
                 num_mid_blocks: int = 2, num_heads: int = 4, act_fn: str = "snake",
                 static_chunk_size: int = 50, num_decoding_left_chunks: int = 2):
        nn.Module.__init__(self)
        self.static_chunk_size = static_chunk_size
        # Stored for interface compatibility; like the official decoder, every left chunk stays visible.
        self.num_decoding_left_chunks = num_decoding_left_chunks
        self._build(in_channels, out_channels, channels, dropout, attention_head_dim, n_blocks,
                    num_mid_blocks, num_heads, act_fn)

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: Optional[torch.Tensor],
                      cond: Optional[torch.Tensor], offset: int, cache: StepCache) -> torch.Tensor:
        """``forward(..., streaming=True)`` for frames offset..offset+n-1 of a stream (all-ones mask), given and
        updating the per-layer ``cache`` of the earlier frames (see :meth:`forward`)."""
        mask = torch.ones(x.size(0), 1, x.size(2), device=x.device, dtype=x.dtype)
        return self.forward(x, mask, mu, t, spks, cond, streaming=True, cache=cache, offset=offset)
