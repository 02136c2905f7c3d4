"""train.py --finetune lora: the same trainer with LoRA adapters (adapter-only checkpoints, exact resume, several
processes, DeepSpeed), LoRA on the flow, and multi-speaker tags in the data pipeline."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

import train_helpers as th
from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils import lora
from cosyvoice.utils import train_utils as tu


def test_checkpoints_hold_the_adapter_only_and_the_base_stays_frozen(lora_llm_run, stand_in):
    infos = ckpt.list_checkpoints(lora_llm_run)
    assert [c.name for c in infos] == ["epoch_0_whole", "epoch_1_step_4", "epoch_1_whole"]
    assert all(c.finetune == "lora" for c in infos)
    base = th.load_state(stand_in / "llm.pt")
    state = th.load_state(lora_llm_run / "epoch_1_whole.pt")
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state}
    assert targets == set(lora.DEFAULT_TARGETS["llm"])  # the yaml's default: every projection of every layer
    assert sum(v.numel() for v in state.values()) < 0.1 * sum(v.numel() for v in base.values())
    b_moved = max(float(v.abs().max()) for k, v in state.items() if ".lora_B." in k)
    assert b_moved > 1e-4  # B starts at zero: the adapter learnt something
    record = json.loads((lora_llm_run / "finetune.json").read_text())
    assert record["finetune"] == "lora" and 0 < record["trainable_parameters"] < record["parameters"]
    config = (lora_llm_run / "config.yaml").read_text()
    assert "finetune: lora" in config and re.search(r"lr: 0\.002", config.split("llm_lora:")[1])
    log = (lora_llm_run / "train.log").read_text()
    assert re.search(r"finetune lora: LoRA r=16 alpha=32 dropout=0\.05 on q_proj, .*trainable", log)
    assert re.search(r"saved checkpoint .*epoch_1_whole\.pt \(0\.\d+ MB, LoRA adapter only", log)


def test_resume_continues_to_the_uninterrupted_adapter(lora_llm_run, stand_in, lists, tmp_path):
    model_dir = tmp_path / "llm"
    shutil.copytree(lora_llm_run, model_dir, ignore=shutil.ignore_patterns("tensorboard", "swanlog"))
    for p in model_dir.glob("epoch_1_whole*"):
        p.unlink()
    argv = th.train_args("llm", stand_in, lists["train"], lists["cv"], model_dir, *th.LLM_TRAIN, "--finetune", "lora")
    assert th.run_train(argv + ["--resume"]) == 0
    assert "resumed from epoch_1_step_4" in (model_dir / "train.log").read_text()
    assert th.max_abs_diff(th.load_state(model_dir / "epoch_1_whole.pt"),
                           th.load_state(lora_llm_run / "epoch_1_whole.pt")) <= 1e-6
    # the same checkpoints resumed as full fine-tuning are refused, not loaded into a full model
    for p in model_dir.glob("epoch_1_whole*"):
        p.unlink()
    with pytest.raises(tu.TrainSetupError, match=r"written with --finetune lora, this run uses full; resume with"):
        th.run_train(argv[:-2] + ["--finetune", "full", "--resume"])


@pytest.fixture(scope="module")
def ddp_lora(stand_in, lists, tmp_path_factory):
    """LoRA, 2 epochs, two gloo processes (as ddp_two of test_train_runs.py), adapter dropout 0: the dropout masks
    of two ranks are not those of one process, so only without dropout do the runs compare exactly."""
    root = tmp_path_factory.mktemp("ddp_lora")
    text = (stand_in / "cosyvoice2.yaml").read_text()
    assert text.count("dropout: 0.05") == 1
    (root / "cosyvoice2.yaml").write_text(text.replace("dropout: 0.05", "dropout: 0.0"))
    model_dir = root / "llm"
    argv = th.train_args("llm", stand_in, lists["even"], lists["cv"], model_dir, "--max_epoch", 2, "--lr", 0.01,
                         "--accum_grad", 1, "--max_frames_in_batch", 2000, "--log_interval", 1, "--finetune", "lora")
    argv[argv.index("--config") + 1] = str(root / "cosyvoice2.yaml")
    r = th.torchrun(2, argv)
    assert r.returncode == 0, r.stderr[-3000:]
    return model_dir, argv


def test_two_gloo_processes_train_the_adapter_of_one_process(ddp_lora, tmp_path):
    model_dir, argv = ddp_lora
    single = tmp_path / "single"
    argv = list(argv)
    argv[argv.index("--model_dir") + 1] = str(single)
    assert th.run_train(argv) == 0
    two, one = th.load_state(model_dir / "epoch_1_whole.pt"), th.load_state(single / "epoch_1_whole.pt")
    assert th.max_abs_diff(two, one) < 1e-4  # the same adapter init (seeded) and the same updates
    assert max(float(v.abs().max()) for k, v in two.items() if ".lora_B." in k) > 1e-3


def test_deepspeed_zero2_trains_the_adapter_and_saves_no_frozen_weights(ddp_lora, tmp_path):
    model_dir = tmp_path / "ds"
    ddp_dir, argv = ddp_lora[0], th.deepspeed_run(ddp_lora, model_dir)
    info = {c.name: c for c in ckpt.list_checkpoints(model_dir)}["epoch_1_whole"]
    assert info.finetune == "lora" and info.state == "epoch_1_whole.ds"
    module_states = [p for p in (model_dir / "epoch_1_whole.ds").rglob("*model_states.pt")]
    assert module_states
    saved = torch.load(module_states[0], map_location="cpu", weights_only=False)["module"]
    assert saved and all(".lora_" in k for k in saved)  # exclude_frozen_parameters: the adapter only
    final = th.load_state(model_dir / "epoch_1_whole.pt")
    assert th.max_abs_diff(final, th.load_state(ddp_dir / "epoch_1_whole.pt")) < 1e-5
    # resume from the first epoch's DeepSpeed state (its module state holds the adapter only)
    shutil.rmtree(model_dir / "epoch_1_whole.ds")
    for p in model_dir.glob("epoch_1_whole.*"):
        p.unlink()
    r = th.torchrun(2, argv + ["--resume"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from epoch_0_whole" in (model_dir / "train.log").read_text()
    assert th.max_abs_diff(th.load_state(model_dir / "epoch_1_whole.pt"), final) <= 1e-6


def test_lora_on_the_flow(stand_in, lists, tmp_path):
    model_dir = tmp_path / "flow"
    argv = th.train_args("flow", stand_in, lists["train"], lists["cv"], model_dir, "--max_epoch", 1, "--lr", 0.01,
                         "--accum_grad", 1, "--max_frames_in_batch", 160, "--finetune", "lora")
    assert th.run_train(argv) == 0
    state = th.load_state(model_dir / "epoch_0_whole.pt")
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state}
    assert targets == set(lora.DEFAULT_TARGETS["flow"]) and all(".lora_" in k for k in state)
    from cosyvoice.bin import average_model

    merged = tmp_path / "flow.pt"
    assert average_model.main(["--src_path", str(model_dir), "--dst_model", str(tmp_path / "flow.adapter.pt"),
                               "--num", "2", "--merged_model", str(merged)]) == 0
    plain, base = th.load_state(merged), th.load_state(stand_in / "flow.pt")
    assert list(plain) == list(base) and th.max_abs_diff(plain, base) > 1e-6


def test_speaker_tags_go_before_each_text(stand_in, lists, tmp_path):
    """--speaker_tag true: the tokens the llm trains on are those of '<spk><|endofprompt|>' + text."""
    from cosyvoice.dataset.dataset import Dataset

    conf = tmp_path / "config.yaml"
    args = type("A", (), {"qwen_pretrain_path": str(stand_in / "CosyVoice-BlankEN"), "model": "llm",
                          "finetune": None, "speaker_tag": "true"})()
    tu.write_train_config(str(stand_in / "cosyvoice2.yaml"), tu.config_overrides(args), conf)
    configs = tu.load_train_config(conf, "llm")
    assert configs["train_conf"]["speaker_tag"] is True
    tagged = tu.with_speaker_tags(configs["data_pipeline"])
    plain = [s for s in Dataset(str(lists["cv"]), configs["data_pipeline"], mode="dev", shuffle=False,
                                partition=False)][0]
    batch = [s for s in Dataset(str(lists["cv"]), tagged, mode="dev", shuffle=False, partition=False)][0]
    from cosyvoice.utils.config import load_config

    tokenizer = load_config(str(conf), keys=["get_tokenizer"])["get_tokenizer"]()
    tag = tokenizer.encode("demo<|endofprompt|>", allowed_special="all")
    for i, text in enumerate(plain["text"]):
        j = batch["text"].index(f"demo<|endofprompt|>{text}")
        n, m = int(plain["text_token_len"][i]), int(batch["text_token_len"][j])
        assert batch["text_token"][j, :m].tolist() == tag + plain["text_token"][i, :n].tolist()
