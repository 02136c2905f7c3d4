"""Text tokenizer of CosyVoice2: the Qwen2 BPE tokenizer of CosyVoice-BlankEN plus CosyVoice's special tokens.

The ids must be those the released LLM was trained with: the Qwen2 tokenizer loaded from ``token_path`` and then one
``add_special_tokens`` call with :data:`COSYVOICE2_SPECIAL_TOKENS` (new strings get consecutive ids after the
base vocabulary, in the listed order; strings already present keep their ids).
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

    def __init__(self, token_path: str, skip_special_tokens: bool = True):
        from transformers import AutoTokenizer

        token_path = os.fspath(token_path)
        _check_token_path(token_path)
        self.special_tokens = copy.deepcopy(COSYVOICE2_SPECIAL_TOKENS)
        self.tokenizer = AutoTokenizer.from_pretrained(token_path)
        self.tokenizer.add_special_tokens(copy.deepcopy(COSYVOICE2_SPECIAL_TOKENS))
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


def get_qwen_tokenizer(token_path: str, skip_special_tokens: bool, version: str = "cosyvoice2") -> CosyVoice2Tokenizer:
    """The text tokenizer the yaml's ``get_tokenizer`` entry builds (``token_path`` = CosyVoice-BlankEN dir)."""
    if version != "cosyvoice2":
        raise ValueError(f"get_qwen_tokenizer: version '{version}' is not supported here; only 'cosyvoice2' is")
    return CosyVoice2Tokenizer(token_path=token_path, skip_special_tokens=skip_special_tokens)
