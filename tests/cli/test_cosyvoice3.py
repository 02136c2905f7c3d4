"""CosyVoice3 on the v3 stand-in model dir: every mode offline and streaming (the official chunk schedule, the
causal HiFT's chunk lengths), the system prompt and <|endofprompt|> completion, a saved zero-shot speaker, voice
conversion, AutoModel, and the errors for a model dir of the other version."""
from __future__ import annotations

import re

import pytest
import torch

from cli_helpers import PROMPT_TEXT, check_voice_conversion, link_model_dir, run_mode_checked, run_with_timeout
from cosyvoice.cli.cosyvoice import AutoModel, CosyVoice2, CosyVoice3
from cosyvoice.utils.pretrained import PretrainedDirError

SAMPLES_PER_TOKEN = 2 * 480
HELD_BACK_FRAMES = 8  # a streamed chunk's HiFT output stops 8 mel frames before its end (finalize=False)
SYSTEM = "You are a helpful assistant.<|endofprompt|>"
TEXT = "今天天气很好，我们一起去公园散步吧。"  # long enough for a streamed chunk before the last one

MODES = {
    "sft": lambda cv, wav, **kw: cv.inference_sft(TEXT, "demo", **kw),
    "zero-shot": lambda cv, wav, **kw: cv.inference_zero_shot(TEXT, PROMPT_TEXT, wav, **kw),
    "cross-lingual": lambda cv, wav, **kw: cv.inference_cross_lingual(TEXT, wav, **kw),
    "instruct": lambda cv, wav, **kw: cv.inference_instruct2(TEXT, "用开心的语气说", wav, **kw),
}


class LLMSpy:
    """Records the inputs of each CosyVoice3LM.inference call."""

    def __init__(self, llm):
        self.llm, self.real, self.calls = llm, llm.inference, []

    def __call__(self, **kwargs):
        self.calls.append({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})
        return self.real(**kwargs)


@pytest.fixture()
def llm_spy(cosyvoice3, monkeypatch):
    spy = LLMSpy(cosyvoice3.model.llm)
    monkeypatch.setattr(cosyvoice3.model.llm, "inference", spy)
    return spy


def expected_chunk_samples(schedule):
    """The causal HiFT is re-run on the whole mel so far: a streamed chunk ends 8 frames before the mel of the
    tokens it covers (look-ahead excluded), the last chunk gives everything left."""
    out, done = [], 0
    for given, offset, final in schedule:
        total = given * SAMPLES_PER_TOKEN if final else (2 * (given - 3) - HELD_BACK_FRAMES) * 480
        out.append(total - done)
        done = total
    return out


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode(cosyvoice3, prompt_wav, monkeypatch, llm_spy, mode, stream):
    n_tokens, schedule, speech = run_mode_checked(cosyvoice3, MODES[mode], prompt_wav, mode, stream, monkeypatch)
    (call,) = llm_spy.calls
    n_text = call["text"].shape[1]
    assert 2 * n_text <= n_tokens <= 20 * n_text  # the stand-in stops after the minimum length
    if stream:
        assert len(schedule) >= 2, "this text should give a streamed chunk before the last one"
    assert [s.shape[1] for s in speech] == expected_chunk_samples(schedule)
    assert sum(s.shape[1] for s in speech) == n_tokens * SAMPLES_PER_TOKEN
    assert cosyvoice3.sample_rate == 24000
    assert not cosyvoice3.model.hift_cache_dict and not cosyvoice3.model.tts_speech_token_dict


def test_streaming_gives_the_offline_length(cosyvoice3, prompt_wav):
    """Same seed, same speech tokens: the streamed chunks put together are as long as the offline wav (their
    numbers differ: streamed chunks run the flow with chunk masks, as official)."""
    offline = run_with_timeout(lambda: [o["tts_speech"] for o in cosyvoice3.inference_zero_shot(
        TEXT, PROMPT_TEXT, prompt_wav, seed=7)])
    streamed = run_with_timeout(lambda: [o["tts_speech"] for o in cosyvoice3.inference_zero_shot(
        TEXT, PROMPT_TEXT, prompt_wav, stream=True, seed=7)])
    assert len(offline) == 1 and len(streamed) >= 2
    assert torch.cat(streamed, dim=1).shape == offline[0].shape


def _tokens(cv, text):
    return cv.frontend.tokenizer.encode(text)


@pytest.mark.parametrize("mode", list(MODES))
def test_system_prompt_is_added_where_the_llm_needs_it(cosyvoice3, prompt_wav, llm_spy, mode):
    """Without <|endofprompt|>, the system prompt goes in front of the prompt text (zero-shot) or becomes it (sft,
    cross-lingual); the instruction becomes 'You are a helpful assistant. <instruction><|endofprompt|>'. The text
    itself is the text's own tokens, so min/max length follow the text alone."""
    run_with_timeout(lambda: list(MODES[mode](cosyvoice3, prompt_wav, seed=1)))
    (call,) = llm_spy.calls
    expected_prompt = {"sft": SYSTEM, "cross-lingual": SYSTEM, "zero-shot": SYSTEM + PROMPT_TEXT,
                       "instruct": "You are a helpful assistant. 用开心的语气说<|endofprompt|>"}[mode]
    assert call["prompt_text"][0].tolist() == _tokens(cosyvoice3, expected_prompt)
    assert call["prompt_text_len"].tolist() == [call["prompt_text"].shape[1]]
    assert call["text"][0].tolist() == _tokens(cosyvoice3, TEXT)
    assert call["prompt_speech_token"].shape[1] == (25 if mode == "zero-shot" else 0)


@pytest.mark.parametrize("mode, call_fn, where", [
    ("zero-shot", lambda cv, w: cv.inference_zero_shot("八百标兵奔北坡。", SYSTEM + "希望你以后能够做的比我还好呦。", w),
     "prompt_text"),
    ("cross-lingual", lambda cv, w: cv.inference_cross_lingual(SYSTEM + "[breath]Hello world.", w), "text"),
    ("instruct", lambda cv, w: cv.inference_instruct2("八百标兵奔北坡。", "You are a helpful assistant. 请用广东话表达。"
                                                      "<|endofprompt|>", w), "prompt_text"),
])
def test_official_style_input_goes_through_unchanged(cosyvoice3, prompt_wav, llm_spy, mode, call_fn, where):
    """Input typed as in the official example.py (the system prompt already there) reaches the LLM as the
    official front end makes it: nothing is added and the text is not normalized."""
    run_with_timeout(lambda: list(call_fn(cosyvoice3, prompt_wav)))
    (call,) = llm_spy.calls
    tokens = call[where][0].tolist()
    assert tokens.count(151646) == 1
    if where == "text":
        assert "prompt_text" not in call or call["prompt_text"].shape[1] == 0
        assert tokens == _tokens(cosyvoice3, SYSTEM + "[breath]Hello world.")
        assert tokens[tokens.index(151646) + 1] == 151647  # [breath]: its real id
    elif mode == "instruct":
        assert tokens == _tokens(cosyvoice3, "You are a helpful assistant. 请用广东话表达。<|endofprompt|>")


def test_zero_shot_speaker_and_voice_conversion(stand_in3_dir, prompt_wav, tmp_path, monkeypatch):
    model_dir = link_model_dir(stand_in3_dir, tmp_path / "model")
    cv = CosyVoice3(str(model_dir))
    assert cv.add_zero_shot_spk("今天天气很好。", prompt_wav, "my_spk") is True
    cv.save_spkinfo()
    reloaded = CosyVoice3(str(model_dir))
    assert reloaded.list_available_spks() == ["my_spk"]
    by_id = run_with_timeout(lambda: torch.cat([o["tts_speech"] for o in reloaded.inference_zero_shot(
        "你好", "", "", zero_shot_spk_id="my_spk", seed=3)], dim=1))
    by_wav = run_with_timeout(lambda: torch.cat([o["tts_speech"] for o in cv.inference_zero_shot(
        "你好", "今天天气很好。", prompt_wav, seed=3)], dim=1))
    assert by_id.shape[1] > 0 and torch.equal(by_id, by_wav)

    check_voice_conversion(cv, prompt_wav, monkeypatch)


def test_automodel_and_the_other_version(stand_in_dir, stand_in3_dir, tmp_path):
    assert type(AutoModel(model_dir=str(stand_in3_dir))) is CosyVoice3
    assert type(AutoModel(model_dir=str(stand_in_dir))) is CosyVoice2
    v3_msg = f"{stand_in3_dir} is a Fun-CosyVoice3-0.5B model dir (cosyvoice3.yaml), not CosyVoice2-0.5B: load it "
    with pytest.raises(PretrainedDirError, match="^" + re.escape(v3_msg + "with CosyVoice3 (or ")):
        CosyVoice2(str(stand_in3_dir))
    v2_msg = f"{stand_in_dir} is a CosyVoice2-0.5B model dir (cosyvoice2.yaml), not Fun-CosyVoice3-0.5B: load it "
    with pytest.raises(PretrainedDirError, match="^" + re.escape(v2_msg + "with CosyVoice2 (or ")):
        CosyVoice3(str(stand_in_dir))
    broken = link_model_dir(stand_in3_dir, tmp_path / "broken", skip={"speech_tokenizer_v3.onnx"})
    with pytest.raises(PretrainedDirError, match=r"is missing 1 file\(s\): speech_tokenizer_v3.onnx; download "
                                                 r"Fun-CosyVoice3-0.5B with .*--version cosyvoice3"):
        AutoModel(model_dir=str(broken))
    with pytest.raises(ValueError, match="^CosyVoice3: load_trt not supported by this toolkit"):
        CosyVoice3(str(stand_in3_dir), load_trt=True)
    with pytest.raises(TypeError):
        CosyVoice3(str(stand_in3_dir), load_jit=False)  # the official CosyVoice3 has no load_jit either
