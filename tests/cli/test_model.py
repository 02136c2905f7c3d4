"""CosyVoice2Model: strict loading, offline and streaming token2wav (lengths, chunk schedule, seeding), and the LLM
worker thread (errors surface in the caller, closing the stream stops it). A stub LLM gives exact token counts."""
from __future__ import annotations

import pytest
import torch

from cli_helpers import StubLLM, Token2wavSpy, official_schedule, random_tokens, run_with_timeout
from cosyvoice.cli.model import CosyVoice2Model
from cosyvoice.utils.common import CheckpointError
from cosyvoice.utils.config import load_config

SAMPLES_PER_TOKEN = 2 * 480  # 2 mel frames per token, 480 samples per frame at 24 kHz


@pytest.fixture()
def make_model(cosyvoice):
    """A CosyVoice2Model on the stand-in's loaded flow and HiFT, with a stub LLM."""
    def make(llm):
        return CosyVoice2Model(llm, cosyvoice.model.flow, cosyvoice.model.hift)
    return make


def _prompt(n_tokens: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return dict(flow_prompt_speech_token=torch.randint(0, 6561, (1, n_tokens), dtype=torch.int32, generator=g),
                prompt_speech_feat=torch.randn(1, 2 * n_tokens, 80, generator=g) - 5.0)


def _embedding():
    return torch.randn(1, 192, generator=torch.Generator().manual_seed(7))


def _tts(model, stream, seed=0, speed=1.0, **prompt):
    return run_with_timeout(lambda: [o["tts_speech"] for o in model.tts(
        text=torch.zeros(1, 4, dtype=torch.int32), flow_embedding=_embedding(), llm_embedding=_embedding(),
        stream=stream, speed=speed, seed=seed, **prompt)])


def _assert_clean(model):
    assert not model.tts_speech_token_dict and not model.llm_end_dict and not model.hift_cache_dict
    assert not model._jobs


# ------------------------------------------------------------------------------------------------------ loading
def test_load_is_strict_and_strips_generator_prefix(cosyvoice, model_dir, tmp_path):
    fresh_hift = load_config(str(model_dir / "cosyvoice2.yaml"), keys=["hift"])["hift"]  # randomly initialised
    model = CosyVoice2Model(cosyvoice.model.llm, cosyvoice.model.flow, fresh_hift)
    hift_state = torch.load(model_dir / "hift.pt", weights_only=True)
    assert not torch.equal(fresh_hift.state_dict()["conv_post.bias"], hift_state["conv_post.bias"])
    # a checkpoint saved from the GAN wrapper: every key starts with 'generator.'
    torch.save({f"generator.{k}": v for k, v in hift_state.items()}, tmp_path / "hift_gan.pt")
    model.load(model_dir / "llm.pt", model_dir / "flow.pt", tmp_path / "hift_gan.pt")
    loaded = model.hift.state_dict()
    assert loaded.keys() == hift_state.keys() and all(torch.equal(loaded[k], hift_state[k]) for k in hift_state)
    assert not model.hift.training

    flow_state = torch.load(model_dir / "flow.pt", weights_only=True)
    dropped = "spk_embed_affine_layer.weight"
    torch.save({k: v for k, v in flow_state.items() if k != dropped}, tmp_path / "flow_bad.pt")
    with pytest.raises(CheckpointError, match=f"flow_bad.pt: does not fit CausalMaskedDiffWithXvec: missing keys: "
                                              f"{dropped}"):
        model.load(model_dir / "llm.pt", tmp_path / "flow_bad.pt", model_dir / "hift.pt")
    with pytest.raises(CheckpointError, match="llm.pt: does not fit HiFTGenerator: missing keys: "
                                              "m_source.l_linear.weight.*unexpected keys: llm_embedding.weight"):
        model.load(model_dir / "llm.pt", model_dir / "flow.pt", model_dir / "llm.pt")


# ---------------------------------------------------------------------------------------------------- token2wav
def test_offline_tts_length_and_seeded_vocoder(make_model):
    tokens = random_tokens(30)
    model = make_model(StubLLM(tokens))
    spy = Token2wavSpy(model)
    model.token2wav = spy
    (a,) = _tts(model, stream=False, seed=11)
    assert spy.calls == [(30, 0, True, False)]
    assert a.shape == (1, 30 * SAMPLES_PER_TOKEN) and a.dtype == torch.float32
    (b,) = _tts(model, stream=False, seed=11)
    (c,) = _tts(model, stream=False, seed=12)
    assert torch.equal(a, b)                      # the seed fixes HiFT's noise
    assert not torch.equal(a, c)
    _assert_clean(model)

    # the same audio from token2wav called directly with a generator seeded the same way
    model.hift_cache_dict["u"] = None
    direct = spy.real(torch.tensor([tokens]), torch.zeros(1, 0, dtype=torch.int32), torch.zeros(1, 0, 80),
                      _embedding(), 0, "u", finalize=True, generator=torch.Generator().manual_seed(11))
    assert torch.equal(direct, a)


def test_offline_speed_changes_length(make_model):
    model = make_model(StubLLM(random_tokens(30)))
    (fast,) = _tts(model, stream=False, speed=2.0)
    assert fast.shape == (1, int(60 / 2.0) * 480)
    with pytest.raises(ValueError, match="speed 1.5 needs stream=False: speed change works only without streaming"):
        _tts(model, stream=True, speed=1.5)
    _assert_clean(model)


@pytest.mark.parametrize("n_prompt, n_tokens, schedule, chunk_samples", [
    # no prompt: hops 25, 50; the last 5 tokens (with the look-ahead) come at the end
    (0, 80, [(28, 0, False), (78, 25, False), (80, 75, True)],
     [50 * 480 - 3840, 100 * 480, (10 + 8) * 480]),
    # 7 prompt tokens: the first hop grows by 18 so prompt + hop fill a whole chunk of 25
    (7, 60, [(46, 0, False), (60, 43, True)], [86 * 480 - 3840, (34 + 8) * 480]),
])
def test_streaming_chunks_lengths(make_model, n_prompt, n_tokens, schedule, chunk_samples):
    model = make_model(StubLLM(random_tokens(n_tokens)))
    spy = Token2wavSpy(model)
    model.token2wav = spy
    chunks = _tts(model, stream=True, **_prompt(n_prompt))
    assert spy.schedule == schedule == official_schedule(n_prompt, n_tokens)
    assert [c[3] for c in spy.calls] == [True] * (len(schedule) - 1) + [False]  # the last one without chunk masks
    assert [c.shape[1] for c in chunks] == chunk_samples
    assert sum(chunk_samples) == n_tokens * SAMPLES_PER_TOKEN  # nothing lost or repeated between chunks
    _assert_clean(model)


def test_seeded_stream_is_reproducible(make_model):
    model = make_model(StubLLM(random_tokens(31), delay=0.002))
    a = _tts(model, stream=True, seed=5)
    b = _tts(model, stream=True, seed=5)
    assert [x.shape[1] for x in a] == [50 * 480 - 3840, (2 * 6 + 8) * 480]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# -------------------------------------------------------------------------------------------- schedule, threads
@pytest.mark.parametrize("n_prompt, n_tokens", [(0, 400), (7, 300), (30, 40), (0, 27), (0, 28), (25, 128), (49, 1)])
@pytest.mark.parametrize("delay", [0.0, 0.0005])
def test_stream_schedule_matches_official(make_model, n_prompt, n_tokens, delay):
    model = make_model(StubLLM(random_tokens(n_tokens), delay=delay))
    spy = Token2wavSpy(model, fake=True)
    model.token2wav = spy
    chunks = _tts(model, stream=True, **_prompt(n_prompt))
    assert spy.schedule == official_schedule(n_prompt, n_tokens)
    assert len(chunks) == len(spy.calls)
    assert set(spy.prompt_tokens) == {n_prompt}


def test_stream_schedule_literal():
    # 7 prompt tokens, 300 new ones: hops 25+18, 50, 100, 100 (capped at 4 x 25), then the 7 left
    assert official_schedule(7, 300) == [(46, 0, False), (96, 43, False), (196, 93, False), (296, 193, False),
                                         (300, 293, True)]


def test_hop_restarts_on_each_call(make_model):
    model = make_model(StubLLM(random_tokens(200)))
    model.token2wav = spy = Token2wavSpy(model, fake=True)
    _tts(model, stream=True)
    first = list(spy.calls)
    spy.calls.clear()
    _tts(model, stream=True)
    assert spy.calls == first and model.token_hop_len == 25


@pytest.mark.parametrize("stream", [False, True])
def test_llm_error_surfaces_in_caller(make_model, stream):
    model = make_model(StubLLM(random_tokens(100), fail_after=40))
    model.token2wav = Token2wavSpy(model, fake=True)
    with pytest.raises(RuntimeError, match="stub LLM failed after 40 tokens"):
        _tts(model, stream=stream)
    _assert_clean(model)


def test_closing_the_stream_stops_the_llm(make_model):
    llm = StubLLM(random_tokens(50), delay=0.001, endless=True)
    model = make_model(llm)
    model.token2wav = Token2wavSpy(model, fake=True)

    def first_chunk_then_close():
        gen = model.tts(text=torch.zeros(1, 4, dtype=torch.int32), flow_embedding=_embedding(), stream=True)
        first = next(gen)
        gen.close()
        return first

    first = run_with_timeout(first_chunk_then_close, timeout=30)
    assert first["tts_speech"].shape == (1, SAMPLES_PER_TOKEN * 28)  # the fake token2wav: 25 tokens + 3 look-ahead
    assert llm.stopped.wait(10)
    _assert_clean(model)


def test_vc_uses_source_tokens(make_model):
    model = make_model(StubLLM([]))
    model.token2wav = spy = Token2wavSpy(model, fake=True)
    source = torch.tensor([random_tokens(33)], dtype=torch.int32)
    out = run_with_timeout(lambda: list(model.tts(source_speech_token=source, flow_embedding=_embedding())))
    assert spy.calls == [(33, 0, True, False)] and len(out) == 1
    assert model.llm.calls == []  # no LLM call for voice conversion


@pytest.mark.parametrize("alone", [True, False])
def test_on_a_cpu_the_llm_waits_while_the_first_chunk_is_made(make_model, alone):
    """The first streaming chunk has the cores to itself (first_chunk_alone): the LLM makes at most the token it
    was on meanwhile; later chunks overlap with it. The audio is the same either way."""
    import time

    llm = StubLLM(random_tokens(400), delay=0.002)
    model = make_model(llm)
    model.first_chunk_alone = alone
    spy = Token2wavSpy(model, fake=True)
    counts = []

    def slow_token2wav(**kw):
        before = len(model.tts_speech_token_dict[kw["uuid"]])
        time.sleep(0.3)
        counts.append((before, len(model.tts_speech_token_dict[kw["uuid"]])))
        return spy(**kw)

    model.token2wav = slow_token2wav
    _tts(model, stream=True)
    before, after = counts[0]
    if alone:
        assert after - before <= 1
        assert counts[1][1] - counts[1][0] > 1  # the second chunk runs beside the LLM
    else:
        assert after - before > 1
    assert spy.schedule == official_schedule(0, 400)
