"""tools/benchmark.py compares full fine-tuning with LoRA (issue 19): step time, peak memory, trainable parameters
and checkpoint size of the llm and the flow (a smoke test on the stand-in, not a timing)."""
from __future__ import annotations

import json
import math

TINY = ["--bandwidth_mib", "32", "--warmup", "0", "--runs", "2", "--train_batch", "2", "--train_text_tokens", "3",
        "--train_speech_tokens", "8", "--no_optimizer_variants"]


def test_full_vs_lora_figures(bench_tool, tmp_path, capsys):
    tool = bench_tool
    out = tmp_path / "bench.json"
    stages = "train_llm,train_llm_lora,train_flow,train_flow_lora"
    assert tool.main(["--stand_in", "--stages", stages, "--out", str(out)] + TINY) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    for name in ("llm", "flow"):
        full, lora = res[f"train_{name}"], res[f"train_{name}_lora"]
        assert full["finetune"] == "full" and lora["finetune"] == "lora"
        assert full["trainable_params"] == full["all_params"]
        assert 0 < lora["trainable_params"] < 0.1 * lora["all_params"] and lora["all_params"] > full["all_params"]
        assert 0 < lora["checkpoint_mb"] < 0.1 * full["checkpoint_mb"]
        for r in (full, lora):
            assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("step_s", "peak_memory_mb", "speech_tokens_per_s"))
        c = res[f"{name}_full_vs_lora"]
        assert c["step_s"] == [full["step_s"], lora["step_s"]]
        assert c["speedup"] == round(full["step_s"] / lora["step_s"], 2)
        assert f"{name} full vs LoRA: step {full['step_s']} s vs {lora['step_s']} s" in printed
