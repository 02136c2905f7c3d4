"""cosyvoice.utils.pretrained: which model a dir holds (its yaml, or its name), each version's files, the errors,
and the shell assignments run.sh reads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosyvoice.utils.pretrained import (COSYVOICE2, COSYVOICE3, PretrainedDirError, check_pretrained_dir, main,
                                        model_version, version_from_name)

ROOT = Path(__file__).resolve().parents[2]


def _fill(d: Path, version) -> Path:
    for rel in version.required_files:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(b"x")
    return d


def test_each_version_has_its_official_names():
    assert COSYVOICE2.required_files[:6] == ("cosyvoice2.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx",
                                             "speech_tokenizer_v2.onnx")
    assert COSYVOICE3.required_files[:6] == ("cosyvoice3.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx",
                                             "speech_tokenizer_v3.onnx")
    assert COSYVOICE3.required_files[6:] == COSYVOICE2.required_files[6:]  # the same CosyVoice-BlankEN files
    assert (COSYVOICE3.modelscope_id, COSYVOICE3.huggingface_id) == ("FunAudioLLM/Fun-CosyVoice3-0.5B-2512",) * 2
    assert (COSYVOICE2.modelscope_id, COSYVOICE2.huggingface_id) == ("iic/CosyVoice2-0.5B",
                                                                     "FunAudioLLM/CosyVoice2-0.5B")


def test_version_by_yaml_then_by_name(tmp_path):
    v2, v3 = _fill(tmp_path / "a", COSYVOICE2), _fill(tmp_path / "b", COSYVOICE3)
    assert model_version(str(v2)) is COSYVOICE2 and model_version(str(v3)) is COSYVOICE3
    assert check_pretrained_dir(str(v3)) == str(v3)
    named = tmp_path / "Fun-CosyVoice3-0.5B"  # no yaml (yet): the name tells
    assert model_version(str(named)) is COSYVOICE3 and version_from_name("exp/pretrained/CosyVoice3-0.5B-tiny/") \
        is COSYVOICE3 and version_from_name("cosyvoice_3") is COSYVOICE3
    assert model_version(str(tmp_path / "CosyVoice2-0.5B")) is COSYVOICE2 and version_from_name("m") is COSYVOICE2
    (v2 / "cosyvoice3.yaml").write_text("x")
    with pytest.raises(PretrainedDirError, match="holds both cosyvoice2.yaml and cosyvoice3.yaml: it must be one"):
        model_version(str(v2))


def test_missing_files_of_the_right_version(tmp_path):
    d = _fill(tmp_path / "m", COSYVOICE3)
    (d / "speech_tokenizer_v3.onnx").unlink()
    with pytest.raises(PretrainedDirError) as e:
        check_pretrained_dir(str(d))
    msg = str(e.value)
    assert "\n" not in msg and "missing 1 file(s): speech_tokenizer_v3.onnx; download Fun-CosyVoice3-0.5B" in msg
    assert f"--model_dir {d} --version cosyvoice3" in msg and "make_tiny_pretrained.py --out_dir" in msg
    with pytest.raises(PretrainedDirError, match=r"CosyVoice3-0.5B-tiny does not exist: download Fun-CosyVoice3"):
        check_pretrained_dir(str(tmp_path / "CosyVoice3-0.5B-tiny"))


def test_the_other_version_is_refused(tmp_path):
    d = _fill(tmp_path / "m", COSYVOICE3)
    with pytest.raises(PretrainedDirError, match=f"^{d} is a Fun-CosyVoice3-0.5B model dir \\(cosyvoice3.yaml\\), "
                                                 "not CosyVoice2-0.5B: load it with CosyVoice3"):
        check_pretrained_dir(str(d), version=COSYVOICE2)


def test_shell_assignments_for_run_sh(tmp_path, capsys):
    v3 = _fill(tmp_path / "plain", COSYVOICE3)
    assert main(["--shell", str(v3)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["model_version=cosyvoice3", "model_title=Fun-CosyVoice3-0.5B",
                                "config_file=cosyvoice3.yaml", "speech_tokenizer_file=speech_tokenizer_v3.onnx",
                                "stand_in_dir=exp/pretrained/CosyVoice3-0.5B-tiny"]
    assert main(["--shell", "exp/pretrained/CosyVoice2-0.5B-tiny"]) == 0
    assert "model_version=cosyvoice2" in capsys.readouterr().out
    (v3 / "cosyvoice2.yaml").write_text("x")
    assert main(["--shell", str(v3)]) == 2 and "holds both" in capsys.readouterr().err


def test_runs_with_the_standard_library_only(tmp_path):
    """run.sh asks it before the environment exists: a bare python with only the project on the path."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    code = ("import sys, cosyvoice.utils.pretrained as p; p.shell_assignments(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'transformers')))")
    r = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
