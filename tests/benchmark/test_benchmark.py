"""tools/benchmark.py runs on the stand-in with tiny settings and writes every figure (a smoke test, not a timing)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = ["--bandwidth_mib", "32", "--warmup", "0", "--runs", "2", "--text_tokens", "4", "--decode_tokens", "4",
        "--audio_seconds", "2", "--train_batch", "2", "--train_text_tokens", "3", "--train_speech_tokens", "8"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_stand_in_writes_every_figure(bench_tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_tool.main(["--stand_in", "--out", str(out)] + TINY) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "first chunk p50" in printed and "adam step alone" in printed

    env = res["env"]
    assert res["model"] == "stand_in"
    assert env["device"] == "cpu" and env["dtype"] == "fp32" and env["threads"] >= 1
    for key in ("torch", "transformers", "python", "device_name", "commit", "dirty", "command", "date"):
        assert key in env
    assert _positive(res["bandwidth"]["gbps"])

    llm = res["llm"]
    assert llm["prefill_positions"] == 6                          # sos + 4 text tokens + task id
    for key in ("prefill_ms", "decode_ms_per_token", "decode_tokens_per_s", "rtf", "weight_bytes_per_token",
                "bandwidth_floor_ms_per_token", "fraction_of_floor", "times_floor"):
        assert _positive(llm[key]), key
    assert math.isclose(llm["rtf"], llm["decode_ms_per_token"] * 25 / 1000, rel_tol=1e-2)
    assert all(n <= 4 for n in llm["decode_tokens_timed"]) and len(llm["decode_tokens_timed"]) == 2

    t2w = res["token2wav"]
    assert t2w["speech_tokens"] == 50 and t2w["audio_s"] == 2.0
    for mode in ("offline", "stream"):
        for key in ("total_s", "total_rtf", "flow_s", "flow_rtf", "hift_s", "hift_rtf"):
            assert _positive(t2w[mode][key]), (mode, key)
        # the stages account for most of the time (every flow entry point is timed) and not more than all of it
        assert 0.5 * t2w[mode]["total_s"] <= t2w[mode]["flow_s"] + t2w[mode]["hift_s"] <= t2w[mode]["total_s"] * 1.05
    stream = t2w["stream"]
    assert stream["chunks"] == 2                                   # 25 tokens (+3 look-ahead), then the rest
    # estimator work, in mel frames x Euler steps: offline 50 tokens = 100 frames x 10 steps; streaming adds the
    # first chunk's 25 tokens = 50 frames, and the last chunk is an offline pass over all of them (as officially)
    assert t2w["offline"]["estimator_frames"] == 1000 and stream["estimator_frames"] == 1500
    assert 0 < stream["first_chunk_ms_p50"] <= stream["first_chunk_ms_p90"]
    assert set(res["tts_rtf_estimate"]) == {"offline", "stream"}

    ttfa = res["ttfa"]
    for mode in ("sft", "zero_shot"):
        m = ttfa[mode]
        assert m["first_chunk_tokens"] == 28                      # 25 + 3 look-ahead (the 75-token prompt: no pad)
        for key in ("frontend_ms", "prefill_ms", "first_chunk_tokens_ms", "token2wav_ms", "total_ms"):
            assert _positive(m[key]), (mode, key)
        parts = m["frontend_ms"] + m["prefill_ms"] + m["first_chunk_tokens_ms"] + m["token2wav_ms"]
        assert math.isclose(parts, m["total_ms"], rel_tol=0.1)    # medians of parts: about the median total
    assert "ttfa       zero_shot first audio" in printed

    for name, rate in (("train_llm", "speech_tokens_per_s"), ("train_flow", "mel_frames_per_s")):
        r = res[name]
        assert r["batch"] == 2 and r["speech_tokens_per_utt"] == 8
        for key in ("step_s", "forward_backward_s", "optimizer_s", "utts_per_s", rate, "peak_memory_mb", "params"):
            assert _positive(r[key]), (name, key)
        assert set(r["adam_step_s"]) == {"for_loop", "foreach", "fused"}
        assert all(_positive(v) or str(v).startswith("unsupported") for v in r["adam_step_s"].values())
    assert math.isclose(res["train_flow"]["mel_frames_per_s"], 2 * res["train_flow"]["speech_tokens_per_s"],
                        rel_tol=1e-2)
    _check_resample(res["resample"], seconds=5.0)
    assert "resample   5.00 s clip 48000->16000" in printed and "soxr VHQ" in printed


def _check_resample(r, seconds):
    assert r["clip_s"] == seconds and isinstance(r["soxr"], str)
    assert set(r["pairs"]) == {"48000->16000", "48000->24000", "44100->16000"}
    for pair, m in r["pairs"].items():
        new = int(pair.split("->")[1])
        assert m["samples"] == round(seconds * new), pair               # whole seconds: no rounding question
        assert abs(m["soxr_samples"] - m["samples"]) <= 1, pair
        for key in ("ms", "x_real_time", "soxr_vhq_ms", "soxr_x_real_time", "time_vs_soxr"):
            assert _positive(m[key]), (pair, key)
        assert math.isclose(m["x_real_time"], seconds / (m["ms"] / 1e3), rel_tol=0.05)
        assert 1e-5 < m["max_abs_diff_vs_soxr"] < 0.5, pair              # a different filter, the same band
    assert (r["pairs"]["48000->16000"]["phases"], r["pairs"]["48000->16000"]["taps"]) == (1, 41)
    assert (r["pairs"]["44100->16000"]["phases"], r["pairs"]["44100->16000"]["taps"]) == (160, 475)


def test_resample_alone_builds_no_model(bench_tool, tmp_path, capsys):
    out = tmp_path / "resample.json"
    argv = ["--stages", "resample", "--resample_seconds", "2", "--out", str(out)] + TINY
    assert bench_tool.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "none (resample only)" and "llm" not in res and "token2wav" not in res
    _check_resample(res["resample"], seconds=2.0)
    assert "resample   2.00 s clip 44100->16000" in capsys.readouterr().out


def test_undo_puts_the_official_work_back_and_records_it(bench_tool, tmp_path, capsys):
    out = tmp_path / "undo.json"
    argv = ["--stand_in", "--out", str(out), "--stages", "token2wav,train_flow", "--no_optimizer_variants",
            "--undo", "stream_cache,fused_adam"] + TINY + ["--audio_seconds", "5"]
    assert bench_tool.main(argv) == 0
    res = json.loads(out.read_text())
    # 125 tokens stream as 25 (+3 look-ahead), 75 (+3), then all 125 offline. Without the stream cache the second
    # chunk recomputes the first one's frames: 50 + 150 + 250 frames, x 10 Euler steps (with it: 50 + 100 + 250)
    assert res["token2wav"]["stream"]["estimator_frames"] == 4500
    assert res["token2wav"]["offline"]["estimator_frames"] == 2500
    assert res["settings"]["undo"] == "stream_cache,fused_adam"
    assert "undo stream_cache,fused_adam" in capsys.readouterr().out
    assert res["train_flow"]["optimizer"] == "adam (torch default)" and "adam_step_s" not in res["train_flow"]
    assert _positive(res["token2wav"]["stream"]["total_s"]) and "llm" not in res


def test_stream_cache_saves_the_recomputed_frames(bench_tool, tmp_path):
    out = tmp_path / "cached.json"
    argv = ["--stand_in", "--out", str(out), "--stages", "token2wav"] + TINY + ["--audio_seconds", "5"]
    assert bench_tool.main(argv) == 0
    assert json.loads(out.read_text())["token2wav"]["stream"]["estimator_frames"] == 4000


def test_undo_builds_the_model_with_the_official_switches(bench_tool, tmp_path):
    """--undo sets the model's speed switches (the constructor's keyword arguments; their numbers are checked in tests/benchmark/test_stream_cache
    and tests/cli/test_model); nothing is patched."""
    args = bench_tool.get_args(["--stand_in"])
    model, _, _ = bench_tool.build_models(args, tmp_path / "default")
    assert model.flow_cache_max_frames == 1000 and model.first_chunk_alone and model._flow_chunks()
    args.undo_list = ["stream_cache", "first_chunk_alone"]
    model, _, _ = bench_tool.build_models(args, tmp_path / "undone")
    assert model.flow_cache_max_frames == 0 and not model.first_chunk_alone and not model._flow_chunks()


@pytest.mark.parametrize("argv, message", [
    (["--undo", "kv_cache"], "unknown --undo kv_cache"),
    (["--dtype", "bf16"], "--dtype bf16 is for CUDA; the CPU path runs fp32"),
    (["--stages", "llm,vocoder"], "unknown --stages vocoder"),
    (["--model_dir", "/nonexistent/model"], "/nonexistent/model/cosyvoice2.yaml not found"),
    (["--stand_in", "--stages", "ttfa", "--ttfa_text_tokens", "5"],
     "--ttfa_text_tokens 5 is too few: the first sft chunk needs 28 speech tokens"),
])
def test_bad_arguments(bench_tool, capsys, argv, message):
    assert bench_tool.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cosyvoice3_stand_in_writes_every_figure(bench_tool, tmp_path, capsys):
    """--version cosyvoice3: the v3 stand-in through CosyVoice3Model, every figure; the LLM decodes the asked
    number of tokens (every stop id banned while timed), training batches carry instruct tokens."""
    out = tmp_path / "bench3.json"
    argv = ["--stand_in", "--version", "cosyvoice3", "--out", str(out), "--no_optimizer_variants",
            "--stages", "llm,token2wav,train_llm,train_flow"] + TINY
    assert bench_tool.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "stand_in" and res["settings"]["version"] == "cosyvoice3"
    assert res["llm"]["decode_tokens_timed"] == [4, 4] and res["llm"]["prefill_positions"] == 6
    t2w = res["token2wav"]
    assert t2w["speech_tokens"] == 50 and t2w["stream"]["chunks"] == 2
    # offline: 100 frames x 10 steps; streaming: the first chunk's 50 frames (its 3 look-ahead tokens are context
    # only), then all 100 again (CosyVoice3's flow is recomputed from the start, as official)
    assert t2w["offline"]["estimator_frames"] == 1000 and t2w["stream"]["estimator_frames"] == 1500
    for name in ("train_llm", "train_flow"):
        assert _positive(res[name]["step_s"]) and res[name]["batch"] == 2
    assert "first chunk p50" in capsys.readouterr().out


def test_cosyvoice3_time_to_first_audio(bench_tool, tmp_path):
    """--stages ttfa on the v3 stand-in: the timed text carries the system prompt's <|endofprompt|>, which
    CosyVoice3LM requires, and both modes give a first chunk of 25 + 3 tokens with every part timed."""
    out = tmp_path / "ttfa3.json"
    argv = ["--stand_in", "--version", "cosyvoice3", "--out", str(out), "--stages", "ttfa"] + TINY
    assert bench_tool.main(argv) == 0
    ttfa = json.loads(out.read_text())["ttfa"]
    for mode in ("sft", "zero_shot"):
        assert ttfa[mode]["first_chunk_tokens"] == 28
        assert all(_positive(ttfa[mode][k]) for k in ("frontend_ms", "prefill_ms", "token2wav_ms", "total_ms"))


@pytest.mark.parametrize("argv, message", [
    (["--stand_in", "--version", "cosyvoice3", "--undo", "stream_cache"],
     "--undo stream_cache changes CosyVoice2's flow; CosyVoice3's DiT flow has no such speed change"),
])
def test_bad_arguments_v3(bench_tool, capsys, argv, message):
    assert bench_tool.main(argv) == 2
    assert message in capsys.readouterr().err


def test_version_is_told_by_the_model_dir(bench_tool, stand_in3_dir):
    args = bench_tool.get_args(["--model_dir", str(stand_in3_dir)])
    assert bench_tool.resolve_version(args) == "cosyvoice3"
    args = bench_tool.get_args([])
    assert bench_tool.resolve_version(args) == "cosyvoice2" and args.config.endswith("conf/cosyvoice2.yaml")
    args = bench_tool.get_args(["--version", "cosyvoice3"])
    assert bench_tool.resolve_version(args) == "cosyvoice3" and args.config.endswith("conf/cosyvoice3.yaml")
