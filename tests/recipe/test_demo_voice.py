"""The bundled demo voice (local/demo_voice) and the script that makes it."""
from __future__ import annotations

import shutil

import pytest
import soundfile as sf

import make_demo_voice
from recipe_helpers import ROOT

DEMO = ROOT / "local" / "demo_voice"


def test_bundled_demo_voice_layout_and_size():
    wavs = {s: sorted(p.stem for p in (DEMO / s).glob("*.wav")) for s in ("train", "test")}
    assert len(wavs["train"]) == 48 and len(wavs["test"]) == 12
    for s, stems in wavs.items():
        assert sorted(p.name[: -len(".normalized.txt")] for p in (DEMO / s).glob("*.normalized.txt")) == stems
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 6 * 1024 * 1024
    for p in DEMO.rglob("*.wav"):
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.5 <= info.duration <= 30


def test_demo_voice_mixes_mandarin_and_english():
    texts = [p.read_text(encoding="utf-8").strip() for p in sorted(DEMO.rglob("*.normalized.txt"))]
    has_cjk = [any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts]
    has_latin = [any(c.isascii() and c.isalpha() for c in t) for t in texts]
    assert sum(c and not l for c, l in zip(has_cjk, has_latin)) >= 20  # Mandarin
    assert sum(l and not c for c, l in zip(has_cjk, has_latin)) >= 15  # English
    assert sum(c and l for c, l in zip(has_cjk, has_latin)) >= 10  # both in one sentence
    assert (DEMO / "train" / "demo_0003.normalized.txt").read_text(encoding="utf-8") == "我喜欢用 Python 写程序。\n"


def test_sentence_list_matches_the_bundled_transcripts():
    for n, segments in enumerate(make_demo_voice.sentences(), start=1):
        split = "test" if n % 5 == 0 else "train"
        path = DEMO / split / f"demo_{n:04d}.normalized.txt"
        assert path.read_text(encoding="utf-8") == make_demo_voice.transcript(segments) + "\n"


def test_regeneration_with_espeak_ng(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (only needed to regenerate the demo voice)")
    out = tmp_path / "demo"
    assert make_demo_voice.main(["--out_dir", str(out)]) == 0
    for s in ("train", "test"):
        assert sorted(p.name for p in (out / s).iterdir()) == sorted(p.name for p in (DEMO / s).iterdir())
        for p in (out / s).glob("*.normalized.txt"):
            assert p.read_bytes() == (DEMO / s / p.name).read_bytes()
        for p in (out / s).glob("*.wav"):
            # Another espeak-ng version may differ slightly; the same version gives the same file.
            assert abs(sf.info(p).duration - sf.info(DEMO / s / p.name).duration) < 0.25
