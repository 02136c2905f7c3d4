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
    "spk_flac": None,  # a .flac is read like a .wav
    "spk_m4a": "no_wav",  # a .m4a is not read; it is named as ignored
    "spk_twice": "two_audio",  # a .wav and a .flac of one id
}


# The crafted bad folder's files: utterance -> (audio: seconds or raw bytes or None for none, sample rate, channels,
# transcript: text or raw bytes or None for none). spk_flac's audio is written as a .flac, spk_m4a's is renamed .m4a
# (which stage 0 does not read), and spk_twice has a .flac copy beside its .wav.
BAD_FOLDER_FILES = {
    "spk_good1": (1.0, 16000, 1, "hello world\n"),
    "spk_good2": (2.0, 44100, 2, "你好，世界。"),
    "spk_good3": (1.2, 24000, 1, "  two\n lines  \n"),
    "spk_中文": (0.8, 22050, 1, "中文"),
    "spk_notext": (1.0, 16000, 1, None),
    "spk_nowav": (None, 16000, 1, "orphan transcript"),
    "spk_latin1": (1.0, 16000, 1, "caf\xe9".encode("latin-1")),
    "spk_blank": (1.0, 16000, 1, " \n\t \n"),
    "spk_garbage": (b"this is not audio at all, just bytes", 16000, 1, "garbage"),
    "spk_zerobytes": (b"", 16000, 1, "zero bytes"),
    "spk_noframes": (0.0, 16000, 1, "no frames"),
    "spk_short": (0.3, 16000, 1, "short"),
    "spk_long": (31.0, 16000, 1, "long"),
    "spk bad": (1.0, 16000, 1, "space in the name"),
    "-spk_dash": (1.0, 16000, 1, "dash"),
    "spk_tags": (1.0, 16000, 1, "[breath]你好<strong>世界</strong>"),
    "spk_template": (1.0, 16000, 1, "{NICKNAME}，你好。"),
    "spk_color": (1.0, 16000, 1, "<color=#FFD780FF>小心</color>！"),
    "spk_emoji": (1.0, 16000, 1, "😀！！……"),
    "spk_8k": (1.0, 8000, 1, "telephone audio"),
    "spk_flac": (1.0, 16000, 1, "a flac clip"),
    "spk_m4a": (1.0, 16000, 1, "an m4a clip"),
    "spk_twice": (1.0, 16000, 1, "two files"),
}


def make_bad_folder(d: Path) -> Path:
    """A pair folder with every kind of unusable utterance, plus the good ones (see BAD_FOLDER_EXPECTED)."""
    for utt, (audio, rate, channels, text) in BAD_FOLDER_FILES.items():
        if isinstance(audio, bytes):
            write_text(d / f"{utt}.wav", audio)
        elif audio is not None:
            write_wav(d / f"{utt}.wav", audio, rate=rate, channels=channels)
        if text is not None:
            write_text(d / f"{utt}.normalized.txt", text)
    for utt in ("spk_flac", "spk_twice"):
        sf.write(d / f"{utt}.flac", *sf.read(d / f"{utt}.wav"))
    (d / "spk_flac.wav").unlink()
    (d / "spk_m4a.wav").rename(d / "spk_m4a.m4a")
    write_text(d / "notes.md", "not part of the data")
    write_text(d / "spk_notext.lab", "the transcript under another name")
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
