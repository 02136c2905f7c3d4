"""CER/WER text normalisation and edit distance, cosine/centroid, duration ratio, RTF, CAM++ embedder."""
from __future__ import annotations

import numpy as np
import pytest

from cosyvoice.eval import metrics as M
from eval_helpers import tone


def test_cer_units_drop_spaces_punctuation_and_case():
    assert M.cer_units("你好，World! 123。") == ["你", "好", "w", "o", "r", "l", "d", "1", "2", "3"]


def test_wer_units_keep_inner_apostrophes_split_on_punctuation():
    assert M.wer_units("It's 10 o\u2019clock\u2014well-known, 'quoted'.") == \
        ["it's", "10", "o'clock", "well", "known", "quoted"]


def test_chinese_reference_is_scored_by_characters():
    c = M.error_counts("这本书非常有意思。", "这本书很有意思")
    assert (c.unit, c.ref_units, c.substitutions, c.deletions, c.insertions) == ("char", 8, 1, 1, 0)
    assert c.rate == pytest.approx(0.25)


def test_english_reference_is_scored_by_words():
    c = M.error_counts("The quick brown fox.", "the quick brown box jumps")
    assert (c.unit, c.ref_units, c.substitutions, c.deletions, c.insertions) == ("word", 4, 1, 0, 1)
    assert c.rate == pytest.approx(0.5)


def test_mixed_text_with_chinese_uses_characters():
    c = M.error_counts("我们周末去 shopping 吧。", "我们周末去shoping吧")
    assert (c.unit, c.ref_units, c.errors) == ("char", 14, 1)
    assert M.text_language("我的 laptop 坏了。") == "zh" and M.text_language("My laptop.") == "en"


def test_perfect_and_empty_references():
    assert M.error_counts("Thank you, very much!", "thank you very much").rate == 0.0
    assert M.error_counts("。！", "anything").rate is None


def test_alignment_prefers_fewest_substitutions_among_equal_cost():
    assert M.edit_operations(list("ab"), list("ba")) == (0, 1, 1)
    assert M.edit_operations([], list("xy")) == (0, 0, 2)
    assert M.edit_operations(list("xyz"), []) == (0, 3, 0)


def test_pooled_rate_weights_by_reference_length():
    a = M.error_counts("一二三四", "一二三")           # 1 / 4 chars
    b = M.error_counts("one two", "one three four")  # 2 / 2 words
    assert M.pooled_rate([a, b]) == pytest.approx(3 / 6)
    assert M.pooled_rate([a, b], "char") == pytest.approx(0.25)
    assert M.pooled_rate([a, b], "word") == pytest.approx(1.0)
    assert M.pooled_rate([]) is None


def test_cosine_centroid_and_timing_helpers():
    assert M.cosine([1, 0], [0, 2]) == 0.0
    assert M.cosine([1, 2], [2, 4]) == pytest.approx(1.0)
    assert M.cosine([1, 2], [-1, -2]) == pytest.approx(-1.0)
    assert M.cosine([0, 0], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="different sizes 2 and 3"):
        M.cosine([1, 2], [1, 2, 3])
    np.testing.assert_allclose(M.centroid([[1, 2], [3, 6]]), [2, 4])
    assert M.duration_ratio(3.0, 2.0) == 1.5 and M.duration_ratio(1.0, 0.0) is None
    assert M.real_time_factor(0.5, 2.0) == 0.25
    assert M.mean([1.0, None, 3.0, float("nan")]) == 2.0 and M.mean([None]) is None


def test_speaker_embedder_resamples_to_16k(stand_in_dir):
    emb = M.SpeakerEmbedder(str(stand_in_dir / "campplus.onnx"))
    from cosyvoice.audio.io import resample

    x16 = tone(1.5, 180.0, sr=16000, seed=3)
    a = emb.embed(x16, 16000)
    b = emb.embed(resample(x16, 16000, 24000), 24000)
    other = emb.embed(tone(1.5, 1500.0, sr=16000, seed=4), 16000)
    assert a.shape == (192,)
    assert M.cosine(a, b) > 0.99
    assert M.cosine(a, other) < M.cosine(a, b)
    with pytest.raises(ValueError, match="too short for a speaker embedding"):
        emb.embed(np.zeros(100, np.float32), 16000)
