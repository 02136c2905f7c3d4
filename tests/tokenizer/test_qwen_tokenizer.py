"""The CosyVoice2 text tokenizer over a tiny offline-built Qwen2 BPE (tokenizer_facts.json is the reference)."""
from __future__ import annotations

import json
import shutil

import pytest

from cosyvoice.tokenizer.tiny import build_tiny_qwen_tokenizer
from cosyvoice.tokenizer.tokenizer import CosyVoice2Tokenizer, get_qwen_tokenizer

TEXTS = [
    "Hello world, it's 2024 and I'm testing speech synthesis!",
    "今天天气很好，我们一起去公园散步吧。",
    "Mixed 中英文 text with  two spaces,\nnew lines\n\nand émigré accents.",
    "没见过的字：龘靐齉，还有 emoji 🙂。",
]


@pytest.fixture(scope="module")
def tiny_tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_tok")
    size = build_tiny_qwen_tokenizer(str(d))
    return d, size


@pytest.fixture(scope="module")
def facts(fixtures_dir):
    return json.loads((fixtures_dir / "tokenizer_facts.json").read_text())


def test_tiny_tokenizer_loads_as_qwen2(tiny_tok_dir):
    from transformers import AutoTokenizer

    d, size = tiny_tok_dir
    base = AutoTokenizer.from_pretrained(str(d))
    assert type(base).__name__ == "Qwen2Tokenizer"
    assert len(base) == size
    assert size + 17 <= 2048  # fits the tiny Qwen2 embedding table with CosyVoice's tokens added
    # Qwen2-style: the three pre-existing specials are the last ids of the base vocabulary
    assert base.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [size - 3, size - 2, size - 1]
    assert base.eos_token == "<|endoftext|>" and base.bos_token is None


def test_build_is_deterministic(tiny_tok_dir, tmp_path):
    d, size = tiny_tok_dir
    assert build_tiny_qwen_tokenizer(str(tmp_path)) == size
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (d / name).read_bytes(), name


def test_special_tokens_consecutive_in_recorded_order(tiny_tok_dir, facts):
    d, size = tiny_tok_dir
    tok = get_qwen_tokenizer(str(d), skip_special_tokens=True)
    call = facts["add_special_tokens_call"]
    assert tok.special_tokens["additional_special_tokens"] == call["additional_special_tokens_in_order"]
    assert tok.special_tokens["eos_token"] == call["eos_token"] and tok.special_tokens["pad_token"] == call["pad_token"]
    ids = tok.tokenizer.convert_tokens_to_ids(call["additional_special_tokens_in_order"])
    # pre-existing ones keep their ids, the 17 new ones follow the base vocabulary in order
    assert ids[:2] == [size - 2, size - 1]
    assert ids[2:] == list(range(size, size + 17))
    assert len(tok) == size + 17


def test_special_strings_encode_as_single_ids(tiny_tok_dir):
    d, size = tiny_tok_dir
    tok = get_qwen_tokenizer(str(d), skip_special_tokens=True)
    assert tok.encode("[breath]") == [size + 1]
    assert tok.encode("<|endofprompt|>") == [size]
    ids = tok.encode("你好[breath]hello<|endofprompt|>", allowed_special="all")
    assert size + 1 in ids and ids[-1] == size
    assert tok.decode(ids) == "你好hello"  # skip_special_tokens drops them
    keep = get_qwen_tokenizer(str(d), skip_special_tokens=False)
    assert keep.decode(ids) == "你好[breath]hello<|endofprompt|>"


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_no_bos_eos(tiny_tok_dir, text):
    d, size = tiny_tok_dir
    tok = get_qwen_tokenizer(str(d), skip_special_tokens=True)
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < size - 3 for i in ids)  # plain text never yields special ids
    assert tok.decode(ids) == text


def test_vocab_and_merges_alone_give_the_same_ids(tiny_tok_dir, tmp_path):
    """The real CosyVoice-BlankEN may ship vocab.json + merges.txt without tokenizer.json."""
    d, _ = tiny_tok_dir
    slim = tmp_path / "slim"
    shutil.copytree(d, slim)
    (slim / "tokenizer.json").unlink()
    full, bare = get_qwen_tokenizer(str(d), True), get_qwen_tokenizer(str(slim), True)
    for text in TEXTS + ["a[breath]b<|endofprompt|>c"]:
        assert bare.encode(text) == full.encode(text)


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found: .*CosyVoice-BlankEN"):
        get_qwen_tokenizer(str(tmp_path / "missing"), True)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no Qwen2 tokenizer files \(needs tokenizer.json"):
        CosyVoice2Tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="version 'cosyvoice1' is not supported"):
        get_qwen_tokenizer(str(tmp_path), True, version="cosyvoice1")
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_qwen_tokenizer(str(tmp_path / "t"), vocab_size=100)
