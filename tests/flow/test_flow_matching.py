"""CausalConditionalCFM: fixed noise, Euler solve with CFG, training loss draws."""
from __future__ import annotations

import random

import pytest
import torch

from cosyvoice.flow.flow_matching import CausalConditionalCFM, ConditionalCFM, fixed_noise
from cosyvoice.utils.config import DictConfig

CFM_PARAMS = DictConfig({"sigma_min": 1e-06, "solver": "euler", "t_scheduler": "cosine",
                         "training_cfg_rate": 0.2, "inference_cfg_rate": 0.7, "reg_loss_type": "l1"})


def test_fixed_noise_equals_official(tiny_flow, load_io):
    noise = tiny_flow.decoder.rand_noise
    assert noise.shape == (1, 80, 15000) and noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise[:, :, :1000], load_io("flow_rand_noise")["rand_noise_first1000"])
    assert "rand_noise" not in "".join(tiny_flow.state_dict())


def test_building_the_cfm_leaves_global_rngs_alone(tiny_flow):
    """The official code reseeds python, numpy and torch (seed 0) here; ours uses a private generator."""
    torch.manual_seed(7)
    random.seed(7)
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    cfm = CausalConditionalCFM(240, CFM_PARAMS, 1, 80, tiny_flow.decoder.estimator)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert torch.equal(cfm.rand_noise, fixed_noise(80))


@pytest.mark.parametrize("mode", ["nonstream_final", "stream_final", "stream_chunk"])
def test_cfm_solve_on_recorded_inputs(tiny_flow, load_io, mode):
    """The recorded decoder inputs of flow.inference, solved with 10 Euler steps, give the recorded
    mels once the 30 prompt frames are cut."""
    io = load_io("flow_inference")
    feat, cache = tiny_flow.decoder(mu=io[f"mu_{mode}"], mask=io[f"mask_{mode}"], spks=io[f"spks_{mode}"],
                                    cond=io[f"cond_{mode}"], n_timesteps=10, streaming=mode.startswith("stream"))
    assert cache is None
    torch.testing.assert_close(feat[:, :, 30:], io[f"feat_{mode}"], atol=1e-5, rtol=0)


def test_euler_cfg_by_hand(tiny_flow):
    """One solve equals the explicit recipe: cosine time grid, x0 = noise, v = 1.7 v(cond) - 0.7 v(0)."""
    cfm, est = tiny_flow.decoder, tiny_flow.decoder.estimator
    torch.manual_seed(3)
    mu, cond, spks = torch.randn(1, 80, 12), torch.randn(1, 80, 12), torch.randn(1, 80)
    mask = torch.ones(1, 1, 12)
    out, _ = cfm(mu, mask, 4, spks=spks, cond=cond)
    t_grid = 1 - torch.cos(torch.linspace(0, 1, 5) * 0.5 * torch.pi)
    x = cfm.rand_noise[:, :, :12].clone()
    with torch.no_grad():
        for k in range(4):
            t = t_grid[k].reshape(1)
            v1 = est(x, mask, mu, t, spks, cond)
            v0 = est(x, mask, torch.zeros_like(mu), t, torch.zeros_like(spks), torch.zeros_like(cond))
            x = x + (t_grid[k + 1] - t_grid[k]) * (1.7 * v1 - 0.7 * v0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_temperature_scales_the_noise(tiny_flow):
    cfm = tiny_flow.decoder
    mu = torch.zeros(1, 80, 5)
    a, _ = cfm(mu, torch.ones(1, 1, 5), 1, temperature=0.0, spks=torch.zeros(1, 80), cond=torch.zeros(1, 80, 5))
    b, _ = cfm(mu, torch.ones(1, 1, 5), 1, temperature=1.0, spks=torch.zeros(1, 80), cond=torch.zeros(1, 80, 5))
    assert not torch.allclose(a, b)


def test_compute_loss_draw_order(tiny_flow):
    """t = rand(B,1,1), z = randn_like(x1), keep = rand(B) > 0.2; y and u as in the README."""
    cfm = tiny_flow.decoder
    torch.manual_seed(11)
    x1, mu, cond = torch.randn(3, 2, 80, 9).unbind(0)
    spks, mask = torch.randn(2, 80), torch.ones(2, 1, 9)
    torch.manual_seed(5)
    t, z, keep = torch.rand(2, 1, 1), torch.randn(2, 80, 9), torch.rand(2) > 0.2
    torch.manual_seed(5)
    with torch.no_grad():
        loss, y = cfm.compute_loss(x1, mask, mu, spks, cond)
        sigma = 1e-6
        torch.testing.assert_close(y, (1 - (1 - sigma) * t) * z + t * x1, atol=1e-6, rtol=0)
        k = keep.float()
        pred = cfm.estimator(y, mask, mu * k.view(-1, 1, 1), t.squeeze(), spks * k.view(-1, 1),
                             cond * k.view(-1, 1, 1))
        u = x1 - (1 - sigma) * z
        torch.testing.assert_close(loss, ((pred - u) ** 2).mean(), atol=1e-5, rtol=1e-6)


def test_too_long_input_is_reported(tiny_flow):
    with pytest.raises(ValueError, match="15001 frames exceed the fixed noise length 15000"):
        tiny_flow.decoder(torch.zeros(1, 80, 15001), torch.ones(1, 1, 15001), 1, spks=torch.zeros(1, 80))


def test_missing_cfm_param_is_named(tiny_flow):
    with pytest.raises(ValueError, match="cfm_params needs 'inference_cfg_rate'"):
        CausalConditionalCFM(240, {"solver": "euler", "t_scheduler": "cosine", "training_cfg_rate": 0.2},
                             estimator=tiny_flow.decoder.estimator)


def test_conditional_cfm_noise_cache(tiny_flow):
    """The non-causal CFM draws fresh noise and returns a cache of (noise, mu) for the prompt frames and
    the last 34 frames; a cache passed back fixes the first frames' noise."""
    cfm = ConditionalCFM(240, CFM_PARAMS, 1, 80, tiny_flow.decoder.estimator)
    mu, mask = torch.randn(1, 80, 40), torch.ones(1, 1, 40)
    spks, cond = torch.randn(1, 80), torch.zeros(1, 80, 40)
    torch.manual_seed(0)
    z = torch.randn_like(mu)
    torch.manual_seed(0)
    out, cache = cfm(mu, mask, 2, spks=spks, cond=cond, prompt_len=5)
    assert out.shape == (1, 80, 40) and cache.shape == (1, 80, 5 + 34, 2)
    assert torch.equal(cache[:, :, :5, 0], z[:, :, :5]) and torch.equal(cache[:, :, 5:, 0], z[:, :, -34:])
    assert torch.equal(cache[:, :, :5, 1], mu[:, :, :5])
    torch.manual_seed(1)
    _, cache2 = cfm(mu, mask, 2, spks=spks, cond=cond, prompt_len=5, cache=cache)
    assert torch.equal(cache2[:, :, :5, 0], z[:, :, :5])
