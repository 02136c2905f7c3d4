"""Stages 2-4 and the training data pipeline with a Fun-CosyVoice3-0.5B dir (the v3 stand-in): the v3 speech
tokenizer, the official v3 model dir layout (also when the pretrained model changes from v2 to v3), and training
batches that carry the system prompt as every utterance's instruction."""
from __future__ import annotations

import os

import pytest
import torch

from cosyvoice.utils.pretrained import COSYVOICE3, check_pretrained_dir
from stage_test_utils import call_tool, run_stages_1_4


@pytest.fixture(scope="module")
def stages3(tmp_path_factory, stand_in3_dir, synthetic_utts):
    """Stages 1-4 through the tools' command lines with the v3 stand-in."""
    return run_stages_1_4(tmp_path_factory.mktemp("stages3"), synthetic_utts, stand_in3_dir, "speech_tokenizer_v3.onnx")


def test_stage2_uses_the_v3_tokenizer(stages3):
    from cosyvoice.audio.io import load_wav
    from cosyvoice.utils.onnx import SpeechTokenizer

    data = stages3["data"]
    tokens = torch.load(data / "utt2speech_token.pt", weights_only=True)
    wav = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())["spkA_001"]
    tokenizer = SpeechTokenizer(str(stages3["pretrained"] / "speech_tokenizer_v3.onnx"))
    assert tokens["spkA_001"] == tokenizer.tokenize(load_wav(wav, 16000), pad_to_token_grid=True)


def test_stage4_lays_out_the_official_v3_model_dir(stages3):
    model_dir, pre = stages3["model_dir"], stages3["pretrained"]
    assert check_pretrained_dir(str(model_dir), version=COSYVOICE3) == str(model_dir)
    assert sorted(os.listdir(model_dir)) == sorted(list(COSYVOICE3.model_dir_entries) + ["spk2info.pt"])
    for name in COSYVOICE3.model_dir_entries:
        assert os.path.realpath(model_dir / name) == os.path.realpath(pre / name), name
    assert list(torch.load(model_dir / "spk2info.pt", weights_only=True)) == ["spkA", "spkB"]


def test_stage4_after_switching_from_v2_to_v3(tmp_path, stages3, stand_in_dir):
    """Rerunning stage 4 with a v3 pretrained dir on a model dir made from v2 drops the v2 yaml and tokenizer links
    and links the v3 ones, so the dir is one model (a v2 yaml that is a real file is refused)."""
    args = ("--data_dir", stages3["data"], "--model_dir", tmp_path / "model")
    rc, err = call_tool("save_spk2info", *args, "--pretrained_model_dir", stand_in_dir)
    assert rc == 0, err
    assert (tmp_path / "model" / "cosyvoice2.yaml").is_symlink()
    rc, err = call_tool("save_spk2info", *args, "--pretrained_model_dir", stages3["pretrained"])
    assert rc == 0, err
    names = set(os.listdir(tmp_path / "model"))
    assert "cosyvoice2.yaml" not in names and "speech_tokenizer_v2.onnx" not in names
    assert {"cosyvoice3.yaml", "speech_tokenizer_v3.onnx"} <= names
    assert os.path.realpath(tmp_path / "model" / "llm.pt") == os.path.realpath(stages3["pretrained"] / "llm.pt")

    (tmp_path / "model" / "cosyvoice2.yaml").write_text("a copy\n")
    rc, err = call_tool("save_spk2info", *args, "--pretrained_model_dir", stages3["pretrained"])
    assert rc == 2  # a user error: one line, exit status 2
    assert err.strip().endswith(f"{tmp_path / 'model' / 'cosyvoice2.yaml'} belongs to CosyVoice2-0.5B, but "
                                "--pretrained_model_dir is Fun-CosyVoice3-0.5B: a model dir holds one model; remove "
                                "it (or use another --model_dir)")


def test_training_batches_carry_the_system_prompt(stages3):
    """The v3 yaml's pipeline gives every utterance instruct_token = the system prompt (tokenize.default_instruct),
    as CosyVoice3LM is trained and prompted, and 2 mel frames per speech token."""
    from cosyvoice.dataset.dataset import Dataset
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer
    from cosyvoice.utils.config import load_config

    pre = stages3["pretrained"]
    cfg = load_config(str(pre / "cosyvoice3.yaml"), {"qwen_pretrain_path": str(pre / "CosyVoice-BlankEN")},
                      keys=["data_pipeline"])
    system = get_qwen_tokenizer(str(pre / "CosyVoice-BlankEN"), True, "cosyvoice3").encode(
        "You are a helpful assistant.<|endofprompt|>")
    assert system[-1] == 151646
    dataset = Dataset(str(stages3["data"] / "parquet" / "data.list"), cfg["data_pipeline"], shuffle=False,
                      partition=False)
    seen = 0
    for batch in dataset:
        n = batch["instruct_token"].shape[0]
        assert batch["instruct_token"].dtype == torch.int64
        assert batch["instruct_token"].tolist() == [system] * n
        assert batch["instruct_token_len"].tolist() == [len(system)] * n
        assert batch["speech_feat_len"].tolist() == (2 * batch["speech_token_len"]).tolist()
        seen += n
    assert seen == 3  # the yaml's filter drops the 0.8 s clip


def test_an_utterance_instruction_wins_over_the_default():
    from cosyvoice.dataset.processor import tokenize

    class Tok:  # one id per text: its length
        def encode(self, text, **kwargs):
            return [len(text)]
    rows = [{"text": "a"}, {"text": "b", "instruct": "own<|endofprompt|>"}, {"text": "c", "instruct": None}]
    out = list(tokenize(iter(rows), lambda: Tok(), "all", default_instruct="the system prompt<|endofprompt|>"))
    assert [r["instruct_token"] for r in out] == [[32], [18], [32]]
    plain = list(tokenize(iter([{"text": "a"}]), lambda: Tok(), "all"))
    assert "instruct_token" not in plain[0]  # CosyVoice2: no default
