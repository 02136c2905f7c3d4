"""The recipe with LoRA and several speakers on the stand-in (issue 19): `bash run.sh --finetune lora` through stages
0-8 on two demo-voice subsets trained together (speaker tags, a character per speaker, per-speaker report, merged
export), a second character from another subset, and one CosyVoice2 serving characters of both runs."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from recipe_helpers import ROOT

DEMO = ROOT / "local" / "demo_voice"
TINY = ["--max_epoch", "1", "--nproc_cpu", "1", "--sample_texts", "", "--eval_max_utts", "2", "--num_test", "2"]


def _subset(out: Path, k: int, n_train: int = 8, n_test: int = 2) -> Path:
    """Pair folders out/{train,test}: the k-th slice of n_train training and n_test test clips of the demo voice."""
    for name, n in (("train", n_train), ("test", n_test)):
        clips = sorted((DEMO / name).glob("*.wav"))[k * n:(k + 1) * n]
        (out / name).mkdir(parents=True)
        for wav in clips:
            shutil.copy(wav, out / name / wav.name)
            shutil.copy(wav.with_suffix(".normalized.txt"), out / name / wav.with_suffix(".normalized.txt").name)
    return out


def _run(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(["bash", str(ROOT / "run.sh"), "--setup_env", "false", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(cwd, the two-speaker LoRA run's output, the second run's output): alice and bob trained together on two
    subsets (stages 0-8, merged export), carol alone on a third subset (the llm only, stages 0-6)."""
    root = tmp_path_factory.mktemp("lora_recipe")
    a, b, c = _subset(root / "A", 0), _subset(root / "B", 1), _subset(root / "C", 2)
    cwd = root / "cwd"
    cwd.mkdir()
    multi = _run(cwd, "--data_dir", f"{a}:{b}", "--spk_id", "alice:bob", "--finetune", "lora", "--merge", "true",
                 *TINY)
    assert multi.returncode == 0, multi.stderr[-3000:]
    single = _run(cwd, "--data_dir", str(c), "--spk_id", "carol", "--finetune", "lora", "--train_models", "llm",
                  "--stop_stage", "6", *TINY)
    assert single.returncode == 0, single.stderr[-3000:]
    return cwd, multi, single


def test_lora_run_writes_adapter_only_checkpoints_and_a_character_per_speaker(runs):
    cwd, multi, _ = runs
    exp = cwd / "exp" / "alice-bob_lora"
    pretrained = torch.load(cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny" / "llm.pt", weights_only=True)
    checkpoints = sorted((exp / "llm").glob("epoch_*.pt"))
    checkpoints = [p for p in checkpoints if not p.name.endswith(".state.pt")]
    assert checkpoints
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
        assert path.stat().st_size < 0.1 * sum(v.numel() * 4 for v in pretrained.values())
    assert "MB, LoRA adapter only" in (exp / "llm" / "train.log").read_text()
    assert "LoRA llm checkpoints (adapter only):" in multi.stdout  # the size is printed at the end
    info = json.loads((exp / "llm" / "epoch_0_whole.ckpt.json").read_text())
    assert info["finetune"] == "lora"
    flow = torch.load(exp / "flow" / "epoch_0_whole.pt", weights_only=True)  # the flow: still every weight
    assert not any("lora" in k for k in flow)
    for spk in ("alice", "bob"):
        manifest = json.loads((exp / "characters" / spk / "character.json").read_text())
        assert manifest["spk_id"] == spk and manifest["llm"]["finetune"] == "lora"
        assert manifest["flow"]["finetune"] == "full" and manifest["speaker_tag"] == f"{spk}<|endofprompt|>"
        assert manifest["metrics"]["sft"]["utterances"] >= 1  # stage 8 recorded its figures
    # the printed inference command: the experiment's model dir, which inference.sh reads as a LoRA experiment (its
    # characters on the pretrained model) and whose inference/ dir gets the audio, as the line before it says
    lines = multi.stdout.splitlines()
    assert lines[-3].endswith("into exp/alice-bob_lora/inference (or serve it over HTTP: "
                              f"bash {ROOT}/serve.sh --model_dir exp/alice-bob_lora/model):")
    assert lines[-2] == (f"bash {ROOT}/inference.sh --model_dir exp/alice-bob_lora/model --spk_id alice "
                         "--test_data_dir data/alice-bob/test")


def test_the_printed_serve_command_serves_the_characters(runs):
    """The server command of the run's last lines, as a user copies it (plus a free port): the experiment's
    characters are its voices, on the pretrained model."""
    import httpx2 as httpx

    from process_helpers import Served

    cwd, multi, _ = runs
    command = re.search(r"\(or serve it over HTTP: (bash .*)\):$", multi.stdout.splitlines()[-3]).group(1)
    served = Served([*shlex.split(command), "--port", "0", "--warmup", "false"], cwd=cwd)
    try:
        url = served.url()
        voices = httpx.get(url + "/v1/voices").json()["data"]
        assert sorted((v["id"], v["source"]) for v in voices) == [("alice", "character"), ("bob", "character")]
        r = httpx.post(url + "/v1/audio/speech", json={"model": "cosyvoice2", "voice": "bob", "input": "你好"},
                       timeout=120)
        assert r.status_code == 200, r.text
    finally:
        served.stop()
    assert re.search(r"characters in \S*exp/alice-bob_lora/characters on the pretrained model "
                     r"\S*exp/pretrained/CosyVoice2-0.5B-tiny$", served.log(), re.M), served.log()


def test_lora_models_go_to_their_own_experiment_dir_and_the_data_is_shared(runs):
    """A LoRA run of the default experiment writes its models to exp/<tag>_lora, so it never replaces the models of
    a full run of the same data; the data stages write data/<tag>, which both runs share."""
    cwd, multi, single = runs
    assert "Experiment 'alice-bob': data in data/alice-bob, models in exp/alice-bob_lora " in multi.stdout
    assert "Experiment 'carol': data in data/carol, models in exp/carol_lora " in single.stdout
    assert not (cwd / "exp" / "alice-bob").exists() and not (cwd / "exp" / "carol").exists()
    assert (cwd / "data" / "alice-bob" / "train" / "wav.scp").is_file()


def test_multi_speaker_run_tags_each_speaker_and_reports_per_speaker(runs):
    cwd, multi, _ = runs
    exp = cwd / "exp" / "alice-bob_lora"
    spk2info = torch.load(exp / "model" / "spk2info.pt", weights_only=True)
    assert sorted(spk2info) == ["alice", "bob"]
    assert spk2info["bob"]["speaker_tag"] == "bob<|endofprompt|>" and spk2info["bob"]["embedding"].shape == (1, 192)
    assert "speaker_tag: true" in (exp / "llm" / "config.yaml").read_text()
    metrics = json.loads((exp / "metrics.json").read_text())
    assert sorted(metrics["speakers"]) == ["alice", "bob"]
    for spk, per in metrics["speakers"].items():
        assert per["summary"]["sft"]["utterances"] == len(per["utts"]) >= 1
        assert per["prompt"]["utt"]
        sims = metrics["separation"]["sft"]["speakers"][spk]["sim"]
        assert set(sims) == {"alice", "bob"} and all(-1 <= v <= 1 for v in sims.values())
        assert metrics["separation"]["sft"]["speakers"][spk]["ok"] == (max(sims, key=sims.get) == spk)
    page = (exp / "report.html").read_text(encoding="utf-8")
    assert "<h2>Per speaker</h2>" in page and "<h3>Speaker alice</h3>" in page and "<h3>Speaker bob</h3>" in page
    assert "<h3>Speaker separation</h3>" in page and "to bob's real clips" in page
    assert "<h2>Fine-tuning</h2>" in page


def test_merged_export_is_a_plain_official_llm_pt_that_computes_the_adapter(runs):
    from cosyvoice.cli.character import read_character
    from cosyvoice.utils import lora
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    cwd, _, _ = runs
    model = cwd / "exp" / "alice-bob_lora" / "model"
    pretrained = cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny"
    assert (model / "llm.pt").is_file() and not (model / "llm.pt").is_symlink()
    merged = torch.load(model / "llm.pt", weights_only=True)
    base = torch.load(pretrained / "llm.pt", weights_only=True)
    assert list(merged) == list(base) and all(merged[k].shape == base[k].shape for k in base)

    def build():
        return load_config(str(pretrained / "cosyvoice2.yaml"),
                           {"qwen_pretrain_path": str(pretrained / "CosyVoice-BlankEN")}, keys=["llm"])["llm"]

    plain = build()
    load_checkpoint_strict(plain, model / "llm.pt")  # strictly, into the plain module
    character = read_character(str(cwd / "exp" / "alice-bob_lora" / "characters" / "alice"))
    adapted = build()
    load_checkpoint_strict(adapted, pretrained / "llm.pt")
    lora.add_adapter(adapted, character.lora_settings("llm"), trainable=False)
    lora.load_adapter_state_dict(adapted, character.file("llm"))
    x = torch.randn(1, 17, plain.llm_input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h_plain, _ = plain.eval().llm.forward_one_step(x)
        h_adapted, _ = adapted.eval().llm.forward_one_step(x)
        logits = plain.llm_decoder(h_plain), adapted.llm_decoder(h_adapted)
    assert float((logits[0] - logits[1]).abs().max()) < 1e-5
    # the merged model dir is an official one (issue 22): the characters live beside it, in <exp_dir>/characters
    from official_layout import LOADED, check_official_dir

    check_official_dir(model, LOADED | {"spk2info.pt", "flow.encoder.fp32.zip", "flow.decoder.estimator.fp32.onnx"})


def test_one_cosyvoice2_serves_characters_of_two_runs_bit_for_bit(runs):
    from cosyvoice.cli.cosyvoice import CosyVoice2

    cwd, _, single = runs
    base = cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny"
    alice = cwd / "exp" / "alice-bob_lora" / "characters" / "alice"
    carol = cwd / "exp" / "carol_lora" / "characters" / "carol"
    assert json.loads((carol / "character.json").read_text())["flow"]["finetune"] == "base"  # the llm only

    def say(cv, spk):
        return torch.cat([o["tts_speech"] for o in cv.inference_sft("你好，世界。", spk, seed=7)], dim=1)

    torch.set_num_threads(1)
    both = CosyVoice2(str(base), characters=[str(alice), str(carol)])
    interleaved = [(spk, say(both, spk)) for spk in ("alice", "carol", "alice", "carol")]
    alone = {spk: say(CosyVoice2(str(base), characters=[str(path)]), spk)
             for spk, path in (("alice", alice), ("carol", carol))}
    for spk, audio in interleaved:
        assert torch.equal(audio, alone[spk]), f"{spk} differs when the other character is loaded too"
    assert not torch.equal(alone["alice"], alone["carol"])


def test_inference_sh_speaks_as_a_character_of_the_lora_experiment(runs):
    cwd, _, _ = runs
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", str(ROOT / "inference.sh"), "--model_dir", "exp/alice-bob_lora/model", "--mode", "sft",
                        "--spk_id", "bob"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LoRA experiment exp/alice-bob_lora: the characters in" in r.stdout
    rows = (cwd / "exp" / "alice-bob_lora" / "inference" / "index.tsv").read_text().splitlines()[1:]
    assert rows and all(row.split("\t")[1] == "sft" for row in rows)


def test_compare_experiments_puts_the_figures_side_by_side(runs):
    cwd, _, _ = runs
    exp = cwd / "exp" / "alice-bob_lora"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", "-c", f". {ROOT}/path.sh && python3 {ROOT}/tools/compare_experiments.py {exp} {exp}"
                        " && python3 " + f"{ROOT}/tools/compare_experiments.py --json {exp}"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    table, _, blob = r.stdout.partition("\n[")
    assert "| | alice-bob_lora | alice-bob_lora |" in table and "| llm fine-tuning | lora | lora |" in table
    assert "| flow fine-tuning | full | full |" in table
    row = json.loads("[" + blob)[0]
    metrics = json.loads((exp / "metrics.json").read_text())
    assert row["sft.sim_centroid"] == metrics["summary"]["sft"]["sim_centroid"]
    assert row["llm.checkpoint_mb"] == pytest.approx((exp / "llm" / "epoch_0_whole.pt").stat().st_size / 2 ** 20)
    missing = subprocess.run(["bash", "-c", f". {ROOT}/path.sh && python3 {ROOT}/tools/compare_experiments.py "
                              f"{cwd / 'nope'}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "metrics.json not found: run stage 8" in missing.stderr
