"""The transformer block of the flow estimator (the Matcha-TTS ``BasicTransformerBlock``) and the
attention and feed-forward pieces it is made of (as in diffusers: ``Attention``, ``FeedForward`` and the
GELU-family projections). Parameter names follow those libraries so official checkpoints load as-is.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

# Incremental (streaming) evaluation: per layer (the module object), the state the next frames need from the earlier
# ones: keys/values of an attention, the last inputs of a causal conv (cosyvoice.flow.decoder).
StepCache = Dict[nn.Module, object]


class GELU(nn.Module):
    """Linear projection followed by GELU (``approximate``: 'none' or 'tanh')."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none", bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)
        self.approximate = approximate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(hidden_states), approximate=self.approximate)


class GEGLU(nn.Module):
    """Gated GELU: project to 2*dim_out, return first half * gelu(second half)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return value * F.gelu(gate)


class ApproximateGELU(nn.Module):
    """Linear projection followed by the sigmoid approximation x * sigmoid(1.702 x)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {
    "gelu": lambda d, i: GELU(d, i),
    "gelu-approximate": lambda d, i: GELU(d, i, approximate="tanh"),
    "geglu": lambda d, i: GEGLU(d, i),
    "geglu-approximate": lambda d, i: ApproximateGELU(d, i),
}


class FeedForward(nn.Module):
    """net = [activation projection dim -> mult*dim, dropout, linear -> dim_out, (dropout)]."""

    def __init__(self, dim: int, dim_out: Optional[int] = None, mult: int = 4, dropout: float = 0.0,
                 activation_fn: str = "geglu", final_dropout: bool = False):
        super().__init__()
        if activation_fn not in _ACTIVATIONS:
            raise ValueError(f"FeedForward: unknown activation_fn {activation_fn!r} "
                             f"(known: {', '.join(_ACTIVATIONS)})")
        inner_dim = int(dim * mult)
        layers = [_ACTIVATIONS[activation_fn](dim, inner_dim), nn.Dropout(dropout),
                  nn.Linear(inner_dim, dim_out if dim_out is not None else dim)]
        if final_dropout:
            layers.append(nn.Dropout(dropout))
        self.net = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states


class Attention(nn.Module):
    """Multi-head attention with ``to_q``/``to_k``/``to_v``/``to_out`` projections (diffusers layout).

    ``attention_mask`` is an additive bias broadcastable to (B, heads, T_q, T_k): shape (B, T_k),
    (B, T_q, T_k) or 4-d. Scores are scaled by 1/sqrt(dim_head).
    ``cache`` (self-attention only): the queries are new frames after those whose keys/values the cache holds;
    they attend to both, and the cache is extended with theirs.
    """

    def __init__(self, query_dim: int, cross_attention_dim: Optional[int] = None, heads: int = 8,
                 dim_head: int = 64, dropout: float = 0.0, bias: bool = False, upcast_attention: bool = False,
                 out_bias: bool = True):
        super().__init__()
        inner_dim = dim_head * heads
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.upcast_attention = upcast_attention
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, cache: Optional[StepCache] = None,
                **unused: Any) -> torch.Tensor:
        batch = hidden_states.size(0)
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = self._split(self.to_q(hidden_states))
        key = self._split(self.to_k(source))
        value = self._split(self.to_v(source))
        if cache is not None:
            if encoder_hidden_states is not None:
                raise ValueError("Attention: a step cache is for self-attention only")
            past = cache.get(self)
            if past is not None:
                key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
            cache[self] = (key, value)
        if attention_mask is not None and attention_mask.dim() < 4:
            attention_mask = attention_mask.reshape(batch, 1, -1, attention_mask.size(-1))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * self.dim_head).to(query.dtype)
        return self.to_out[1](self.to_out[0](out))


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional second (cross or self) attention, feed-forward.

    Only the plain LayerNorm variant is provided (``norm_type='layer_norm'``, no ada-norm), which is
    what the CosyVoice2 flow uses.
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, dropout: float = 0.0,
                 cross_attention_dim: Optional[int] = None, activation_fn: str = "geglu",
                 num_embeds_ada_norm: Optional[int] = None, attention_bias: bool = False,
                 only_cross_attention: bool = False, double_self_attention: bool = False,
                 upcast_attention: bool = False, norm_elementwise_affine: bool = True,
                 norm_type: str = "layer_norm", final_dropout: bool = False):
        super().__init__()
        if norm_type != "layer_norm" or num_embeds_ada_norm is not None:
            raise NotImplementedError(f"BasicTransformerBlock: only norm_type='layer_norm' without "
                                      f"num_embeds_ada_norm is supported, got {norm_type!r}")
        self.only_cross_attention = only_cross_attention
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
        self.attn1 = Attention(dim, cross_attention_dim=cross_attention_dim if only_cross_attention else None,
                               heads=num_attention_heads, dim_head=attention_head_dim, dropout=dropout,
                               bias=attention_bias, upcast_attention=upcast_attention)
        if cross_attention_dim is not None or double_self_attention:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
            self.attn2 = Attention(dim, cross_attention_dim=None if double_self_attention else cross_attention_dim,
                                   heads=num_attention_heads, dim_head=attention_head_dim, dropout=dropout,
                                   bias=attention_bias, upcast_attention=upcast_attention)
        else:
            self.norm2 = None
            self.attn2 = None
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn, final_dropout=final_dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None, timestep: Optional[torch.Tensor] = None,
                cross_attention_kwargs: Optional[Dict[str, Any]] = None,
                class_labels: Optional[torch.Tensor] = None, cache: Optional[StepCache] = None) -> torch.Tensor:
        """hidden_states (B, T, dim); attention_mask: additive bias (B, T, T) or (B, T). ``timestep`` and
        ``class_labels`` are accepted for interface compatibility (only ada-norm variants use them). ``cache``: the
        frames are new ones after those in the self-attention's cache (see :class:`Attention`)."""
        kwargs = cross_attention_kwargs or {}
        normed = self.norm1(hidden_states)
        if self.only_cross_attention:
            attn = self.attn1(normed, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=encoder_attention_mask, **kwargs)
        else:
            attn = self.attn1(normed, attention_mask=attention_mask, cache=cache, **kwargs)
        hidden_states = attn + hidden_states
        if self.attn2 is not None:
            if cache is not None:
                raise ValueError("BasicTransformerBlock: a step cache needs a block without a second attention")
            attn = self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states,
                              attention_mask=encoder_attention_mask, **kwargs)
            hidden_states = attn + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states
