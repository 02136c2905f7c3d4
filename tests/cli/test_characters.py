"""Characters on one base model (cosyvoice/cli/character.py, CosyVoice2(..., characters=...)): each loaded once,
switched per call, bit for bit the same audio as the character alone, never hearing another one's adapter."""
from __future__ import annotations

import json
import os
import shutil
import threading

import pytest
import torch

from cosyvoice.cli.character import CharacterError, read_character
from cosyvoice.cli.cosyvoice import CosyVoice2

SEED = 1986
TEXT = "你好，今天天气很好。"


@pytest.fixture(scope="module")
def characters(stand_in_characters):
    return stand_in_characters


def _sft(cv, spk, stream=False):
    return torch.cat([o["tts_speech"] for o in cv.inference_sft(TEXT, spk, stream=stream, seed=SEED)], dim=1)


@pytest.fixture(scope="module")
def both(model_dir, characters):
    return CosyVoice2(str(model_dir), characters=[str(characters)])


def test_manifest_records_the_base_model_the_adapter_and_the_flow(characters, stand_in_dir):
    from cosyvoice.utils.checkpoint import sha256_file

    bob = read_character(str(characters / "bob"))
    assert bob.spk_id == "bob" and bob.kind("llm") == "lora" and bob.kind("flow") == "full"
    assert bob.manifest["base_model"]["llm.pt"] == sha256_file(stand_in_dir / "llm.pt")
    assert bob.lora_settings("llm").target_modules == ("k_proj", "o_proj", "up_proj", "speech_embedding")
    assert bob.speaker_tag == "bob<|endofprompt|>" and bob.manifest["metrics"] is None
    assert sorted(p.name for p in (characters / "alice").iterdir()) == ["character.json", "llm.adapter.pt",
                                                                         "spk2info.pt"]


def test_one_object_serves_both_and_interleaved_calls_equal_each_character_alone(model_dir, characters, both):
    assert sorted(both.list_available_spks()) == ["alice", "bob", "demo"]
    interleaved = {}
    for spk in ("alice", "bob", "demo", "alice", "bob"):
        out = _sft(both, spk)
        if spk in interleaved:
            assert torch.equal(out, interleaved[spk]), f"{spk}: a later call differs from the first one"
        interleaved[spk] = out
    for spk in ("alice", "bob"):
        alone = CosyVoice2(str(model_dir), characters=[str(characters / spk)])
        assert torch.equal(_sft(alone, spk), interleaved[spk]), f"{spk} with the other character loaded differs"
        assert torch.equal(_sft(alone, "demo"), interleaved["demo"])  # the base speaker hears no adapter
    plain = CosyVoice2(str(model_dir))
    assert torch.equal(_sft(plain, "demo"), interleaved["demo"])
    assert not torch.equal(interleaved["alice"], interleaved["bob"])
    assert not torch.equal(interleaved["alice"], interleaved["demo"])


def test_concurrent_calls_of_two_characters_equal_the_sequential_ones(both):
    sequential = {spk: _sft(both, spk, stream=True) for spk in ("alice", "bob")}
    results, errors = {}, []
    start = threading.Barrier(4)

    def call(i, spk):
        try:
            start.wait()
            results[i] = _sft(both, spk, stream=True)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i, spk), daemon=True)
               for i, spk in enumerate(("alice", "bob", "bob", "alice"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and not any(t.is_alive() for t in threads)
    for i, spk in enumerate(("alice", "bob", "bob", "alice")):
        assert torch.equal(results[i], sequential[spk])


def test_a_tagged_character_reads_its_tag_before_the_text(both):
    tokenizer = both.frontend.tokenizer
    model_input = both.frontend.frontend_sft("你好", "bob")
    tag = tokenizer.encode("bob<|endofprompt|>", allowed_special="all")
    assert model_input["prompt_text"].reshape(-1).tolist() == tag
    # what training reads (the tag + the text, tokenized together) is the prompt followed by the text
    joined = tokenizer.encode("bob<|endofprompt|>你好", allowed_special="all")
    assert joined == tag + model_input["text"].reshape(-1).tolist()
    assert "prompt_text" not in both.frontend.frontend_sft("你好", "alice")


def test_save_spkinfo_keeps_the_characters_out_of_the_model_dir(tmp_path, model_dir, characters):
    from cli_helpers import link_model_dir

    own = link_model_dir(model_dir, tmp_path / "model")
    shutil.copy(model_dir / "spk2info.pt", own / "spk2info.pt")
    cv = CosyVoice2(str(own), characters=[str(characters / "alice")])
    cv.save_spkinfo()
    assert sorted(torch.load(own / "spk2info.pt", weights_only=True)) == ["demo"]


def test_bad_characters_are_one_line_errors(tmp_path, model_dir, characters, stand_in_dir, make_tiny_pretrained):
    with pytest.raises(CharacterError, match=r"character folder .*nowhere not found"):
        CosyVoice2(str(model_dir), characters=[str(tmp_path / "nowhere")])
    broken = tmp_path / "broken"
    shutil.copytree(characters / "alice", broken)
    with open(broken / "llm.adapter.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(CharacterError, match=r"llm.adapter.pt is damaged or was replaced"):
        CosyVoice2(str(model_dir), characters=[str(broken)])
    twin = tmp_path / "twin"
    shutil.copytree(characters / "alice", twin)
    with pytest.raises(CharacterError, match=r"speaker 'alice' is already loaded"):
        CosyVoice2(str(model_dir), characters=[str(characters / "alice"), str(twin)])
    other = tmp_path / "other_base"
    make_tiny_pretrained.make_stand_in(other, 7)  # another llm.pt: the adapter does not fit it
    with pytest.raises(CharacterError, match=r"its llm adapter was trained on the llm.pt of .*not on .*other_base"):
        CosyVoice2(str(other), characters=[str(characters / "alice")])
    manifest = json.loads((twin / "character.json").read_text())
    manifest["llm"]["finetune"] = "full"
    (twin / "character.json").write_text(json.dumps(manifest))
    with pytest.raises(CharacterError, match=r"llm.finetune 'full' is not one of lora, base"):
        read_character(str(twin))


def test_a_lora_experiments_model_dir_loaded_alone_warns_that_its_llm_is_the_base_one(tmp_path, stand_in_dir,
                                                                                      stand_in_characters, caplog):
    """<exp>/model of a LoRA run links the pretrained llm.pt; its speaker speaks as itself only with the character
    of <exp>/characters loaded, so loading the dir alone says so (and loading it as intended says nothing)."""
    exp = tmp_path / "alice_lora"
    (exp / "model").mkdir(parents=True)
    for entry in sorted(os.listdir(stand_in_dir)):
        if entry != "spk2info.pt":
            os.symlink(stand_in_dir / entry, exp / "model" / entry)
    shutil.copy(stand_in_characters / "alice" / "spk2info.pt", exp / "model" / "spk2info.pt")
    shutil.copytree(stand_in_characters / "alice", exp / "characters" / "alice")
    with caplog.at_level("WARNING", logger="cosyvoice.cli.cosyvoice"):
        CosyVoice2(str(exp / "model"))
    warned = [r.getMessage() for r in caplog.records if "is the model dir of a LoRA run" in r.getMessage()]
    assert warned == [f"{exp}/model is the model dir of a LoRA run: its llm.pt is the pretrained one, so alice "
                      f"speak(s) with the base llm here; load the characters for the fine-tuned voices: "
                      f"CosyVoice2({str(stand_in_dir)!r}, characters=[{str(exp / 'characters')!r}])"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="cosyvoice.cli.cosyvoice"):
        CosyVoice2(str(exp / "model"), characters=[str(exp / "characters")])
        CosyVoice2(str(exp / "model"), characters=[])
        os.remove(exp / "model" / "llm.pt")  # a merged llm.pt (stage 7 --merge true) is a file of its own
        shutil.copy(stand_in_dir / "llm.pt", exp / "model" / "llm.pt")
        CosyVoice2(str(exp / "model"))
    assert not [r for r in caplog.records if "LoRA run" in r.getMessage()]

