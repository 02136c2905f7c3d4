"""Stage 6/7 on a LoRA run: averaging adapters (and merging the average), export --merge of a character."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import train_helpers as th
from cosyvoice.bin import average_model, export
from cosyvoice.utils import checkpoint as ckpt


def test_adapters_average_like_weights_and_merge_into_the_plain_layout(lora_llm_run, stand_in, tmp_path):
    dst, merged = tmp_path / "llm.adapter.pt", tmp_path / "llm.pt"
    assert average_model.main(["--src_path", str(lora_llm_run), "--dst_model", str(dst), "--num", "2",
                               "--select_by", "newest", "--merged_model", str(merged)]) == 0
    a, b = (th.load_state(lora_llm_run / f"{n}.pt") for n in ("epoch_1_whole", "epoch_1_step_4"))
    avg = th.load_state(dst)
    assert avg.keys() == a.keys() and all(torch.allclose(avg[k], (a[k] + b[k]) / 2, atol=1e-7) for k in a)
    record = json.loads((lora_llm_run / "average.json").read_text())
    assert record["finetune"] == "lora" and [c["name"] for c in record["checkpoints"]] == ["epoch_1_whole",
                                                                                           "epoch_1_step_4"]
    base, plain = th.load_state(stand_in / "llm.pt"), th.load_state(merged)
    assert list(plain) == list(base) and th.max_abs_diff(plain, base) > 1e-6


def test_full_and_lora_checkpoints_are_not_averaged_together(lora_llm_run, llm_run, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(lora_llm_run, mixed, ignore=shutil.ignore_patterns("tensorboard", "swanlog", "samples"))
    info = ckpt.CheckpointInfo.read(llm_run / "epoch_0_whole.ckpt.json")
    info.step = 99
    shutil.copy(llm_run / "epoch_0_whole.pt", mixed / "epoch_0_whole.pt")
    (mixed / "epoch_0_whole.ckpt.json").write_text(info.to_json())
    with pytest.raises(average_model.AverageError, match=r"mix full weights and LoRA adapters"):
        average_model.main(["--src_path", str(mixed), "--dst_model", str(tmp_path / "x.pt"), "--num", "3",
                            "--select_by", "newest"])
    assert average_model.cli(["--src_path", str(llm_run), "--dst_model", str(tmp_path / "y.pt"),
                              "--merged_model", str(tmp_path / "z.pt")]) == 2  # a full run has nothing to merge


def test_export_merge_needs_a_character_with_an_adapter(stand_in, tmp_path, capsys):
    from cosyvoice.cli.character import write_character

    model = tmp_path / "model"
    shutil.copytree(stand_in, model)
    assert export.cli(["--model_dir", str(model), "--merge", "true"]) == 2
    assert "--merge true needs --character" in capsys.readouterr().err
    write_character(str(tmp_path / "c"), "demo", str(stand_in), {"embedding": torch.zeros(1, 192)})
    assert export.cli(["--model_dir", str(model), "--merge", "true", "--character", str(tmp_path / "c")]) == 2
    assert "has no llm adapter to merge" in capsys.readouterr().err
