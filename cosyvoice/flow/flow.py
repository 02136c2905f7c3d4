"""Token-to-mel flows: speech tokens -> token features at mel rate -> conditional flow matching, conditioned on a
speaker embedding and a mel prompt.

``CausalMaskedDiffWithXvec`` (CosyVoice2): a conformer encoder with a 2x upsample, a U-Net estimator.
``CausalMaskedDiffWithDiT`` (CosyVoice3): a look-ahead conv layer repeated 2x, a DiT estimator.
Both share the speaker projection, the prompt conditions, the training draws and the CFM call (_TokenMelFlow).
"""
from __future__ import annotations

import logging
import random
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice.utils.mask import make_pad_mask

logger = logging.getLogger(__name__)
N_TIMESTEPS = 10  # Euler steps of every flow inference, as the official code


class _TokenMelFlow(nn.Module):
    """What both flows share. Subclasses define input_embedding, spk_embed_affine_layer, decoder (a CFM),
    output_size, token_mel_ratio and pre_lookahead_len."""

    def _init_common(self, input_size: int, output_size: int, spk_embed_dim: int, output_type: str, vocab_size: int,
                     input_frame_rate: int, only_mask_loss: bool, token_mel_ratio: int, pre_lookahead_len: int,
                     decoder_conf: Optional[Dict]) -> None:
        """The attributes and the token / speaker layers both flows have (built first, in the official order)."""
        self.input_size = input_size
        self.output_size = output_size
        self.decoder_conf = decoder_conf
        self.vocab_size = vocab_size
        self.output_type = output_type
        self.input_frame_rate = input_frame_rate
        self.only_mask_loss = only_mask_loss
        self.token_mel_ratio = token_mel_ratio
        self.pre_lookahead_len = pre_lookahead_len
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)

    def _speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """x-vector (B, spk_embed_dim) -> L2-normalised, projected to (B, output_size)."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def _embed_tokens(self, token: torch.Tensor, token_len: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, T) ids -> (B, T, input_size) embeddings, zero on padding (negative pad ids allowed)."""
        mask = (~make_pad_mask(token_len, token.size(1))).unsqueeze(-1).to(dtype)
        return self.input_embedding(torch.clamp(token, min=0)) * mask

    def _batch(self, batch: Dict[str, torch.Tensor], device: torch.device):
        """(speech_token, speech_token_len, speech_feat, speech_feat_len, embedding) of a training batch, on
        ``device``."""
        if "speech_token" not in batch:
            raise KeyError(f"{type(self).__name__}.forward: the batch has no 'speech_token'; extract speech tokens "
                           f"in data preparation (online token extraction is not supported)")
        return tuple(batch[k].to(device) for k in ("speech_token", "speech_token_len", "speech_feat",
                                                    "speech_feat_len", "embedding"))

    def _loss(self, feat: torch.Tensor, mask: torch.Tensor, h: torch.Tensor, embedding: torch.Tensor,
              conds: torch.Tensor, streaming: bool) -> Dict[str, torch.Tensor]:
        """{'loss': the flow-matching loss} of target mel ``feat`` (B, T, D) given token features ``h`` (B, T, D)
        on the frames of ``mask`` (B, T)."""
        loss, _ = self.decoder.compute_loss(feat.transpose(1, 2).contiguous(), mask.unsqueeze(1),
                                            h.transpose(1, 2).contiguous(), embedding, cond=conds,
                                            streaming=streaming)
        return {"loss": loss}

    @staticmethod
    def _draw_conds(feat: torch.Tensor, feat_len: torch.Tensor) -> torch.Tensor:
        """Training prompt conditions (B, output_size, T): per utterance, python ``random()`` and, when it is
        >= 0.5, ``randint(0, int(0.3 * feat_len))`` leading frames of the target mel; zeros elsewhere."""
        conds = torch.zeros(feat.shape, device=feat.device)
        for i, j in enumerate(feat_len):
            if random.random() < 0.5:
                continue
            index = random.randint(0, int(0.3 * j))
            conds[i, :index] = feat[i, :index]
        return conds.transpose(1, 2)

    def _conds(self, prompt_feat: torch.Tensor, begin: int, end: int, like: torch.Tensor) -> torch.Tensor:
        """(1, output_size, end - begin): the prompt mel on prompt frames, zeros after, for frames begin..end-1."""
        conds = torch.zeros([1, end - begin, self.output_size], device=like.device, dtype=like.dtype)
        n_prompt = prompt_feat.size(1)
        if begin < n_prompt:
            conds[:, : n_prompt - begin] = prompt_feat[:, begin:]
        return conds.transpose(1, 2)

    def _decode(self, h: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor,
                streaming: bool) -> torch.Tensor:
        """Token features (1, F, output_size) of prompt + tokens -> the mel (1, output_size, F - prompt frames)
        after N_TIMESTEPS Euler steps from the fixed noise."""
        conds = self._conds(prompt_feat, 0, h.size(1), h)
        mask = torch.ones(1, 1, h.size(1), device=h.device, dtype=h.dtype)
        feat, _ = self.decoder(mu=h.transpose(1, 2).contiguous(), mask=mask, spks=embedding, cond=conds,
                               n_timesteps=N_TIMESTEPS, streaming=streaming)
        return feat[:, :, prompt_feat.size(1):].float()

    def chunk_cache_supported(self) -> bool:
        """Whether streaming chunks can reuse the estimator state of earlier frames (``inference_chunk``)."""
        return False


class CausalMaskedDiffWithXvec(_TokenMelFlow):
    """Chunk-aware flow (CosyVoice2), with the official constructor arguments and defaults.

    ``input_size``: token embedding width; ``output_size``: mel bins; ``spk_embed_dim``: x-vector size;
    ``encoder``: an ``UpsampleConformerEncoder``; ``decoder``: a ``CausalConditionalCFM``.
    ``output_type``, ``input_frame_rate``, ``only_mask_loss``, ``decoder_conf`` are kept as attributes
    for compatibility (the encoder's fixed 2x upsample sets the frame rate).
    """

    def __init__(self, input_size: int = 512, output_size: int = 80, spk_embed_dim: int = 192,
                 output_type: str = "mel", vocab_size: int = 4096, input_frame_rate: int = 50,
                 only_mask_loss: bool = True, token_mel_ratio: int = 2, pre_lookahead_len: int = 3,
                 encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None,
                 decoder_conf: Optional[Dict] = None):
        super().__init__()
        if encoder is None or decoder is None:
            raise ValueError("CausalMaskedDiffWithXvec needs an encoder and a decoder (see conf/cosyvoice2.yaml)")
        self._init_common(input_size, output_size, spk_embed_dim, output_type, vocab_size, input_frame_rate,
                          only_mask_loss, token_mel_ratio, pre_lookahead_len, decoder_conf)
        self.encoder = encoder
        self.encoder_proj = nn.Linear(self.encoder.output_size(), output_size)
        self.decoder = decoder

    def forward(self, batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, Optional[torch.Tensor]]:
        """Training loss of one batch: {'loss': ...}.

        batch: speech_token (B, T) and speech_token_len, speech_feat (B, token_mel_ratio*T, output_size)
        and speech_feat_len, embedding (B, spk_embed_dim).
        Python draws, in order: random() for streaming (< 0.5) or not; then per utterance random(),
        and when it is >= 0.5 randint(0, int(0.3 * feat_len)) prompt frames become ``cond``.
        Torch draws happen in the encoder (dropout, training only) and in ``decoder.compute_loss``.
        """
        token, token_len, feat, feat_len, embedding = self._batch(batch, device)

        streaming = random.random() < 0.5
        embedding = self._speaker(embedding)
        xs = self._embed_tokens(token, token_len, torch.float32)
        h, h_mask = self.encoder(xs, token_len, streaming=streaming)
        h = self.encoder_proj(h)
        if h.size(1) != feat.size(1):
            raise ValueError(f"speech_feat has {feat.size(1)} frames but the {token.size(1)} speech tokens give "
                             f"{h.size(1)}; features must be {self.token_mel_ratio} frames per token")

        conds = self._draw_conds(feat, feat_len)

        h_len = h_mask.sum(dim=-1).squeeze(dim=1)
        mask = (~make_pad_mask(h_len, h.size(1))).to(h)
        return self._loss(feat, mask, h, embedding, conds, streaming)

    def _encode(self, token, token_len, prompt_token, prompt_token_len, embedding, streaming: bool,
                finalize: bool):
        """Projected encoder output (1, F, output_size) of prompt + tokens, and the projected speaker (1, D)."""
        if token.size(0) != 1:
            raise ValueError(f"flow.inference takes one utterance, got a batch of {token.size(0)}")
        embedding = self._speaker(embedding)
        token = torch.cat([prompt_token, token], dim=1)
        token_len = prompt_token_len + token_len
        xs = self._embed_tokens(token, token_len, embedding.dtype)
        if finalize:
            h, _ = self.encoder(xs, token_len, streaming=streaming)
        else:
            xs, context = xs[:, : -self.pre_lookahead_len], xs[:, -self.pre_lookahead_len:]
            h, _ = self.encoder(xs, token_len, context=context, streaming=streaming)
        return self.encoder_proj(h), embedding

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor, prompt_feat_len: torch.Tensor,
                  embedding: torch.Tensor, streaming: bool, finalize: bool) -> Tuple[torch.Tensor, None]:
        """Mel frames (1, output_size, F) for ``token`` (1, T) given the prompt tokens and their mel
        ``prompt_feat`` (1, token_mel_ratio * T_prompt, output_size) and the x-vector ``embedding``.

        ``finalize=False`` (a streaming chunk that is not the last): the last ``pre_lookahead_len``
        tokens only serve as look-ahead and produce no frames. ``streaming`` uses chunk masks.
        Returns (feat, None) as the official code.
        """
        h, embedding = self._encode(token, token_len, prompt_token, prompt_token_len, embedding, streaming, finalize)
        return self._decode(h, prompt_feat, embedding, streaming), None

    def chunk_cache_supported(self) -> bool:
        """Whether :meth:`inference_chunk` can reuse earlier frames (chunk masks in the encoder and estimator,
        causal convs only)."""
        return self.encoder.static_chunk_size > 0 and self.decoder.estimator.supports_chunk_cache()

    @torch.inference_mode()
    def inference_chunk(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                        prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor, prompt_feat_len: torch.Tensor,
                        embedding: torch.Tensor, token_offset: int = 0, cache: Optional["FlowStreamCache"] = None,
                        max_cache_frames: int = -1) -> Tuple[torch.Tensor, Optional["FlowStreamCache"]]:
        """A streaming chunk that is not the last, computed incrementally.

        Returns the mel ``inference(..., streaming=True, finalize=False)[0][:, :, token_offset * token_mel_ratio:]``
        and a :class:`FlowStreamCache` for the next chunk. When ``cache`` (from the previous chunk of the same
        stream) covers exactly the frames before the requested ones and was made from the same prompt, speaker
        and leading tokens, only the new frames go through the 10 Euler steps; otherwise every frame does. The
        encoder always runs on every token (it is cheap, and it is what the official code computes).
        A cache is returned only when the frames end on a chunk boundary of both the encoder and the estimator
        (then no later frame can change them) and number at most ``max_cache_frames`` (< 0: no limit; it costs
        2 x Euler steps x transformer blocks x 2 x attention width floats per frame).
        """
        if not self.chunk_cache_supported():
            raise ValueError("inference_chunk needs chunk masks and causal convs (see chunk_cache_supported)")
        ratio = self.token_mel_ratio
        start = prompt_feat.size(1) + token_offset * ratio
        n_enc = prompt_token.size(1) + token.size(1) - self.pre_lookahead_len  # tokens that make frames
        total = ratio * n_enc
        enc_chunk = self.encoder.static_chunk_size
        keep = (n_enc % enc_chunk == 0 and total % self.decoder.estimator.static_chunk_size == 0
                and (max_cache_frames < 0 or total <= max_cache_frames))
        if not keep and (cache is None or cache.frames != start):
            feat, _ = self.inference(token, token_len, prompt_token, prompt_token_len, prompt_feat, prompt_feat_len,
                                     embedding, streaming=True, finalize=False)
            return feat[:, :, token_offset * ratio:], None
        h, spk = self._encode(token, token_len, prompt_token, prompt_token_len, embedding, True, False)
        all_tokens = torch.cat([prompt_token, token], dim=1)
        usable = cache is not None and cache.frames == start and cache.matches(all_tokens, prompt_feat, embedding)
        begin = start if usable else 0
        steps = [{} for _ in range(N_TIMESTEPS)]
        if usable:  # the state is updated in place and moves to the new cache; the old one is spent
            steps, cache.steps = cache.steps, None
        feat = self.decoder.forward_chunk(mu=h[:, begin:].transpose(1, 2).contiguous(), spks=spk,
                                          cond=self._conds(prompt_feat, begin, total, h), offset=begin,
                                          caches=steps, n_timesteps=N_TIMESTEPS)
        feat = feat[:, :, start - begin:].float()
        new_cache = FlowStreamCache(all_tokens, prompt_feat, embedding, total, steps) if keep else None
        return feat, new_cache


class FlowStreamCache:
    """What :meth:`CausalMaskedDiffWithXvec.inference_chunk` keeps between chunks of one stream: the inputs that
    fixed the first ``frames`` frames (prompt + tokens with look-ahead, prompt mel, speaker) and, per Euler step,
    the estimator's per-layer state after those frames."""

    def __init__(self, tokens: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor, frames: int,
                 steps: List[dict]):
        self.tokens = tokens
        self.prompt_feat = prompt_feat
        self.embedding = embedding
        self.frames = frames
        self.steps = steps

    def matches(self, tokens: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor) -> bool:
        """Whether this (unspent) cache was made from these prompt mel and speaker and these leading tokens."""
        n = self.tokens.size(1)
        return (self.steps is not None and tokens.size(1) >= n and torch.equal(tokens[:, :n], self.tokens)
                and prompt_feat.shape == self.prompt_feat.shape and torch.equal(prompt_feat, self.prompt_feat)
                and embedding.shape == self.embedding.shape and torch.equal(embedding, self.embedding))

    def nbytes(self) -> int:
        total = 0
        for step in self.steps or []:
            for state in step.values():
                for t in (state if isinstance(state, tuple) else (state,)):
                    total += t.numel() * t.element_size()
        return total


def align_feat_to_tokens(token: torch.Tensor, token_len: torch.Tensor, feat: torch.Tensor, feat_len: torch.Tensor,
                         ratio: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each utterance to n = min(token_len, feat_len // ratio) tokens and ratio * n mel frames, zero the
    rest and re-pad to the longest: (token, token_len, feat, feat_len) with feat.size(1) == ratio * token.size(1).
    (The rule of the front end's prompt alignment.)"""
    n = torch.minimum(token_len.to(torch.int64), torch.div(feat_len.to(torch.int64), ratio, rounding_mode="floor"))
    n_max = int(n.max().item()) if n.numel() else 0
    token = token[:, :n_max].masked_fill(make_pad_mask(n, n_max), 0)
    feat = feat[:, :ratio * n_max].masked_fill(make_pad_mask(ratio * n, ratio * n_max).unsqueeze(-1), 0.0)
    return token, n.to(token_len.dtype), feat, (ratio * n).to(feat_len.dtype)


class CausalMaskedDiffWithDiT(_TokenMelFlow):
    """Chunk-aware flow of CosyVoice3, with the official constructor arguments and defaults.

    ``input_size``: token embedding width (= the mel bins: there is no encoder); ``output_size``: mel bins;
    ``spk_embed_dim``: x-vector size; ``pre_lookahead_layer``: a ``PreLookaheadLayer`` (each token sees the next
    ``pre_lookahead_len``); its output repeated ``token_mel_ratio`` times is ``mu`` of ``decoder``, a
    ``CausalConditionalCFM`` with a ``DiT`` estimator. ``output_type``, ``input_frame_rate``, ``only_mask_loss``,
    ``decoder_conf`` are kept as attributes for compatibility.
    """

    def __init__(self, input_size: int = 512, output_size: int = 80, spk_embed_dim: int = 192,
                 output_type: str = "mel", vocab_size: int = 4096, input_frame_rate: int = 50,
                 only_mask_loss: bool = True, token_mel_ratio: int = 2, pre_lookahead_len: int = 3,
                 pre_lookahead_layer: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None,
                 decoder_conf: Optional[Dict] = None):
        super().__init__()
        if pre_lookahead_layer is None or decoder is None:
            raise ValueError("CausalMaskedDiffWithDiT needs a pre_lookahead_layer and a decoder "
                             "(see conf/cosyvoice3.yaml)")
        self._init_common(input_size, output_size, spk_embed_dim, output_type, vocab_size, input_frame_rate,
                          only_mask_loss, token_mel_ratio, pre_lookahead_len, decoder_conf)
        self.pre_lookahead_layer = pre_lookahead_layer
        self.decoder = decoder
        self._warned_alignment = False

    def forward(self, batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, Optional[torch.Tensor]]:
        """Training loss of one batch: {'loss': ...}.

        batch: speech_token (B, T) and speech_token_len, speech_feat (B, token_mel_ratio*T, output_size)
        and speech_feat_len, embedding (B, spk_embed_dim). The loss covers the frames of the tokens
        (token_len * token_mel_ratio), as official.
        Python draws, in order: random() for streaming (< 0.5) or not; then per utterance random(),
        and when it is >= 0.5 randint(0, int(0.3 * feat_len)) prompt frames become ``cond``.
        Torch draws happen in ``decoder.compute_loss`` (and in the DiT's dropout, training only).

        Official difference (defined here): when the padded mel length is not token_mel_ratio x the padded token
        length (e.g. an utterance whose mel is one frame longer or shorter than twice its tokens), the official
        forward crashes in the DiT input concatenation. Here every utterance of such a batch is first cut to
        n = min(token_len, feat_len // token_mel_ratio) tokens and token_mel_ratio * n frames
        (:func:`align_feat_to_tokens`), then the official computation runs. Batches the official code accepts are
        left as they are.
        """
        token, token_len, feat, feat_len, embedding = self._batch(batch, device)
        ratio = self.token_mel_ratio
        if feat.size(1) != ratio * token.size(1):
            if not self._warned_alignment:
                logger.warning("flow batch: speech_feat has %d frames for %d speech tokens (not %d per token); "
                               "cutting each utterance to min(tokens, frames // %d) tokens (warned once)",
                               feat.size(1), token.size(1), ratio, ratio)
                self._warned_alignment = True
            token, token_len, feat, feat_len = align_feat_to_tokens(token, token_len, feat, feat_len, ratio)

        streaming = random.random() < 0.5
        embedding = self._speaker(embedding)
        mask = (~make_pad_mask(token_len, token.size(1))).float().unsqueeze(-1)
        h = self.pre_lookahead_layer(self._embed_tokens(token, token_len, torch.float32))
        h = h.repeat_interleave(ratio, dim=1)
        mask = mask.repeat_interleave(ratio, dim=1).squeeze(-1)
        conds = self._draw_conds(feat, feat_len)
        return self._loss(feat, mask, h, embedding, conds, streaming)

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor, prompt_feat_len: torch.Tensor,
                  embedding: torch.Tensor, streaming: bool, finalize: bool) -> Tuple[torch.Tensor, None]:
        """Mel frames (1, output_size, F) for ``token`` (1, T) given the prompt tokens and their mel
        ``prompt_feat`` (1, token_mel_ratio * T_prompt, output_size) and the x-vector ``embedding``.

        ``finalize=False`` (a streaming chunk that is not the last): the last ``pre_lookahead_len`` tokens are only
        look-ahead context and produce no frames. ``streaming`` uses the DiT's chunk masks.
        Returns (feat, None) as the official code.

        Official difference (defined here): with no frames to produce (no tokens, or with ``finalize=False`` no
        more than the look-ahead) the official code crashes in the look-ahead conv or its length check; this
        returns (1, output_size, 0).
        """
        if token.size(0) != 1:
            raise ValueError(f"flow.inference takes one utterance, got a batch of {token.size(0)}")
        embedding = self._speaker(embedding)
        token = torch.cat([prompt_token, token], dim=1)
        token_len = prompt_token_len + token_len
        n_tokens = token.size(1) if finalize else token.size(1) - self.pre_lookahead_len
        if n_tokens <= 0 or self.token_mel_ratio * n_tokens <= prompt_feat.size(1):
            return torch.zeros(1, self.output_size, 0, device=embedding.device), None
        xs = self._embed_tokens(token, token_len, embedding.dtype)
        if finalize:
            h = self.pre_lookahead_layer(xs)
        else:
            h = self.pre_lookahead_layer(xs[:, :n_tokens], context=xs[:, n_tokens:])
        h = h.repeat_interleave(self.token_mel_ratio, dim=1)
        return self._decode(h, prompt_feat, embedding, streaming), None
