"""The Fun-CosyVoice3-0.5B stand-in (tools/make_tiny_pretrained.py --version cosyvoice3): the official layout and
signatures, the real special-token ids, weights in the golden tiny3 shapes, a stop rule that ends utterances after
the minimum length, deterministic per seed."""
from __future__ import annotations

import json

import pytest
import torch

from cosyvoice.utils.pretrained import COSYVOICE3, check_pretrained_dir, model_version
from stage_test_utils import call_tool, sweep


def test_layout_and_size(stand_in3_dir):
    assert model_version(str(stand_in3_dir)) is COSYVOICE3
    assert check_pretrained_dir(str(stand_in3_dir), version=COSYVOICE3) == str(stand_in3_dir)
    assert "NOT a real model" in (stand_in3_dir / "README.md").read_text()
    for name in ("cosyvoice3.yaml", "speech_tokenizer_v3.onnx", "CosyVoice-BlankEN/model.safetensors",
                 "CosyVoice-BlankEN/tokenizer.json"):
        assert (stand_in3_dir / name).is_file(), name
    assert not (stand_in3_dir / "cosyvoice2.yaml").exists()
    assert not (stand_in3_dir / "speech_tokenizer_v2.onnx").exists()
    total = sum(p.stat().st_size for p in stand_in3_dir.rglob("*") if p.is_file())
    assert total < 30 << 20  # the 151936 x 16 text table twice (llm.pt and model.safetensors) is most of it


def test_it_is_an_official_fun_cosyvoice3_dir(stand_in3_dir):
    """Exactly the files the official CosyVoice3 class reads (and the README), a yaml with official names only."""
    from official_layout import OFFICIAL, check_official_dir

    check_official_dir(stand_in3_dir, set(OFFICIAL["cosyvoice3"]["model_dir"]["loaded"]) | {"README.md"},
                       "cosyvoice3")


def test_special_tokens_have_the_official_ids(stand_in3_dir, fixtures3_dir):
    """Every CosyVoice3 special token gets the id the official tokenizer gives it (tokenizer_facts.json), so
    <|endofprompt|> is 151646, the id CosyVoice3LM checks for; the table has the real 151936 rows."""
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    facts = json.loads((fixtures3_dir / "tokenizer_facts.json").read_text(encoding="utf-8"))
    tok = get_qwen_tokenizer(str(stand_in3_dir / "CosyVoice-BlankEN"), True, "cosyvoice3")
    assert len(tok) == facts["id_assignment"]["len_after"] == 151924
    order = facts["add_special_tokens_call"]["additional_special_tokens_in_order"]
    new = [t for t in order if t not in ("<|im_start|>", "<|im_end|>")]
    assert [tok.encode(t) for t in new] == [[151646 + i] for i in range(len(new))]
    assert tok.encode("<|endoftext|>") == [151643] and tok.encode("<|im_end|>") == [151645]
    assert tok.encode("<|endofprompt|>") == [151646] and tok.encode("[ǜ]") == [151923]
    config = json.loads((stand_in3_dir / "CosyVoice-BlankEN" / "config.json").read_text())
    assert config["vocab_size"] == 151936 and config["hidden_size"] == 16
    # ordinary text encodes below the fillers and round-trips
    text = "You are a helpful assistant.<|endofprompt|>希望你以后能够做的比我还好呦。Hello!"
    ids = tok.encode(text)
    assert ids.count(151646) == 1 and max(i for i in ids if i != 151646) < 1000
    assert tok.decode(ids) == text.replace("<|endofprompt|>", "")


def test_speech_tokenizer_v3_signature(stand_in3_dir, stand_in_dir):
    import onnxruntime

    from cosyvoice.utils.onnx import SpeechTokenizer

    session = onnxruntime.InferenceSession(str(stand_in3_dir / "speech_tokenizer_v3.onnx"),
                                           providers=["CPUExecutionProvider"])
    (feats, length), (out,) = session.get_inputs(), session.get_outputs()
    assert (feats.type, feats.shape[:2], length.type, length.shape) == ("tensor(float)", [1, 128], "tensor(int32)",
                                                                        [1])
    assert out.type == "tensor(int64)"
    wav = torch.from_numpy(sweep(1.0, 200, 700)).unsqueeze(0)
    v3 = SpeechTokenizer(str(stand_in3_dir / "speech_tokenizer_v3.onnx")).tokenize(wav)
    v2 = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx")).tokenize(wav)
    assert len(v3) == 25 and all(0 <= t <= 6560 for t in v3) and v3 != v2  # its own projection


def test_weights_load_strictly_in_the_golden_tiny3_shapes(stand_in3_dir, fixtures3_dir):
    from cosyvoice.utils.config import load_config

    cfg = load_config(str(stand_in3_dir / "cosyvoice3.yaml"),
                      {"qwen_pretrain_path": str(stand_in3_dir / "CosyVoice-BlankEN")}, keys=["llm", "flow", "hift"])
    for name in ("llm", "flow", "hift"):
        state = torch.load(stand_in3_dir / f"{name}.pt", map_location="cpu", weights_only=True)
        cfg[name].load_state_dict(state, strict=True)
        golden = torch.load(fixtures3_dir / f"{name}.pt", map_location="cpu", weights_only=True)
        assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in golden.items()}, name
    assert not hasattr(cfg["llm"], "llm_embedding") and cfg["llm"].llm_decoder.bias is None


def test_yaml_says_it_is_a_stand_in(stand_in3_dir):
    assert (stand_in3_dir / "cosyvoice3.yaml").read_text().startswith("# Tiny STAND-IN for Fun-CosyVoice3-0.5B")


def test_decoding_ends_after_the_minimum_length(stand_in3_dir):
    """With the official stop rule (only 6561 banned below min_len, any of 200 ids stops), the steered stand-in
    never stops before the minimum and stops well before the maximum."""
    from cosyvoice.utils.config import load_config

    llm = load_config(str(stand_in3_dir / "cosyvoice3.yaml"),
                      {"qwen_pretrain_path": str(stand_in3_dir / "CosyVoice-BlankEN")}, keys=["llm"])["llm"]
    llm.load_state_dict(torch.load(stand_in3_dir / "llm.pt", map_location="cpu", weights_only=True))
    llm.eval()
    prompt = torch.tensor([[56, 271, 151646]], dtype=torch.int32)
    lengths = []
    for seed in range(6):
        torch.manual_seed(seed)
        text = torch.randint(0, 400, (1, 8), dtype=torch.int32)
        n = sum(1 for _ in llm.inference(text=text, text_len=torch.tensor([8]), prompt_text=prompt,
                                         prompt_text_len=torch.tensor([3]), prompt_speech_token=torch.zeros(1, 0),
                                         prompt_speech_token_len=torch.tensor([0]), embedding=torch.zeros(0, 192)))
        lengths.append(n)
    assert all(16 <= n < 80 for n in lengths), lengths  # min_len 16, max_len 160


@pytest.mark.parametrize("seed", [1986])
def test_same_seed_same_files(stand_in3_dir, tmp_path, seed):
    out = tmp_path / "again"
    rc, err = call_tool("make_tiny_pretrained", "--version", "cosyvoice3", "--out_dir", out, "--seed", seed)
    assert rc == 0, err
    files = sorted(p.relative_to(stand_in3_dir) for p in stand_in3_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (stand_in3_dir / rel).read_bytes(), rel
