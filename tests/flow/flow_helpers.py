"""What the v2 and v3 flow parity tests share (a uniquely named module, importable from any test in tests/flow)."""
from __future__ import annotations

import random

import torch

ATOL = 1e-5
TRAIN = {"stream": (1, 2024), "nonstream": (0, 2025)}  # python seed, torch seed (the fixtures' README)
BATCH_KEYS = ("speech_token", "speech_token_len", "speech_feat", "speech_feat_len", "embedding")


def seeded_training_loss(flow, io, kind: str, record_calls):
    """The flow's training forward on a recorded batch under the recorded seeds, checked against the recorded loss:
    (the estimator's calls, python RNG state after, torch RNG state after)."""
    py_seed, torch_seed = TRAIN[kind]
    random.seed(py_seed)
    torch.manual_seed(torch_seed)
    with record_calls(flow.decoder.estimator) as rec, torch.no_grad():
        out = flow({k: io[k] for k in BATCH_KEYS}, torch.device("cpu"))
    py_after, torch_after = random.getstate(), torch.random.get_rng_state()
    torch.testing.assert_close(out["loss"], io["loss"], atol=ATOL, rtol=0)
    return rec, py_after, torch_after


def check_python_draws(seed: int, feat_len, kinds, values, py_after=None) -> None:
    """The loss drew, from python's RNG seeded with ``seed``, exactly the recorded ``values`` (``kinds``: 1 for an
    int) in the documented order: random() for streaming, then per utterance random() and (when >= 0.5)
    randint(0, int(0.3 * feat_len)); with ``py_after``, nothing else."""
    random.seed(seed)
    drawn = [random.random()]
    for n in feat_len:
        r = random.random()
        drawn.append(r)
        if r >= 0.5:
            drawn.append(random.randint(0, int(0.3 * n)))
    assert [float(d) for d in drawn] == [float(v) for v in values]
    assert [1 if isinstance(d, int) else 0 for d in drawn] == [int(k) for k in kinds]
    assert py_after is None or random.getstate() == py_after


def check_torch_draws(kind: str, io, torch_after) -> None:
    """The loss drew t, z and the condition-drop randoms, exactly the recorded ones and nothing else."""
    torch.manual_seed(TRAIN[kind][1])
    t, z, cfg_rand = torch.rand(2, 1, 1), torch.randn(2, 80, 50), torch.rand(2)
    assert torch.equal(torch.random.get_rng_state(), torch_after)
    assert torch.equal(t, io["t"]) and torch.equal(z, io["z"]) and torch.equal(cfg_rand, io["cfg_rand"])


def check_first_chunk_is_causal(est) -> None:
    """With streaming masks an estimator's first 50-frame chunk does not depend on any later frame, and without
    them it does."""
    torch.manual_seed(0)
    x, mu, cond = torch.randn(3, 1, 80, 120).unbind(0)
    mask, t, spks = torch.ones(1, 1, 120), torch.tensor([0.4]), torch.randn(1, 80)
    x2 = x.clone()
    x2[:, :, 50:] = torch.randn(1, 80, 70)
    with torch.no_grad():
        a = est(x, mask, mu, t, spks, cond, streaming=True)
        b = est(x2, mask, mu, t, spks, cond, streaming=True)
        c = est(x2, mask, mu, t, spks, cond, streaming=False)
    torch.testing.assert_close(a[:, :, :50], b[:, :, :50], atol=1e-5, rtol=0)
    assert (a[:, :, :50] - c[:, :, :50]).abs().max() > 1e-3


def check_inference(io, suffix: str, feat, extra, rec, streaming: bool) -> None:
    """A recorded flow.inference call: the mel, and what the CFM was called with (mu, mask, spks, cond, 10 steps)."""
    assert extra is None
    assert feat.shape == io[f"feat_{suffix}"].shape and feat.dtype == torch.float32
    torch.testing.assert_close(feat, io[f"feat_{suffix}"], atol=ATOL, rtol=0)
    (_, kwargs), = rec.calls
    for key in ("mu", "mask", "spks", "cond"):
        torch.testing.assert_close(kwargs[key], io[f"{key}_{suffix}"], atol=ATOL, rtol=0)
    assert kwargs["n_timesteps"] == 10 and kwargs["streaming"] is streaming
