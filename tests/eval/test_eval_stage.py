"""Stage 8 end to end on the stand-in: base zero-shot and fine-tuned SFT synthesis, metrics in range, the report."""
from __future__ import annotations

import json
import logging
import re

import pytest
import soundfile as sf
import torch

from cosyvoice.bin import evaluate
from eval_helpers import PROMPT_UTTS, SPK, TEST_UTTS, link_model_dir


def args(stand_in_dir, sft_model_dir, eval_data, exp, *extra):
    return ["--pretrained_model_dir", str(stand_in_dir), "--model_dir", str(sft_model_dir),
            "--test_data_dir", str(eval_data / "test"), "--prompt_data_dir", str(eval_data / "train"),
            "--exp_dir", str(exp), "--max_token_text_ratio", "2", *extra]


def test_stage8_writes_metrics_and_report(stand_in_dir, sft_model_dir, eval_data, tmp_path):
    exp = tmp_path / "exp"
    missing_asr = tmp_path / "no-such-asr"
    assert evaluate.main(args(stand_in_dir, sft_model_dir, eval_data, exp, "--asr_model_dir", str(missing_asr))) == 0
    m = json.loads((exp / "metrics.json").read_text(encoding="utf-8"))
    assert m["speaker"] == SPK and m["prompt"]["utt"] in PROMPT_UTTS
    assert m["asr"] == {"status": "skipped", "reason": f"ASR model dir {missing_asr} does not exist"}
    assert [r["utt"] for r in m["utterances"]] == sorted(TEST_UTTS)
    for system in ("base", "sft"):
        s = m["summary"][system]
        assert s["utterances"] == 2
        assert -1.0 <= s["sim_centroid"] <= 1.0 and -1.0 <= s["sim_real"] <= 1.0
        assert s["duration_ratio"] > 0 and s["rtf"] > 0 and s["seconds"] > 0
        assert s["cer"] is None and s["wer"] is None and s["error_rate"] is None
    real = m["summary"]["real"]
    assert real["duration_ratio"] == 1.0 and real["rtf"] is None and real["sim_real"] is None
    assert -1.0 <= real["sim_centroid"] <= 1.0
    for row in m["utterances"]:
        for system in ("real", "base", "sft"):
            info = sf.info(str(exp / row[system]["wav"]))
            assert info.samplerate == 24000 and info.subtype == "PCM_16"
            assert info.duration == pytest.approx(row[system]["seconds"], abs=1e-3)
            assert "transcript" not in row[system]
    page = (exp / "report.html").read_text(encoding="utf-8")
    assert page.count("<audio") == 6
    assert f"CER/WER skipped: ASR model dir {missing_asr} does not exist" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 1   # the summary bars; no training dirs
    assert (exp / "report_plots" / "summary.png").is_file()


def test_a_trained_speaker_without_test_texts_is_named(stand_in_dir, sft_model_dir, eval_data, tmp_path, caplog):
    """A cast member with one clip trained on it and has no test text: stage 8 says it is not evaluated."""
    table = torch.load(sft_model_dir / "spk2info.pt")
    model = link_model_dir(stand_in_dir, tmp_path / "model", {**table, "lisa": table[SPK]})
    with caplog.at_level(logging.INFO, logger="cosyvoice.bin.evaluate"):
        assert evaluate.main(args(stand_in_dir, model, eval_data, tmp_path / "exp", "--max_utts", "1")) == 0
    assert f"speaker(s) lisa: no test text in {eval_data / 'test'}, so not evaluated here" in caplog.messages
    m = json.loads((tmp_path / "exp" / "metrics.json").read_text(encoding="utf-8"))
    assert m["speaker"] == SPK and len(m["utterances"]) == 1


def test_unknown_speaker_fails_before_synthesis(stand_in_dir, sft_model_dir, eval_data, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert evaluate.main(args(stand_in_dir, sft_model_dir, eval_data, exp, "--spk_id", "alice")) == 2
    err = capsys.readouterr().err
    assert f"{eval_data / 'test'} has no utterance of speaker 'alice' (speakers: demo)" in err
    assert not exp.exists()


def test_missing_spk2info_names_stage_4(stand_in_dir, eval_data, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert evaluate.main(args(stand_in_dir, stand_in_dir, eval_data, exp)) == 2
    assert f"{stand_in_dir / 'spk2info.pt'} not found: run stage 4 first" in capsys.readouterr().err


def test_bad_prompt_utt(stand_in_dir, sft_model_dir, eval_data, tmp_path, capsys):
    assert evaluate.main(args(stand_in_dir, sft_model_dir, eval_data, tmp_path / "exp", "--prompt_utt", "x")) == 2
    assert f"--prompt_utt x is not an utterance of speaker 'demo' in {eval_data / 'train'}" in capsys.readouterr().err


def test_relative_exp_dir_players_and_embedded_audio(stand_in_dir, sft_model_dir, eval_data, tmp_path, monkeypatch):
    """A relative --exp_dir (as run.sh passes it): every player's src is relative to the report and exists; with
    --embed_audio true the wavs are inline; a failed rerun would keep them (the new clips are swapped in at the end)."""
    monkeypatch.chdir(tmp_path)
    assert evaluate.main(args(stand_in_dir, sft_model_dir, eval_data, "exp/x")) == 0
    report = tmp_path / "exp" / "x" / "report.html"
    srcs = re.findall(r"<audio [^>]*src='([^']+)'", report.read_text(encoding="utf-8"))
    assert len(srcs) == 6 and all(s.startswith("report_audio/") and (report.parent / s).is_file() for s in srcs)
    assert not (tmp_path / "exp" / "x" / "report_audio.new").exists()
    page = report.read_text(encoding="utf-8")
    assert "tiny random <b>stand-in</b>" in page  # both models are the stand-in (or tuned from it)
    assert evaluate.main(args(stand_in_dir, sft_model_dir, eval_data, "exp/x", "--embed_audio", "true")) == 0
    srcs = re.findall(r"<audio [^>]*src='([^']+)'", report.read_text(encoding="utf-8"))
    assert len(srcs) == 6 and all(s.startswith("data:audio/wav;base64,") for s in srcs)
