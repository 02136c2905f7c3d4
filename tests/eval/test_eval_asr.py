"""ASR backends: every way of not having one gives 'skipped' with its reason; the Whisper path runs offline."""
from __future__ import annotations

import json
import sys


from cosyvoice.eval.asr import WhisperASR, load_asr
from eval_helpers import tone


def test_no_dir_is_skipped_with_reason():
    assert load_asr(None) == (None, {"status": "skipped", "reason": "no --asr_model_dir given"})
    assert load_asr("") == (None, {"status": "skipped", "reason": "no --asr_model_dir given"})


def test_missing_dir_is_skipped_with_reason(tmp_path):
    missing = tmp_path / "nowhere"
    assert load_asr(str(missing)) == (None, {"status": "skipped",
                                             "reason": f"ASR model dir {missing} does not exist"})


def test_unknown_layouts_are_skipped(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    asr, status = load_asr(str(empty))
    assert asr is None and status["status"] == "skipped"
    assert status["reason"] == (f"{empty} is neither a Whisper dir (config.json with model_type 'whisper') nor a "
                                "FunASR Paraformer dir (model.pt + config.yaml)")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "has model_type 'bert'" in load_asr(str(bert))[1]["reason"]
    assert load_asr(str(bert), backend="kaldi")[1]["reason"].startswith("unknown ASR backend 'kaldi'")


def test_paraformer_without_funasr_is_skipped(tmp_path, monkeypatch):
    d = tmp_path / "paraformer-zh"
    d.mkdir()
    (d / "model.pt").write_bytes(b"")
    (d / "config.yaml").write_text("model: Paraformer\n")
    monkeypatch.setitem(sys.modules, "funasr", None)  # import funasr -> ImportError, installed or not
    asr, status = load_asr(str(d))
    assert asr is None and status["status"] == "skipped"
    assert status["reason"].startswith(f"{d} is a FunASR model dir but the funasr package is not installed "
                                       "(pip install funasr)")


def test_broken_whisper_dir_is_skipped_with_the_exception(tmp_path):
    d = tmp_path / "whisper-broken"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    asr, status = load_asr(str(d))
    assert asr is None and status["status"] == "skipped"
    assert status["reason"].startswith(f"cannot load ASR model {d}: ")
    assert len(status["reason"]) > len(f"cannot load ASR model {d}: ") + 5


def test_whisper_backend_loads_offline_and_sets_the_language(tiny_whisper_dir, monkeypatch):
    asr, status = load_asr(str(tiny_whisper_dir))
    assert status == {"status": "ok", "backend": "whisper", "model_dir": str(tiny_whisper_dir)}
    assert isinstance(asr, WhisperASR) and asr.languages == {"en", "zh"}
    calls = []
    generate = asr.model.generate
    monkeypatch.setattr(asr.model, "generate", lambda feats, **kw: calls.append((feats.shape, kw)) or
                        generate(feats, **kw))
    text = asr.transcribe(tone(1.0), "zh")
    assert isinstance(text, str)
    assert calls[0][0] == (1, 80, 3000)  # one 30 s window of 80 mel bins
    assert calls[0][1] == {"task": "transcribe", "language": "zh"}
    asr.transcribe(tone(1.0), "fr")      # a language the model lacks: no language token forced
    assert calls[1][1] == {}
    asr.transcribe(tone(31.0), "en")     # long-form: the whole clip with its attention mask
    assert calls[2][0][2] > 3000 and "attention_mask" in calls[2][1]
