"""CosyVoice2 on the stand-in model dir: every mode offline and streaming (exact lengths and the official chunk
schedule), a zero-shot speaker through save_spkinfo and a reload, voice conversion, and every bad input."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import PROMPT_TEXT, check_voice_conversion, link_model_dir, run_mode_checked, run_with_timeout
from cosyvoice.cli.cosyvoice import CosyVoice2
from cosyvoice.cli.frontend import PromptError, SpeakerError
from cosyvoice.utils.pretrained import PretrainedDirError

SAMPLES_PER_TOKEN = 2 * 480
CACHE = 8 * 480  # samples held back by a streamed chunk for the next one's cross-fade

MODES = {
    "sft": lambda cv, wav, **kw: cv.inference_sft("你好", "demo", **kw),
    "zero-shot": lambda cv, wav, **kw: cv.inference_zero_shot("你好", PROMPT_TEXT, wav, **kw),
    "cross-lingual": lambda cv, wav, **kw: cv.inference_cross_lingual("你好", wav, **kw),
    "instruct": lambda cv, wav, **kw: cv.inference_instruct2("你好", "用开心的语气说", wav, **kw),
}


def expected_chunk_samples(schedule, lookahead=3):
    """Samples of each yielded chunk: a streamed chunk gives its hop's audio minus the cross-fade tail it keeps
    (plus the tail it got from the chunk before); the last chunk gives everything left."""
    out = []
    for i, (given, offset, final) in enumerate(schedule):
        head = CACHE if i > 0 else 0
        if final:
            out.append((given - offset) * SAMPLES_PER_TOKEN + head)
        else:
            out.append((given - lookahead - offset) * SAMPLES_PER_TOKEN + head - CACHE)
    return out


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode(cosyvoice, prompt_wav, monkeypatch, mode, stream, make_tiny_pretrained):
    llm = cosyvoice.model.llm
    # The stand-in's end-of-speech bias (tools/make_tiny_pretrained.py) ends utterances soon after the minimum
    # length; lift it for the streamed zero-shot case so that a streamed chunk comes before the last one.
    lift = make_tiny_pretrained.EOS_LOGIT_BIAS if (stream and mode == "zero-shot") else 0.0
    with torch.no_grad():
        llm.llm_decoder.bias[llm.speech_token_size] -= lift
    try:
        n_tokens, schedule, speech = run_mode_checked(cosyvoice, MODES[mode], prompt_wav, mode, stream, monkeypatch)
    finally:
        with torch.no_grad():
            llm.llm_decoder.bias[llm.speech_token_size] += lift
    assert 4 <= n_tokens <= 40  # between 2x and 20x the 2 text tokens of '你好。'
    if stream and mode == "zero-shot":
        assert len(schedule) >= 2, "this seed should give a streamed chunk before the last one"
    assert [s.shape[1] for s in speech] == expected_chunk_samples(schedule)
    assert sum(s.shape[1] for s in speech) == n_tokens * SAMPLES_PER_TOKEN
    assert cosyvoice.sample_rate == 24000


def test_voice_conversion(cosyvoice, prompt_wav, monkeypatch):
    check_voice_conversion(cosyvoice, prompt_wav, monkeypatch)


def test_zero_shot_speaker_survives_save_and_reload(stand_in_dir, prompt_wav, tmp_path):
    model_dir = link_model_dir(stand_in_dir, tmp_path / "model")
    cv = CosyVoice2(str(model_dir))
    assert cv.list_available_spks() == []
    prompt_text = "今天天气很好。"
    assert cv.frontend.text_normalize(prompt_text, split=False) == prompt_text
    assert cv.add_zero_shot_spk(prompt_text, prompt_wav, "my_spk") is True
    cv.save_spkinfo()
    assert (model_dir / "spk2info.pt").is_file() and not (model_dir / "spk2info.pt").is_symlink()

    reloaded = CosyVoice2(str(model_dir))
    assert reloaded.list_available_spks() == ["my_spk"]
    saved, loaded = cv.frontend.spk2info["my_spk"], reloaded.frontend.spk2info["my_spk"]
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    by_id = run_with_timeout(lambda: torch.cat([o["tts_speech"] for o in reloaded.inference_zero_shot(
        "你好", "", "", zero_shot_spk_id="my_spk", seed=3)], dim=1))
    by_wav = run_with_timeout(lambda: torch.cat([o["tts_speech"] for o in cv.inference_zero_shot(
        "你好", prompt_text, prompt_wav, seed=3)], dim=1))
    assert by_id.shape[1] > 0 and torch.equal(by_id, by_wav)


# -------------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.wav").write_text("not audio")
    sf.write(d / "long.wav", np.zeros(31 * 16000, np.float32), 16000)
    return {"missing": d / "missing.wav", "broken": d / "broken.wav", "long": d / "long.wav"}


@pytest.mark.parametrize("call, error, message", [
    (lambda cv, w, p: cv.inference_sft("你好", "nobody"), SpeakerError,
     "^unknown speaker 'nobody' for sft; known speakers: demo$"),
    (lambda cv, w, p: cv.inference_sft("", "demo"), ValueError,
     "^nothing to synthesize: tts_text '' is empty or only punctuation$"),
    (lambda cv, w, p: cv.inference_zero_shot("。。。", PROMPT_TEXT, p), ValueError,
     "^nothing to synthesize: tts_text '。。。' is empty or only punctuation$"),
    (lambda cv, w, p: cv.inference_sft("{NICKNAME}，你好。", "demo"), ValueError,
     "^tts_text '{NICKNAME}，你好。' holds template variable '{NICKNAME}', which would be read out literally"),
    (lambda cv, w, p: cv.inference_sft("😀😀！", "demo"), ValueError,
     "^nothing to synthesize: tts_text '😀😀！' is empty or only punctuation$"),
    (lambda cv, w, p: cv.inference_zero_shot("你好", PROMPT_TEXT, w["missing"]), PromptError,
     "^prompt wav not found: .*missing.wav \\(give the path of an existing audio file\\)$"),
    (lambda cv, w, p: cv.inference_cross_lingual("你好", w["broken"]), PromptError,
     "^prompt wav: cannot read audio file .*broken.wav: "),
    (lambda cv, w, p: cv.inference_instruct2("你好", "用开心的语气说", w["long"]), PromptError,
     "^prompt wav .*long.wav is 31.0 s long; the speech tokenizer takes at most 30 s"),
    (lambda cv, w, p: cv.inference_zero_shot("你好", " ", p), ValueError,
     "^prompt_text is empty: give the transcript of prompt_wav"),
    (lambda cv, w, p: cv.inference_instruct2("你好", "", p), ValueError, "^instruct_text is empty"),
    (lambda cv, w, p: cv.inference_zero_shot("你好", "", "", zero_shot_spk_id="ghost"), SpeakerError,
     "^unknown speaker 'ghost' for zero-shot; known speakers: demo$"),
])
def test_bad_input_messages(cosyvoice, prompt_wav, bad_wavs, call, error, message):
    with pytest.raises(error, match=message) as info:
        list(call(cosyvoice, bad_wavs, prompt_wav))
    assert "\n" not in str(info.value)


def test_model_dir_errors(stand_in_dir, tmp_path):
    broken = link_model_dir(stand_in_dir, tmp_path / "broken", skip={"flow.pt", "campplus.onnx"})
    with pytest.raises(PretrainedDirError, match=f"^pretrained model dir {broken} is missing 2 file\\(s\\): "
                                                 f"flow.pt, campplus.onnx; download CosyVoice2-0.5B"):
        CosyVoice2(str(broken))
    with pytest.raises(PretrainedDirError, match="does not exist"):
        CosyVoice2(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="^CosyVoice2: load_jit, load_vllm not supported by this toolkit"):
        CosyVoice2(str(stand_in_dir), load_jit=True, load_vllm=True)


def test_text_generator_input_uses_bistream_llm(cosyvoice, prompt_wav, monkeypatch):
    seen = []
    real = cosyvoice.model.llm.inference_bistream

    def spy(text, **kwargs):
        for token in real(text=(seen.append(t[0].tolist()) or t for t in text), **kwargs):
            yield token
    monkeypatch.setattr(cosyvoice.model.llm, "inference_bistream", spy)
    pieces = iter(["你好，", "world"])
    outputs = run_with_timeout(lambda: list(cosyvoice.inference_zero_shot(pieces, PROMPT_TEXT, prompt_wav, seed=2)))
    tok = cosyvoice.frontend.tokenizer
    assert seen == [[i] for i in tok.encode("你好，") + tok.encode("world")]  # one text token at a time
    n = outputs[0]["tts_speech"].shape[1]
    assert len(outputs) == 1 and n > 0 and n % SAMPLES_PER_TOKEN == 0
