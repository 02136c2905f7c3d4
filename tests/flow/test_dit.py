"""The CosyVoice3 DiT estimator against flow_estimator.safetensors, and the official behaviours it pins down."""
from __future__ import annotations

import json

import pytest
import torch

from flow_helpers import check_first_chunk_is_causal
from cosyvoice.flow.DiT.dit import DiT
from cosyvoice.flow.DiT.modules import RotaryEmbedding, apply_rotary_pos_emb

ATOL = 1e-5


@pytest.fixture(scope="module")
def est(tiny3_flow):
    return tiny3_flow.decoder.estimator


@pytest.fixture(scope="module")
def io(load_io3):
    return load_io3("flow_estimator")


@pytest.mark.parametrize("mode", ["nonstream", "stream"])
def test_estimator_matches_official(est, io, mode):
    with torch.no_grad():
        out = est(io["x"], io["mask"], io["mu"], io["t"], io["spks"], io["cond"], streaming=mode == "stream")
    assert out.shape == (2, 80, 120)
    torch.testing.assert_close(out, io[f"out_{mode}"], atol=ATOL, rtol=0)
    # official: the attention output is zeroed at padded frames, the estimator output is not
    assert out[1, :, 95:].abs().max() > 0.1


@pytest.mark.parametrize("mode", ["nonstream", "stream"])
def test_estimator_internals(est, io, mode):
    """Time embedding, input embedding and the first DiT block, as recorded."""
    with torch.no_grad():
        t = est.time_embed(io["t"])
        x = est.input_embed(io["x"].transpose(1, 2), io["cond"].transpose(1, 2), io["mu"].transpose(1, 2), io["spks"])
        mask = est.attention_mask(x, io["mask"], streaming=mode == "stream")
        block0 = est.transformer_blocks[0](x, t, mask=mask, rope=est.rotary_embed.forward_from_seq_len(120))
    torch.testing.assert_close(t, io["t_emb"], atol=ATOL, rtol=0)
    torch.testing.assert_close(x, io["x_embed"], atol=ATOL, rtol=0)
    torch.testing.assert_close(block0, io[f"block0_{mode}"], atol=ATOL, rtol=0)


def test_streaming_masks_follow_static_chunks(est, io):
    x = torch.zeros(2, 120, 64)
    mask = est.attention_mask(x, io["mask"], streaming=True)[:, 0]
    q, k = torch.arange(120).unsqueeze(1), torch.arange(120).unsqueeze(0)
    valid = torch.stack([torch.ones(120, dtype=torch.bool), torch.arange(120) < 95])
    expected = (k < (q // 50 + 1) * 50).unsqueeze(0) & valid[:, None, :]
    assert torch.equal(mask, expected)
    full = est.attention_mask(x, io["mask"], streaming=False)[:, 0]
    assert torch.equal(full, valid[:, None, :].expand(2, 120, 120))


def test_streaming_estimator_is_chunk_causal(est):
    """With streaming masks (and causal convs) the first 50-frame chunk does not depend on anything after it."""
    check_first_chunk_is_causal(est)


def test_scalar_time_is_broadcast(est, io):
    with torch.no_grad():
        a = est(io["x"], io["mask"], io["mu"], torch.tensor(0.3), io["spks"], io["cond"])
        b = est(io["x"], io["mask"], io["mu"], torch.tensor([0.3, 0.3]), io["spks"], io["cond"])
    assert torch.equal(a, b)


def test_rope_rotates_only_the_first_head_in_interleaved_pairs():
    """x-transformers' partial rotary on the un-split projections: channels 0..dim_head-1 (head 0) rotate, pairs
    (2i, 2i+1) share frequency base^(-2i/dim_head); the other heads pass unchanged."""
    rope = RotaryEmbedding(4)
    assert torch.allclose(rope.inv_freq, torch.tensor([1.0, 0.01]))
    freqs, scale = rope.forward_from_seq_len(3)
    assert freqs.shape == (1, 3, 4) and scale == 1.0
    assert torch.equal(freqs[0, 2], torch.tensor([2.0, 2.0, 0.02, 0.02]))
    q = torch.arange(1.0, 9.0).repeat(1, 3, 1)  # (1, 3, 8): two heads of 4
    out = apply_rotary_pos_emb(q, freqs)
    assert torch.equal(out[..., 4:], q[..., 4:])
    angle = torch.tensor(1.0)  # position 1, pair 0
    expected = torch.stack([1 * angle.cos() - 2 * angle.sin(), 2 * angle.cos() + 1 * angle.sin()])
    torch.testing.assert_close(out[0, 1, :2], expected, atol=1e-6, rtol=0)
    assert torch.equal(out[0, 0], q[0, 0])  # position 0: no rotation


def test_inv_freq_is_a_persistent_buffer_and_dropout_defaults_to_official(est, fixtures3_dir):
    assert list(est.state_dict()["rotary_embed.inv_freq"].shape) == [8]
    probes = json.loads((fixtures3_dir / "behaviour_probes.json").read_text())
    block = est.transformer_blocks[0]
    assert block.attn.to_out[1].p == probes["dit_dropout_p"] == block.ff.ff[1].p  # the yaml does not set it


def test_dropout_draws_only_in_training():
    torch.manual_seed(0)
    dit = DiT(dim=32, depth=1, heads=2, dim_head=16, mel_dim=8, mu_dim=8, spk_dim=8, out_channels=8)
    x, mu, cond = torch.randn(3, 1, 8, 10).unbind(0)
    args = (x, torch.ones(1, 1, 10), mu, torch.tensor([0.5]), torch.randn(1, 8), cond)
    state = torch.random.get_rng_state()
    with torch.no_grad():
        a, b = dit.eval()(*args), dit(*args)
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)
    dit.train()(*args)
    assert not torch.equal(torch.random.get_rng_state(), state)


def test_cfm_sizes_its_noise_from_a_dit_without_out_channels():
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.utils.config import DictConfig

    dit = DiT(dim=32, depth=1, heads=2, dim_head=16, mel_dim=40, mu_dim=40, spk_dim=40)
    assert dit.out_channels is None  # the official default
    cfm = CausalConditionalCFM(120, DictConfig({"sigma_min": 1e-6, "solver": "euler", "t_scheduler": "cosine",
                                                "training_cfg_rate": 0.2, "inference_cfg_rate": 0.7}), 1, 40, dit)
    assert cfm.rand_noise.shape == (1, 40, 15000)
    with pytest.raises(ValueError, match="integer out_channels \\(or mel_dim\\)"):
        CausalConditionalCFM(120, {"sigma_min": 1e-6, "solver": "euler", "t_scheduler": "cosine",
                                   "training_cfg_rate": 0.2, "inference_cfg_rate": 0.7}, 1, 40, torch.nn.Linear(2, 2))
