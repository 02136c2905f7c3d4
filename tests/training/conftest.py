"""Fixtures of the training tests: the stand-in model, tiny parquet lists and finished reference runs."""
from __future__ import annotations

from train_fixtures import flow_run, llm_run, lists, lora_llm_run, one_thread, stand_in  # noqa: F401 (fixtures)
