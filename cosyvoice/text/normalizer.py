"""Offline text normalization and sentence splitting ahead of the text tokenizer.

``TextFrontend.normalize`` turns what a user types into what the LLM should read ('3.5公斤' -> '三点五公斤',
'$3.50' -> 'three dollars and fifty cents') and cuts long paragraphs into pieces that are synthesized one after
the other. Numbers, dates and units are verbalized with wetext (weighted FSTs, bundled, no network); without
wetext a few English rules and the digit speller still run, and Chinese digits are left as they are.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Callable, List, Optional, Union

from cosyvoice.utils.frontend_utils import (contains_chinese, is_only_punctuation, number_to_words, remove_bracket,
                                            replace_blank, replace_corner_mark, spell_out_number, split_paragraph)

logger = logging.getLogger(__name__)

# symbol: (major singular, major plural, minor singular, minor plural)
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
# '$3.50', '$1,000', '£ 20.75'; not '$3.5 million' (wetext reads that one well) nor '$3.505'
_MONEY = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?(?!\d|[.,]\d)"
                    r"(?!\s*(?:hundred|thousand|million|billion|trillion)\b)", re.IGNORECASE)
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_PERCENT = re.compile(r"(\d)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def _say_money(m: re.Match) -> str:
    major_one, major_many, minor_one, minor_many = _CURRENCIES[m.group(1)]
    major = int(m.group(2).replace(",", ""))
    minor = int(m.group(3) or 0)
    words = []
    if major or not minor:
        words.append(f"{number_to_words(str(major))} {major_one if major == 1 else major_many}")
    if minor:
        words.append(f"{number_to_words(str(minor))} {minor_one if minor == 1 else minor_many}")
    return " and ".join(words)


def verbalize_money(text: str) -> str:
    """Read English currency amounts: '$3.50' -> 'three dollars and fifty cents', '$1' -> 'one dollar'.

    wetext 0.1.8 reads '$3.50' as 'three point five dollars' and '$1,000' as 'thousand dollars'.
    """
    return _MONEY.sub(_say_money, text)


def _say_ordinal(m: re.Match) -> str:
    *head, last = number_to_words(m.group(1)).split()
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    else:
        last = last[:-1] + "ieth" if last.endswith("y") else last + "th"
    return " ".join(head + [last])


def english_rules(text: str) -> str:
    """Rule-based English verbalization used when wetext is unavailable.

    Percent ('50%' -> 'fifty percent'), decimals ('3.14' -> 'three point one four'), ordinals ('21st' ->
    'twenty first'), then every other digit run, set apart from the letters around it ('5kg' -> 'five kg').
    """
    text = _PERCENT.sub(r"\1 percent", text)
    text = _DECIMAL.sub(lambda m: f"{m.group(1)} point {' '.join(m.group(2))}", text)
    text = _ORDINAL.sub(_say_ordinal, text)
    text = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", text)
    return spell_out_number(text)


def _dot_to_stop(text: str) -> str:
    """'.' -> '。' except inside numbers and words ('3.5', 'example.com')."""
    return re.sub(r"\.(?![A-Za-z0-9])", "。", text)


class TextFrontend:
    """Normalize and split text for synthesis.

    Args:
        tokenize: str -> list of tokens; measures English pieces for splitting (Chinese is measured in
            characters). The model's text tokenizer ``encode`` in practice.
        use_wetext: verbalize numbers, dates, units with wetext; False (or wetext missing) uses rules only.
        token_max_n, token_min_n, merge_len, comma_split: see :func:`split_paragraph`.
    """

    def __init__(self, tokenize: Callable[[str], list], use_wetext: bool = True, token_max_n: int = 80,
                 token_min_n: int = 60, merge_len: int = 20, comma_split: bool = False):
        self.tokenize = tokenize
        self.use_wetext = use_wetext
        self.split_args = dict(token_max_n=token_max_n, token_min_n=token_min_n, merge_len=merge_len,
                               comma_split=comma_split)
        self._wetext = None  # {'zh': Normalizer, 'en': Normalizer} once loaded, {} when unavailable

    @property
    def backend(self) -> str:
        """'wetext' or 'rules' (loads wetext on first use)."""
        return "wetext" if self._normalizers() else "rules"

    def _normalizers(self) -> dict:
        if self._wetext is None:
            self._wetext = {}
            if self.use_wetext:
                try:
                    from wetext import Normalizer
                    # lang='auto' reads text with Chinese as zh; English text goes to 'en' explicitly, so a bare
                    # '1990' reads 'nineteen ninety' like '3.5' reads 'three point five'
                    self._wetext = {"zh": Normalizer(lang="auto", remove_erhua=False), "en": Normalizer(lang="en")}
                except Exception as e:  # never let normalization stop synthesis
                    logger.warning("wetext unavailable (%s: %s); text normalization falls back to rules, which "
                                   "leave digits in Chinese text as written", type(e).__name__, e)
        return self._wetext

    def _wetext_normalize(self, text: str, lang: str) -> Optional[str]:
        normalizer = self._normalizers().get(lang)
        if normalizer is None:
            return None
        try:
            out = normalizer.normalize(text)
        except Exception as e:
            logger.warning("wetext failed on %r (%s: %s); using rules for this text", text[:50], type(e).__name__, e)
            return None
        if out == text.strip():
            return out  # left untouched (wetext skips Chinese text without digits)
        return re.sub(r'\\(["\\])', r"\1", out)  # its verbalizer escapes '"' and '\' in what it rewrites

    def normalize_zh(self, text: str) -> str:
        """Chinese (or mixed) text: wetext, then drop line breaks, blanks and brackets; '.' reads as '。'."""
        text = self._wetext_normalize(text, "zh") or text
        text = text.replace("\r", "").replace("\n", "")
        text = text.replace(" - ", "，")  # before replace_blank, which would drop the spaces next to Chinese
        text = replace_blank(text)
        text = replace_corner_mark(text)
        text = _dot_to_stop(text)
        text = remove_bracket(text)
        return re.sub(r"[，,、]+$", "。", text)

    def normalize_en(self, text: str) -> str:
        """English text: currency amounts, wetext (or rules), then any digits left are spelled out."""
        text = " ".join(text.split())  # wetext's English grammar rejects tabs
        text = verbalize_money(text)
        normalized = self._wetext_normalize(text, "en")
        text = english_rules(text) if normalized is None else spell_out_number(normalized)
        return text

    def normalize(self, text: Union[str, Iterator], split: bool = True,
                  text_frontend: bool = True) -> Union[List[str], str, List[Iterator], Iterator]:
        """Normalize ``text``; with ``split`` return the list of pieces to synthesize, else one string.

        Left as is (``[text]`` or ``text``): a generator / iterator of text chunks (bi-directional streaming),
        ``text_frontend=False``, empty or blank text, and text holding special tokens ('<|' and '|>', as in
        '<|endofprompt|>'). Pieces made only of punctuation are dropped, so '。。。' gives ``[]``.
        """
        if isinstance(text, Iterator):
            return [text] if split else text
        if not isinstance(text, str):
            raise TypeError(f"TextFrontend.normalize: text must be a str or a generator of str, "
                            f"got {type(text).__name__}")
        if "<|" in text and "|>" in text:
            text_frontend = False
        if not text_frontend or not text.strip():
            return [text] if split else text
        text = text.strip()
        lang = "zh" if contains_chinese(text) else "en"
        text = self.normalize_zh(text) if lang == "zh" else self.normalize_en(text)
        if not split:
            return text
        pieces = split_paragraph(text, self.tokenize, lang, **self.split_args)
        return [p for p in pieces if not is_only_punctuation("".join(p.split()))]

    text_normalize = normalize  # the official frontend's name for it
