"""Helpers shared by the LLM tests (a uniquely named module, importable from any test in tests/llm)."""
from __future__ import annotations

from cosyvoice.utils.config import load_config


def build_tiny_llm(fixtures_dir, tiny_qwen_dir):
    """Qwen2LM from the fixture tiny.yaml (fresh weights; nothing loaded)."""
    cfg = load_config(str(fixtures_dir / "tiny.yaml"), {"qwen_pretrain_path": str(tiny_qwen_dir)}, keys=["llm"])
    return cfg["llm"]


def build_tiny3_llm(fixtures3_dir, tiny3_qwen_dir, **overrides):
    """CosyVoice3LM from the fixture tiny3.yaml (fresh weights; nothing loaded); ``overrides`` go to the yaml."""
    cfg = load_config(str(fixtures3_dir / "tiny3.yaml"), {"qwen_pretrain_path": str(tiny3_qwen_dir), **overrides},
                      keys=["llm"])
    return cfg["llm"]
