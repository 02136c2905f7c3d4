"""The flow's token encoder: conformer blocks, a 2x upsample, then more conformer blocks.

Chunk-aware: with ``streaming=True`` attention is limited to static chunks (``static_chunk_size`` tokens
before the upsample, ``static_chunk_size * stride`` frames after), so a streaming decode sees the same
left context as training. A ``PreLookaheadLayer`` gives each token a fixed look-ahead of a few tokens.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from cosyvoice.transformer.activation import Swish
from cosyvoice.transformer.attention import MultiHeadedAttention, RelPositionMultiHeadedAttention
from cosyvoice.transformer.convolution import ConvolutionModule
from cosyvoice.transformer.embedding import (EspnetRelPositionalEncoding, NoPositionalEncoding,
                                             PositionalEncoding, RelPositionalEncoding)
from cosyvoice.transformer.encoder_layer import ConformerEncoderLayer
from cosyvoice.transformer.positionwise_feed_forward import PositionwiseFeedForward
from cosyvoice.transformer.subsampling import LinearNoSubsampling
from cosyvoice.utils.mask import add_optional_chunk_mask, make_pad_mask

SUBSAMPLE_CLASSES = {"linear": LinearNoSubsampling}
POS_ENC_CLASSES = {
    "abs_pos": PositionalEncoding,
    "embed": PositionalEncoding,
    "rel_pos": RelPositionalEncoding,
    "rel_pos_espnet": EspnetRelPositionalEncoding,
    "no_pos": NoPositionalEncoding,
}
ATTENTION_CLASSES = {"selfattn": MultiHeadedAttention, "rel_selfattn": RelPositionMultiHeadedAttention}
ACTIVATION_CLASSES = {
    "hardtanh": nn.Hardtanh,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "swish": getattr(nn, "SiLU", Swish),
    "gelu": nn.GELU,
}
NUM_UP_BLOCKS = 4  # conformer blocks after the upsample (fixed, as in CosyVoice2)
PRE_LOOKAHEAD_LEN = 3  # tokens of look-ahead (fixed, as in CosyVoice2)
UPSAMPLE_STRIDE = 2  # frames per token


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"UpsampleConformerEncoder: unknown {what} {name!r} (known: {', '.join(table)})")
    return table[name]


class Upsample1D(nn.Module):
    """Nearest-neighbour upsample by ``stride`` on (B, C, T), then a causal conv of width 2*stride+1."""

    def __init__(self, channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv = nn.Conv1d(channels, out_channels, stride * 2 + 1, stride=1, padding=0)

    def forward(self, inputs: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = F.interpolate(inputs, scale_factor=float(self.stride), mode="nearest")
        out = F.pad(out, (self.stride * 2, 0), value=0.0)
        return self.conv(out), input_lengths * self.stride


class PreLookaheadLayer(nn.Module):
    """Residual look-ahead block on (B, T, C): conv over each step and the next ``pre_lookahead_len``
    steps (zeros past the end, or the given ``context`` tokens), leaky ReLU, then a causal width-3 conv."""

    def __init__(self, in_channels: int, channels: int, pre_lookahead_len: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(in_channels, channels, kernel_size=pre_lookahead_len + 1, stride=1, padding=0)
        self.conv2 = nn.Conv1d(channels, in_channels, kernel_size=3, stride=1, padding=0)

    def forward(self, inputs: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """inputs (B, T, C); context (B, pre_lookahead_len, C) future steps at inference, or None/empty."""
        out = inputs.transpose(1, 2)
        if context is None or context.size(1) == 0:
            out = F.pad(out, (0, self.pre_lookahead_len), value=0.0)
        else:
            if self.training:
                raise RuntimeError("PreLookaheadLayer: look-ahead context is for inference; call .eval() first")
            if context.size(1) != self.pre_lookahead_len:
                raise ValueError(f"PreLookaheadLayer: context has {context.size(1)} steps, "
                                 f"expected {self.pre_lookahead_len}")
            out = torch.cat([out, context.transpose(1, 2)], dim=2)
        out = F.leaky_relu(self.conv1(out))
        out = self.conv2(F.pad(out, (self.conv2.kernel_size[0] - 1, 0), value=0.0))
        return out.transpose(1, 2).contiguous() + inputs  # contiguous as the official: the next GEMMs see its layout


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings (B, T, input_size) -> frame features (B, 2T, output_size) and their mask (B, 1, 2T).

    Constructor arguments are those of the official class; ``output_size`` sets every width (the
    look-ahead layer and the upsample included). ``num_blocks`` conformer blocks run before the
    upsample and 4 after it.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: str = "conv2d",
        pos_enc_layer_type: str = "rel_pos",
        normalize_before: bool = True,
        static_chunk_size: int = 0,
        use_dynamic_chunk: bool = False,
        global_cmvn: Optional[nn.Module] = None,
        use_dynamic_left_chunk: bool = False,
        positionwise_conv_kernel_size: int = 1,
        macaron_style: bool = True,
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        use_cnn_module: bool = True,
        cnn_module_kernel: int = 15,
        causal: bool = False,
        cnn_module_norm: str = "batch_norm",
        key_bias: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self._output_size = output_size
        self.global_cmvn = global_cmvn
        subsample = _pick(SUBSAMPLE_CLASSES, input_layer, "input_layer")
        pos_enc = _pick(POS_ENC_CLASSES, pos_enc_layer_type, "pos_enc_layer_type")
        attention = _pick(ATTENTION_CLASSES, selfattention_layer_type, "selfattention_layer_type")
        activation = _pick(ACTIVATION_CLASSES, activation_type, "activation_type")()

        def make_layers(n: int) -> nn.ModuleList:
            def ffn():
                return PositionwiseFeedForward(output_size, linear_units, dropout_rate, activation)

            return nn.ModuleList([
                ConformerEncoderLayer(
                    output_size,
                    attention(attention_heads, output_size, attention_dropout_rate, key_bias),
                    ffn(),
                    ffn() if macaron_style else None,
                    ConvolutionModule(output_size, cnn_module_kernel, activation, cnn_module_norm, causal)
                    if use_cnn_module else None,
                    dropout_rate,
                    normalize_before,
                ) for _ in range(n)
            ])

        self.embed = subsample(input_size, output_size, dropout_rate, pos_enc(output_size, positional_dropout_rate))
        self.normalize_before = normalize_before
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)
        self.static_chunk_size = static_chunk_size
        self.use_dynamic_chunk = use_dynamic_chunk
        self.use_dynamic_left_chunk = use_dynamic_left_chunk
        self.gradient_checkpointing = gradient_checkpointing
        self.pre_lookahead_layer = PreLookaheadLayer(output_size, output_size, pre_lookahead_len=PRE_LOOKAHEAD_LEN)
        self.encoders = make_layers(num_blocks)
        self.up_layer = Upsample1D(output_size, output_size, stride=UPSAMPLE_STRIDE)
        self.up_embed = subsample(input_size, output_size, dropout_rate,
                                  pos_enc(output_size, positional_dropout_rate))
        self.up_encoders = make_layers(NUM_UP_BLOCKS)

    def output_size(self) -> int:
        return self._output_size

    def forward(
        self,
        xs: torch.Tensor,
        xs_lens: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        decoding_chunk_size: int = 0,
        num_decoding_left_chunks: int = -1,
        streaming: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """xs (B, T, input_size), xs_lens (B,) -> (B, 2T, output_size) and the bool mask (B, 1, 2T).

        ``context``: embeddings of the look-ahead tokens after ``xs`` (inference of a non-final chunk).
        ``streaming``: static chunk masks instead of full context. ``decoding_chunk_size`` and
        ``num_decoding_left_chunks`` are accepted for interface compatibility; like the official code,
        the chunk masks come from ``static_chunk_size`` alone.
        """
        masks = ~make_pad_mask(xs_lens, xs.size(1)).unsqueeze(1)
        if self.global_cmvn is not None:
            xs = self.global_cmvn(xs)
        xs, pos_emb, masks = self.embed(xs, masks)
        if context is not None and context.size(1) != 0:
            if self.training:
                raise RuntimeError("UpsampleConformerEncoder: look-ahead context is for inference; call .eval()")
            context_masks = torch.ones(1, 1, context.size(1), dtype=torch.bool, device=masks.device)
            context, _, _ = self.embed(context, context_masks, offset=xs.size(1))
        chunk = self.static_chunk_size if streaming else 0
        chunk_masks = add_optional_chunk_mask(xs, masks, False, False, 0, chunk, -1)
        xs = self.pre_lookahead_layer(xs, context=context)
        xs = self.forward_layers(xs, chunk_masks, pos_emb, masks)

        # contiguous as the official code keeps them: a GEMM over a transposed view can round differently (1e-6
        # for utterances of a few tokens)
        xs, xs_lens = self.up_layer(xs.transpose(1, 2).contiguous(), xs_lens)
        xs = xs.transpose(1, 2).contiguous()
        masks = ~make_pad_mask(xs_lens, xs.size(1)).unsqueeze(1)
        xs, pos_emb, masks = self.up_embed(xs, masks)
        chunk = self.static_chunk_size * self.up_layer.stride if streaming else 0
        chunk_masks = add_optional_chunk_mask(xs, masks, False, False, 0, chunk, -1)
        xs = self.forward_up_layers(xs, chunk_masks, pos_emb, masks)
        if self.normalize_before:
            xs = self.after_norm(xs)
        return xs, masks

    def forward_layers(self, xs: torch.Tensor, chunk_masks: torch.Tensor, pos_emb: torch.Tensor,
                       mask_pad: torch.Tensor) -> torch.Tensor:
        for layer in self.encoders:
            xs, chunk_masks, _, _ = layer(xs, chunk_masks, pos_emb, mask_pad)
        return xs

    def forward_up_layers(self, xs: torch.Tensor, chunk_masks: torch.Tensor, pos_emb: torch.Tensor,
                          mask_pad: torch.Tensor) -> torch.Tensor:
        for layer in self.up_encoders:
            xs, chunk_masks, _, _ = layer(xs, chunk_masks, pos_emb, mask_pad)
        return xs
