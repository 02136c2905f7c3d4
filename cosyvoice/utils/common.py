"""Small helpers shared by the models (the names match the official cosyvoice.utils.common)."""
from __future__ import annotations

import argparse
import os
import random
from typing import List, Mapping, Optional

import numpy as np
import torch

from cosyvoice.utils.errors import UserError

IGNORE_ID = -1


def str2bool(value: str) -> bool:
    """An argparse ``type`` for boolean options: true/1/yes or false/0/no (any case)."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def pad_list(xs: List[torch.Tensor], pad_value: float) -> torch.Tensor:
    """Stack tensors of different first-dim lengths into (B, Tmax, ...), filling the tail with pad_value."""
    longest = max(x.size(0) for x in xs)
    out = xs[0].new_full((len(xs), longest) + tuple(xs[0].shape[1:]), pad_value)
    for i, x in enumerate(xs):
        out[i, : x.size(0)] = x
    return out


def th_accuracy(pad_outputs: torch.Tensor, pad_targets: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """Arg-max accuracy of (B*T, V) scores against (B, T) targets, ignoring ``ignore_label``."""
    pred = pad_outputs.view(pad_targets.size(0), pad_targets.size(1), -1).argmax(-1)
    keep = pad_targets != ignore_label
    hits = (pred[keep] == pad_targets[keep]).sum()
    return (hits / keep.sum()).detach()


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def init_weights(m: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    if "Conv" in type(m).__name__:
        m.weight.data.normal_(mean, std)


def set_all_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Call it where you mean to, never as a side effect."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean keep-mask -> additive attention bias (0 where kept, -1e10 where masked)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask_to_bias wants a bool mask, got {mask.dtype}")
    return (1.0 - mask.to(dtype)) * -1.0e10


# ---------------------------------------------------------------------------------------------------------------
# Token sampling for the speech-token LLM (same signatures and random draws as the official sampler functions).
# ``weighted_scores`` is a 1-D tensor of log-probabilities (or logits) over the speech-token vocabulary.
# ``generator`` (an addition, keyword only): draw from this torch.Generator instead of the global RNG; one seeded
# with S draws exactly what the global RNG draws after torch.manual_seed(S), without touching the global state.
# ---------------------------------------------------------------------------------------------------------------


def nucleus_sampling(weighted_scores: torch.Tensor, top_p: float = 0.8, top_k: int = 25, *,
                     generator: Optional[torch.Generator] = None) -> int:
    """Sample one id from the smallest head of the distribution holding ``top_p`` of the mass, at most ``top_k`` ids.

    Candidates are taken in descending probability (stable sort, so ties keep the lower id first). A candidate is
    admitted while the mass admitted *before* it is still below ``top_p`` and fewer than ``top_k`` are admitted;
    so with top_p > 0 and top_k >= 1 the first candidate is always admitted, and ``top_k=1`` returns the arg-max.
    The running mass is summed in the scores' dtype one candidate at a time, the way the reference does, so the
    cut-off matches it exactly.
    """
    probs, order = weighted_scores.softmax(dim=0).sort(descending=True, stable=True)
    head = probs[: max(int(top_k), 0)].tolist()
    acc_dtype = np.float64 if probs.dtype == torch.float64 else np.float32
    mass, limit = acc_dtype(0.0), acc_dtype(top_p)
    keep = 0
    for p in head:
        if not mass < limit:
            break
        mass = acc_dtype(mass + acc_dtype(p))
        keep += 1
    if keep == 0:
        raise ValueError(f"nucleus_sampling: nothing to sample from (top_k={top_k}, top_p={top_p})")
    choice = probs[:keep].clone().multinomial(1, replacement=True, generator=generator)
    return int(order[:keep][choice].item())


def random_sampling(weighted_scores: torch.Tensor, decoded_tokens: List[int], sampling: int, *,
                    generator: Optional[torch.Generator] = None) -> int:
    """Sample one id from the full softmax distribution (``decoded_tokens`` and ``sampling`` are unused)."""
    return int(weighted_scores.softmax(dim=0).multinomial(1, replacement=True, generator=generator).item())


def ras_sampling(weighted_scores: torch.Tensor, decoded_tokens: List[int], sampling: int, top_p: float = 0.8,
                 top_k: int = 25, win_size: int = 10, tau_r: float = 0.1, *,
                 generator: Optional[torch.Generator] = None) -> int:
    """Repetition-aware sampling (VALL-E 2).

    Draw with :func:`nucleus_sampling`; if the drawn id occurs at least ``win_size * tau_r`` times among the last
    ``win_size`` decoded tokens, ban it (``weighted_scores`` is modified in place, as in the reference) and draw
    again from the whole distribution with :func:`random_sampling`.
    """
    top_id = nucleus_sampling(weighted_scores, top_p=top_p, top_k=top_k, generator=generator)
    window = decoded_tokens[-win_size:] if win_size > 0 else []
    repeats = sum(1 for t in window if int(t) == top_id)
    if repeats >= win_size * tau_r:
        weighted_scores[top_id] = -float("inf")
        top_id = random_sampling(weighted_scores, decoded_tokens, sampling, generator=generator)
    return top_id


def fade_in_out(fade_in_mel: torch.Tensor, fade_out_mel: torch.Tensor, window) -> torch.Tensor:
    """Cross-fade the head of ``fade_in_mel`` with the tail of ``fade_out_mel`` over ``len(window) // 2`` samples.

    ``window`` (a torch tensor or numpy array of even length, e.g. a Hamming window) rises over its first half and
    falls over its second: out[..., :n] = fade_in[..., :n] * window[:n] + fade_out[..., -n:] * window[n:].
    Works on the last axis (mel frames or waveform samples). Returns a new tensor; the inputs are left unchanged.
    The products are formed in the promoted dtype of window and data (float64 for a numpy window) and stored back
    in the data's dtype, as the reference does.
    """
    window = torch.as_tensor(window).to(fade_in_mel.device)
    n = int(window.shape[0] // 2)
    out = fade_in_mel.clone()
    if n > 0:
        out[..., :n] = fade_in_mel[..., :n] * window[:n] + fade_out_mel[..., -n:] * window[n:]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Strict checkpoint loading shared by llm / flow / hift.
# ---------------------------------------------------------------------------------------------------------------


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the module it is loaded into; the message names the file and the keys."""


def _first(keys, limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint_strict(module: torch.nn.Module, path, strip_prefix: str = None, map_location="cpu") -> None:
    """Load a ``torch.save``'d state_dict into ``module`` with every key and shape checked.

    ``path``: a checkpoint file, or a state_dict already in memory (then reported as ``<state_dict>``).
    ``strip_prefix``: remove every occurrence of this string from each key first (plain ``str.replace``; the
    official HiFT loader does this with ``'generator.'`` so that GAN-wrapper checkpoints load too).
    Raises :class:`CheckpointError` (one line naming the file and the first offending keys) on a missing file,
    a file that is not a state_dict, missing keys, unexpected keys or wrongly shaped tensors.
    """
    name, state = read_state_dict(path, map_location)
    if strip_prefix:
        state = {k.replace(strip_prefix, ""): v for k, v in state.items()}
    check_state_dict(module, state, name)
    module.load_state_dict(state, strict=True)


def read_state_dict(path, map_location="cpu"):
    """``(name, state_dict)`` from a checkpoint file or an in-memory dict; one-line CheckpointError otherwise."""
    if isinstance(path, Mapping):
        name, state = "<state_dict>", dict(path)
    else:
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise CheckpointError(f"checkpoint not found: {name} (check the model directory / --checkpoint path)")
        try:
            state = torch.load(name, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line report
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
            raise CheckpointError(f"{name}: cannot read as a torch checkpoint: {type(e).__name__}: {first}") from e
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{name}: expected a state_dict (mapping of name -> tensor), got {type(state).__name__}")
    return name, state


def check_state_dict(module: torch.nn.Module, state: Mapping, name: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or wrongly shaped keys of ``state``."""
    check_state_keys(module.state_dict(), state, name, type(module).__name__)


def check_state_keys(expected: Mapping, state: Mapping, name: str, what: str,
                     hint: str = "is this the checkpoint for this module and config?") -> None:
    """:func:`check_state_dict` against the tensors ``expected`` (``what`` names them in the message)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} (checkpoint {list(state[k].shape)} vs model {list(v.shape)})"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    not_tensor = [k for k in expected if k in state and not isinstance(state[k], torch.Tensor)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_first(wrong, 3)}")
    if not_tensor:
        problems.append(f"not tensors: {_first(not_tensor)}")
    if problems:
        raise CheckpointError(f"{name}: does not fit {what}: " + "; ".join(problems) + f" ({hint})")

