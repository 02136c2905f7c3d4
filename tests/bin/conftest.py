"""Fixtures of the tests of cosyvoice/bin/average_model.py and export.py: finished training runs to work on.

They are those of tests/training (train_fixtures.py), built once per pytest session and shared with it.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from train_fixtures import flow_run, llm_run, lists, lora_llm_run, one_thread, stand_in  # noqa: E402,F401 (fixtures)
