"""A tiny, offline-built stand-in for the Qwen2 BPE tokenizer shipped in CosyVoice-BlankEN (for tests and demos).

It has Qwen2's pipeline (NFC, Qwen2's split regex, byte-level BPE, byte-level decoding), so any text round-trips,
and Qwen2's three pre-existing special tokens placed right after the BPE vocabulary, as in the real tokenizer
(there ``<|endoftext|>`` = 151643, ``<|im_start|>`` = 151644, ``<|im_end|>`` = 151645). The saved directory holds
``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` and loads with
``transformers.AutoTokenizer`` as a ``Qwen2Tokenizer``.

Size: :func:`build_tiny_qwen_tokenizer` returns ``len(tokenizer)`` = BPE vocab (at most ``vocab_size``) + 3.
:func:`cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer` then appends 17 more special tokens, so a Qwen2 embedding
table of ``returned size + 17`` rows or more holds every id (the default fits the 2048-row tiny Qwen2 config).

With ``pad_to`` (:data:`QWEN2_REGULAR_TOKENS` = 151643, the real count) the regular vocabulary is filled up to that
many entries with filler strings that no merge produces (so no text ever encodes to them), and the special tokens
get the real ids: ``<|endoftext|>`` 151643, then CosyVoice3's ``<|endofprompt|>`` 151646 and so on, which the
CosyVoice3 LLM relies on. The tokenizer then encodes exactly as without the fillers.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Iterable, Iterator, Optional

QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_REGULAR_TOKENS = 151643  # regular (BPE) entries of the real Qwen2 vocabulary: <|endoftext|> is id 151643
# filler characters: printable ASCII without the space and the two characters JSON escapes
_FILLER_CHARS = [chr(c) for c in range(33, 127) if chr(c) not in '"\\']

# A few lines of plain Chinese and English text (written for this toolkit), enough to learn common merges.
BUILTIN_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Speech synthesis turns written text into natural sounding audio in a chosen voice.",
    "A speaker's voice can be learned from a few minutes of clean recordings.",
    "We trained the model for three days, then listened to every sample carefully.",
    "Good morning! How are you today? I'm fine, thank you, and you?",
    "Numbers like 2024, 3.14 and 100% should be read out correctly.",
    "Please open the window; it is getting warm in here this afternoon.",
    "The weather report says it will rain tomorrow, so bring an umbrella.",
    "Reading aloud every day helps children learn new words faster.",
    "He walked to the station, bought a ticket and waited for the last train.",
    "Music, art and science all begin with curiosity about the world.",
    "今天天气很好，我们一起去公园散步吧。",
    "语音合成技术可以把文字转换成自然流畅的声音。",
    "这个模型只需要几分钟的录音就能学会一个人的声音。",
    "请把窗户打开，屋子里有点热。",
    "明天可能会下雨，出门记得带伞。",
    "我喜欢在周末读书、听音乐，还有和朋友一起做饭。",
    "火车站离这里不远，走路大概十分钟就到了。",
    "孩子们每天大声朗读，学习新词语的速度更快。",
    "你好！最近怎么样？工作忙不忙？",
    "科学、艺术和音乐都从对世界的好奇开始。",
    "我们训练了三天模型，然后仔细听了每一个样本。",
    "春天来了，花开了，小鸟在树上唱歌。",
    "Hello 你好, this sentence mixes English and 中文 together.",
    "欢迎使用 CosyVoice2 语音合成工具包。",
)


def _write_json(path: str, obj, indent: Optional[int] = 2) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))


def _fillers(vocab: dict, n: int) -> Iterator[str]:
    """``n`` strings of three filler characters that are not in ``vocab``, in a fixed order."""
    made = 0
    for combo in itertools.product(_FILLER_CHARS, repeat=3):
        if made == n:
            return
        text = "".join(combo)
        if text not in vocab:
            made += 1
            yield text
    raise ValueError(f"cannot make {n} filler entries")


def build_tiny_qwen_tokenizer(out_dir: str, vocab_size: int = 1000, corpus: Optional[Iterable[str]] = None,
                              pad_to: Optional[int] = None) -> int:
    """Train a byte-level BPE on ``corpus`` (default: the built-in zh+en lines) and save it as a Qwen2 tokenizer.

    ``vocab_size`` bounds the BPE vocabulary including the 256 byte symbols (a small corpus may yield fewer).
    ``pad_to``: fill the regular vocabulary up to this many entries with unreachable fillers (see the module
    docstring), so the special tokens get the ids they have in the real tokenizer; the json files are then written
    without indentation to keep them small. Deterministic for a given corpus, size and ``pad_to``. Returns
    ``len(tokenizer)`` (regular vocab + the 3 Qwen2 specials).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    if vocab_size < 257:
        raise ValueError(f"build_tiny_qwen_tokenizer: vocab_size {vocab_size} is below the 256 byte symbols + 1")
    lines = [str(x) for x in (BUILTIN_CORPUS if corpus is None else corpus)]
    if not lines:
        raise ValueError("build_tiny_qwen_tokenizer: empty corpus")

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    base = tok.get_vocab_size(with_added_tokens=False)
    if pad_to is not None:
        if pad_to < base:
            raise ValueError(f"build_tiny_qwen_tokenizer: pad_to {pad_to} is below the {base} learned entries")
        learned = json.loads(tok.to_str())["model"]
        vocab = dict(learned["vocab"])
        for i, text in enumerate(_fillers(vocab, pad_to - base)):
            vocab[text] = base + i
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
        tok.model = models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=False)
        base = pad_to
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL_TOKENS])

    os.makedirs(out_dir, exist_ok=True)
    compact = pad_to is not None
    tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=not compact)
    model = json.loads(tok.to_str())["model"]
    _write_json(os.path.join(out_dir, "vocab.json"), model["vocab"], indent=None if compact else 2)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in model["merges"]:
            f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")
    added = {
        str(base + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True}
        for i, t in enumerate(QWEN2_SPECIAL_TOKENS)
    }
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": list(QWEN2_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 32768,
        "split_special_tokens": False,
    })
    return base + len(QWEN2_SPECIAL_TOKENS)
