"""TextFrontend: wetext normalization of zh/en numbers, dates, units, the paths that skip it, the rule fallback,
and how long paragraphs are split."""
import logging
import sys

import pytest

from cosyvoice.text import TextFrontend
from cosyvoice.text.normalizer import english_rules, verbalize_money


def words(s):
    return s.split()


@pytest.fixture(scope="module")
def frontend():
    fe = TextFrontend(words)
    assert fe.backend == "wetext"
    return fe


@pytest.mark.parametrize("text, expected", [
    ("2024年3月5日", "二零二四年三月五日"),
    ("3.5公斤", "三点五公斤"),
    ("打了50%的折扣", "打了百分之五十的折扣"),
    ("今天是2024年3月5日，气温25°C，我买了3.5公斤苹果，打了50%的折扣。",
     "今天是二零二四年三月五日，气温二十五摄氏度，我买了三点五公斤苹果，打了百分之五十的折扣。"),
    ("明天10:30见", "明天十点三十分见"),
    ("面积是100m²（约数）", "面积是一百平方米约数"),  # unit read by wetext, full-width brackets dropped
    ("你好 - 再见,", "你好，再见。"),  # ' - ' is a pause, a trailing comma ends the sentence
    ("第一行\n第二行", "第一行第二行"),
    ("我用 iPhone 拍照", "我用iPhone拍照"),
    ('他说"你好"3次', '他说"你好"三次'),  # wetext escapes the quotes it rewrites; we undo that
])
def test_zh_normalization(frontend, text, expected):
    assert frontend.normalize(text, split=False) == expected


@pytest.mark.parametrize("text, expected", [
    ("$3.50", "three dollars and fifty cents"),
    ("$1", "one dollar"),
    ("$1,000", "one thousand dollars"),
    ("$3.5 million", "three point five million dollars"),
    ("1990", "nineteen ninety"),
    ("In 1990, he left.", "In nineteen ninety, he left."),
    ("5 kg", "five kilograms"),
    ("50%", "fifty percent"),
    ("I have 123 cats.", "I have one hundred and twenty three cats."),
    ("Mr. and Mrs. Smith", "Mister and Misses Smith"),
    ('He said "hi" to 5 people.', 'He said "hi" to five people.'),
    ("tab\tseparated 7", "tab separated seven"),  # wetext's English grammar rejects tabs
])
def test_en_normalization(frontend, text, expected):
    assert frontend.normalize(text, split=False) == expected


def test_split_adds_terminator(frontend):
    assert frontend.normalize("2024年3月5日") == ["二零二四年三月五日。"]
    assert frontend.normalize("$3.50") == ["three dollars and fifty cents."]
    assert frontend.text_normalize("$3.50", split=False) == "three dollars and fifty cents"  # official name


def test_verbalize_money():
    assert verbalize_money("£20.75 or €1.01, $0.99 and $3.00") == (
        "twenty pounds and seventy five pence or one euro and one cent, ninety nine cents and three dollars")
    # left to wetext: amounts with a scale word, and anything that is not dollars-and-cents
    assert verbalize_money("$3.50 million, $3.505, $1,0000") == "$3.50 million, $3.505, $1,0000"
    assert verbalize_money("$2,500.75!") == "two thousand five hundred dollars and seventy five cents!"


def test_long_zh_paragraph(frontend):
    text = ("春天来了，公园里的花都开了。小明和妈妈一起去散步，他们看到了红色的桃花、白色的梨花，还有金黄色的迎春花。"
            "妈妈说：“这些花真漂亮！我们拍张照片吧。”小明高兴地点点头。"
            "走着走着，他们来到了湖边，湖水清澈见底，几只小鸭子在水面上游来游去，岸边的柳树垂下长长的枝条，随风轻轻摆动，"
            "好像在跟他们打招呼一样，小明觉得这真是一个美好的下午。天快黑了。我们回家吧？")
    pieces = frontend.normalize(text)
    # sentences of 14, 38, 21 (quotation kept whole), 9, 82, 5, 6 characters; max 80, min 60, merge 20:
    # 14+38+21 = 73 and adding 9 passes 80 -> cut; the 82-char sentence is too long and is cut at the comma
    # that keeps the second piece within 80; the 26-char rest closes the text
    assert pieces == [
        "春天来了，公园里的花都开了。小明和妈妈一起去散步，他们看到了红色的桃花、白色的梨花，还有金黄色的迎春花。"
        "妈妈说：“这些花真漂亮！我们拍张照片吧。”",
        "小明高兴地点点头。走着走着，他们来到了湖边，湖水清澈见底，几只小鸭子在水面上游来游去，岸边的柳树垂下长长的枝条，"
        "随风轻轻摆动，好像在跟他们打招呼一样，",
        "小明觉得这真是一个美好的下午。天快黑了。我们回家吧？",
    ]
    assert [len(p) for p in pieces] == [73, 75, 26]


EN_PARAGRAPH = (
    "On March 5, 2024, Prof. Lee opened the old shop on St. James Street. "
    "She paid $3.50 for a coffee and 3.5 kg of beans, which was 20% less than last year. "
    "\"Business is slow. People buy online now,\" she said, looking at the empty shelves. "
    "Her first customer, a tall man in a grey coat, asked for directions to the station, "
    "then for the price of the blue teapot in the window, then whether she sold postcards, stamps, envelopes, "
    "maps of the city, or anything else a visitor might want to send home to his family; she said no to all of it. "
    "He laughed, bought the teapot anyway, and promised to come back. "
    "He never did. Still, she kept the window exactly as it was. Why change it?")
EN_SENTENCES = [
    "On the fifth of march, twenty twenty four Prof. Lee opened the old shop on St. James Street.",
    "She paid three dollars and fifty cents for a coffee and three point five kilograms of beans, which was twenty "
    "percent less than last year.",
    "\"Business is slow. People buy online now,\" she said, looking at the empty shelves.",
    "Her first customer, a tall man in a grey coat, asked for directions to the station,",
    "then for the price of the blue teapot in the window, then whether she sold postcards, stamps, envelopes, "
    "maps of the city,",
    "or anything else a visitor might want to send home to his family; she said no to all of it.",
    "He laughed, bought the teapot anyway, and promised to come back. He never did. Still, she kept the window "
    "exactly as it was. Why change it?",
]


def test_long_en_paragraph_default_limits(frontend):
    pieces = frontend.normalize(EN_PARAGRAPH)
    # 18 + 25 + 14 = 57 words lack 3 of min 60, the next 51-word sentence would overshoot 80 by 28: cut short.
    # 51 + 7 + 11 + 3 = 72, adding 9 passes 80: cut; the 12-word tail is under merge_len 20 and joins.
    first = " ".join(EN_SENTENCES[:3])
    second = " ".join(EN_SENTENCES[3:])
    assert pieces == [first, second]
    assert [len(p.split()) for p in pieces] == [57, 84]


def test_long_en_paragraph_small_limits():
    pieces = TextFrontend(words, token_max_n=30, token_min_n=20, merge_len=8).normalize(EN_PARAGRAPH)
    # 'Prof.', 'St.', '3.5', the quotation stay whole; the 51-word sentence is cut at commas
    assert pieces == [EN_SENTENCES[0], EN_SENTENCES[1], EN_SENTENCES[2] + " " + EN_SENTENCES[3]] + EN_SENTENCES[4:]
    assert [len(p.split()) for p in pieces] == [18, 25, 30, 22, 20, 26]


def test_skips(frontend):
    text = "  今天是2024年3月5日。  "
    assert frontend.normalize(text, text_frontend=False) == [text]
    assert frontend.normalize(text, split=False, text_frontend=False) == text
    tagged = "You are a helpful assistant.<|endofprompt|>今天是2024年3月5日。"
    assert frontend.normalize(tagged) == [tagged]
    assert frontend.normalize(tagged, split=False) == tagged
    assert frontend.normalize("") == [""]
    assert frontend.normalize("", split=False) == ""
    assert frontend.normalize("   ") == ["   "]


def test_generator_passes_through(frontend):
    def chunks():
        yield "今天是"
        yield "2024年。"

    gen = chunks()
    out = frontend.normalize(gen)
    assert out == [gen] and out[0] is gen
    assert frontend.normalize(gen, split=False) is gen
    assert list(gen) == ["今天是", "2024年。"]  # untouched, nothing consumed


def test_rejects_non_text(frontend):
    with pytest.raises(TypeError, match="text must be a str or a generator of str, got int"):
        frontend.normalize(42)


def test_only_punctuation_pieces_dropped():
    fe = TextFrontend(words, token_max_n=2, token_min_n=1, merge_len=0)
    # 'Hello there.' | '?! ...' | 'Bye now.': the middle piece has nothing to say
    assert fe.normalize("Hello there. ?! ... Bye now.") == ["Hello there.", "Bye now."]
    assert fe.normalize("。。。") == []
    assert fe.normalize("！？", split=False) == "！？"


def test_english_rules():
    assert english_rules("On the 21st, 50% of 3.14 kg was 5kg.") == (
        "On the twenty first, fifty percent of three point one four kg was five kg.")


def test_fallback_when_wetext_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wetext", None)  # makes `import wetext` raise ImportError
    fe = TextFrontend(words)
    with caplog.at_level(logging.WARNING, logger="cosyvoice.text.normalizer"):
        assert fe.normalize("He paid $3.50 for 5kg on the 2nd, 50% off.", split=False) == (
            "He paid three dollars and fifty cents for five kg on the second, fifty percent off.")
        # Chinese digits stay (no rule reader for Chinese); '3.5' is not turned into '3。5'
        assert fe.normalize("我买了3.5公斤苹果") == ["我买了3.5公斤苹果。"]
    assert fe.backend == "rules"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("wetext unavailable (ModuleNotFoundError")


def test_fallback_when_wetext_fails_to_load(monkeypatch, caplog):
    import wetext

    def broken(**kwargs):
        raise RuntimeError("FST file is corrupt")

    monkeypatch.setattr(wetext, "Normalizer", broken)
    fe = TextFrontend(words)
    with caplog.at_level(logging.WARNING, logger="cosyvoice.text.normalizer"):
        assert fe.normalize("Room 12. Bye.") == ["Room twelve. Bye."]
        assert fe.normalize("Room 12.", split=False) == "Room twelve."
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("wetext unavailable (RuntimeError: FST file is corrupt)")


def test_use_wetext_false_is_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="cosyvoice.text.normalizer"):
        fe = TextFrontend(words, use_wetext=False)
        assert fe.normalize("1990", split=False) == "one thousand nine hundred and ninety"
    assert fe.backend == "rules" and caplog.records == []


def test_wetext_failure_on_one_text_falls_back(frontend, caplog):
    # wetext's English grammar raises on kana; that text alone goes through the rules
    with caplog.at_level(logging.WARNING, logger="cosyvoice.text.normalizer"):
        assert frontend.normalize("こんにちは123", split=False) == "こんにちは one hundred and twenty three"
    assert any("wetext failed on 'こんにちは123'" in r.getMessage() for r in caplog.records)
    assert frontend.normalize("I have 2 cats.", split=False) == "I have two cats."
