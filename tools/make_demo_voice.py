#!/usr/bin/env python3
"""Generate the bundled demo voice (local/demo_voice) with Debian's espeak-ng.

60 short utterances of one synthetic speaker `demo`, Mandarin (voice cmn-latn-pinyin, fed tone-numbered pinyin,
transcribed in Chinese characters), English, and both mixed in one sentence. Written as the recipe's pair layout,
`<set>/demo_NNNN.wav` (16 kHz mono 16-bit) + `<set>/demo_NNNN.normalized.txt`; every 5th utterance is in test/.
Only needed to regenerate the bundled files: `apt-get install espeak-ng`, then

    python tools/make_demo_voice.py --out_dir local/demo_voice
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.errors import UserError

SPEAKER = "demo"
SAMPLE_RATE = 16000
VOICES = {"zh": "cmn-latn-pinyin", "en": "en-us"}
SPEED_WPM = 165
GAP_S = 0.08  # silence between the segments of a mixed-language sentence
PAD_S = 0.12  # silence kept at both ends of an utterance

# Each sentence: a list of (language, what espeak-ng reads, what the transcript says).
ZH = [
    ("jin1 tian1 tian1 qi4 hen3 hao3.", "今天天气很好。"),
    ("ni3 hao3, huan1 ying2 shi3 yong4 yu3 yin1 he2 cheng2.", "你好，欢迎使用语音合成。"),
    ("wo3 men5 yi4 qi3 qu4 gong1 yuan2 san4 bu4 ba5.", "我们一起去公园散步吧。"),
    ("zhe4 ben3 shu1 fei1 chang2 you3 yi4 si5.", "这本书非常有意思。"),
    ("qing3 ba3 chuang1 hu5 da3 kai1.", "请把窗户打开。"),
    ("ming2 tian1 zao3 shang5 ba1 dian3 kai1 hui4.", "明天早上八点开会。"),
    ("ta1 xi3 huan5 he1 hong2 cha2.", "他喜欢喝红茶。"),
    ("huo3 che1 ma3 shang4 jiu4 yao4 dao4 zhan4 le5.", "火车马上就要到站了。"),
    ("xiao3 mao1 zai4 sha1 fa1 shang4 shui4 jiao4.", "小猫在沙发上睡觉。"),
    ("wo3 xiang3 xue2 xi2 zuo4 fan4.", "我想学习做饭。"),
    ("zhe4 li3 de5 feng1 jing3 zhen1 mei3.", "这里的风景真美。"),
    ("qing3 wen4 xi3 shou3 jian1 zai4 na3 li3?", "请问洗手间在哪里？"),
    ("zhou1 mo4 wo3 men5 qu4 kan4 dian4 ying3.", "周末我们去看电影。"),
    ("xie4 xie5 ni3 de5 bang1 zhu4.", "谢谢你的帮助。"),
    ("chun1 tian1 lai2 le5, hua1 dou1 kai1 le5.", "春天来了，花都开了。"),
    ("ta1 mei3 tian1 zao3 shang5 pao3 bu4.", "他每天早上跑步。"),
    ("ma1 ma5 zuo4 de5 cai4 hen3 hao3 chi1.", "妈妈做的菜很好吃。"),
    ("wo3 men5 ming2 nian2 zai4 jian4.", "我们明年再见。"),
    ("tu2 shu1 guan3 li3 hen3 an1 jing4.", "图书馆里很安静。"),
    ("lu4 shang5 zhu4 yi4 an1 quan2.", "路上注意安全。"),
    ("zhe4 ge5 wen4 ti2 hen3 jian3 dan1.", "这个问题很简单。"),
    ("wai4 mian4 zheng4 zai4 xia4 yu3.", "外面正在下雨。"),
    ("wo3 de5 shou3 ji1 mei2 dian4 le5.", "我的手机没电了。"),
    ("wan3 fan4 yi3 hou4 wo3 men5 qu4 san4 bu4.", "晚饭以后我们去散步。"),
    ("yin1 yue4 rang4 ren2 xin1 qing2 yu2 kuai4.", "音乐让人心情愉快。"),
    ("shan1 shang4 de5 kong1 qi4 hen3 xin1 xian1.", "山上的空气很新鲜。"),
    ("qing3 man4 man4 shuo1.", "请慢慢说。"),
    ("zhu4 ni3 sheng1 ri4 kuai4 le4.", "祝你生日快乐。"),
]
EN = [
    "Hello, welcome to the demo voice.",
    "The quick brown fox jumps over the lazy dog.",
    "Please close the door when you leave.",
    "It is a beautiful day for a walk in the park.",
    "The train to the city leaves at nine.",
    "I would like a cup of hot tea, please.",
    "Reading a good book is a great way to relax.",
    "The meeting has been moved to Friday afternoon.",
    "Turn left at the second traffic light.",
    "She plays the piano every evening.",
    "We are going to the beach this weekend.",
    "Thank you very much for your help.",
    "The weather forecast says it will rain tomorrow.",
    "My favorite season is autumn.",
    "Can you tell me the way to the station?",
    "The children are playing in the garden.",
    "This recipe needs two eggs and a cup of flour.",
    "Good morning, how are you today?",
    "The museum opens at ten in the morning.",
    "Learning a new language takes time and practice.",
]
MIXED = [
    [("zh", "wo3 xi3 huan5 yong4", "我喜欢用"), ("en", "Python", "Python"), ("zh", "xie3 cheng2 xu4.", "写程序。")],
    [("zh", "jin1 tian1 de5", "今天的"), ("en", "meeting", "meeting"), ("zh", "gai3 dao4 xia4 wu3 le5.", "改到下午了。")],
    [("zh", "zhe4 ge5", "这个"), ("en", "app", "app"), ("zh", "fei1 chang2 hao3 yong4.", "非常好用。")],
    [("zh", "qing3 ba3", "请把"), ("en", "email", "email"), ("zh", "fa1 gei3 wo3.", "发给我。")],
    [("zh", "wo3 men5 zhou1 mo4 qu4", "我们周末去"), ("en", "shopping", "shopping"), ("zh", "ba5.", "吧。")],
    [("zh", "ta1 de5", "他的"), ("en", "English", "English"), ("zh", "shuo1 de5 hen3 hao3.", "说得很好。")],
    [("zh", "ming2 tian1 you3 yi2 ge4", "明天有一个"), ("en", "online", "online"), ("zh", "ke4 cheng2.", "课程。")],
    [("en", "Hello,", "Hello，"), ("zh", "hen3 gao1 xing4 ren4 shi5 ni3.", "很高兴认识你。")],
    [("zh", "zhe4 shou3", "这首"), ("en", "song", "song"), ("zh", "zhen1 hao3 ting1.", "真好听。")],
    [("zh", "wo3 de5", "我的"), ("en", "laptop", "laptop"), ("zh", "huai4 le5.", "坏了。")],
    [("zh", "wo3 men5 zai4", "我们在"), ("en", "coffee shop", "coffee shop"), ("zh", "jian4 mian4.", "见面。")],
    [("en", "OK,", "OK，"), ("zh", "wo3 ma3 shang4 jiu4 lai2.", "我马上就来。")],
]


def sentences() -> list[list[tuple[str, str, str]]]:
    """All sentences, Mandarin, English and mixed interleaved so that both sets get each kind."""
    zh = [[("zh", spoken, text)] for spoken, text in ZH]
    en = [[("en", text, text)] for text in EN]
    out = []
    for i in range(max(len(zh), len(en), len(MIXED))):
        for group in (zh, en, MIXED):
            if i < len(group):
                out.append(group[i])
    return out


def transcript(segments: list[tuple[str, str, str]]) -> str:
    """Join segment texts, with a space between Chinese and an English word."""
    text = ""
    for _, _, written in segments:
        if text and (written[0].isascii() or text[-1].isascii()) and not text.endswith(("，", " ")):
            text += " "
        text += written
    return text


def speak(espeak: str, voice: str, spoken: str) -> np.ndarray:
    """Synthesize one segment -> float32 samples at SAMPLE_RATE with the silence at both ends cut off."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "seg.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(SPEED_WPM), "-w", str(wav), spoken], check=True)
        audio, rate = sf.read(wav, dtype="float32")
    # soxr on purpose: this makes source audio (the bundled voice), not a feature that must match the official code
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[voiced[0]: voiced[-1] + 1] if len(voiced) else audio


def synthesize(espeak: str, segments: list[tuple[str, str, str]]) -> np.ndarray:
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), dtype=np.float32)
    parts = [pad]
    for i, (lang, spoken, _) in enumerate(segments):
        if i:
            parts.append(gap)
        parts.append(speak(espeak, VOICES[lang], spoken))
    parts.append(pad)
    return np.concatenate(parts)


@entry_point("make_demo_voice.py")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="local/demo_voice", help="gets train/ and test/ (their old files are removed)")
    p.add_argument("--test_every", type=int, default=5, help="every N-th utterance goes to test/")
    args = p.parse_args(argv)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise UserError("espeak-ng not found (apt-get install espeak-ng); it is only needed to regenerate the "
                        "bundled demo voice")
    out = Path(args.out_dir)
    for name in ("train", "test"):
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    total = 0.0
    for n, segments in enumerate(sentences(), start=1):
        split = "test" if n % args.test_every == 0 else "train"
        utt = f"{SPEAKER}_{n:04d}"
        audio = synthesize(espeak, segments)
        sf.write(out / split / f"{utt}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        (out / split / f"{utt}.normalized.txt").write_text(transcript(segments) + "\n", encoding="utf-8")
        total += len(audio) / SAMPLE_RATE
    print(f"make_demo_voice.py: wrote {n} utterances ({total:.1f} s) to {out}/{{train,test}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
