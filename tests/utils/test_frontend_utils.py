"""Frontend text helpers: official names and behaviour, our number speller, sentence splitting rules."""
import pytest

from cosyvoice.utils.frontend_utils import (contains_chinese, is_only_punctuation, number_to_words, remove_bracket,
                                            replace_blank, replace_corner_mark, spell_out_number, split_paragraph)


def words(s):
    return s.split()


def test_contains_chinese():
    assert contains_chinese("hello 世界")
    assert not contains_chinese("hello, world! 123 こんにちは")


def test_replace_corner_mark_and_remove_bracket():
    assert replace_corner_mark("一百m²和五m³") == "一百m平方和五m立方"
    assert remove_bracket("（注）【重要】`code`——完") == "注重要code 完"


@pytest.mark.parametrize("text, expected", [
    ("你 好 世 界", "你好世界"),
    ("我用 iPhone 拍照", "我用iPhone拍照"),
    ("说 hello  world 吧", "说hello world吧"),  # a run between two ASCII chars becomes one space
    ("  a b  ", "a b"),
    ("中\u3000文\tA\tB", "中文A B"),
])
def test_replace_blank(text, expected):
    assert replace_blank(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("", True), ("。！？", True), ("...!?", True), ("“”（）", True), ("$%+", True), ("……", True),
    ("好。", False), ("a!", False), (". .", False),
])
def test_is_only_punctuation(text, expected):
    assert is_only_punctuation(text) is expected


@pytest.mark.parametrize("digits, expected", [
    ("0", "zero"), ("7", "seven"), ("13", "thirteen"), ("40", "forty"), ("42", "forty two"),
    ("100", "one hundred"), ("105", "one hundred and five"), ("999", "nine hundred and ninety nine"),
    ("1000", "one thousand"), ("1005", "one thousand and five"),
    ("1990", "one thousand nine hundred and ninety"), ("2024", "two thousand and twenty four"),
    ("1000001", "one million and one"),
    ("1234567", "one million two hundred and thirty four thousand five hundred and sixty seven"),
    ("007", "zero zero seven"),
])
def test_number_to_words(digits, expected):
    assert number_to_words(digits) == expected


def test_number_to_words_rejects_non_digits():
    with pytest.raises(ValueError, match="expects decimal digits, got '3.5'"):
        number_to_words("3.5")


def test_spell_out_number():
    assert spell_out_number("I have 3 cats and 12 dogs.") == "I have three cats and twelve dogs."
    assert spell_out_number("no digits here") == "no digits here"

    class Parser:  # the official code passes an inflect engine
        def number_to_words(self, s):
            return f"<{s}>"

    assert spell_out_number("room 101, floor 3", Parser()) == "room <101>, floor <3>"


def test_split_appends_terminator_and_strips():
    assert split_paragraph("你好", words, "zh") == ["你好。"]
    assert split_paragraph("  Hello world  ", words, "en") == ["Hello world."]
    assert split_paragraph('He said "hi"', words, "en") == ['He said "hi".']
    assert split_paragraph("他说：“好。”", words, "zh") == ["他说：“好。”"]
    assert split_paragraph("", words, "zh") == []
    assert split_paragraph("   ", words, "en") == []


def test_split_en_keeps_numbers_abbreviations_and_quotes():
    text = ('Dr. Smith paid 3.50 at example.com today. J. K. Rowling wrote it. The U.S. is big. '
            'It starts at 10:30. It costs 1,000 dollars. He said "Stop. Now." and left. (It rained.) '
            'We stayed at home all day.')
    # every two neighbouring sentences together pass token_max_n, so each sentence is a piece of its own
    pieces = split_paragraph(text, words, "en", token_max_n=7, token_min_n=0, merge_len=0)
    assert pieces == ["Dr. Smith paid 3.50 at example.com today.", "J. K. Rowling wrote it.", "The U.S. is big.",
                      "It starts at 10:30.", "It costs 1,000 dollars.", 'He said "Stop. Now." and left.',
                      "(It rained.)", "We stayed at home all day."]
    # a quoted passage is cut inside only when its sentence alone is too long
    assert split_paragraph('He said "Stop. Now." and left.', words, "en", token_max_n=3, token_min_n=0,
                           merge_len=0) == ['He said "Stop.', 'Now." and left.']


def test_split_zh_sentence_ends_and_closing_quotes():
    text = "他说：“你好。我是小明！”然后走了。真的吗？！当然……好吧。"
    # sentences of 13, 5, 5 and 7 characters; the quotation (and its closing quote) stays whole
    pieces = split_paragraph(text, words, "zh", token_max_n=13, token_min_n=0, merge_len=0)
    assert pieces == ["他说：“你好。我是小明！”", "然后走了。真的吗？！", "当然……好吧。"]


def test_split_commas_only_inside_too_long_sentences():
    text = "一二三四五，六七八九十。甲乙丙，丁戊己，庚辛壬，癸子丑。"
    # the 12-char first sentence fits token_max_n=12 and stays whole; the 16-char second one is cut at commas
    pieces = split_paragraph(text, words, "zh", token_max_n=12, token_min_n=4, merge_len=0)
    assert pieces == ["一二三四五，六七八九十。", "甲乙丙，丁戊己，庚辛壬，", "癸子丑。"]
    # comma_split makes every comma a cut point
    pieces = split_paragraph(text, words, "zh", token_max_n=4, token_min_n=4, merge_len=0, comma_split=True)
    assert pieces == ["一二三四五，", "六七八九十。", "甲乙丙，", "丁戊己，", "庚辛壬，", "癸子丑。"]
    # a run with no mark at all cannot be cut
    assert split_paragraph("一二三四五六七八九十", words, "zh", token_max_n=3, token_min_n=1) == ["一二三四五六七八九十。"]


def test_split_packing_min_max_and_merge_len():
    a, b, c = "one two three four five.", " six seven.", " eight nine ten eleven."
    d = " twelve thirteen fourteen fifteen sixteen."
    text = a + b + c + d  # sentences of 5, 2, 4 and 5 words
    # 5 + 2 = 7 <= max: join; + 4 = 11 > max and the piece has min: cut; 4 + 5 = 9 > max: cut; the 5-word
    # tail is shorter than merge_len=6 and joins the piece before it (which then passes max)
    assert split_paragraph(text, words, "en", token_max_n=8, token_min_n=4, merge_len=6) == [
        a + b, (c + d).strip()]
    # same, but a tail of merge_len or more stands alone
    assert split_paragraph(text, words, "en", token_max_n=8, token_min_n=4, merge_len=5) == [
        a + b, c.strip(), d.strip()]
    # piece of 5 lacks 3 to min=8; joining the next 2 overshoots max=6 by 1 -> the smaller overshoot wins: join
    assert split_paragraph(text, words, "en", token_max_n=6, token_min_n=8, merge_len=0)[0] == a + b
    # piece of 5 lacks 1 to min=6; joining overshoots max=5 by 2 -> cut short
    assert split_paragraph(text, words, "en", token_max_n=5, token_min_n=6, merge_len=0)[0] == a
    # a tie (lacks 2, overshoots 2) joins
    assert split_paragraph(text, words, "en", token_max_n=5, token_min_n=7, merge_len=0)[0] == a + b


def test_split_zh_counts_characters_en_counts_tokens():
    calls = []

    def tokenize(s):
        calls.append(s)
        return list(s)  # one token per character

    text = "ab cd. ef gh."
    assert split_paragraph(text, tokenize, "en", token_max_n=8, token_min_n=0, merge_len=0) == ["ab cd.", "ef gh."]
    assert calls, "English lengths go through tokenize"
    calls.clear()
    assert split_paragraph("甲乙。丙丁。", tokenize, "zh", token_max_n=3, token_min_n=0, merge_len=0) == ["甲乙。", "丙丁。"]
    assert calls == [], "Chinese lengths are character counts"


def test_split_bad_lang():
    with pytest.raises(ValueError, match="lang must be 'zh' or 'en', got 'fr'"):
        split_paragraph("Bonjour.", words, "fr")
