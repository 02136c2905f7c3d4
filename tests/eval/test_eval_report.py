"""report.html + metrics.json on crafted metrics: one player per clip, embedded plots, skip reasons, curves."""
from __future__ import annotations

import base64
import html
import json
import re

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from cosyvoice.eval.report import write_report
from cosyvoice.eval.select import write_epoch_eval
from cosyvoice.utils import checkpoint as ckpt
from eval_helpers import tone, write_wav

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXTS = {"u1": "这本书非常有意思。", "u2": "Thank you <very> much.", "u3": "我的 laptop 坏了。"}


def crafted_metrics(exp, asr_ok: bool):
    rows = []
    for i, (utt, text) in enumerate(TEXTS.items()):
        row = {"utt": utt, "text": text, "lang": "en" if utt == "u2" else "zh"}
        for j, system in enumerate(("real", "base", "sft")):
            wav = write_wav(exp / "report_audio" / system / f"{utt}.wav", tone(0.5 + 0.1 * j, 200 + 50 * i),
                            sr=24000)
            entry = {"wav": str(wav), "seconds": 0.5 + 0.1 * j, "rtf": None if system == "real" else 0.5,
                     "sim_centroid": 0.9 - 0.1 * j, "sim_real": None if system == "real" else 0.8,
                     "duration_ratio": 1.0 + 0.2 * j}
            if asr_ok:
                entry["transcript"] = text
                entry["errors"] = {"unit": "word" if utt == "u2" else "char", "ref_units": 5, "substitutions": j,
                                   "deletions": 0, "insertions": 0, "errors": j, "rate": j / 5}
            row[system] = entry
        rows.append(row)
    summary = {s: {"utterances": 3, "sim_centroid": 0.9 - 0.1 * j, "sim_real": None if s == "real" else 0.8,
                   "cer": j / 5 if asr_ok else None, "wer": j / 5 if asr_ok else None,
                   "error_rate": j / 5 if asr_ok else None, "duration_ratio": 1.0 + 0.2 * j,
                   "rtf": None if s == "real" else 0.5, "seconds": 3 * (0.5 + 0.1 * j)}
               for j, s in enumerate(("real", "base", "sft"))}
    asr = ({"status": "ok", "backend": "whisper", "model_dir": "/asr"} if asr_ok
           else {"status": "skipped", "reason": "no --asr_model_dir given"})
    return {"speaker": "demo", "pretrained_model_dir": "/pre", "model_dir": "/ft", "test_data_dir": "/data/test",
            "prompt": {"utt": "p1", "text": "prompt text", "wav": "/p1.wav"}, "asr": asr, "summary": summary,
            "utterances": rows}


def training_dir(exp):
    """exp/llm with TensorBoard scalars, three epoch checkpoints and their evaluations."""
    d = exp / "llm"
    d.mkdir(parents=True)
    writer = SummaryWriter(str(d / "tensorboard"))
    for step in range(1, 31):
        writer.add_scalar("train/loss", 5.0 / step, step)
        writer.add_scalar("train/acc", 1 - 1.0 / step, step)
    writer.close()
    for epoch in range(3):
        step = 10 * (epoch + 1)
        info = ckpt.CheckpointInfo(name=f"epoch_{epoch}_whole", epoch=epoch, step=step, resume_epoch=epoch + 1,
                                   resume_batch=0, world_size=1, train_engine="torch_ddp",
                                   cv={"loss": 2.0 - 0.1 * epoch, "acc": 0.3 + 0.1 * epoch})
        ckpt.save_checkpoint(d, info, {"w": torch.zeros(1)}, None)
        write_epoch_eval(d, epoch, {"sim": 0.5 + 0.1 * epoch, "error_rate": 0.3 - 0.05 * epoch})
    return d


def audio_srcs(page):
    return re.findall(r"<audio controls preload='none' src='([^']*)'></audio>", page)


def test_report_has_a_player_per_clip_plots_and_metrics(tmp_path):
    exp = tmp_path / "exp"
    metrics = crafted_metrics(exp, asr_ok=True)
    report = write_report(exp, metrics, [training_dir(exp), exp / "flow"])
    page = report.read_text(encoding="utf-8")
    srcs = audio_srcs(page)
    assert page.count("<audio") == len(srcs) == 9
    assert sorted(srcs) == sorted(f"report_audio/{s}/{u}.wav" for s in ("real", "base", "sft") for u in TEXTS)
    assert all((exp / s).is_file() for s in srcs)
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 2
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    for name in ("summary.png", "llm_curves.png"):
        data = (exp / "report_plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert f"No training logs in {exp / 'flow'}." in page
    assert html.escape("Thank you <very> much.") in page and "<very>" not in page
    # base is better on SIM to the centroid, CER, WER, error rate, duration ratio; ties (same-text SIM, RTF) are not
    assert page.count('<td class="best">') == 5
    assert "20.0%" in page and "40.0%" in page
    saved = json.loads((exp / "metrics.json").read_text(encoding="utf-8"))
    assert saved["utterances"][0]["base"]["wav"] == "report_audio/base/u1.wav"
    assert [r["sim"] for r in saved["training"]["llm"]["epochs"]] == pytest.approx([0.5, 0.6, 0.7])
    assert [r["cv_loss"] for r in saved["training"]["llm"]["epochs"]] == pytest.approx([2.0, 1.9, 1.8])
    assert "flow" not in saved["training"]


def test_skipped_asr_is_shown_with_its_reason(tmp_path):
    exp = tmp_path / "exp"
    write_report(exp, crafted_metrics(exp, asr_ok=False))
    page = (exp / "report.html").read_text(encoding="utf-8")
    assert "CER/WER skipped: no --asr_model_dir given" in page
    assert page.count("<td>skipped</td>") == 9   # CER, WER, error rate x 3 systems
    assert "ASR:" not in page
    assert "No training logs found." in page
    saved = json.loads((exp / "metrics.json").read_text())
    assert saved["asr"] == {"status": "skipped", "reason": "no --asr_model_dir given"}
    assert saved["summary"]["sft"]["cer"] is None


def test_embedded_audio_carries_the_wav_bytes(tmp_path):
    exp = tmp_path / "exp"
    write_report(exp, crafted_metrics(exp, asr_ok=False), embed_audio=True)
    page = (exp / "report.html").read_text(encoding="utf-8")
    srcs = audio_srcs(page)
    assert len(srcs) == 9 and all(s.startswith("data:audio/wav;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == (exp / "report_audio/real/u1.wav").read_bytes()
