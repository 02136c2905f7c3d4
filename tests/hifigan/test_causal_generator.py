"""CausalHiFTGenerator (CosyVoice3): official checkpoint format, the fixed source noise, numerical parity of
inference (final and streaming chunks), and the official behaviours of behaviour_probes.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cosyvoice.hifigan.f0_predictor import CausalConvRNNF0Predictor
from cosyvoice.hifigan.generator import (CausalHiFTGenerator, CausalSourceNoise, FixedUniformNoise, HiFTGenerator,
                                         load_hift)
from cosyvoice.utils.config import load_config

CONF3 = Path(__file__).resolve().parents[2] / "conf" / "cosyvoice3.yaml"
CALLS = {"a_final": ("a", True), "a_nonfinal": ("a", False), "b_final": ("b", True), "b_nonfinal": ("b", False)}
ATOL = 1e-5


def _maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def hift3_state(fixtures3_dir):
    return torch.load(fixtures3_dir / "hift.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def hift3(fixtures3_dir, hift3_state):
    hift = load_config(str(fixtures3_dir / "tiny3.yaml"), keys=["hift"])["hift"]
    hift.load_state_dict(hift3_state, strict=True)
    return hift.eval()


@pytest.fixture(scope="module")
def ref(load_io3):
    return load_io3("hift_inference")


@pytest.fixture(scope="module")
def probes(fixtures3_dir):
    return json.loads((fixtures3_dir / "behaviour_probes.json").read_text())


# --- checkpoint format ---------------------------------------------------------------------------------------------
def test_hift_pt_loads_strictly_in_official_order(fixtures3_dir, hift3_state):
    hift = load_config(str(fixtures3_dir / "tiny3.yaml"), keys=["hift"])["hift"]
    assert isinstance(hift, CausalHiFTGenerator) and isinstance(hift, HiFTGenerator)
    assert isinstance(hift.f0_predictor, CausalConvRNNF0Predictor)
    assert list(hift.state_dict()) == list(hift3_state)
    assert hift.state_dict()["conv_pre.parametrizations.weight.original1"].shape == (64, 80, 5)
    assert hift.state_dict()["f0_predictor.condnet.0.parametrizations.weight.original1"].shape == (64, 80, 4)


def test_generator_prefixed_checkpoint_loads(fixtures3_dir, hift3_state, ref, tmp_path):
    path = tmp_path / "hifigan.pt"
    torch.save({"generator." + k: v for k, v in hift3_state.items()}, path)
    hift = load_hift(load_config(str(fixtures3_dir / "tiny3.yaml"), keys=["hift"])["hift"], path).eval()
    speech, _ = hift.inference(ref["a_mel"])
    assert _maxdiff(speech, ref["a_final_speech"]) < ATOL


def test_full_size_hift_matches_manifest_and_fixed_noise(fixtures3_dir, load_io3, full_size_module):
    """conf/cosyvoice3.yaml's HiFT on the meta device: the official keys/shapes/dtypes, no global draws, and the
    official model's fixed noise (which does not live in hift.pt) computed on the CPU."""
    hift, manifest = full_size_module(CONF3, "hift", fixtures3_dir / "manifest_full.json")
    assert len(hift.state_dict()) == manifest["num_state_dict_entries"] == 328
    assert sum(v.numel() for v in hift.state_dict().values()) == manifest["num_parameters_unique"]
    for attr in manifest["plain_tensor_attributes_not_in_state_dict"]:
        obj = hift
        for part in attr["name"].split("."):
            obj = getattr(obj, part)
        assert list(obj.shape) == attr["shape"] and obj.device.type == "cpu" and str(obj.dtype) == "torch.float32"
    fixed = load_io3("fixed_noise_full")
    sine = hift.m_source.l_sin_gen
    assert torch.equal(sine.rand_ini, fixed["rand_ini"])
    assert torch.equal(sine.sine_waves[:, :24000], fixed["sine_waves_first24000"])
    assert torch.equal(sine.sine_waves[:, -8:], fixed["sine_waves_last8"])
    assert torch.equal(hift.m_source.uv[:, :24000], fixed["source_uv_first24000"])


def test_tiny_fixed_noise_is_the_recorded_one(hift3, ref):
    sine = hift3.m_source.l_sin_gen
    assert torch.equal(sine.rand_ini, ref["fixed_rand_ini"]) and sine.rand_ini[0, 0] == 0
    assert torch.equal(sine.sine_waves[:, :19200], ref["fixed_sine_waves_first19200"])
    assert torch.equal(hift3.m_source.uv[:, :19200], ref["fixed_source_uv_first19200"])
    assert "m_source.uv" not in hift3.state_dict() and "m_source.l_sin_gen.sine_waves" not in hift3.state_dict()


def test_fixed_uniform_noise_reads_like_the_full_draw():
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    full = torch.rand(1, 1000, 3, generator=gen)
    table = FixedUniformNoise(1000, 3, state=state, cache_rows=300)
    assert table.shape == (1, 1000, 3)
    assert torch.equal(table[:, :10], full[:, :10])
    assert torch.equal(table[:, 5:250:7], full[:, 5:250:7])         # grows the kept prefix
    assert torch.equal(table[:, 900:], full[:, 900:])               # beyond cache_rows: streamed
    assert torch.equal(table[:, -1:, 2:], full[:, -1:, 2:])
    assert table[:, 10:10].shape == (1, 0, 3) and table.prefix(300).shape == (1, 300, 3)
    assert table._kept[0].size(1) == 300
    after = FixedUniformNoise(50, 1, after=table, then_shapes=[(4,)])
    torch.rand(4, generator=gen)
    assert torch.equal(after[:, :], torch.rand(1, 50, 1, generator=gen))
    with pytest.raises(IndexError, match=r"table\[:, a:b:step\]"):
        table[0]


# --- numerical parity ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", list(CALLS))
def test_f0_in_float64_matches_official(hift3, ref, call):
    mel, finalize = CALLS[call][0], CALLS[call][1]
    f0 = hift3.predict_f0(ref[f"{mel}_mel"], finalize=finalize)
    assert f0.dtype == torch.float64 and f0.shape == ref[f"{call}_f0_float64"].shape
    assert _maxdiff(f0, ref[f"{call}_f0_float64"]) < 1e-8
    # the float32 f0 HiFT goes on with: the cast of float64 values that agree to ~2e-13 (their float64 kernels round
    # differently from one machine to another: 0 on the fixtures' Intel Xeon, 1.9e-13 on an AMD EPYC) can still fall
    # on either side of a float32 rounding boundary, so within one unit in the last place
    torch.testing.assert_close(f0.float(), ref[f"{call}_f0"], atol=0, rtol=2 ** -23)


@pytest.mark.parametrize("call", list(CALLS))
def test_inference_matches_official(hift3, ref, call):
    mel, finalize = CALLS[call][0], CALLS[call][1]
    state = torch.random.get_rng_state()
    speech, source = hift3.inference(speech_feat=ref[f"{mel}_mel"], finalize=finalize)
    assert torch.equal(torch.random.get_rng_state(), state)  # eval mode draws nothing
    assert speech.shape == ref[f"{call}_speech"].shape and source.shape == ref[f"{call}_source"].shape
    assert _maxdiff(source, ref[f"{call}_source"]) < 1e-6
    assert _maxdiff(speech, ref[f"{call}_speech"]) < ATOL
    frames = ref[f"{mel}_mel"].size(2)
    assert speech.size(1) == (frames if finalize else frames - 8) * 480


def test_sine_source_matches_official(hift3, ref):
    f0_up = hift3.f0_upsamp(ref["a_final_f0"][:, None]).transpose(1, 2)
    with torch.no_grad():
        sine_waves, uv, _ = hift3.m_source.l_sin_gen(f0_up)
    assert torch.equal(uv, ref["a_final_uv"])
    assert _maxdiff(sine_waves, ref["a_final_sine_waves"]) < 1e-6
    with torch.no_grad():
        _, noise, _ = hift3.m_source(f0_up)
    assert torch.equal(noise, ref["fixed_source_uv_first19200"] * 0.1 / 3)  # the (discarded) noise branch


@pytest.mark.parametrize("call", list(CALLS))
def test_decode_reproduces_speech_from_recorded_source(hift3, ref, call):
    mel, finalize = CALLS[call][0], CALLS[call][1]
    x = ref[f"{mel}_mel"] if finalize else ref[f"{mel}_mel"][:, :, :-3]
    with torch.no_grad():
        speech = hift3.decode(x=x, s=ref[f"{call}_source"], finalize=finalize)
    assert _maxdiff(speech, ref[f"{call}_speech"]) < ATOL


def test_prefix_streaming_like_cosyvoice3model(hift3, ref):
    """HiFT re-run on the whole mel so far, keeping the samples past the previous output, equals one final call."""
    cuts = ref["prefix_cuts"].tolist()
    pieces, done = [], 0
    for k, cut in enumerate(cuts):
        speech, _ = hift3.inference(ref["a_mel"][:, :, :cut], finalize=k == len(cuts) - 1)
        assert _maxdiff(speech, ref[f"prefix{k}_speech_raw"]) < ATOL
        pieces.append(speech[:, done:])
        done = speech.size(1)
    joined = torch.cat(pieces, dim=1)
    assert _maxdiff(joined, ref["prefix_concat"]) < ATOL
    assert _maxdiff(joined, ref["a_final_speech"]) < ATOL


# --- official behaviours -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [8, 9, 12])
def test_nonfinal_lengths_match_official(hift3, ref, probes, frames):
    speech, source = hift3.inference(ref["a_mel"][:, :, :frames], finalize=False)
    assert list(speech.shape) == probes[f"hift_inference_nonfinal_T{frames}"]["result"]
    assert source.shape == (1, 1, (frames - 3) * 480)


@pytest.mark.parametrize("frames", [0, 1, 3, 4, 7])
def test_too_short_nonfinal_mel_is_defined(hift3, ref, probes, frames):
    """Official: T = 7 (and shorter) raises in conv_pre; defined here: no samples yet, and the source of the
    frames that have one (the start of the source of any longer call)."""
    assert probes["hift_inference_nonfinal_T7"]["raised"]
    speech, source = hift3.inference(ref["a_mel"][:, :, :frames], finalize=False)
    assert speech.shape == (1, 0)
    n = max(frames - 3, 0)
    assert source.shape == (1, 1, n * 480)
    if n:
        assert _maxdiff(source, ref["a_final_source"][:, :, :n * 480]) < 1e-6


def test_empty_final_mel_is_defined(hift3, probes):
    """Official: zero LLM tokens end in an empty mel and the f0 conv raises; defined here: no samples."""
    assert probes["tts_nonstream_zero_llm_tokens.with_flow_prompt"]["raised"]
    speech, source = hift3.inference(torch.zeros(1, 80, 0))
    assert speech.shape == (1, 0) and source.shape == (1, 1, 0)
    speech, _ = hift3.inference(torch.zeros(1, 80, 1))
    assert speech.shape == (1, 480)


def test_f0_predictor_keeps_its_dtype(hift3, ref, probes):
    """Official: inference casts f0_predictor to float64 for good (state_dict dtypes change); defined here: the
    same float64 numbers, the module stays float32."""
    assert probes["hift_f0_predictor_state_dict_dtypes"]["after_inference"] == ["torch.float64"]
    assert bool(ref["f0_predictor_dtype_after_inference_is_float64"])
    hift3.inference(ref["b_mel"])
    dtypes = {str(v.dtype) for v in hift3.f0_predictor.state_dict().values()}
    assert dtypes == {"torch.float32"} and len(hift3.f0_predictor.state_dict()) == 17


def test_training_mode_draws_fresh_noise(hift3, ref, probes):
    assert "train mode" in probes["hift_training_mode_noise"]
    hift3.train()
    try:
        batch = {"speech_feat": ref["a_mel"][:, :, :10].transpose(1, 2)}
        state = torch.random.get_rng_state()
        a, f0 = hift3(batch, torch.device("cpu"))
        assert not torch.equal(torch.random.get_rng_state(), state)
        b, _ = hift3(batch, torch.device("cpu"), generator=3)
        c, _ = hift3(batch, torch.device("cpu"), generator=3)
        assert torch.equal(b, c) and _maxdiff(a, b) > 1e-6
        assert a.shape == (1, 4800) and f0.shape == (1, 10)
        a.pow(2).mean().backward()
        assert hift3.conv_pre.parametrizations.weight.original1.grad is not None
    finally:
        hift3.zero_grad(set_to_none=True)
        hift3.eval()


def test_fixed_noise_does_not_depend_on_the_global_rng(hift3):
    """The official values follow from the yaml's construction order; ours are the same whatever ran before."""
    torch.manual_seed(123)
    noise = CausalSourceNoise(9, [tuple(s) for s in ([64, 80, 4], [64], *[[64, 64, 3], [64]] * 4, [1, 64], [1])])
    assert torch.equal(noise.rand_ini, hift3.m_source.l_sin_gen.rand_ini)
    assert torch.equal(noise.sine_waves[:, :100], hift3.m_source.l_sin_gen.sine_waves[:, :100])


def test_22k_sampling_rate_is_refused():
    with pytest.raises(ValueError, match="CausalHiFTGenerator needs the frame-rate sine source"):
        CausalHiFTGenerator(sampling_rate=22050, f0_predictor=CausalConvRNNF0Predictor(cond_channels=8))
