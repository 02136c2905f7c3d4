"""The stand-in ONNX front-end models have the official signatures and behave as documented."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from stage_test_utils import load_tool

mk = load_tool("make_tiny_pretrained")


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def campplus():
    return mk.build_campplus(1986)


@pytest.fixture(scope="module")
def tokenizer():
    return mk.build_speech_tokenizer(1986)


def test_campplus_signature_and_output(campplus):
    s = _session(campplus)
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert (inp.type, inp.shape) == ("tensor(float)", [1, "T", 80])
    assert (out.type, out.shape) == ("tensor(float)", [1, 192])
    rng = np.random.default_rng(0)
    for frames in (1, 37, 500):  # dynamic time axis
        e = s.run(None, {inp.name: rng.standard_normal((1, frames, 80)).astype(np.float32)})[0]
        assert e.shape == (1, 192) and e.dtype == np.float32 and np.isfinite(e).all()
    a = rng.standard_normal((1, 100, 80)).astype(np.float32)
    ea, eb = (s.run(None, {inp.name: x})[0] for x in (a, a[:, ::-1] * 0.5 + 1.0))
    assert np.abs(ea - eb).max() > 1e-2  # the embedding depends on the features


def test_speech_tokenizer_signature(tokenizer):
    s = _session(tokenizer)
    ins, (out,) = s.get_inputs(), s.get_outputs()
    assert [(i.type, i.shape) for i in ins] == [("tensor(float)", [1, 128, "T"]), ("tensor(int32)", [1])]
    assert out.type == "tensor(int64)" and out.shape == [1, "N"]


def _reference_tokens(model, feat: np.ndarray, length: int) -> np.ndarray:
    """The documented FSQ recipe in numpy: 4x mean-pool (last window partial), project, 0.999 tanh, round, base 3."""
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["proj"].astype(np.float64)
    x = feat[0, :, :length].astype(np.float64)
    pooled = np.stack([x[:, i:i + 4].mean(axis=1) for i in range(0, length, 4)])  # (ceil(length / 4), 128)
    level = np.round(0.999 * np.tanh(pooled @ w))
    return ((level + 1) * 3 ** np.arange(8)).sum(axis=1).astype(np.int64)


def test_speech_tokenizer_is_a_25hz_fsq_over_the_valid_frames(tokenizer):
    s = _session(tokenizer)
    i0, i1 = (i.name for i in s.get_inputs())
    rng = np.random.default_rng(1)
    feat = (0.5 * rng.standard_normal((1, 128, 203)) - 0.5).astype(np.float32)
    tokens = s.run(None, {i0: feat, i1: np.array([203], np.int32)})[0]
    assert tokens.shape == (1, 51)  # 203 mel frames (100 Hz) -> ceil(203 / 4) tokens (25 Hz), like the real one
    assert tokens.min() >= 0 and tokens.max() <= 6560
    np.testing.assert_array_equal(tokens[0], _reference_tokens(tokenizer, feat, 203))
    assert len(set(tokens[0].tolist())) > 20  # random spectra spread over many codes
    for frames in (1, 3, 4, 5):
        out = s.run(None, {i0: feat[:, :, :frames], i1: np.array([frames], np.int32)})[0]
        assert out.shape == (1, 1 + (frames > 4))
    short = s.run(None, {i0: feat, i1: np.array([120], np.int32)})[0]  # only the first 120 frames count
    np.testing.assert_array_equal(short[0], tokens[0, :30])
    flat = np.full((1, 128, 40), -1.5, np.float32)  # silence: every projection is 0 -> all digits 1
    assert s.run(None, {i0: flat, i1: np.array([40], np.int32)})[0].tolist() == [[3280] * 10]


def test_projection_ignores_loudness(tokenizer):
    """Columns of the projection sum to zero: a constant offset of the log-mel does not change the tokens."""
    s = _session(tokenizer)
    i0, i1 = (i.name for i in s.get_inputs())
    feat = (0.4 * np.random.default_rng(2).standard_normal((1, 128, 80))).astype(np.float32)
    a = s.run(None, {i0: feat, i1: np.array([80], np.int32)})[0]
    b = s.run(None, {i0: feat + 0.7, i1: np.array([80], np.int32)})[0]
    np.testing.assert_array_equal(a, b)


def test_deterministic_per_seed_and_small(tokenizer, campplus):
    assert mk.build_speech_tokenizer(1986).SerializeToString() == tokenizer.SerializeToString()
    assert mk.build_campplus(1986).SerializeToString() == campplus.SerializeToString()
    assert mk.build_campplus(7).SerializeToString() != campplus.SerializeToString()
    assert mk.build_speech_tokenizer(7).SerializeToString() != tokenizer.SerializeToString()
    assert len(campplus.SerializeToString()) < 2 << 20 and len(tokenizer.SerializeToString()) < 2 << 20
    onnx.checker.check_model(campplus, full_check=True)
    onnx.checker.check_model(tokenizer, full_check=True)
