"""Helpers for the recipe tests: crafted pair folders and raw packs, folder snapshots."""
from __future__ import annotations

import hashlib
import zlib
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
for sub in ("local", "tools"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """A quiet sine of the given length, its pitch set by the file name (deterministic; clips differ)."""
    t = np.arange(int(round(seconds * rate))) / rate
    freq = 150 + zlib.crc32(path.name.encode("utf-8")) % 300
    mono = (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    audio = mono if channels == 1 else np.stack([mono] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder -> (sha256 of its bytes, mtime in ns): equal snapshots mean nothing changed."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


# The crafted bad folder: utterance -> expected rejection reason (None: kept).
BAD_FOLDER_EXPECTED = {
    "spk_good1": None,
    "spk_good2": None,  # 44.1 kHz stereo: any rate and channel count is accepted
    "spk_good3": None,  # transcript spread over lines with extra spaces
    "spk_中文": None,  # non-ASCII id
    "spk_notext": "no_transcript",
    "spk_nowav": "no_wav",
    "spk_latin1": "text_not_utf8",
    "spk_blank": "empty_text",
    "spk_garbage": "unreadable_audio",
    "spk_zerobytes": "empty_audio",
    "spk_noframes": "empty_audio",
    "spk_short": "too_short",
    "spk_long": "too_long",
    "spk bad": "bad_name",
    "-spk_dash": "bad_name",  # would read as an option (and become speaker '-spk')
    "spk_tags": None,  # CosyVoice's own control tags are not markup
    "spk_template": "template_variable",
    "spk_color": "markup",
    "spk_emoji": "no_speakable_text",
    "spk_8k": "low_sample_rate",
    "spk_flac": "no_wav",  # a .flac is not read; it is named as ignored
}


def make_bad_folder(d: Path) -> Path:
    """A pair folder with every kind of unusable utterance, plus four good ones (see BAD_FOLDER_EXPECTED)."""
    write_wav(d / "spk_good1.wav", 1.0)
    write_text(d / "spk_good1.normalized.txt", "hello world\n")
    write_wav(d / "spk_good2.wav", 2.0, rate=44100, channels=2)
    write_text(d / "spk_good2.normalized.txt", "你好，世界。")
    write_wav(d / "spk_good3.wav", 1.2, rate=24000)
    write_text(d / "spk_good3.normalized.txt", "  two\n lines  \n")
    write_wav(d / "spk_中文.wav", 0.8, rate=22050)
    write_text(d / "spk_中文.normalized.txt", "中文")
    write_wav(d / "spk_notext.wav", 1.0)
    write_text(d / "spk_nowav.normalized.txt", "orphan transcript")
    write_wav(d / "spk_latin1.wav", 1.0)
    write_text(d / "spk_latin1.normalized.txt", "caf\xe9".encode("latin-1"))
    write_wav(d / "spk_blank.wav", 1.0)
    write_text(d / "spk_blank.normalized.txt", " \n\t \n")
    write_text(d / "spk_garbage.wav", b"this is not audio at all, just bytes")
    write_text(d / "spk_garbage.normalized.txt", "garbage")
    write_text(d / "spk_zerobytes.wav", b"")
    write_text(d / "spk_zerobytes.normalized.txt", "zero bytes")
    write_wav(d / "spk_noframes.wav", 0.0)
    write_text(d / "spk_noframes.normalized.txt", "no frames")
    write_wav(d / "spk_short.wav", 0.3)
    write_text(d / "spk_short.normalized.txt", "short")
    write_wav(d / "spk_long.wav", 31.0, rate=16000)
    write_text(d / "spk_long.normalized.txt", "long")
    write_wav(d / "spk bad.wav", 1.0)
    write_text(d / "spk bad.normalized.txt", "space in the name")
    write_wav(d / "-spk_dash.wav", 1.0)
    write_text(d / "-spk_dash.normalized.txt", "dash")
    write_wav(d / "spk_tags.wav", 1.0)
    write_text(d / "spk_tags.normalized.txt", "[breath]你好<strong>世界</strong>")
    write_wav(d / "spk_template.wav", 1.0)
    write_text(d / "spk_template.normalized.txt", "{NICKNAME}，你好。")
    write_wav(d / "spk_color.wav", 1.0)
    write_text(d / "spk_color.normalized.txt", "<color=#FFD780FF>小心</color>！")
    write_wav(d / "spk_emoji.wav", 1.0)
    write_text(d / "spk_emoji.normalized.txt", "😀！！……")
    write_wav(d / "spk_8k.wav", 1.0, rate=8000)
    write_text(d / "spk_8k.normalized.txt", "telephone audio")
    write_wav(d / "spk_flac.wav", 1.0)
    (d / "spk_flac.wav").rename(d / "spk_flac.flac")
    write_text(d / "spk_flac.normalized.txt", "a flac clip")
    write_text(d / "notes.md", "not part of the data")
    return d


# The crafted raw pack: relative path of the clip's stem -> (lab content or None for no .lab, expected reason).
RAW_PACK = {
    "vo_a/001": ("你好，旅行者。", None),
    "vo_a/002": ("{NICKNAME}，你好。", "template_variable"),
    "vo_a/003": ("今天天气不错。\n", None),
    "vo_b/004": ("{F#妹妹}{M#哥哥}，你来啦。", "markup"),
    "vo_b/005": ("", "empty_lab"),
    "vo_b/006": (None, "no_lab"),
    "vo_b/007": ("  \n", "empty_lab"),
    "vo_b/008": ("<color=#FFD780FF>小心</color>！", "markup"),
    "vo_b/deep/er/009": ("Good morning.", None),
    "vo_b/deep/er/010": ("我们走吧。", None),
    "vo_c/011": ("这是第十一句。", None),
    "vo_c/012": ("这是第十二句。", None),
    "vo_c/013": ("这是第十三句。", None),
    "vo_c/014": ("这是第十四句。", None),
    "015": ("顶层的一句。", None),
}


def make_raw_pack(d: Path) -> Path:
    """A nested raw pack (48 kHz mono clips + .lab files) shaped like the public game voice datasets."""
    for stem, (lab, _) in RAW_PACK.items():
        write_wav(d / f"{stem}.wav", 0.6 + 0.01 * int(stem[-3:]), rate=48000)
        if lab is not None:
            write_text(d / f"{stem}.lab", lab)
    write_text(d / "vo_c/orphan.lab", "只有文本。")
    return d
