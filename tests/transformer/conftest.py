"""Fixtures for the transformer tests: the tiny fixture encoder with the weights from flow.pt."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cosyvoice.transformer.upsample_encoder import UpsampleConformerEncoder

# The encoder entry of fixtures/cosyvoice2/tiny.yaml.
TINY_ENCODER_ARGS = dict(
    output_size=64, attention_heads=4, linear_units=128, num_blocks=2, dropout_rate=0.1,
    positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True, input_layer="linear",
    pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", input_size=64,
    use_cnn_module=False, macaron_style=False, static_chunk_size=25,
)


@pytest.fixture(scope="session")
def tiny_encoder_args():
    return dict(TINY_ENCODER_ARGS)


@pytest.fixture(scope="session")
def flow_state_dict(fixtures_dir):
    return torch.load(fixtures_dir / "flow.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def tiny_encoder(flow_state_dict):
    enc = UpsampleConformerEncoder(**TINY_ENCODER_ARGS)
    sub = {k[len("encoder."):]: v for k, v in flow_state_dict.items() if k.startswith("encoder.")}
    enc.load_state_dict(sub, strict=True)
    return enc.eval()


@pytest.fixture(scope="session")
def encoder_io(fixtures_dir):
    return load_file(fixtures_dir / "flow_encoder.safetensors")
