"""The CosyVoice3 text tokenizer (get_qwen_tokenizer(..., version='cosyvoice3')) on the fixture tiny BPE, against what
the official CosyVoice3Tokenizer recorded (tokenizer_facts.json)."""
from __future__ import annotations

import json

import pytest

from cosyvoice.tokenizer.tokenizer import (COSYVOICE2_SPECIAL_TOKENS, COSYVOICE3_SPECIAL_TOKENS, CosyVoice2Tokenizer,
                                           CosyVoice3Tokenizer, get_qwen_tokenizer)


@pytest.fixture(scope="module")
def facts(fixtures3_dir):
    return json.loads((fixtures3_dir / "tokenizer_facts.json").read_text())


@pytest.fixture(scope="module")
def tok_dir(fixtures3_dir):
    return str(fixtures3_dir / "tiny_bpe_tokenizer")


@pytest.fixture(scope="module")
def tok(tok_dir):
    return get_qwen_tokenizer(tok_dir, skip_special_tokens=True, version="cosyvoice3")


def test_special_token_list_is_the_official_one(facts):
    call = facts["add_special_tokens_call"]
    assert COSYVOICE3_SPECIAL_TOKENS["additional_special_tokens"] == call["additional_special_tokens_in_order"]
    assert len(call["additional_special_tokens_in_order"]) == 280
    assert COSYVOICE3_SPECIAL_TOKENS["eos_token"] == call["eos_token"] == "<|endoftext|>"
    assert COSYVOICE3_SPECIAL_TOKENS["pad_token"] == call["pad_token"] == "<|endoftext|>"
    # CosyVoice2's list is a prefix: the shared ids are the same in both vocabularies
    v2 = COSYVOICE2_SPECIAL_TOKENS["additional_special_tokens"]
    assert COSYVOICE3_SPECIAL_TOKENS["additional_special_tokens"][:len(v2)] == v2


def test_ids_follow_the_official_rule(tok, facts):
    ids = facts["id_assignment"]
    assert isinstance(tok, CosyVoice3Tokenizer) and isinstance(tok, CosyVoice2Tokenizer)
    assert len(tok) == ids["len_after"] == 151924 <= ids["qwen_embedding_rows"]
    for text, want in ids["ids"].items():
        assert tok.tokenizer.convert_tokens_to_ids(text) == want, text
    assert ids["first_new"] == ["<|endofprompt|>", 151646] and ids["last_new"] == ["[ǜ]", 151923]
    assert tok.tokenizer.convert_tokens_to_ids(["<|endoftext|>"]) == [151643]
    from cosyvoice.llm.llm import CosyVoice3LM

    assert tok.encode("<|endofprompt|>") == [CosyVoice3LM.END_OF_PROMPT_ID]


@pytest.mark.parametrize("i", range(10))
def test_encodings_match_official(tok, tok_dir, facts, i):
    e = facts["encodings"][i]
    ids = tok.encode(e["text"], allowed_special="all")  # allowed_special is accepted and ignored
    assert ids == e["ids"]
    assert tok.encode(e["text"]) == ids
    assert tok.tokenizer.convert_ids_to_tokens(ids) == e["tokens"]
    assert tok.decode(ids) == e["decode_skip_special_true"]
    keep = get_qwen_tokenizer(tok_dir, skip_special_tokens=False, version="cosyvoice3")
    assert keep.decode(ids) == e["decode_skip_special_false"]


def test_v2_and_v3_differ_only_in_the_added_tokens(tok_dir, tok):
    v2 = get_qwen_tokenizer(tok_dir, skip_special_tokens=True)
    assert type(v2) is CosyVoice2Tokenizer and len(v2) == 151646 + 17
    text = "You are a helpful assistant.<|endofprompt|>[breath]你好 [AA1] <|endofsystem|>"
    a, b = v2.encode(text), tok.encode(text)
    assert a[:7] == b[:7] and 151646 in a  # the first 19 specials keep their ids
    assert tok.encode("[AA1]") == [151666] and len(v2.encode("[AA1]")) > 1


def test_unknown_version_is_refused(tok_dir):
    with pytest.raises(ValueError, match="version 'cosyvoice4' is not supported; use one of cosyvoice2, cosyvoice3"):
        get_qwen_tokenizer(tok_dir, True, version="cosyvoice4")
