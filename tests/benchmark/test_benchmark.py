"""tools/benchmark.py runs on the stand-in with tiny settings and writes every figure (a smoke test, not a timing)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = ["--bandwidth_mib", "32", "--warmup", "0", "--runs", "2", "--text_tokens", "4", "--decode_tokens", "4",
        "--audio_seconds", "2", "--train_batch", "2", "--train_text_tokens", "3", "--train_speech_tokens", "8"]


@pytest.fixture(scope="module")
def bench_tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert 0 < stream["first_chunk_ms_p50"] <= stream["first_chunk_ms_p90"]
    assert set(res["tts_rtf_estimate"]) == {"offline", "stream"}

    for name, rate in (("train_llm", "speech_tokens_per_s"), ("train_flow", "mel_frames_per_s")):
        r = res[name]
        assert r["batch"] == 2 and r["speech_tokens_per_utt"] == 8
        for key in ("step_s", "forward_backward_s", "optimizer_s", "utts_per_s", rate, "peak_memory_mb", "params"):
            assert _positive(r[key]), (name, key)
        assert set(r["adam_step_s"]) == {"for_loop", "foreach", "fused"}
        assert all(_positive(v) or str(v).startswith("unsupported") for v in r["adam_step_s"].values())
    assert math.isclose(res["train_flow"]["mel_frames_per_s"], 2 * res["train_flow"]["speech_tokens_per_s"],
                        rel_tol=1e-2)


@pytest.mark.parametrize("argv, message", [
    (["--dtype", "bf16"], "--dtype bf16 is for CUDA; the CPU path runs fp32"),
    (["--stages", "llm,vocoder"], "unknown --stages vocoder"),
    (["--model_dir", "/nonexistent/model"], "/nonexistent/model/cosyvoice2.yaml not found"),
])
def test_bad_arguments(bench_tool, capsys, argv, message):
    assert bench_tool.main(argv) == 2
    assert message in capsys.readouterr().err
