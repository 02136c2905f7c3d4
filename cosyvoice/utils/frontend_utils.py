"""Text helpers of the TTS frontend (names match the official ``cosyvoice.utils.frontend_utils``).

``TextFrontend`` in :mod:`cosyvoice.text.normalizer` chains them; each one is also usable on its own.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable, List, Tuple

_CJK = re.compile(r"[\u4e00-\u9fff]")


def contains_chinese(text: str) -> bool:
    """True when ``text`` holds at least one CJK unified ideograph (U+4E00..U+9FFF)."""
    return _CJK.search(text) is not None


def replace_corner_mark(text: str) -> str:
    """Read superscript 2 and 3 (as in m², m³) as 平方 / 立方."""
    return text.replace("²", "平方").replace("³", "立方")


def remove_bracket(text: str) -> str:
    """Drop full-width round and lenticular brackets and backticks; turn an em-dash pair into a space."""
    for mark in ("（", "）", "【", "】", "`"):
        text = text.replace(mark, "")
    return text.replace("——", " ")


def replace_blank(text: str) -> str:
    """Remove whitespace unless it separates two ASCII characters (English words inside Chinese text).

    A run of whitespace between two ASCII non-space characters becomes one space; any other run (next to a
    Chinese character, or at either end) is removed.
    """
    def keep(m: re.Match) -> str:
        start, end = m.span()
        if start == 0 or end == len(text):
            return ""
        before, after = text[start - 1], text[end]
        return " " if before.isascii() and after.isascii() else ""

    return re.sub(r"\s+", keep, text)


def is_only_punctuation(text: str) -> bool:
    """True when every character is punctuation or a symbol (Unicode classes P* and S*); also for ''."""
    return all(unicodedata.category(c)[0] in "PS" for c in text)


# ---------------------------------------------------------------------------------------------------------
# English number words

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion",
           "septillion", "octillion", "nonillion", "decillion")


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if hundreds == 0:
        return _below_hundred(rest)
    head = _ONES[hundreds] + " hundred"
    return head if rest == 0 else head + " and " + _below_hundred(rest)


def number_to_words(digits: str) -> str:
    """Spell a string of decimal digits in English: '123' -> 'one hundred and twenty three'.

    A number with a leading zero ('007') or longer than 36 digits is read digit by digit.
    """
    if not digits or not digits.isdecimal():
        raise ValueError(f"number_to_words expects decimal digits, got {digits!r}")
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > 3 * len(_SCALES):
        return " ".join(_ONES[int(d)] for d in digits)
    value = int(digits)
    if value == 0:
        return "zero"
    groups = []
    while value:
        value, group = divmod(value, 1000)
        groups.append(group)
    words = []
    for scale in range(len(groups) - 1, -1, -1):
        group = groups[scale]
        if group == 0:
            continue
        if scale == 0 and group < 100 and len(groups) > 1:
            words.append("and")  # 'one thousand and five'
        words.append(_below_thousand(group))
        if _SCALES[scale]:
            words.append(_SCALES[scale])
    return " ".join(words)


def spell_out_number(text: str, inflect_parser=None) -> str:
    """Replace every run of decimal digits with its English words ('in 5 days' -> 'in five days').

    ``inflect_parser`` is accepted for call compatibility: any object with ``number_to_words(str)``; without
    one our own :func:`number_to_words` is used.
    """
    speak = inflect_parser.number_to_words if inflect_parser is not None else number_to_words
    return re.sub(r"\d+", lambda m: speak(m.group(0)), text)


# ---------------------------------------------------------------------------------------------------------
# Sentence splitting

# sentence ends; ASCII '.' needs care (3.5, Dr., example.com)
_STOPS = {"zh": set("。！？!?."), "en": set(".!?;")}
# clause marks, used only inside a sentence that is too long on its own
_PAUSES = {"zh": set("；;：:，,、…"), "en": set(":,，…")}
# characters that close a quotation or bracket and stay with the sentence before them
_CLOSERS = set("\"'”’」』）)】]》〉>")
_PAIRS = {"“": "”", "「": "」", "『": "』", "（": "）", "(": ")", "《": "》", "【": "】", "[": "]"}
_OPENERS_OF = {v: k for k, v in _PAIRS.items()}
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "no", "fig", "inc",
                  "ltd", "co", "corp", "dept", "gen", "gov", "sgt", "capt", "col", "lt", "rev", "approx"}
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")


def _is_ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _holds_boundary(text: str, i: int) -> bool:
    """Whether the mark at text[i] may end a piece (ASCII . , : inside '3.5', '1,000', '10:30', 'Dr.' may not)."""
    c = text[i]
    if c in ".,:" and i + 1 < len(text) and _is_ascii_alnum(text[i + 1]):
        return False
    if c == ".":
        m = _WORD_BEFORE.search(text[max(0, i - 24):i])
        if m:
            word = m.group(1)
            if "." in word or word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                return False  # e.g., U.S., Dr., initials such as J. K.
    return True


def _boundaries(text: str, lang: str) -> List[Tuple[int, int]]:
    """(end index, level) of every place text may be cut: level 1 ends a sentence, level 2 a clause.

    A sentence end inside an open quotation or bracket counts as a clause end, so a quoted passage stays whole
    unless it is too long.
    """
    stops, pauses = _STOPS[lang], _PAUSES[lang]
    marks = stops | pauses
    depth, in_straight_quote = [], False  # stack of open brackets / curly quotes; '"' toggles
    cuts = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _PAIRS:
            depth.append(c)
        elif c in _OPENERS_OF:
            if depth and depth[-1] == _OPENERS_OF[c]:
                depth.pop()
        elif c == '"':
            in_straight_quote = not in_straight_quote
        if c not in marks or not _holds_boundary(text, i):
            i += 1
            continue
        is_stop = c in stops
        j = i + 1
        while j < n and (text[j] in marks or text[j] in _CLOSERS):
            d = text[j]
            is_stop = is_stop or d in stops
            if d in _OPENERS_OF and depth and depth[-1] == _OPENERS_OF[d]:
                depth.pop()
            elif d == '"':
                in_straight_quote = not in_straight_quote
            j += 1
        level = 1 if is_stop and not depth and not in_straight_quote else 2
        if j < n:
            cuts.append((j, level))
        i = j
    return cuts


def _cut(text: str, cuts: List[int]) -> List[str]:
    edges = [0] + cuts + [len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def split_paragraph(text: str, tokenize: Callable[[str], list], lang: str = "zh", token_max_n: int = 80,
                    token_min_n: int = 60, merge_len: int = 20, comma_split: bool = False) -> List[str]:
    """Cut a paragraph into pieces for synthesis, each ideally ``token_min_n``..``token_max_n`` long.

    Length is the character count for ``lang='zh'`` and ``len(tokenize(piece))`` for ``lang='en'``.
    Rules, in order:

    1. A terminator is appended when the text does not end with a sentence or clause mark ('。' for zh,
       '.' for en; after any closing quote).
    2. Sentences end at 。！？ ! ? . (zh) or . ! ? ; (en), together with any marks and closing quotes or brackets
       right after them ('“好。”' stays whole). An ASCII '.' does not end a sentence inside a number or word
       ('3.5', 'example.com'), after an abbreviation ('Dr.', 'Mr.', 'e.g.', 'U.S.') or an initial ('J.'); nor
       does any mark inside an open quotation or bracket.
    3. Only a sentence longer than ``token_max_n`` on its own is cut further at clause marks (；：，、… zh,
       : , en, and sentence ends inside quotes); with ``comma_split`` clause marks always cut.
    4. Sentences (or clauses of a long one) are packed in order: the next one joins the current piece unless the
       piece would pass ``token_max_n``. When the current piece is still shorter than ``token_min_n`` the two
       limits disagree and the smaller overshoot wins (ties join): a piece reaches the minimum unless that
       makes it longer than the maximum by more than it lacks.
    5. A last piece shorter than ``merge_len`` joins the piece before it.
    6. A run without any mark is never cut, so it may pass ``token_max_n``. Pieces are stripped of surrounding
       whitespace; whitespace-only pieces are dropped.
    """
    if lang not in _STOPS:
        raise ValueError(f"split_paragraph: lang must be 'zh' or 'en', got {lang!r}")
    text = text.strip()
    if not text:
        return []
    stops, pauses = _STOPS[lang], _PAUSES[lang]
    if comma_split:
        stops = stops | pauses
    tail = text.rstrip("".join(_CLOSERS))
    if not tail or tail[-1] not in stops | pauses:
        text += "。" if lang == "zh" else "."

    def length(s: str) -> int:
        return len(s) if lang == "zh" else len(tokenize(s))

    cuts = _boundaries(text, lang)
    primary = [pos for pos, level in cuts if level == 1 or comma_split]
    atoms = []
    for sentence_start, sentence in zip([0] + primary, _cut(text, primary)):
        if length(sentence) <= token_max_n:
            atoms.append(sentence)
            continue
        inner = [pos - sentence_start for pos, _ in cuts if sentence_start < pos < sentence_start + len(sentence)]
        atoms.extend(_cut(sentence, inner))

    pieces, current = [], ""
    for atom in atoms:
        if current:
            joined = length(current + atom)
            if joined > token_max_n:
                lacking = token_min_n - length(current)
                if lacking <= 0 or joined - token_max_n > lacking:
                    pieces.append(current)
                    current = ""
        current += atom
    if current:
        if pieces and length(current) < merge_len:
            pieces[-1] += current
        else:
            pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]
