"""Text -> speech-token language models on a Qwen2 backbone (``Qwen2Encoder``): CosyVoice2's ``Qwen2LM`` and
CosyVoice3's ``CosyVoice3LM`` (a subclass; what differs is the id layout, the embedding of sos/task id, the instruct
tokens and the 151646 check, everything else is one implementation).

Checkpoint layouts (official ``llm.pt``):

* ``Qwen2LM``: ``llm_embedding`` (row 0 = sos, row 1 = task id), ``llm.model.*`` (the HF ``Qwen2ForCausalLM``, tied
  ``embed_tokens`` / ``lm_head`` both listed), ``llm_decoder`` (hidden -> speech_token_size+3 scores, with bias) and
  ``speech_embedding`` (speech_token_size+3 rows). Ids ``speech_token_size + 0/1/2`` are eos, an unused stop id, and
  the bi-stream "fill" token that asks for more text.
* ``CosyVoice3LM``: no ``llm_embedding``; ``llm.model.*``, ``llm_decoder`` (speech_token_size+200 scores, no bias),
  ``speech_embedding`` (speech_token_size+200 rows). Ids ``speech_token_size + 0/1/2/3`` are sos, eos, task id and
  fill; sos and task id are embedded with ``speech_embedding``; all 200 ids from speech_token_size up stop decoding.
"""
from __future__ import annotations

import inspect
import logging
import os
import random
from typing import Callable, Dict, Generator, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from cosyvoice.utils.common import IGNORE_ID, th_accuracy
from cosyvoice.utils.mask import make_pad_mask

logger = logging.getLogger(__name__)


def _check_takes_generator(sampling: Callable) -> None:
    """A sampler handed a ``generator=`` must accept it (the package's samplers do; a custom one may not)."""
    try:
        params = inspect.signature(sampling).parameters.values()
    except (TypeError, ValueError):
        return
    if not any(p.name == "generator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        name = getattr(getattr(sampling, "func", sampling), "__name__", repr(sampling))
        raise TypeError(f"the yaml's llm sampling function {name} takes no generator= argument, which seeded "
                        f"inference needs; give it a keyword argument generator (a torch.Generator, None: the "
                        f"global RNG), as cosyvoice.utils.common.ras_sampling has")


def _generator_kwargs(sampling: Callable, generator: Optional[torch.Generator]) -> dict:
    """What ``sampling_ids`` gets for ``generator``: nothing when None, so that an override of ``sampling_ids``
    with the official signature keeps working; else ``{'generator': generator}``, once the sampler is checked."""
    if generator is None:
        return {}
    _check_takes_generator(sampling)
    return {"generator": generator}


def _embed_id(table: nn.Module, index: int) -> torch.Tensor:
    """(1, 1, D): row ``index`` of an embedding table, through the module (so that a LoRA adapter on the table
    applies; for a plain table this is exactly ``table.weight[index]``)."""
    return table(torch.tensor([[int(index)]], device=table.weight.device))


def _as_int(x) -> int:
    """A python int from an int, a 0-d tensor or a one-element length tensor."""
    if isinstance(x, torch.Tensor):
        return int(x.reshape(-1)[0].item())
    return int(x)


class Qwen2Encoder(nn.Module):
    """The Qwen2 decoder stack used as the LLM backbone; ``self.model`` is a transformers ``Qwen2ForCausalLM``.

    The network is built from ``<pretrain_path>/config.json`` only, with freshly initialised weights: in normal use
    ``llm.pt`` is loaded right afterwards and overwrites all of them, so the ~1 GB Qwen base safetensors are never
    read. To train from the plain Qwen2 base model instead, pass ``load_pretrained_weights=True`` (or call
    :meth:`load_pretrained_weights` later); this reads the safetensors in ``pretrain_path`` in float32.
    """

    def __init__(self, pretrain_path: str, load_pretrained_weights: bool = False):
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM

        self.pretrain_path = str(pretrain_path or "")
        config_file = os.path.join(self.pretrain_path, "config.json")
        if not self.pretrain_path or not os.path.isfile(config_file):
            raise FileNotFoundError(
                f"Qwen2Encoder: no config.json at '{config_file}'. pretrain_path (qwen_pretrain_path in the yaml) must "
                f"be the CosyVoice-BlankEN directory of the model; pass it as an override, e.g. "
                f"{{'qwen_pretrain_path': '<model_dir>/CosyVoice-BlankEN'}}"
            )
        config = Qwen2Config.from_pretrained(self.pretrain_path)
        if config.model_type != "qwen2":
            raise ValueError(f"Qwen2Encoder: {config_file} describes a '{config.model_type}' model, expected 'qwen2'")
        self.model = Qwen2ForCausalLM(config)
        if load_pretrained_weights:
            self.load_pretrained_weights()

    def load_pretrained_weights(self) -> None:
        """Copy the Qwen2 base weights stored in ``pretrain_path`` (safetensors) into ``self.model`` (float32)."""
        from transformers import Qwen2ForCausalLM

        try:
            pretrained, info = Qwen2ForCausalLM.from_pretrained(
                self.pretrain_path, dtype=torch.float32, output_loading_info=True
            )
        except OSError as e:
            raise FileNotFoundError(
                f"Qwen2Encoder: cannot read Qwen2 weights from '{self.pretrain_path}' ({e}); it needs "
                f"model.safetensors (or pytorch_model.bin) beside config.json"
            ) from e
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing = [k for k in info.get("missing_keys", []) if k not in tied]
        if missing:
            raise ValueError(f"Qwen2Encoder: weights in '{self.pretrain_path}' lack {', '.join(sorted(missing)[:5])}")
        self.model.load_state_dict(pretrained.state_dict(), strict=True)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor):
        """(B, T, D) embeddings and (B,) lengths -> last hidden state (B, T, D) after the final norm, (B, 1, T) mask."""
        masks = ~make_pad_mask(xs_lens, xs.size(1))
        out = self.model.model(inputs_embeds=xs, attention_mask=masks, use_cache=False)
        return out.last_hidden_state, masks.unsqueeze(1)

    def forward_one_step(self, xs: torch.Tensor, masks: Optional[torch.Tensor] = None, cache=None):
        """Run new positions ``xs`` (1, L, D) on top of the KV ``cache`` (a transformers ``Cache``; None starts one).

        ``masks`` is accepted for compatibility with the official signature ((1, L, L) causal mask); its last row is
        used as padding mask only when it hides something, otherwise attention is plain causal over cache + new.
        Returns (hidden (1, L, D) after the final norm, the updated cache).
        """
        from transformers import Cache, DynamicCache

        if cache is None:
            cache = DynamicCache(config=self.model.config)
        elif not isinstance(cache, Cache):
            raise TypeError(
                f"forward_one_step: cache must be a transformers Cache (e.g. DynamicCache), "
                f"got {type(cache).__name__}; tuple past_key_values are not supported by transformers 5"
            )
        attention_mask = None
        if masks is not None:
            last = masks[:, -1, :]
            if not bool(last.all()):
                attention_mask = last
        out = self.model.model(inputs_embeds=xs, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        return out.last_hidden_state, out.past_key_values


def _label_smoothing_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float,
                          normalize_length: bool) -> torch.Tensor:
    """KL divergence to the label-smoothed target distribution, summed over non-ignored tokens.

    The target distribution puts ``1 - smoothing`` on the label and ``smoothing / (V - 1)`` on every other class
    (with 0 smoothing this is plain cross-entropy). Divided by the number of non-ignored tokens when
    ``normalize_length``, else by the batch size. Computed as the official ``LabelSmoothingLoss`` does, element by
    element over the (tokens, V) matrix and summed as one, so the loss has the official value to the last bit (a
    per-token form sums in another order: 9.5e-7 off for a 3-utterance batch); the matrix is the size of the logits.
    """
    vocab = logits.size(-1)
    flat_logits = logits.reshape(-1, vocab)
    flat_target = target.reshape(-1)
    ignore = flat_target == IGNORE_ID
    true_dist = torch.full_like(flat_logits, smoothing / (vocab - 1))
    true_dist.scatter_(1, flat_target.masked_fill(ignore, 0).unsqueeze(1), 1.0 - smoothing)
    kl = F.kl_div(torch.log_softmax(flat_logits, dim=1), true_dist, reduction="none")
    denom = flat_target.numel() - int(ignore.sum().item()) if normalize_length else logits.size(0)
    return kl.masked_fill(ignore.unsqueeze(1), 0).sum() / denom


class Qwen2LM(nn.Module):
    """Autoregressive speech-token LM over ``[sos, text, task_id, speech]`` (uni-stream) or interleaved text/speech
    blocks of ``mix_ratio`` = [text, speech] tokens (bi-stream). Same constructor arguments as the official yaml.

    ``sampling`` is a callable ``(scores, decoded_tokens, sampling) -> id``, e.g. a partial of
    :func:`cosyvoice.utils.common.ras_sampling`.
    """

    def __init__(self, llm_input_size: int, llm_output_size: int, speech_token_size: int, llm: nn.Module,
                 sampling: Callable, length_normalized_loss: bool = True, lsm_weight: float = 0.0,
                 mix_ratio: Sequence[int] = (5, 15)):
        super().__init__()
        self._init_common(llm_input_size, llm_output_size, speech_token_size, sampling, length_normalized_loss,
                          lsm_weight, mix_ratio)
        self.sos = 0
        self.task_id = 1
        self.eos_token = speech_token_size
        self.fill_token = speech_token_size + 2
        self.stop_token_ids = [speech_token_size + i for i in range(3)]
        # as the reference: id speech_token_size (= eos here) is banned below min_len, and while text streams
        self.min_len_banned_ids = [speech_token_size]
        self.streaming_banned_ids = [speech_token_size]
        # registration order fixes the state_dict order: llm_embedding, llm.*, llm_decoder, speech_embedding
        self.llm_embedding = nn.Embedding(2, llm_input_size)
        self.llm = llm
        self.llm_decoder = nn.Linear(llm_output_size, speech_token_size + 3)
        self.speech_embedding = nn.Embedding(speech_token_size + 3, llm_input_size)

    def _init_common(self, llm_input_size, llm_output_size, speech_token_size, sampling, length_normalized_loss,
                     lsm_weight, mix_ratio) -> None:
        """The settings every Qwen2-based LM shares (no modules: each class registers its own, in its order)."""
        self.llm_input_size = llm_input_size
        self.llm_output_size = llm_output_size
        self.speech_token_size = speech_token_size
        self.mix_ratio = [int(r) for r in mix_ratio]
        self.lsm_weight = float(lsm_weight)
        self.length_normalized_loss = bool(length_normalized_loss)
        self.sampling = sampling
        # Optional online speech tokenizer for batches that carry whisper features instead of speech tokens; it
        # needs ``inference(feat, feat_len, device) -> (tokens, lens)``. Set by the trainer when used.
        self.speech_token_extractor = None

    # ----------------------------------------------------------------------------------------------- helpers
    def _sos_task_emb(self):
        return _embed_id(self.llm_embedding, self.sos), _embed_id(self.llm_embedding, self.task_id)

    def _embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.llm.model.model.embed_tokens(tokens)

    def _speech_tokens(self, batch: dict, device: torch.device):
        if "speech_token" in batch:
            return batch["speech_token"].to(device), batch["speech_token_len"].to(device)
        if self.speech_token_extractor is not None:
            return self.speech_token_extractor.inference(batch["whisper_feat"], batch["whisper_feat_len"], device)
        raise KeyError(f"{type(self).__name__}.forward: batch has no 'speech_token' and no speech_token_extractor "
                       f"is set (extract speech tokens offline, or enable online features)")

    def _instruct_tokens(self, batch: dict, device: torch.device):
        """(instruct_token, its embeddings, instruct_token_len) for the training layout; CosyVoice2 has none."""
        return None, None, None

    # ----------------------------------------------------------------------------------------------- training
    def prepare_lm_input_target(self, sos_emb, text_token, text_token_emb, text_token_len, task_id_emb, speech_token,
                                speech_token_emb, speech_token_len, instruct_token=None, instruct_token_emb=None,
                                instruct_token_len=None):
        """Build the per-utterance LM input embeddings and targets, padded with IGNORE_ID.

        For each utterance one ``random.random()`` is drawn (always, before the length test); it takes the
        bi-stream layout when the draw is < 0.5 and speech_len / text_len > mix_ratio[1] / mix_ratio[0], else the
        uni-stream one. Optional instruct tokens (CosyVoice3) are placed right after sos, ignored in the target and
        not counted in the length test; without them an empty block of the model's own width is joined in (the
        reference hard-codes 896 there), i.e. nothing. Returns (lm_target (B, L) int64, lm_input (B, L, D),
        lm_input_len (B,) int32).
        """
        n_text, n_speech = self.mix_ratio
        device = text_token_emb.device
        text_lens = text_token_len.cpu()
        speech_lens = speech_token_len.cpu()
        use_instruct = instruct_token is not None and instruct_token_emb is not None and instruct_token_len is not None
        sos_row, task_row = sos_emb.reshape(1, -1), task_id_emb.reshape(1, -1)
        targets, inputs = [], []
        for i in range(text_token_emb.size(0)):
            t_len, s_len = int(text_lens[i]), int(speech_lens[i])
            text_ids = text_token[i, :t_len].tolist()
            speech_ids = speech_token[i, :s_len].tolist()
            text_emb = text_token_emb[i, :t_len]
            speech_emb = speech_token_emb[i, :s_len]
            if use_instruct:
                i_len = int(instruct_token_len[i])
                instruct_emb = instruct_token_emb[i, :i_len]
            else:
                i_len, instruct_emb = 0, text_token_emb.new_zeros(0, text_token_emb.size(-1))
            draw = random.random()
            # the reference's test: a float32 tensor ratio compared with a python float, strictly greater
            bistream = draw < 0.5 and bool(speech_lens[i] / text_lens[i] > n_speech / n_text)
            if bistream:
                target = [IGNORE_ID] * (1 + i_len)
                pieces = [sos_row, instruct_emb]
                for j in range(-(-(t_len + 1) // n_text)):
                    t0, s0 = j * n_text, j * n_speech
                    chunk = text_ids[t0:t0 + n_text]
                    if len(chunk) == n_text:
                        speech_chunk = speech_ids[s0:s0 + n_speech]
                        if len(speech_chunk) != n_speech:
                            raise ValueError(f"bi-stream block {j} of utterance {i} has {len(speech_chunk)} speech "
                                             f"tokens, expected {n_speech}")
                        target += [IGNORE_ID] * (n_text - 1) + speech_chunk + [self.fill_token]
                        pieces += [text_emb[t0:t0 + n_text], speech_emb[s0:s0 + n_speech]]
                    else:
                        target += [IGNORE_ID] * len(chunk) + speech_ids[s0:] + [self.eos_token]
                        pieces += [text_emb[t0:], task_row, speech_emb[s0:]]
            else:
                target = [IGNORE_ID] * (1 + i_len + t_len) + speech_ids + [self.eos_token]
                pieces = [sos_row, instruct_emb, text_emb, task_row, speech_emb]
            targets.append(torch.tensor(target, dtype=torch.int64, device=device))
            inputs.append(torch.cat(pieces, dim=0))
        lm_input_len = torch.tensor([x.size(0) for x in inputs], dtype=torch.int32)
        lm_input = pad_sequence(inputs, batch_first=True, padding_value=IGNORE_ID)
        lm_target = pad_sequence(targets, batch_first=True, padding_value=IGNORE_ID)
        return lm_target, lm_input, lm_input_len

    def forward(self, batch: dict, device: torch.device) -> Dict[str, Optional[torch.Tensor]]:
        """Training step: batch with ``text_token``/``text_token_len`` and ``speech_token``/``speech_token_len``
        (or ``whisper_feat``/``whisper_feat_len`` plus a ``speech_token_extractor``) -> {'loss', 'acc'}."""
        text_token = batch["text_token"].to(device)
        text_token_len = batch["text_token_len"].to(device)
        speech_token, speech_token_len = self._speech_tokens(batch, device)
        text_token_emb = self._embed_text(text_token)
        speech_token_emb = self.speech_embedding(speech_token)
        sos_emb, task_id_emb = self._sos_task_emb()
        instruct_token, instruct_token_emb, instruct_token_len = self._instruct_tokens(batch, device)
        lm_target, lm_input, lm_input_len = self.prepare_lm_input_target(
            sos_emb, text_token, text_token_emb, text_token_len, task_id_emb,
            speech_token, speech_token_emb, speech_token_len, instruct_token, instruct_token_emb, instruct_token_len)
        lm_target = lm_target.to(device)
        hidden, _ = self.llm(lm_input, lm_input_len.to(device))
        logits = self.llm_decoder(hidden)
        loss = _label_smoothing_loss(logits, lm_target, self.lsm_weight, self.length_normalized_loss)
        acc = th_accuracy(logits.view(-1, self.llm_decoder.out_features), lm_target, ignore_label=IGNORE_ID)
        return {"loss": loss, "acc": acc}

    # ----------------------------------------------------------------------------------------------- decoding
    def _sample(self, weighted_scores: torch.Tensor, decoded_tokens: List[int], sampling: int,
                banned: Sequence[int], generator: Optional[torch.Generator] = None) -> int:
        """Set the ``banned`` ids of the 1-D log-probs to -inf (in place, as the reference does), then sample
        (from ``generator``; None: from the global RNG, as the official code)."""
        if len(banned):
            weighted_scores[list(banned)] = -float("inf")
        if generator is None:
            return self.sampling(weighted_scores, decoded_tokens, sampling)
        return self.sampling(weighted_scores, decoded_tokens, sampling, generator=generator)

    def sampling_ids(self, weighted_scores: torch.Tensor, decoded_tokens: List[int], sampling: int,
                     ignore_eos: bool = True, generator: Optional[torch.Generator] = None) -> int:
        """Pick the next id from 1-D log-probs; with ``ignore_eos`` the ids in ``min_len_banned_ids`` are set to
        -inf first (in place). That is id speech_token_size as in the reference: eos for CosyVoice2.
        ``generator``: the sampler draws from it (None: from the global RNG, as the official code)."""
        return self._sample(weighted_scores, decoded_tokens, sampling, self.min_len_banned_ids if ignore_eos else (),
                            generator)

    def _step(self, lm_input: torch.Tensor, cache):
        hidden, cache = self.llm.forward_one_step(lm_input, masks=None, cache=cache)
        logp = self.llm_decoder(hidden[:, -1]).log_softmax(dim=-1)
        return logp.squeeze(0), cache

    @torch.inference_mode()
    def inference(self, text: torch.Tensor, text_len: torch.Tensor, prompt_text: torch.Tensor,
                  prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                  prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor, sampling: int = 25,
                  max_token_text_ratio: float = 20, min_token_text_ratio: float = 2,
                  uuid: str = "", generator: Optional[torch.Generator] = None) -> Generator[int, None, None]:
        """Generate speech tokens for ``text`` (1, T) after an optional prompt, yielding each id as it is decoded.

        Input: ``[sos, embed(prompt_text ++ text), task_id, speech_embedding(prompt_speech_token)]``; an SFT call has
        zero-length prompt tensors. Between ``int(T * min_token_text_ratio)`` and ``int(T * max_token_text_ratio)``
        tokens are produced (T counts only the new text; ``sampling_ids`` bans ``min_len_banned_ids`` below the
        minimum); decoding stops at any stop id (``stop_token_ids``), which is not yielded. ``embedding`` (speaker)
        is unused. Unlike the reference, ``text_len`` is not modified in place (the reference adds
        ``prompt_text_len`` into it). ``generator`` (an addition): every sampling draw comes from it instead of the
        global RNG, so concurrent calls, each with its own generator, do not disturb each other (seeded like
        ``torch.manual_seed``, it draws the same numbers).
        """
        device = text.device
        all_text = torch.concat([prompt_text.to(device), text], dim=1)
        text_emb = self._embed_text(all_text)
        sos_emb, task_id_emb = self._sos_task_emb()
        if _as_int(prompt_speech_token_len) != 0:
            prompt_speech_emb = self.speech_embedding(prompt_speech_token.to(device))
        else:
            prompt_speech_emb = text_emb.new_zeros(1, 0, self.llm_input_size)
        lm_input = torch.concat([sos_emb, text_emb, task_id_emb, prompt_speech_emb], dim=1)
        # float32 arithmetic on the length tensor, as the reference computes it
        new_text_len = torch.as_tensor(text_len).reshape(-1)[:1].cpu()
        min_len = int(new_text_len * min_token_text_ratio)
        max_len = int(new_text_len * max_token_text_ratio)
        yield from self.inference_wrapper(lm_input, sampling, min_len, max_len, uuid, generator=generator)

    @torch.inference_mode()
    def inference_wrapper(self, lm_input: torch.Tensor, sampling: int, min_len: int, max_len: int,
                          uuid: str = "", generator: Optional[torch.Generator] = None) -> Generator[int, None, None]:
        """KV-cached decoding from a ready LM input (1, L, D): at most ``max_len`` ids; for the first ``min_len``
        steps ``sampling_ids`` is called with ``ignore_eos=True``; any id of ``stop_token_ids`` ends decoding.
        ``generator``: the sampling draws' source (None: the global RNG)."""
        draw = _generator_kwargs(self.sampling, generator)
        out_tokens: List[int] = []
        cache = None
        for step in range(max_len):
            logp, cache = self._step(lm_input, cache)
            top_id = self.sampling_ids(logp, out_tokens, sampling, ignore_eos=step < min_len, **draw)
            if top_id in self.stop_token_ids:
                break
            yield top_id
            out_tokens.append(top_id)
            lm_input = _embed_id(self.speech_embedding, top_id)

    def _bistream_prefix(self, prompt_text: torch.Tensor):
        """(embeddings fed right after sos before any block, the prompt text left for the blocks)."""
        return None, prompt_text

    @torch.inference_mode()
    def inference_bistream(self, text: Iterable[torch.Tensor], prompt_text: torch.Tensor,
                           prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                           prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor, sampling: int = 25,
                           max_token_text_ratio: float = 20, min_token_text_ratio: float = 2,
                           generator: Optional[torch.Generator] = None) -> Generator[int, None, None]:
        """Generate while the text arrives: ``text`` yields (1, n) token tensors.

        Text is consumed in blocks of ``mix_ratio[0]`` tokens; after each block the model speaks until it emits (or
        is forced, every ``mix_ratio[1]`` tokens) the fill token, which is not yielded; ``streaming_banned_ids`` are
        banned meanwhile and any other stop id is an error. The prompt speech tokens are interleaved with the first
        blocks. When the text ends, the remaining text and task_id are appended and the model speaks until a stop
        id. Follows the reference step for step, including its quirks: the input fed when the last fill token was
        produced is fed once more before the remaining text, and min_token_text_ratio is not used.
        Defined differently from the reference (where it raises or never ends): after the text has ended, any stop
        id ends decoding (the reference accepts only eos and raises on the others), and the final phase stops after
        ``max_token_text_ratio`` x (new text tokens) speech tokens in all instead of running unbounded.
        ``generator``: as in :meth:`inference`.
        """
        draw = _generator_kwargs(self.sampling, generator)
        n_text, n_speech = self.mix_ratio
        device = prompt_text.device
        sos_emb, task_id_emb = self._sos_task_emb()
        if _as_int(prompt_speech_token_len) != 0:
            prompt_speech_emb = self.speech_embedding(prompt_speech_token.to(device))
        else:
            prompt_speech_emb = sos_emb.new_zeros(1, 0, self.llm_input_size)
        prefix, prompt_text = self._bistream_prefix(prompt_text)
        lm_input = sos_emb if prefix is None else torch.concat([sos_emb, prefix], dim=1)
        out_tokens: List[int] = []
        cache = None
        n_new_text, n_speech_out = 0, 0
        text_cache = self._embed_text(prompt_text)
        # forced fill position so the prompt speech plus the new speech fill whole blocks
        next_fill = (prompt_speech_token.shape[1] // n_speech + 1) * n_speech - prompt_speech_token.shape[1]
        for piece in text:
            piece = piece.to(device)
            n_new_text += piece.shape[1]
            text_cache = torch.concat([text_cache, self._embed_text(piece)], dim=1)
            # interleave what is left of the prompt speech with whole text blocks
            while prompt_speech_emb.size(1) != 0 and text_cache.size(1) >= n_text:
                lm_input = torch.concat([lm_input, text_cache[:, :n_text], prompt_speech_emb[:, :n_speech]], dim=1)
                logger.debug("bi-stream: appended %d text + %d prompt speech embeddings", n_text,
                             min(n_speech, prompt_speech_emb.size(1)))
                text_cache, prompt_speech_emb = text_cache[:, n_text:], prompt_speech_emb[:, n_speech:]
            if prompt_speech_emb.size(1) != 0:
                continue  # wait for more text
            after_fill = len(out_tokens) != 0 and out_tokens[-1] == self.fill_token
            # (a CosyVoice3 prefix makes the input longer than sos alone: decoding then starts before any block)
            if after_fill or (len(out_tokens) == 0 and lm_input.size(1) == 1):
                if text_cache.size(1) < n_text:
                    continue  # wait for more text
                block = text_cache[:, :n_text]
                lm_input = block if after_fill else torch.concat([lm_input, block], dim=1)
                text_cache = text_cache[:, n_text:]
            while True:
                logp, cache = self._step(lm_input, cache)
                if next_fill != -1 and len(out_tokens) == next_fill:
                    top_id = self.fill_token
                    next_fill += n_speech + 1
                else:
                    top_id = self._sample(logp, out_tokens, sampling, self.streaming_banned_ids, **draw)
                if top_id == self.fill_token:
                    next_fill = len(out_tokens) + n_speech + 1
                    logger.debug("bi-stream: fill token at %d, next forced at %d", len(out_tokens), next_fill)
                out_tokens.append(top_id)
                if top_id >= self.speech_token_size:
                    if top_id == self.fill_token:
                        break
                    raise ValueError(self._unexpected_streaming_token(top_id))
                yield top_id
                n_speech_out += 1
                lm_input = _embed_id(self.speech_embedding, top_id)

        lm_input = torch.concat([lm_input, text_cache, task_id_emb], dim=1)
        logger.debug("bi-stream: text ended, %d text tokens left; decoding until a stop id", text_cache.size(1))
        max_total = int(n_new_text * max_token_text_ratio)
        while n_speech_out < max_total:
            logp, cache = self._step(lm_input, cache)
            top_id = self.sampling_ids(logp, out_tokens, sampling, ignore_eos=False, **draw)
            out_tokens.append(top_id)
            if top_id in self.stop_token_ids:
                break
            yield top_id
            n_speech_out += 1
            lm_input = _embed_id(self.speech_embedding, top_id)

    def _unexpected_streaming_token(self, token: int) -> str:
        return (f"inference_bistream: the model produced stop id {token} while text was still streaming (only "
                f"speech tokens and the fill token {self.fill_token} can come then)")


class CosyVoice3LM(Qwen2LM):
    """CosyVoice3's speech-token LM: ``Qwen2LM`` with 200 extra ids, sos/task id as ``speech_embedding`` rows,
    instruct tokens in training, and the ``<|endofprompt|>`` check. Official constructor arguments, plus:

    ``min_len_mode``: which ids are banned while fewer than ``min_len`` tokens are decoded (and, in
    ``inference_bistream``, while the text streams).

    * ``"official"`` (default; the decoding the released model is used with): as the reference at ace7c47, id
      speech_token_size = 6561 is banned, which for CosyVoice3 is *sos*, not eos. eos (6562) and the other stop ids
      are never banned, so decoding can end at any step, even the first; a banned 6561 can still end it once the
      minimum is reached.
    * ``"ban_stop_tokens"`` (the fix): every stop id (6561..6760) is banned below ``min_len`` - what the
      reference's vLLM path does with ``min_tokens`` and ``stop_token_ids`` - and, while text streams, every stop
      id except fill, so the model cannot stop before min_len or end a bi-stream block with anything but fill.
    """

    END_OF_PROMPT_ID = 151646  # <|endofprompt|> in the CosyVoice3 tokenizer (the reference hard-codes it too)
    MIN_LEN_MODES = ("official", "ban_stop_tokens")

    def __init__(self, llm_input_size: int, llm_output_size: int, speech_token_size: int, llm: nn.Module,
                 sampling: Callable, length_normalized_loss: bool = True, lsm_weight: float = 0.0,
                 mix_ratio: Sequence[int] = (5, 15), min_len_mode: str = "official"):
        nn.Module.__init__(self)
        if min_len_mode not in self.MIN_LEN_MODES:
            raise ValueError(f"CosyVoice3LM: min_len_mode '{min_len_mode}' is not one of "
                             f"{', '.join(self.MIN_LEN_MODES)}")
        self._init_common(llm_input_size, llm_output_size, speech_token_size, sampling, length_normalized_loss,
                          lsm_weight, mix_ratio)
        self.sos = speech_token_size
        self.eos_token = speech_token_size + 1
        self.task_id = speech_token_size + 2
        self.fill_token = speech_token_size + 3
        self.stop_token_ids = [speech_token_size + i for i in range(200)]
        self.min_len_mode = min_len_mode
        if min_len_mode == "official":
            # the reference's ban of id speech_token_size, i.e. sos (a bug kept: the trained model's behaviour)
            self.min_len_banned_ids = [speech_token_size]
            self.streaming_banned_ids = [speech_token_size]
        else:
            self.min_len_banned_ids = list(self.stop_token_ids)
            self.streaming_banned_ids = [i for i in self.stop_token_ids if i != self.fill_token]
        # registration order fixes the state_dict order: llm.*, llm_decoder, speech_embedding
        self.llm = llm
        self.llm_decoder = nn.Linear(llm_output_size, speech_token_size + 200, bias=False)
        self.speech_embedding = nn.Embedding(speech_token_size + 200, llm_input_size)

    def _sos_task_emb(self):
        return _embed_id(self.speech_embedding, self.sos), _embed_id(self.speech_embedding, self.task_id)

    def _instruct_tokens(self, batch: dict, device: torch.device):
        """Instruct ids of the batch, embedded with the text table (ignored in the loss).

        Defined where the reference raises: a batch without ``instruct_token`` (the reference: KeyError) trains
        without instructions, and an all-empty instruct column that padding made float (the reference: a dtype
        error in the embedding) counts as empty.
        """
        if "instruct_token" not in batch:
            return None, None, None
        if "instruct_token_len" not in batch:
            raise KeyError("CosyVoice3LM.forward: batch has 'instruct_token' but no 'instruct_token_len'")
        instruct_token = batch["instruct_token"].to(device)
        if instruct_token.is_floating_point():
            if instruct_token.numel() != 0:
                raise TypeError(f"CosyVoice3LM.forward: instruct_token must hold integer ids, got "
                                f"{instruct_token.dtype}")
            instruct_token = instruct_token.long()
        instruct_token_len = batch["instruct_token_len"].to(device)
        return instruct_token, self._embed_text(instruct_token), instruct_token_len

    def _check_end_of_prompt(self, where: str, *tokens: torch.Tensor) -> None:
        """The reference asserts <|endofprompt|> is in the input; here it is a ValueError naming the fix."""
        if not any(bool((t.reshape(-1) == self.END_OF_PROMPT_ID).any()) for t in tokens):
            raise ValueError(
                f"CosyVoice3LM: no <|endofprompt|> (id {self.END_OF_PROMPT_ID}) in the {where}; CosyVoice3 needs "
                f"it after a system prompt: put 'You are a helpful assistant.<|endofprompt|>' in front of the prompt "
                f"text (zero-shot), the instruction (instruct) or the text (no prompt text)")

    def inference(self, text: torch.Tensor, text_len: torch.Tensor, prompt_text: torch.Tensor,
                  prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                  prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor, sampling: int = 25,
                  max_token_text_ratio: float = 20, min_token_text_ratio: float = 2,
                  uuid: str = "", generator: Optional[torch.Generator] = None) -> Generator[int, None, None]:
        """:meth:`Qwen2LM.inference` after checking that ``prompt_text ++ text`` holds <|endofprompt|> (checked at
        the call, before the first token is asked for). Zero-shot, no-prompt and instruct calls differ only in
        their inputs: the instruction takes the place of the prompt text."""
        self._check_end_of_prompt("prompt text or text", prompt_text, text)
        return super().inference(text, text_len, prompt_text, prompt_text_len, prompt_speech_token,
                                 prompt_speech_token_len, embedding, sampling, max_token_text_ratio,
                                 min_token_text_ratio, uuid, generator=generator)

    def _bistream_prefix(self, prompt_text: torch.Tensor):
        """As the reference: the prompt text up to and including the first <|endofprompt|> is fed right after sos;
        only the rest is interleaved with the speech blocks."""
        self._check_end_of_prompt("prompt text (inference_bistream needs it there)", prompt_text)
        ids = prompt_text.reshape(-1).tolist()
        end = ids.index(self.END_OF_PROMPT_ID) + 1
        return self._embed_text(prompt_text[:, :end]), prompt_text[:, end:]

    def _unexpected_streaming_token(self, token: int) -> str:
        return (super()._unexpected_streaming_token(token)
                + "; min_len_mode='ban_stop_tokens' bans the other stop ids while text streams")
