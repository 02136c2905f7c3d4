"""Fixtures of the evaluation tests: the stand-in model dir, a fine-tuned-style model dir with the SFT speaker,
a tiny random Whisper dir, and a small data set of demo-voice clips (each built once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eval_helpers import DEMO, PROMPT_UTTS, SPK, TEST_UTTS, link_model_dir, make_tiny_whisper, write_data_dir


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory, stand_in_dir) -> Path:
    """data/{train,test} with the demo voice: 3 train clips (prompts), 2 test clips; stage-1 embeddings."""
    from cosyvoice.utils.onnx import EmbeddingExtractor
    from cosyvoice.audio.io import load_wav

    root = tmp_path_factory.mktemp("data")
    texts = {p.stem.split(".")[0]: p.read_text(encoding="utf-8").strip()
             for p in DEMO.glob("*/*.normalized.txt")}
    sets = {"train": {u: (DEMO / "train" / f"{u}.wav", texts[u], SPK) for u in PROMPT_UTTS},
            "test": {u: (DEMO / "test" / f"{u}.wav", t, SPK) for u, t in TEST_UTTS.items()}}
    extractor = EmbeddingExtractor(str(stand_in_dir / "campplus.onnx"))
    for name, utts in sets.items():
        d = write_data_dir(root / name, utts)
        emb = {u: extractor.embed(load_wav(v[0], 16000)) for u, v in utts.items()}
        torch.save(emb, d / "utt2embedding.pt")
        torch.save({SPK: torch.tensor(list(emb.values())).mean(0).tolist()}, d / "spk2embedding.pt")
    return root


@pytest.fixture(scope="session")
def sft_model_dir(tmp_path_factory, stand_in_dir, eval_data) -> Path:
    """A fine-tuned-style model dir (stage 4 layout): links to the stand-in + spk2info.pt with speaker 'demo'."""
    emb = torch.load(eval_data / "train" / "spk2embedding.pt")[SPK]
    table = {SPK: {"embedding": torch.tensor([emb])}}
    return link_model_dir(stand_in_dir, tmp_path_factory.mktemp("exp") / "model", table)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("asr") / "whisper-tiny-random")



@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these tiny models run many small ops, which thread hand-offs only slow down (by 10x
    on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
