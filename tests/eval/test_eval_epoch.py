"""The per-epoch evaluation hook: the trained module is swapped in, scored, restored; RNG streams untouched."""
from __future__ import annotations

import json

import pytest
import torch

from cosyvoice.eval.epoch import clear_inference_tensors, EpochEvaluator, EpochModel, tracker_scalars
from cosyvoice.eval.select import load_epoch_records, select_best
from cosyvoice.utils import checkpoint as ckpt
from eval_helpers import TEST_UTTS


def trained_module(stand_in_dir, name):
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    module = load_config(str(stand_in_dir / "cosyvoice2.yaml"),
                         {"qwen_pretrain_path": str(stand_in_dir / "CosyVoice-BlankEN")}, keys=[name])[name]
    load_checkpoint_strict(module, stand_in_dir / f"{name}.pt")
    return module.train()


def test_epoch_evaluation_scores_and_restores(stand_in_dir, eval_data, tiny_whisper_dir, tmp_path):
    model_dir = tmp_path / "llm"
    evaluator = EpochEvaluator(str(stand_in_dir), str(eval_data / "test"), str(eval_data / "train"), num_utts=2,
                               asr_model_dir=str(tiny_whisper_dir), max_token_text_ratio=2)
    llm = trained_module(stand_in_dir, "llm")
    original = evaluator.cosyvoice.model.llm
    torch.manual_seed(123)
    rng = ckpt.get_rng_state()
    metrics = evaluator(llm, "llm", 0, model_dir=str(model_dir))
    after = ckpt.get_rng_state()
    assert torch.equal(after["torch"], rng["torch"]) and after["python"] == rng["python"]
    assert llm.training and evaluator.cosyvoice.model.llm is original and "inference" not in vars(llm)
    assert metrics["utts"] == sorted(TEST_UTTS) and metrics["n_utts"] == 2
    assert -1.0 <= metrics["sim"] <= 1.0 and -1.0 <= metrics["sim_to_real"] <= 1.0
    assert metrics["asr"]["status"] == "ok" and metrics["error_rate"] >= 0.0
    assert set(tracker_scalars(metrics)) == {"eval/sim", "eval/sim_to_real", "eval/error_rate", "eval/cer",
                                             "eval/wer", "eval/duration_ratio"}
    saved = json.loads((model_dir / "eval" / "epoch_0.json").read_text())
    assert saved["sim"] == metrics["sim"] and saved["checkpoint"] == "epoch_0_whole"
    # the same seeded subset gives the same numbers next epoch when the weights did not change
    flow = trained_module(stand_in_dir, "flow")
    again = evaluator(flow, "flow", 1, model_dir=str(model_dir))
    assert again["sim"] == pytest.approx(metrics["sim"], abs=1e-6)
    assert flow.training and not any(t.is_inference() for m in flow.modules() for t in vars(m).values()
                                     if isinstance(t, torch.Tensor))
    # the records feed checkpoint selection
    for epoch in (0, 1):
        ckpt.save_checkpoint(model_dir, ckpt.CheckpointInfo(
            name=f"epoch_{epoch}_whole", epoch=epoch, step=epoch + 1, resume_epoch=epoch + 1, resume_batch=0,
            world_size=1, train_engine="torch_ddp", cv={"loss": 1.0}), {"w": torch.zeros(1)}, None)
    best = select_best(load_epoch_records(model_dir), "sim")
    assert best[0]["name"] == "epoch_1_whole"  # equal SIM: the later one


def test_swap_rejects_other_modules(stand_in_dir):
    with pytest.raises(ValueError, match="can synthesize with a trained llm or flow, not 'hift'"):
        with EpochModel(str(stand_in_dir)).using(hift=torch.nn.Linear(1, 1)):
            pass


def test_swap_puts_the_modules_and_speakers_back(stand_in_dir):
    em = EpochModel(str(stand_in_dir))
    cv = em.cosyvoice
    own_llm, own_flow = cv.model.llm, cv.model.flow
    llm, flow = torch.nn.Linear(1, 1).train(), torch.nn.Linear(1, 1).eval()
    cv.frontend.spk2info["old"] = {"embedding": torch.zeros(1, 192)}
    entry = {"embedding": torch.ones(1, 192)}
    with em.using(speakers={"new": entry, "old": entry}, llm=llm, flow=flow) as inside:
        assert inside is cv and cv.model.llm is llm and cv.model.flow is flow and not llm.training
        assert torch.equal(cv.frontend.spk2info["new"]["embedding"], entry["embedding"])
        assert torch.equal(cv.frontend.spk2info["old"]["embedding"], entry["embedding"])
    assert cv.model.llm is own_llm and cv.model.flow is own_flow and llm.training and not flow.training
    assert "new" not in cv.frontend.spk2info and not cv.frontend.spk2info["old"]["embedding"].any()


def test_inference_tensors_cached_on_modules_are_replaced():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.inference_mode():
        m[0].table = torch.ones(3)
    assert m[0].table.is_inference()
    assert clear_inference_tensors(m) == 1
    assert not m[0].table.is_inference() and torch.equal(m[0].table, torch.ones(3))


def test_speaker_embedding_from_the_model_dir_or_stage_1(stand_in_dir, sft_model_dir, eval_data):
    from_model = EpochEvaluator(str(sft_model_dir), str(eval_data / "test"), num_utts=1)
    expected = torch.load(sft_model_dir / "spk2info.pt")["demo"]["embedding"]
    assert from_model.embedding.shape == (1, 192) and torch.equal(from_model.embedding, expected)
    assert [it.utt for it in from_model.items] == [sorted(TEST_UTTS)[0]]
    assert from_model.asr is None and from_model.asr_status["reason"] == "no --asr_model_dir given"
    from_data = EpochEvaluator(str(stand_in_dir), str(eval_data / "test"), str(eval_data / "train"), num_utts=1)
    assert torch.allclose(from_data.embedding, expected)
    with pytest.raises(ValueError, match=f"^{stand_in_dir / 'spk2info.pt'} not found: run stage 4 first"):
        EpochEvaluator(str(stand_in_dir), str(eval_data / "test"))
