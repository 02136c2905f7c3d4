"""Prompts that cannot carry a voice (too short, silent) and impossible speeds are refused before any synthesis,
by the API and the inference command line, in one line naming the file or the argument (issue 15)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from cli_helpers import PROMPT_TEXT
from cosyvoice.bin import inference as cli
from cosyvoice.cli.frontend import MIN_PROMPT_SECONDS, PromptError


@pytest.fixture(scope="module")
def wavs(tmp_path_factory, prompt_wav):
    d = tmp_path_factory.mktemp("prompts")
    voice, sr = sf.read(prompt_wav, dtype="float32")
    sf.write(d / "short.wav", voice[:int(0.3 * sr)], sr)
    sf.write(d / "just_long_enough.wav", voice[:int(MIN_PROMPT_SECONDS * sr)], sr)
    sf.write(d / "zeros.wav", np.zeros(2 * sr, np.float32), sr)
    sf.write(d / "hiss.wav", 1e-5 * np.random.default_rng(0).standard_normal(2 * sr).astype(np.float32), sr,
             subtype="FLOAT")
    return d


@pytest.mark.parametrize("name, message", [
    ("short.wav", "is 0.30 s long; it needs at least 0.5 s of the voice \\(3-10 s is typical\\)$"),
    ("zeros.wav", "is silent \\(digital silence, below -60 dBFS\\): give a recording of a voice$"),
    ("hiss.wav", "is silent \\(loudness -100 dBFS, below -60 dBFS\\): give a recording of a voice$"),
])
@pytest.mark.parametrize("mode", ["zero-shot", "cross-lingual", "instruct", "vc"])
def test_short_or_silent_prompt_is_refused(cosyvoice, wavs, prompt_wav, name, message, mode):
    bad = wavs / name
    calls = {"zero-shot": lambda: cosyvoice.inference_zero_shot("你好", PROMPT_TEXT, bad),
             "cross-lingual": lambda: cosyvoice.inference_cross_lingual("你好", bad),
             "instruct": lambda: cosyvoice.inference_instruct2("你好", "用开心的语气说", bad),
             "vc": lambda: cosyvoice.inference_vc(prompt_wav, bad)}
    with pytest.raises(PromptError, match=f"^prompt wav {bad} {message}"):
        list(calls[mode]())


def test_short_or_silent_source_of_voice_conversion_is_named_as_source(cosyvoice, wavs, prompt_wav):
    with pytest.raises(PromptError, match=f"^source wav {wavs / 'zeros.wav'} is silent"):
        list(cosyvoice.inference_vc(wavs / "zeros.wav", prompt_wav))


def test_a_prompt_at_the_bound_is_accepted(cosyvoice, wavs):
    (out,) = list(cosyvoice.inference_cross_lingual("你好", wavs / "just_long_enough.wav", seed=1))
    assert out["tts_speech"].shape[1] > 0


@pytest.mark.parametrize("speed", [0, -1, 0.0, float("nan"), float("inf"), "fast", None])
def test_impossible_speed_is_a_value_error_naming_it(cosyvoice, prompt_wav, speed):
    calls = [lambda: cosyvoice.inference_sft("你好", "demo", speed=speed),
             lambda: cosyvoice.inference_zero_shot("你好", PROMPT_TEXT, prompt_wav, speed=speed),
             lambda: cosyvoice.inference_cross_lingual("你好", prompt_wav, speed=speed),
             lambda: cosyvoice.inference_instruct2("你好", "用开心的语气说", prompt_wav, speed=speed),
             lambda: cosyvoice.inference_vc(prompt_wav, prompt_wav, speed=speed)]
    for call in calls:
        want = f"speed must be a number > 0 (1.0: normal, 0.5: half as fast, 2.0: twice as fast), got speed={speed!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
            list(call())


def test_cli_refuses_a_silent_prompt_in_one_line(tmp_path, model_dir, wavs, capsys):
    text_json = tmp_path / "t.json"
    text_json.write_text(json.dumps({"demo": {"zero-shot": ["你好"]}}), encoding="utf-8")
    result_dir = tmp_path / "out"
    rc = cli.main(["--model_dir", str(model_dir), "--text_json", str(text_json), "--result_dir", str(result_dir),
                   "--mode", "zero-shot", "--prompt_wav", str(wavs / "zeros.wav"), "--prompt_text", PROMPT_TEXT])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"inference.py: error: prompt wav {wavs / 'zeros.wav'} is silent")
    assert not result_dir.exists()
