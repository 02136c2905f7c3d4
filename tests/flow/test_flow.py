"""CausalMaskedDiffWithXvec: inference in the three recorded modes, seeded training losses, the
full-size key manifest and strict loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cosyvoice.flow.decoder import CausalConditionalDecoder
from cosyvoice.flow.flow import CausalMaskedDiffWithXvec
from cosyvoice.flow.flow_matching import CausalConditionalCFM
from cosyvoice.transformer.upsample_encoder import UpsampleConformerEncoder
from cosyvoice.utils.common import CheckpointError, load_checkpoint_strict
from cosyvoice.utils.config import DictConfig
from flow_helpers import BATCH_KEYS, TRAIN, check_inference, check_recorded_training_loss

MODES = {"nonstream_final": (False, True), "stream_final": (True, True), "stream_chunk": (True, False)}


@pytest.mark.parametrize("mode", list(MODES))
def test_inference_matches_official(tiny_flow, load_io, record_calls, mode):
    io = load_io("flow_inference")
    streaming, finalize = MODES[mode]
    with record_calls(tiny_flow.decoder) as rec:
        feat, extra = tiny_flow.inference(io["token"], io["token_len"], io["prompt_token"], io["prompt_token_len"],
                                          io["prompt_feat"], io["prompt_feat_len"], io["embedding"],
                                          streaming=streaming, finalize=finalize)
    check_inference(io, mode, feat, extra, rec, streaming)


@pytest.mark.parametrize("kind", list(TRAIN))
def test_training_loss_matches_official(tiny_flow, load_io, record_calls, kind):
    io = load_io(f"flow_train_loss_{kind}")
    args, kwargs = check_recorded_training_loss(tiny_flow, io, kind, record_calls)
    assert kwargs["streaming"] is bool(io["streaming"])
    mu = args[2]
    dropped = io["cfg_rand"] <= 0.2
    assert torch.equal(mu.abs().amax(dim=(1, 2)) == 0, dropped)


def test_training_batch_without_tokens_is_reported(tiny_flow):
    with pytest.raises(KeyError, match="no 'speech_token'"):
        tiny_flow({"speech_feat": torch.zeros(1, 4, 80)}, torch.device("cpu"))


def test_feature_length_mismatch_is_reported(tiny_flow, load_io):
    io = load_io("flow_train_loss_stream")
    batch = {k: io[k] for k in BATCH_KEYS}
    batch["speech_feat"] = batch["speech_feat"][:, :48]
    with pytest.raises(ValueError, match="speech_feat has 48 frames but the 25 speech tokens give 50"):
        tiny_flow(batch, torch.device("cpu"))


def test_full_size_flow_matches_manifest(fixtures_dir, load_io, full_size_module):
    """conf/cosyvoice2.yaml's flow, built on the meta device, has exactly the official state_dict
    (names in order, shapes, dtypes); the meta build draws no random numbers and still gets real noise."""
    conf = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice2.yaml"
    flow, manifest = full_size_module(conf, "flow", fixtures_dir / "manifest_full.json")
    for attr in manifest["plain_tensor_attributes_not_in_state_dict"]:
        obj = flow
        for part in attr["name"].split("."):
            obj = getattr(obj, part)
        assert list(obj.shape) == attr["shape"] and obj.device.type == "cpu"
    assert torch.equal(flow.decoder.rand_noise[:, :, :1000], load_io("flow_rand_noise")["rand_noise_first1000"])


def test_strict_load_names_the_bad_key(tiny_flow, fixtures_dir):
    state = torch.load(fixtures_dir / "flow.pt", map_location="cpu", weights_only=True)
    bad = dict(state)
    bad["encoder_proj.weight"] = torch.zeros(80, 63)
    with pytest.raises(CheckpointError, match=r"wrong shapes: encoder_proj.weight \(checkpoint \[80, 63\]"):
        load_checkpoint_strict(tiny_flow, bad)
    missing = {k: v for k, v in state.items() if k != "decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys: decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight"):
        load_checkpoint_strict(tiny_flow, missing)


def test_other_mel_count_and_width_run_end_to_end():
    """A flow with 40 mel bins and 32-wide encoder: nothing is tied to 80 bins or 512/256 channels."""
    torch.manual_seed(0)
    encoder = UpsampleConformerEncoder(input_size=32, output_size=32, attention_heads=2, linear_units=48,
                                       num_blocks=1, input_layer="linear", pos_enc_layer_type="rel_pos_espnet",
                                       selfattention_layer_type="rel_selfattn", use_cnn_module=False,
                                       macaron_style=False, static_chunk_size=4)
    estimator = CausalConditionalDecoder(in_channels=160, out_channels=40, channels=[32], dropout=0.0,
                                         attention_head_dim=8, n_blocks=1, num_mid_blocks=1, num_heads=2,
                                         act_fn="gelu", static_chunk_size=8, num_decoding_left_chunks=-1)
    cfm = CausalConditionalCFM(120, DictConfig({"sigma_min": 1e-6, "solver": "euler", "t_scheduler": "cosine",
                                                "training_cfg_rate": 0.2, "inference_cfg_rate": 0.7}),
                               1, 40, estimator)
    flow = CausalMaskedDiffWithXvec(input_size=32, output_size=40, spk_embed_dim=16, vocab_size=100,
                                    input_frame_rate=25, encoder=encoder, decoder=cfm).eval()
    assert cfm.rand_noise.shape == (1, 40, 15000)
    feat, _ = flow.inference(torch.randint(0, 100, (1, 7), dtype=torch.int32), torch.tensor([7], dtype=torch.int32),
                             torch.randint(0, 100, (1, 3), dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                             torch.randn(1, 6, 40), torch.tensor([6], dtype=torch.int32), torch.randn(1, 16),
                             streaming=True, finalize=False)
    assert feat.shape == (1, 40, 2 * (7 + 3 - 3) - 6)
    batch = {"speech_token": torch.randint(0, 100, (2, 5)), "speech_token_len": torch.tensor([5, 4], dtype=torch.int32),
             "speech_feat": torch.randn(2, 10, 40), "speech_feat_len": torch.tensor([10, 8], dtype=torch.int32),
             "embedding": torch.randn(2, 16)}
    loss = flow.train()(batch, torch.device("cpu"))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and flow.input_embedding.weight.grad is not None
