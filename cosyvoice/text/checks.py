"""What makes a transcript or a text to speak unusable: one set of rules for training data and for synthesis.

Game voice packs carry markup that nobody says aloud: template variables (``{NICKNAME}``), ruby/gender markup
(``{F#她}{M#他}``, ``{RUBY_B#...}``), colour tags (``<color=#FFD780FF>...</color>``), a literal ``\\n``. A text
made only of punctuation, symbols or emoji has nothing to say. CosyVoice's own control tags (``[breath]``,
``<strong>...</strong>``, ``[laughter]``, ``<|endofprompt|>``, ...) are tokens of the model, not markup, and pass.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional, Tuple

from cosyvoice.tokenizer.tokenizer import COSYVOICE2_SPECIAL_TOKENS

TEMPLATE_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
MARKUP_RE = re.compile(r"\{[^{}]*\}|[{}]|<[A-Za-z/][^<>]*>|\\n|^#")
CONTROL_TAGS = tuple(t for t in COSYVOICE2_SPECIAL_TOKENS["additional_special_tokens"])
_CONTROL_RE = re.compile("|".join(re.escape(t) for t in sorted(CONTROL_TAGS, key=len, reverse=True)))

# reason -> what it means (the names stage -1 and stage 0 report)
TEXT_REASONS = {
    "template_variable": "text holds a template variable such as {NICKNAME}",
    "markup": "text holds markup such as {F#..}{M#..} or <color=..>",
    "no_speakable_text": "text has no letter, digit or CJK character (only punctuation, symbols or emoji)",
}


def speakable(text: str) -> bool:
    """True when the text holds something to say: a letter or a digit of any script (CJK included)."""
    text = _CONTROL_RE.sub(" ", text)
    return any(unicodedata.category(c)[0] in "LN" for c in text)


def text_problem(text: str) -> Optional[Tuple[str, str]]:
    """(reason, the offending part) when ``text`` cannot be trained on or spoken; None when it can."""
    plain = _CONTROL_RE.sub(" ", text)
    m = TEMPLATE_RE.search(plain)
    if m:
        return "template_variable", m.group(0)
    m = MARKUP_RE.search(plain.strip())
    if m:
        return "markup", m.group(0) or "#"
    if not speakable(plain):
        return "no_speakable_text", text.strip()[:40]
    return None
