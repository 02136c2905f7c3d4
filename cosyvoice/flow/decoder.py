"""The flow-matching estimator: a 1-D U-Net over mel frames conditioned on time, encoder output,
speaker and prompt features.

Besides the two estimators (``ConditionalDecoder`` and the chunk-aware ``CausalConditionalDecoder`` of
CosyVoice2) this module holds their building blocks, written after Matcha-TTS's
``matcha.models.components.decoder`` (``SinusoidalPosEmb``, ``Block1D``, ``ResnetBlock1D``,
``Downsample1D``, ``TimestepEmbedding``, ``Upsample1D``) with the same parameter names.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice.flow.transformer import BasicTransformerBlock
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


class Block1D(nn.Module):
    """Masked conv(3) -> GroupNorm -> Mish on (B, C, T)."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask)
        h = h + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask)
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
    """Stride-1 conv that pads kernel_size-1 zeros on the left only, so output t sees inputs <= t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        if stride != 1:
            raise ValueError(f"CausalConv1d supports stride 1 only, got {stride}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self.causal_padding = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.causal_padding, 0), value=0.0))


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
    def _attention_bias(self, x: torch.Tensor, mask: torch.Tensor, streaming: bool) -> Optional[torch.Tensor]:
        """Additive bias for x (B, T, C): key padding, plus static chunks when streaming; None when nothing is
        masked (an all-zero bias gives the same attention, only slower)."""
        chunk = self.static_chunk_size if streaming else 0
        if chunk <= 0 and bool(mask.bool().all()):
            return None
        keep = add_optional_chunk_mask(x, mask.bool(), False, False, 0, chunk, -1)
        return mask_to_bias(keep, x.dtype)

    def _run_transformers(self, blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                          streaming: bool, biases: Optional[dict] = None) -> torch.Tensor:
        """The transformer blocks on x (B, C, T). ``biases`` memoizes the attention bias per (mask, dtype) within
        one forward (every level of a one-resolution U-Net shares the same mask)."""
        x = x.transpose(1, 2).contiguous()
        key = (id(mask), x.dtype)
        if biases is not None and key in biases:
            bias = biases[key]
        else:
            bias = self._attention_bias(x, mask, streaming)
            if biases is not None:
                biases[key] = bias
        for block in blocks:
            x = block(hidden_states=x, attention_mask=bias, timestep=t)
        return x.transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                streaming: bool = False) -> torch.Tensor:
        """x, mu, cond (B, n_mels, T); mask (B, 1, T); t (B,); spks (B, spk_dim) -> (B, out_channels, T).

        ``streaming`` limits attention to static chunks of ``static_chunk_size`` frames (causal decoder).
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
            x = resnet(x, mask_down, t)
            x = self._run_transformers(transformers, x, mask_down, t, streaming, biases)
            skips.append(x)
            x = downsample(x * mask_down)
            masks.append(mask_down[:, :, ::2])
        masks = masks[:-1]
        mask_mid = masks[-1]
        for resnet, transformers in self.mid_blocks:
            x = resnet(x, mask_mid, t)
            x = self._run_transformers(transformers, x, mask_mid, t, streaming, biases)
        for resnet, transformers, upsample in self.up_blocks:
            mask_up = masks.pop()
            skip = skips.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = resnet(x, mask_up, t)
            x = self._run_transformers(transformers, x, mask_up, t, streaming, biases)
            x = upsample(x * mask_up)
        x = self.final_block(x, mask_up)
        return self.final_proj(x * mask_up) * mask


# --- incremental (streaming) evaluation ------------------------------------------------------------------------
# With chunk-causal attention and causal convs, frames before a chunk boundary never see later frames, so a streaming
# caller can evaluate only the new frames given, per layer, the keys/values of the earlier frames (attention) and
# their last ``causal_padding`` inputs (convs). ``StepCache`` maps each such layer (the module object) to that state.
StepCache = Dict[nn.Module, object]


def _causal_conv_step(conv: "CausalConv1d", x: torch.Tensor, cache: StepCache) -> torch.Tensor:
    """``conv`` on new frames ``x`` (B, C, n) after the frames whose last inputs are in ``cache``."""
    ctx = cache.get(conv)
    if ctx is None:
        ctx = x.new_zeros(x.size(0), x.size(1), conv.causal_padding)
    full = torch.cat([ctx, x], dim=2)
    cache[conv] = full[:, :, full.size(2) - conv.causal_padding:]
    return F.conv1d(full, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def _causal_block_step(block: "CausalBlock1D", x: torch.Tensor, cache: StepCache) -> torch.Tensor:
    conv, *rest = block.block
    x = _causal_conv_step(conv, x, cache)
    for module in rest:
        x = module(x)
    return x


def _resnet_step(resnet: ResnetBlock1D, x: torch.Tensor, t: torch.Tensor, cache: StepCache) -> torch.Tensor:
    h = _causal_block_step(resnet.block1, x, cache)
    h = h + resnet.mlp(t).unsqueeze(-1)
    h = _causal_block_step(resnet.block2, h, cache)
    return h + resnet.res_conv(x)


def _attention_step(attn, x: torch.Tensor, bias: torch.Tensor, cache: StepCache) -> torch.Tensor:
    """Self-attention of new frames x (B, n, C) over the cached keys/values and their own."""
    query, key, value = attn._split(attn.to_q(x)), attn._split(attn.to_k(x)), attn._split(attn.to_v(x))
    past = cache.get(attn)
    if past is not None:
        key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
    cache[attn] = (key, value)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0)
    out = out.transpose(1, 2).reshape(x.size(0), -1, attn.heads * attn.dim_head).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


def _transformer_step(block, x: torch.Tensor, bias: torch.Tensor, cache: StepCache) -> torch.Tensor:
    x = _attention_step(block.attn1, block.norm1(x), bias, cache) + x
    return block.ff(block.norm3(x)) + x


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

    # --- incremental streaming -------------------------------------------------------------------------------
    def supports_chunk_cache(self) -> bool:
        """True when :meth:`forward_chunk` is exact: chunk masks on, every conv causal and length-preserving (one
        resolution: a single entry in ``channels``), self-attention only."""
        if self.static_chunk_size <= 0:
            return False
        for _, _, sampler in list(self.down_blocks) + list(self.up_blocks):
            if not isinstance(sampler, CausalConv1d) or sampler.dilation != (1,) or sampler.stride != (1,):
                return False
        for module in self.modules():
            if isinstance(module, CausalConv1d) and (module.dilation != (1,) or module.stride != (1,)):
                return False
            if isinstance(module, BasicTransformerBlock) and (module.attn2 is not None or module.only_cross_attention):
                return False
        return True

    def chunk_bias(self, offset: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, n, offset + n) additive bias of frames offset..offset+n-1 over frames 0..offset+n-1: each sees
        every frame up to the end of its static chunk (the streaming mask of :meth:`forward`, rows offset..)."""
        chunk = self.static_chunk_size
        rows = torch.arange(offset, offset + n, device=device)
        ends = (torch.div(rows, chunk, rounding_mode="trunc") + 1) * chunk
        keep = torch.arange(offset + n, device=device).unsqueeze(0) < ends.unsqueeze(1)
        return mask_to_bias(keep, dtype).view(1, 1, n, offset + n)

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: Optional[torch.Tensor],
                      cond: Optional[torch.Tensor], offset: int, cache: StepCache) -> torch.Tensor:
        """``forward(..., streaming=True)`` with an all-ones mask, for frames offset..offset+n-1 only.

        x, mu, cond (B, n_mels, n) are the inputs of those frames; ``cache`` holds the state left by the calls for
        frames 0..offset-1 (empty when offset is 0) and is updated in place. Exact when ``offset`` is a multiple of
        ``static_chunk_size`` (earlier frames are then final) and :meth:`supports_chunk_cache` holds.
        """
        n = x.size(2)
        t = self.time_mlp(self.time_embeddings(t).to(t.dtype))
        parts = [x, mu]
        if spks is not None:
            parts.append(spks.unsqueeze(-1).expand(-1, -1, n))
        if cond is not None:
            parts.append(cond)
        x = torch.cat(parts, dim=1)
        biases: Dict[torch.dtype, torch.Tensor] = {}

        def transformers(blocks: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
            h = h.transpose(1, 2).contiguous()
            if h.dtype not in biases:
                biases[h.dtype] = self.chunk_bias(offset, n, h.device, h.dtype)
            for block in blocks:
                h = _transformer_step(block, h, biases[h.dtype], cache)
            return h.transpose(1, 2).contiguous()

        skips: List[torch.Tensor] = []
        for resnet, blocks, downsample in self.down_blocks:
            x = transformers(blocks, _resnet_step(resnet, x, t, cache))
            skips.append(x)
            x = _causal_conv_step(downsample, x, cache)
        for resnet, blocks in self.mid_blocks:
            x = transformers(blocks, _resnet_step(resnet, x, t, cache))
        for resnet, blocks, upsample in self.up_blocks:
            skip = skips.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = transformers(blocks, _resnet_step(resnet, x, t, cache))
            x = _causal_conv_step(upsample, x, cache)
        x = _causal_block_step(self.final_block, x, cache)
        return self.final_proj(x)
