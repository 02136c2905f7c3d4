"""Text tokenizers of CosyVoice2 and CosyVoice3: the Qwen2 BPE tokenizer of CosyVoice-BlankEN plus special tokens.

The ids must be those the released LLM was trained with: the Qwen2 tokenizer loaded from ``token_path`` and then one
``add_special_tokens`` call with :data:`COSYVOICE2_SPECIAL_TOKENS` or :data:`COSYVOICE3_SPECIAL_TOKENS` (new strings
get consecutive ids after the base vocabulary, in the listed order; strings already present keep their ids). With a
151646-entry Qwen2 base vocabulary CosyVoice3's ``<|endofprompt|>`` is id 151646, the id ``CosyVoice3LM`` checks for.
"""
from __future__ import annotations

import copy
import os
from typing import Iterable, List

COSYVOICE2_SPECIAL_TOKENS = {
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|endofprompt|>",
        "[breath]", "<strong>", "</strong>", "[noise]",
        "[laughter]", "[cough]", "[clucking]", "[accent]",
        "[quick_breath]",
        "<laughter>", "</laughter>",
        "[hissing]", "[sigh]", "[vocalized-noise]",
        "[lipsmack]", "[mn]",
    ],
}

# CosyVoice3 adds <|endofsystem|>, ARPAbet phones (stressed vowels in four forms) and pinyin units, all as [unit].
_ARPABET_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_ARPABET_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
_ARPABET = sorted([v + stress for v in _ARPABET_VOWELS for stress in ("", "0", "1", "2")] + _ARPABET_CONSONANTS)
# initials, plain finals and tone-marked finals of the CosyVoice3 vocabulary, in code point order
_PINYIN_UNITS = """
a ai an ang ao b c ch d e ei en eng f g h i ian in ing iu ià iàn iàng iào iá ián iáng iáo iè ié iòng ióng iù iú
iā iān iāng iāo iē iě iōng iū iǎ iǎn iǎng iǎo iǒng iǔ j k l m n o ong ou p q r s sh t u uang ue un uo uà uài uàn
uàng uá uái uán uáng uè ué uì uí uò uó uā uāi uān uāng uē uě uī uō uǎ uǎi uǎn uǎng uǐ uǒ vè w x y z zh à ài àn
àng ào á ái án áng áo è èi èn èng èr é éi én éng ér ì ìn ìng í ín íng ò òng òu ó óng óu ù ùn ú ún ā āi ān āng āo
ē ēi ēn ēng ě ěi ěn ěng ěr ī īn īng ō ōng ōu ū ūn ǎ ǎi ǎn ǎng ǎo ǐ ǐn ǐng ǒ ǒng ǒu ǔ ǔn ǘ ǚ ǜ
""".split()

COSYVOICE3_SPECIAL_TOKENS = {
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "additional_special_tokens": (COSYVOICE2_SPECIAL_TOKENS["additional_special_tokens"] + ["<|endofsystem|>"]
                                  + [f"[{p}]" for p in _ARPABET] + [f"[{u}]" for u in _PINYIN_UNITS]),
}

# a directory holds a loadable tokenizer if it has tokenizer.json, or vocab.json with merges.txt
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def _check_token_path(token_path: str) -> None:
    if not token_path or not os.path.isdir(token_path):
        raise FileNotFoundError(
            f"tokenizer directory not found: '{token_path}' (pass <model_dir>/CosyVoice-BlankEN as token_path / "
            f"qwen_pretrain_path)")
    if not any(all(os.path.isfile(os.path.join(token_path, f)) for f in group) for group in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{token_path}: no Qwen2 tokenizer files (needs tokenizer.json, or vocab.json and merges.txt, with "
            f"tokenizer_config.json); is this the CosyVoice-BlankEN directory of the model?")


class CosyVoice2Tokenizer:
    """``encode(text) -> list[int]`` and ``decode(ids) -> str`` over the CosyVoice2 text vocabulary."""

    SPECIAL_TOKENS = COSYVOICE2_SPECIAL_TOKENS

    def __init__(self, token_path: str, skip_special_tokens: bool = True):
        from transformers import AutoTokenizer

        token_path = os.fspath(token_path)
        _check_token_path(token_path)
        self.special_tokens = copy.deepcopy(self.SPECIAL_TOKENS)
        self.tokenizer = AutoTokenizer.from_pretrained(token_path)
        self.tokenizer.add_special_tokens(copy.deepcopy(self.SPECIAL_TOKENS))
        self.skip_special_tokens = skip_special_tokens

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, **kwargs) -> List[int]:
        """Token ids of ``text``; special-token strings in it (``[breath]``, ``<|endofprompt|>``...) become single
        ids. Extra keyword arguments (e.g. ``allowed_special`` from the yaml) are accepted and ignored."""
        return list(self.tokenizer([text])["input_ids"][0])

    def decode(self, tokens: Iterable[int]) -> str:
        ids = [int(t) for t in tokens]
        return self.tokenizer.batch_decode([ids], skip_special_tokens=self.skip_special_tokens)[0]


class CosyVoice3Tokenizer(CosyVoice2Tokenizer):
    """The CosyVoice3 text vocabulary: CosyVoice2's with :data:`COSYVOICE3_SPECIAL_TOKENS` (encode/decode alike)."""

    SPECIAL_TOKENS = COSYVOICE3_SPECIAL_TOKENS


TOKENIZERS = {"cosyvoice2": CosyVoice2Tokenizer, "cosyvoice3": CosyVoice3Tokenizer}


def get_qwen_tokenizer(token_path: str, skip_special_tokens: bool, version: str = "cosyvoice2") -> CosyVoice2Tokenizer:
    """The text tokenizer the yaml's ``get_tokenizer`` entry builds (``token_path`` = CosyVoice-BlankEN dir);
    ``version`` 'cosyvoice2' or 'cosyvoice3' picks the special tokens."""
    if version not in TOKENIZERS:
        raise ValueError(f"get_qwen_tokenizer: version '{version}' is not supported; use one of "
                         f"{', '.join(TOKENIZERS)}")
    return TOKENIZERS[version](token_path=token_path, skip_special_tokens=skip_special_tokens)
