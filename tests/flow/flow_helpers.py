"""What the v2 and v3 flow parity tests share (a uniquely named module, importable from any test in tests/flow)."""
from __future__ import annotations

import random

import torch

ATOL = 1e-5
TRAIN = {"stream": (1, 2024), "nonstream": (0, 2025)}  # python seed, torch seed (the fixtures' README)
BATCH_KEYS = ("speech_token", "speech_token_len", "speech_feat", "speech_feat_len", "embedding")


def check_training_loss(flow, batch, expected, py_seed: int, torch_seed: int, record_calls):
    """The flow's training forward on ``batch`` under the given seeds gives the ``expected`` loss and draws exactly
    the expected randoms and nothing else; returns the (args, kwargs) of its one estimator call.

    expected: loss; py_draw_values and py_draw_kinds (1 for an int), replayed in the documented order from
    feat_len: random() for streaming, then per utterance random() and (when >= 0.5)
    randint(0, int(0.3 * feat_len)); t, z and cfg_rand, the torch draws of the loss."""
    random.seed(py_seed)
    torch.manual_seed(torch_seed)
    with record_calls(flow.decoder.estimator) as rec, torch.no_grad():
        out = flow(batch, torch.device("cpu"))
    py_after, torch_after = random.getstate(), torch.random.get_rng_state()
    torch.testing.assert_close(out["loss"], expected["loss"], atol=ATOL, rtol=0)

    random.seed(py_seed)
    drawn = [random.random()]
    for n in expected["feat_len"]:
        r = random.random()
        drawn.append(r)
        if r >= 0.5:
            drawn.append(random.randint(0, int(0.3 * n)))
    assert [float(d) for d in drawn] == [float(v) for v in expected["py_draw_values"]]
    assert [1 if isinstance(d, int) else 0 for d in drawn] == [int(k) for k in expected["py_draw_kinds"]]
    assert random.getstate() == py_after

    torch.manual_seed(torch_seed)
    t, z, cfg_rand = torch.rand(2, 1, 1), torch.randn(expected["z"].shape), torch.rand(2)
    assert torch.equal(torch.random.get_rng_state(), torch_after)
    assert torch.equal(t, expected["t"]) and torch.equal(z, expected["z"])
    assert torch.equal(cfg_rand, expected["cfg_rand"])
    (call,) = rec.calls
    return call


def check_recorded_training_loss(flow, io, kind: str, record_calls):
    """check_training_loss on a flow_train_loss_<kind> fixture (its batch, seeds and recorded draws)."""
    expected = {k: io[k] for k in ("loss", "py_draw_values", "py_draw_kinds", "t", "z", "cfg_rand")}
    return check_training_loss(flow, {k: io[k] for k in BATCH_KEYS}, {**expected, "feat_len": io["speech_feat_len"]},
                               *TRAIN[kind], record_calls)


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
