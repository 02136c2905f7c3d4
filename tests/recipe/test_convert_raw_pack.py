"""local/convert_raw_pack.py: a nested raw game voice pack -> train/test pair folders."""
from __future__ import annotations

import csv

import pytest
import soundfile as sf

import convert_raw_pack
from recipe_helpers import RAW_PACK, snapshot, write_text, write_wav


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def convert(pack, out, *extra):
    return convert_raw_pack.main(["--pack_dir", str(pack), "--out_dir", str(out), *extra])


def test_conversion_keeps_clean_clips_and_counts_drops(raw_pack, tmp_path, capsys):
    before = snapshot(raw_pack)
    out = tmp_path / "pairs"
    assert convert(raw_pack, out, "--num_test", "2") == 0
    assert snapshot(raw_pack) == before  # nothing in the pack changes

    kept = sorted((s for s, (_, r) in RAW_PACK.items() if r is None), key=lambda s: s.encode())
    sources = read_tsv(out / "sources.tsv")
    assert sources[0] == ["utt", "set", "source"]
    # Kept clips are numbered in byte order of their relative path; the speaker is the pack folder's name.
    assert [(u, src) for u, _, src in sources[1:]] == [(f"Hu-Tao_{i:04d}", f"{s}.wav") for i, s in enumerate(kept, 1)]
    sets = {u: s for u, s, _ in sources[1:]}
    assert sorted(sets.values()) == ["test"] * 2 + ["train"] * 7

    for utt, (_, _, src) in zip(sets, sources[1:]):
        d = out / sets[utt]
        assert (d / f"{utt}.wav").read_bytes() == (raw_pack / src).read_bytes()
        lab = RAW_PACK[src[: -len(".wav")]][0]
        assert (d / f"{utt}.normalized.txt").read_text(encoding="utf-8") == lab.strip() + "\n"
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        f"{u}{ext}" for u, s in sets.items() if s == "train" for ext in (".wav", ".normalized.txt"))

    dropped = {src: reason for src, reason, _ in read_tsv(out / "dropped.tsv")[1:]}
    expected = {f"{s}.wav": r for s, (_, r) in RAW_PACK.items() if r is not None}
    expected["vo_c/orphan.lab"] = "no_wav"
    assert dropped == expected

    out_text = capsys.readouterr().out
    assert "15 clips, kept 9, dropped 6" in out_text
    for line in ("template_variable       1", "markup                  2", "empty_lab               2",
                 "no_lab                  1", "no_wav                  1"):
        assert line in out_text


def test_split_is_deterministic_and_seeded(raw_pack, tmp_path):
    def test_ids(out, *extra):
        assert convert(raw_pack, out, *extra) == 0
        return sorted(p.stem for p in (out / "test").glob("*.wav"))

    first = test_ids(tmp_path / "a", "--num_test", "3", "--seed", "5")
    assert len(first) == 3
    assert test_ids(tmp_path / "b", "--num_test", "3", "--seed", "5") == first
    others = {tuple(test_ids(tmp_path / f"s{seed}", "--num_test", "3", "--seed", str(seed))) for seed in range(4)}
    assert len(others) > 1  # the seed matters
    assert len(test_ids(tmp_path / "r", "--test_ratio", "0.25")) == 2  # round(9 * 0.25)


def test_spk_id_and_set_names_are_options(raw_pack, tmp_path):
    out = tmp_path / "pairs"
    assert convert(raw_pack, out, "--spk_id", "hutao", "--train_set", "tr", "--test_set", "dev") == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dev", "tr"]
    assert all(p.name.startswith("hutao_") for p in (out / "tr").iterdir())


def test_bad_spk_id_is_refused(raw_pack, tmp_path, capsys):
    assert convert(raw_pack, tmp_path / "o", "--spk_id", "hu_tao") == 2
    assert "--spk_id 'hu_tao' must be letters, digits and '-' only" in capsys.readouterr().err


def test_rerun_overwrites_its_own_output_but_not_a_foreign_folder(raw_pack, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert convert(raw_pack, out, "--num_test", "2") == 0
    (out / "train" / "stale.wav").write_bytes(b"x")
    assert convert(raw_pack, out, "--num_test", "2") == 0
    assert not (out / "train" / "stale.wav").exists()

    foreign = tmp_path / "mine"
    write_text(foreign / "keep.txt", "user data")
    assert convert(raw_pack, foreign) == 2
    assert "is not empty and was not written by this script" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]


def test_output_inside_the_pack_is_refused(raw_pack, capsys):
    assert convert(raw_pack, raw_pack / "out") == 2
    assert "overlap; write the pairs somewhere outside the pack" in capsys.readouterr().err
    assert not (raw_pack / "out").exists()


def test_pack_with_no_usable_clip_fails(tmp_path, capsys):
    pack = tmp_path / "pack"
    write_wav(pack / "a.wav", 1.0, rate=48000)
    write_text(pack / "a.lab", "{NICKNAME}")
    assert convert(pack, tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == f"convert_raw_pack.py: error: no usable clip in {pack}"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("你好，{NICKNAME}。", "template_variable"),
        ("{PLAYERAVATAR#SEXPRO[INFO_MALE_PRONOUN_HE|INFO_FEMALE_PRONOUN_SHE]}走了。", "markup"),
        ("{RUBY_B#とお}遠{RUBY_E#}い", "markup"),
        ("第一行\\n第二行", "markup"),
        ("#这是一句。", "markup"),
        ("<i>斜体</i>", "markup"),
        ("普通的一句话。", None),
        ("Plain English, with 3 numbers & symbols!", None),
    ],
)
def test_text_classification(text, reason):
    assert convert_raw_pack.classify_text(text.encode("utf-8"))[0] == reason


def test_non_utf8_lab_is_dropped():
    assert convert_raw_pack.classify_text("café".encode("latin-1"))[0] == "lab_not_utf8"


def test_clips_in_other_formats_are_copied_with_their_suffix(tmp_path, capsys):
    pack = tmp_path / "Nahida"
    write_wav(pack / "vo/a.wav", 1.0, rate=48000)
    write_wav(pack / "vo/b.wav", 1.1, rate=48000)
    sf.write(pack / "vo/b.FLAC", *sf.read(pack / "vo/b.wav"))  # the same clip twice: dropped, both named
    (pack / "vo/b.wav").unlink()
    write_wav(pack / "vo/c.wav", 1.2, rate=48000)
    sf.write(pack / "vo/c.flac", *sf.read(pack / "vo/c.wav"))
    write_wav(pack / "vo/d.wav", 1.3, rate=48000)
    sf.write(pack / "vo/d.mp3", *sf.read(pack / "vo/d.wav"))
    (pack / "vo/d.wav").unlink()
    for stem in "abcd":
        write_text(pack / f"vo/{stem}.lab", f"第{stem}句。")
    out = tmp_path / "pairs"
    assert convert(pack, out, "--num_test", "1", "--test_ratio", "0.5") == 0
    sources = {src: utt for utt, _, src in read_tsv(out / "sources.tsv")[1:]}
    assert sorted(sources) == ["vo/a.wav", "vo/b.FLAC", "vo/d.mp3"]
    suffix = {src: src[src.rindex("."):].lower() for src in sources}
    copies = {src: next(out.glob(f"*/{utt}{suffix[src]}")) for src, utt in sources.items()}
    for src, copy in copies.items():
        assert copy.read_bytes() == (pack / src).read_bytes()
    assert {src: r for src, r, _ in read_tsv(out / "dropped.tsv")[1:]} == {"vo/c.flac": "two_audio"}
    assert read_tsv(out / "dropped.tsv")[1][2] == "c.flac, c.wav"
    assert "two_audio               1" in capsys.readouterr().out


def test_an_ljspeech_metadata_csv_gives_the_transcripts(tmp_path):
    pack = tmp_path / "LJSpeech-1.1"
    for utt in ("LJ001-0001", "LJ001-0002", "LJ001-0003"):
        write_wav(pack / "wavs" / f"{utt}.wav", 0.8, rate=22050)
    write_text(pack / "wavs" / "LJ001-0001.lab", "a .lab is not read when metadata.csv is there")
    write_text(pack / "metadata.csv", "LJ001-0001|Printing, in 1469|Printing, in fourteen sixty-nine\n"
                                      "LJ001-0002|in being comparatively modern.|\n"
                                      "LJ001-0003|{NICKNAME} is here|{NICKNAME} is here\n"
                                      "LJ001-0009|no audio|no audio\n")
    out = tmp_path / "pairs"
    assert convert(pack, out, "--spk_id", "lj", "--num_test", "1") == 0
    sources = {src: (utt, s) for utt, s, src in read_tsv(out / "sources.tsv")[1:]}
    assert sorted(sources) == ["wavs/LJ001-0001.wav", "wavs/LJ001-0002.wav"]
    texts = {src: (out / s / f"{utt}.normalized.txt").read_text(encoding="utf-8") for src, (utt, s) in sources.items()}
    assert texts == {"wavs/LJ001-0001.wav": "Printing, in fourteen sixty-nine\n",  # the normalized column
                     "wavs/LJ001-0002.wav": "in being comparatively modern.\n"}    # none: the text column
    assert {src: r for src, r, _ in read_tsv(out / "dropped.tsv")[1:]} == {
        "wavs/LJ001-0003.wav": "template_variable", "metadata.csv:4": "no_wav"}


def test_an_audiofolder_metadata_csv_gives_the_transcripts(tmp_path):
    pack = tmp_path / "hf"
    write_wav(pack / "data" / "a.wav", 0.8)
    write_wav(pack / "data" / "b.wav", 0.9)
    write_wav(pack / "data" / "c.wav", 1.0)
    write_text(pack / "metadata.csv", 'file_name,speaker,transcription\ndata/a.wav,x,"Hello, world."\n'
                                      'data/b.wav,x,你好。\n')
    out = tmp_path / "pairs"
    assert convert(pack, out, "--num_test", "1") == 0
    sources = {src: (utt, s) for utt, s, src in read_tsv(out / "sources.tsv")[1:]}
    assert {src: (out / s / f"{utt}.normalized.txt").read_text(encoding="utf-8") for src, (utt, s) in sources.items()} \
        == {"data/a.wav": "Hello, world.\n", "data/b.wav": "你好。\n"}
    assert {src: r for src, r, _ in read_tsv(out / "dropped.tsv")[1:]} == {"data/c.wav": "no_lab"}


@pytest.mark.parametrize("content, message", [
    ("file_name,speaker\na.wav,x\n", "metadata.csv: no text column (found file_name, speaker; expected one of"),
    ("a.wav;hello\n", "is neither LJSpeech's <id>|<text>|<normalized text> lines nor an audiofolder CSV"),
    ("a|one\n|two\n", "metadata.csv:2: expected <id>|<text>[|<normalized text>], got '|two'"),
    ("a|one\na|two\n", "metadata.csv:2: wavs/a is listed twice (first at metadata.csv:1); keep one row"),
    (b"a|caf\xe9\n", "metadata.csv is not UTF-8 (invalid byte at offset 5): save it as UTF-8"),
])
def test_a_bad_metadata_csv_is_one_line_naming_it(tmp_path, capsys, content, message):
    pack = tmp_path / "pack"
    write_wav(pack / "wavs" / "a.wav", 0.8)
    write_text(pack / "metadata.csv", content)
    assert convert(pack, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()
