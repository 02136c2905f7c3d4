"""Incremental streaming flow: a chunk computed from the cached state of the earlier frames equals the official
chunk (which recomputes the whole prefix), on the golden fixture and along the official streaming schedule."""
from __future__ import annotations

import pytest
import torch

from cosyvoice.cli.model import CosyVoice2Model
from cosyvoice.flow.decoder import CausalConditionalDecoder

TOL = 1e-5
TOL_AUDIO = 5e-5  # HiFT turns mel differences of ~2e-6 (float rounding) into ~1e-5 in the waveform
N_STEPS = 10


def _inputs(n_prompt: int, n_tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(tokens=torch.randint(0, 6561, (1, n_tokens), dtype=torch.int32, generator=g),
                prompt_token=torch.randint(0, 6561, (1, n_prompt), dtype=torch.int32, generator=g),
                prompt_feat=torch.randn(1, 2 * n_prompt, 80, generator=g) - 5.0,
                embedding=torch.randn(1, 192, generator=g))


def _flow_args(x, n: int):
    def length(k):
        return torch.tensor([k], dtype=torch.int32)
    return dict(token=x["tokens"][:, :n], token_len=length(n), prompt_token=x["prompt_token"],
                prompt_token_len=length(x["prompt_token"].shape[1]), prompt_feat=x["prompt_feat"],
                prompt_feat_len=length(x["prompt_feat"].shape[1]), embedding=x["embedding"])


def _schedule(n_prompt: int, n_tokens: int, hop: int = 25, max_hop: int = 100, lookahead: int = 3):
    """(tokens given, token_offset) of each non-final streaming chunk of CosyVoice2Model.tts."""
    pad = -(-n_prompt // hop) * hop - n_prompt
    calls, offset = [], 0
    while True:
        this_hop = hop + pad if offset == 0 else hop
        need = offset + this_hop + lookahead
        if need > n_tokens:
            return calls
        calls.append((need, offset))
        offset += this_hop
        hop = min(max_hop, hop * 2)


class _FrameCounter:
    """Records how many frames each estimator call of ``forward_chunk`` gets."""

    def __init__(self, estimator):
        self.estimator, self.frames = estimator, []

    def __enter__(self):
        real = self.estimator.forward_chunk

        def counted(x, *args, **kwargs):
            self.frames.append(x.size(2))
            return real(x, *args, **kwargs)
        self.estimator.forward_chunk = counted
        return self

    def __exit__(self, *exc):
        del self.estimator.forward_chunk


def _official(flow, x, need, offset):
    feat, _ = flow.inference(**_flow_args(x, need), streaming=True, finalize=False)
    return feat[:, :, offset * flow.token_mel_ratio:]


def test_decoder_pieces_match_golden_stream_chunk(tiny_flow, load_io):
    """The official streaming chunk of the fixture (64 frames, chunk 50): frames 0-49 then 50-63 from the cache."""
    io = load_io("flow_inference")
    mu, spks, cond = io["mu_stream_chunk"], io["spks_stream_chunk"], io["cond_stream_chunk"]
    cfm = tiny_flow.decoder
    caches = [{} for _ in range(N_STEPS)]
    first = cfm.forward_chunk(mu[:, :, :50], spks, cond[:, :, :50], 0, caches)
    kv = next(v for k, v in caches[0].items() if isinstance(v, tuple))
    assert kv[0].shape[2] == 50
    second = cfm.forward_chunk(mu[:, :, 50:], spks, cond[:, :, 50:], 50, caches)
    kv = next(v for k, v in caches[-1].items() if isinstance(v, tuple))
    assert kv[0].shape[2] == 64 and second.shape == (1, 80, 14)
    feat = torch.cat([first, second], dim=2)[:, :, io["prompt_feat"].shape[1]:]
    assert feat.shape == io["feat_stream_chunk"].shape
    assert (feat - io["feat_stream_chunk"]).abs().max().item() < TOL

    # a split inside a chunk is not exact: frames 40-49 would see frames 0-39 only (the test can fail)
    caches = [{} for _ in range(N_STEPS)]
    early = cfm.forward_chunk(mu[:, :, :40], spks, cond[:, :, :40], 0, caches)
    late = cfm.forward_chunk(mu[:, :, 40:], spks, cond[:, :, 40:], 40, caches)
    wrong = torch.cat([early, late], dim=2)[:, :, io["prompt_feat"].shape[1]:]
    assert (wrong - io["feat_stream_chunk"]).abs().max().item() > 1e-2


@pytest.mark.parametrize("n_prompt", [0, 7, 25])
def test_inference_chunk_equals_official_along_the_schedule(tiny_flow, n_prompt):
    x = _inputs(n_prompt, 200, seed=n_prompt)
    schedule = _schedule(n_prompt, 200)
    assert len(schedule) == 3
    cache, done = None, 0
    for need, offset in schedule:
        with _FrameCounter(tiny_flow.decoder.estimator) as counter:
            feat, cache = tiny_flow.inference_chunk(**_flow_args(x, need), token_offset=offset, cache=cache)
        total = 2 * (n_prompt + need - 3)
        # the estimator sees only the frames after the cached ones: 10 Euler steps of new frames
        assert counter.frames == [total - done] * N_STEPS
        assert cache is not None and cache.frames == total
        ref = _official(tiny_flow, x, need, offset)
        assert feat.shape == ref.shape == (1, 80, total - 2 * n_prompt - 2 * offset)
        assert (feat - ref).abs().max().item() < TOL
        done = total


def test_cache_of_other_inputs_is_not_used(tiny_flow):
    x = _inputs(0, 120, seed=1)
    _, cache = tiny_flow.inference_chunk(**_flow_args(x, 28), token_offset=0)
    assert cache.frames == 50
    other = dict(x, embedding=x["embedding"] + 0.5)
    tokens = x["tokens"].clone()
    tokens[0, 26] = (tokens[0, 26] + 1) % 6561      # a look-ahead token of the cached chunk
    changed_token = dict(x, tokens=tokens)
    for inputs in (other, changed_token):
        with _FrameCounter(tiny_flow.decoder.estimator) as counter:
            feat, new_cache = tiny_flow.inference_chunk(**_flow_args(inputs, 78), token_offset=25, cache=cache)
        assert counter.frames == [150] * N_STEPS    # recomputed from frame 0
        assert new_cache.frames == 150
        assert (feat - _official(tiny_flow, inputs, 78, 25)).abs().max().item() < TOL


def test_a_spent_cache_is_not_reused(tiny_flow):
    x = _inputs(0, 120, seed=4)
    _, cache = tiny_flow.inference_chunk(**_flow_args(x, 28), token_offset=0)
    first, _ = tiny_flow.inference_chunk(**_flow_args(x, 78), token_offset=25, cache=cache)
    assert cache.nbytes() == 0 and not cache.matches(torch.cat([x["prompt_token"], x["tokens"]], dim=1),
                                                     x["prompt_feat"], x["embedding"])
    with _FrameCounter(tiny_flow.decoder.estimator) as counter:   # the same call again: computed from frame 0
        again, _ = tiny_flow.inference_chunk(**_flow_args(x, 78), token_offset=25, cache=cache)
    assert counter.frames == [150] * N_STEPS
    assert (again - first).abs().max().item() < TOL


def test_unaligned_or_too_long_chunks_are_not_cached(tiny_flow):
    x = _inputs(0, 120, seed=2)
    feat, cache = tiny_flow.inference_chunk(**_flow_args(x, 33), token_offset=0)   # 30 tokens: mid-chunk
    assert cache is None
    assert (feat - _official(tiny_flow, x, 33, 0)).abs().max().item() < TOL
    feat, cache = tiny_flow.inference_chunk(**_flow_args(x, 28), token_offset=0, max_cache_frames=49)
    assert cache is None
    feat, cache = tiny_flow.inference_chunk(**_flow_args(x, 28), token_offset=0, max_cache_frames=50)
    assert cache is not None and cache.frames == 50 and cache.nbytes() > 0
    # a cache that does not end where the requested frames start is ignored
    with _FrameCounter(tiny_flow.decoder.estimator) as counter:
        feat, cache2 = tiny_flow.inference_chunk(**_flow_args(x, 103), token_offset=50, cache=cache)
    assert counter.frames == [200] * N_STEPS and cache2.frames == 200
    assert (feat - _official(tiny_flow, x, 103, 50)).abs().max().item() < TOL


def test_support_check():
    def decoder(channels, chunk):
        return CausalConditionalDecoder(in_channels=320, out_channels=80, channels=channels, attention_head_dim=8,
                                        n_blocks=1, num_mid_blocks=1, num_heads=2, act_fn="gelu",
                                        static_chunk_size=chunk)
    assert decoder([32], 50).supports_chunk_cache()
    assert not decoder([32], 0).supports_chunk_cache()       # no chunk masks: every frame sees every frame
    assert not decoder([32, 32], 50).supports_chunk_cache()  # strided down/upsampling is not causal


def _stream(model, x, seed=0):
    return [o["tts_speech"] for o in model.tts(source_speech_token=x["tokens"], flow_embedding=x["embedding"],
                                               flow_prompt_speech_token=x["prompt_token"],
                                               prompt_speech_feat=x["prompt_feat"], stream=True, seed=seed)]


def test_model_streaming_audio_unchanged_by_the_cache(tiny_flow, tiny_hift):
    model = CosyVoice2Model(None, tiny_flow, tiny_hift, flow_cache_max_frames=1000)
    x = _inputs(7, 260, seed=3)
    calls = []
    real = tiny_flow.inference_chunk

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs["token_offset"], kwargs["cache"] is not None, out[1] is not None))
        return out
    tiny_flow.inference_chunk = spy
    try:
        cached = _stream(model, x)
    finally:
        del tiny_flow.inference_chunk
    # chunks of 43, 50 and 100 tokens (prompt 7 padded to 25); the second and third reuse the cache
    assert calls == [(0, False, True), (43, True, True), (93, True, True)]
    assert not model.flow_cache_dict
    calls.clear()
    plain = _stream(CosyVoice2Model(None, tiny_flow, tiny_hift), x)  # the default: the official computation
    assert calls == []                                  # whole prefix each chunk, no cache
    assert [c.shape for c in cached] == [p.shape for p in plain]
    assert len(cached) == 4
    for c, p in zip(cached, plain):
        assert (c - p).abs().max().item() < TOL_AUDIO
