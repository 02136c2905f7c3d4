"""The server over a base model with LoRA characters loaded, and over a CosyVoice3 dir: the characters are voices
that speak exactly as each character alone, a CosyVoice3 dir is served under its own model id, and serve.sh finds a
LoRA experiment's characters from its model dir."""
from __future__ import annotations

import signal
import sys

import httpx2 as httpx
import numpy as np
import pytest

from process_helpers import Served
from server_helpers import direct, read_wav, run_server

TEXT = "你好，今天天气很好。"


@pytest.fixture(scope="module")
def with_characters(model_dir, stand_in_characters):
    from cosyvoice.cli.cosyvoice import CosyVoice2

    return CosyVoice2(str(model_dir), characters=[str(stand_in_characters)])


def test_characters_are_voices_that_speak_as_each_character_alone(with_characters, model_dir, stand_in_characters,
                                                                  prompt):
    from cosyvoice.cli.cosyvoice import CosyVoice2
    from cosyvoice.server.app import create_app

    with run_server(create_app(with_characters)) as url:
        voices = {v["id"]: (v["kind"], v["source"]) for v in httpx.get(url + "/v1/voices").json()["data"]}
        assert voices == {"alice": ("sft", "character"), "bob": ("sft", "character"), "demo": ("sft", "model")}
        got = {}
        for spk in ("bob", "alice", "demo"):
            r = httpx.post(url + "/v1/audio/speech", timeout=120,
                           json={"model": "cosyvoice2", "voice": spk, "input": TEXT, "seed": 7})
            assert r.status_code == 200, r.text
            got[spk] = read_wav(r.content)
        r = httpx.post(url + "/v1/audio/speech", json={"model": "cosyvoice2", "voice": "alice", "input": TEXT,
                                                       "instructions": "用开心的语气说"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "instructions"
        wav, text = prompt
        with open(wav, "rb") as f:
            r = httpx.post(url + "/v1/voices", data={"id": "bob", "text": text}, files={"file": ("p.wav", f)})
        assert r.status_code == 409, r.text  # a character's id is taken
    for spk in ("alice", "bob"):
        alone = CosyVoice2(str(model_dir), characters=[str(stand_in_characters / spk)])
        assert np.array_equal(got[spk], direct(alone, spk, TEXT, seed=7)), f"{spk} served differs from it alone"
    assert np.array_equal(got["demo"], direct(CosyVoice2(str(model_dir)), "demo", TEXT, seed=7))
    assert not np.array_equal(got["alice"], got["bob"])


def test_a_cosyvoice3_dir_is_served_under_its_own_model_id(stand_in3_dir, prompt):
    from cosyvoice.cli.cosyvoice import CosyVoice3

    served = Served([sys.executable, "-m", "cosyvoice.bin.serve", "--model_dir", str(stand_in3_dir), "--port", "0",
                     "--warmup", "false"])
    wav, text = prompt
    try:
        url = served.url()
        assert httpx.get(url + "/healthz").json()["model"] == "cosyvoice3"
        with open(wav, "rb") as f:
            r = httpx.post(url + "/v1/voices", data={"id": "p", "text": text}, files={"file": ("p.wav", f)},
                           timeout=60)
        assert r.status_code == 201, r.text
        body = {"model": "cosyvoice3", "voice": "p", "input": TEXT, "seed": 3}
        r = httpx.post(url + "/v1/audio/speech", json=body, timeout=120)
        assert r.status_code == 200, r.text
        served_audio = read_wav(r.content)
        r = httpx.post(url + "/v1/audio/speech", json=dict(body, model="cosyvoice2"))
        assert r.status_code == 400 and "cosyvoice3" in r.json()["error"]["message"]
    finally:
        assert served.stop() in (0, -signal.SIGTERM), served.log()
    assert "Fun-CosyVoice3-0.5B, model id cosyvoice3" in served.log()
    cv = CosyVoice3(str(stand_in3_dir))
    cv.add_zero_shot_spk(cv.frontend.text_normalize(text, split=False), str(wav), "p")
    assert np.array_equal(served_audio, direct(cv, "p", TEXT, seed=3))


def test_serve_sh_serves_the_characters_of_a_lora_experiment(tmp_path, stand_in_dir, stand_in_characters):
    """A LoRA experiment's model dir (what stage 4 records in recipe_data.conf) is served as run.sh left it: its
    characters on the pretrained model they were trained on."""
    exp = tmp_path / "exp" / "cast_lora"
    (exp / "model").mkdir(parents=True)
    (exp / "model" / "cosyvoice2.yaml").symlink_to(stand_in_dir / "cosyvoice2.yaml")
    (exp / "recipe_data.conf").write_text(f"spk_id=alice\ncharacters={stand_in_characters}\n"
                                          f"pretrained_model_dir={stand_in_dir}\n", encoding="utf-8")
    served = Served(["bash", "serve.sh", "--model_dir", str(exp / "model"), "--port", "0", "--warmup", "false"])
    try:
        url = served.url()
        voices = httpx.get(url + "/v1/voices").json()["data"]
        assert sorted((v["id"], v["source"]) for v in voices) == [("alice", "character"), ("bob", "character")]
    finally:
        assert served.stop() in (0, -signal.SIGTERM), served.log()
    assert f"LoRA experiment {exp}: the characters in {stand_in_characters}" in served.log()
    assert "voices alice (character), bob (character)" in served.log()
