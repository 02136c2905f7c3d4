"""The recipe on Fun-CosyVoice3-0.5B: `bash run.sh --pretrained_model_dir exp/pretrained/CosyVoice3-0.5B-tiny` runs
stages 0-8 on the demo voice with the v3 stand-in (written by the run), into its own experiment, and
`bash inference.sh` on the model dir it wrote speaks every mode."""
from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
import soundfile as sf
import torch

from cosyvoice.audio.io import load_wav
from cosyvoice.utils.onnx import SpeechTokenizer
from recipe_helpers import ROOT

STAND_IN3 = "exp/pretrained/CosyVoice3-0.5B-tiny"


@pytest.fixture(scope="session")
def demo3_run(tmp_path_factory):
    """`bash run.sh --pretrained_model_dir exp/pretrained/CosyVoice3-0.5B-tiny` in a fresh cwd: (cwd, result)."""
    cwd = tmp_path_factory.mktemp("demo3_cwd")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", str(ROOT / "run.sh"), "--setup_env", "false", "--pretrained_model_dir", STAND_IN3],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r


def test_v3_demo_runs_every_stage_into_its_own_experiment(demo3_run):
    cwd, r = demo3_run
    assert r.stdout.splitlines()[-1].split(") ", 1)[1].startswith("Done: stages 0..8 in ")
    assert "Experiment 'demo_voice_cosyvoice3': data in data/demo_voice_cosyvoice3, models in " \
           "exp/demo_voice_cosyvoice3 (Fun-CosyVoice3-0.5B)" in r.stdout
    assert not (cwd / "exp" / "demo_voice").exists() and not (cwd / "data" / "demo_voice").exists()
    stand_in = cwd / STAND_IN3
    assert (stand_in / ".stand_in.done").is_file() and (stand_in / "cosyvoice3.yaml").is_file()
    assert sum(p.stat().st_size for p in stand_in.rglob("*") if p.is_file()) < 30 << 20
    data, exp = cwd / "data" / "demo_voice_cosyvoice3", cwd / "exp" / "demo_voice_cosyvoice3"
    for x in ("train", "test"):
        assert (data / x / "utt2speech_token.pt").is_file() and (data / x / "parquet" / "data.list").is_file()
    # stage 2 used the v3 speech tokenizer
    tokens = torch.load(data / "train" / "utt2speech_token.pt", weights_only=True)["demo_0001"]
    wav = load_wav(ROOT / "local" / "demo_voice" / "train" / "demo_0001.wav", 16000)
    assert list(tokens) == SpeechTokenizer(str(stand_in / "speech_tokenizer_v3.onnx")).tokenize(wav, True)
    # stage 4: laid out like the official Fun-CosyVoice3-0.5B dir (links to the pretrained files, nothing of v2)
    model = exp / "model"
    for name in ("cosyvoice3.yaml", "speech_tokenizer_v3.onnx", "campplus.onnx", "hift.pt", "CosyVoice-BlankEN"):
        assert (model / name).is_symlink(), name
    assert not (model / "cosyvoice2.yaml").exists() and not (model / "speech_tokenizer_v2.onnx").exists()
    # stages 5-7: both models trained with the v3 yaml, averaged, the DiT estimator exported (no encoder)
    for m in ("llm", "flow"):
        assert (exp / m / "epoch_1_whole.pt").is_file() and list((exp / m / "samples" / "epoch_1").glob("*.wav"))
        config = (exp / m / "config.yaml").read_text()
        assert "cosyvoice.llm.llm.CosyVoice3LM" in config and "cosyvoice.flow.flow.CausalMaskedDiffWithDiT" in config
        assert "version: cosyvoice3" in config
        assert (model / f"{m}.pt").is_file() and not (model / f"{m}.pt").is_symlink()
    assert (model / "flow.decoder.estimator.fp32.onnx").is_file() and not (model / "flow.encoder.fp32.zip").exists()
    assert "(its DiT flow has no encoder to TorchScript, as in the official export)" in r.stdout
    # the model dir is an official Fun-CosyVoice3-0.5B one: official yaml names only, exactly the official files
    from official_layout import OFFICIAL, check_official_dir, check_official_yaml

    loaded = set(OFFICIAL["cosyvoice3"]["model_dir"]["loaded"])
    check_official_dir(model, loaded | {"spk2info.pt", "flow.decoder.estimator.fp32.onnx"}, "cosyvoice3")
    for m in ("llm", "flow"):
        check_official_yaml(exp / m / "config.yaml", "cosyvoice3")
    # stage 8: the report of a CosyVoice3 run
    metrics = json.loads((exp / "metrics.json").read_text())
    assert metrics["model_version"] == "cosyvoice3" and metrics["stand_in"] == {"base": True, "sft": True}
    assert metrics["summary"]["sft"]["utterances"] == 12 and metrics["summary"]["sft"]["seconds"] > 0
    html = (exp / "report.html").read_text(encoding="utf-8")
    assert "<h1>CosyVoice3 fine-tuning report: speaker demo</h1>" in html and "not Fun-CosyVoice3-0.5B" in html


def test_v3_training_batches_carry_the_system_prompt(demo3_run):
    """The v3 LLM is trained with the system prompt as every utterance's instruction (tokenize.default_instruct)."""
    cwd, _ = demo3_run
    config = (cwd / "exp" / "demo_voice_cosyvoice3" / "llm" / "config.yaml").read_text()
    assert "default_instruct: 'You are a helpful assistant.<|endofprompt|>'" in config


def test_inference_sh_on_the_v3_model_dir_speaks_every_mode(demo3_run, tmp_path):
    cwd, _ = demo3_run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "inference3"
    r = subprocess.run(["bash", str(ROOT / "inference.sh"), "--model_dir", "exp/demo_voice_cosyvoice3/model",
                        "--result_dir", str(out), "--stream", "true"], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "index.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with open(ROOT / "local" / "tts_text.json", encoding="utf-8") as f:
        section = json.load(f)["demo"]
    assert sorted({row["mode"] for row in rows}) == ["cross-lingual", "instruct", "sft", "zero-shot"]
    assert len(rows) == 2 + 2 + 2 + 1 == sum(len(v) if isinstance(v, list) else 1 for v in section.values())
    for row in rows:
        info = sf.info(out / row["file"])
        assert info.samplerate == 24000 and info.frames > 0 and abs(info.duration - float(row["duration"])) < 1e-3
        assert int(row["chunks"]) >= 1
