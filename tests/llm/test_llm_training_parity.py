"""The training forward of both LM families against the official golden data: the python draws, the path each
utterance takes, the loss and the accuracy."""
from __future__ import annotations

import pytest

from llm_helpers import BATCH3_KEYS, BATCH_KEYS, TRAIN3_CASES, TRAIN_CASES, check_training_forward

# family -> (the tiny LM fixture, its safetensors loader fixture, the batch keys, the cases)
FAMILIES = {"cosyvoice2": ("tiny_llm", "llm_fixture", BATCH_KEYS, TRAIN_CASES),
            "cosyvoice3": ("tiny3_llm", "llm3_fixture", BATCH3_KEYS, TRAIN3_CASES)}


@pytest.mark.parametrize("family,name,seed,paths",
                         [(family, *case) for family, spec in FAMILIES.items() for case in spec[3]])
def test_training_forward_matches_official(request, family, name, seed, paths):
    llm_name, loader_name, keys, _ = FAMILIES[family]
    d = request.getfixturevalue(loader_name)(name)
    check_training_forward(request.getfixturevalue(llm_name), {k: d[k] for k in keys}, d, seed, paths)
