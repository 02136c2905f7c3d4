"""The GPU benchmark's one command (tools/benchmark_gpu.sh) and its table rows: on a machine without CUDA (CI) it
stops at once with one line and exit status 2; the rows are read from tools/benchmark.py's own result files."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--bandwidth_mib", "32", "--warmup", "0", "--runs", "1", "--text_tokens", "4", "--decode_tokens", "3",
        "--audio_seconds", "1", "--train_batch", "2", "--train_text_tokens", "3", "--train_speech_tokens", "8",
        "--no_optimizer_variants"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the benchmark")
def test_without_cuda_the_gpu_script_stops_at_once_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "gpu"
    r = subprocess.run(["bash", str(ROOT / "tools" / "benchmark_gpu.sh"), "--out_dir", str(out_dir)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=dict(os.environ))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark_gpu.sh: error: no CUDA: torch ")
    assert "run it on a machine with an NVIDIA GPU" in lines[0]
    assert not out_dir.exists()


def test_the_gpu_script_refuses_unknown_arguments(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "tools" / "benchmark_gpu.sh"), "--nonsense", "1"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and "nonsense" in r.stderr


def test_tf32_is_refused_off_cuda(bench_tool, capsys):
    assert bench_tool.main(["--tf32", "--stages", "resample"]) == 2
    assert "benchmark.py: error: --tf32 is for --device cuda --dtype fp32" in capsys.readouterr().err


def test_rows_read_the_result_files(bench_tool, tmp_path, capsys):
    out = tmp_path / "cpu.json"
    argv = ["--stand_in", "--out", str(out), "--stages", "llm,token2wav,train_llm,train_flow"] + TINY
    assert bench_tool.main(argv) == 0
    res = json.loads(out.read_text())
    capsys.readouterr()
    assert bench_tool.main(["--rows", str(out)]) == 0
    header, rule, row = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("| device | dtype | LLM decode ms/token (floor)") and rule.startswith("|---|")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "fp32" and cells[2] == (f"{res['llm']['decode_ms_per_token']} "
                                                f"({res['llm']['bandwidth_floor_ms_per_token']})")
    assert cells[4] == str(res["token2wav"]["offline"]["total_rtf"])
    assert cells[6] == str(res["token2wav"]["stream"]["first_chunk_ms_p50"])
    assert cells[8] == f"{res['train_flow']['step_s']} ({res['train_flow']['utts_per_s']})"
    assert bench_tool.main(["--rows", str(tmp_path / "missing.json")]) == 2
    assert "--rows " + str(tmp_path / "missing.json") + ": cannot read a benchmark result" in capsys.readouterr().err
