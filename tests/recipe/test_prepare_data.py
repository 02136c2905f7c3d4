"""local/prepare_data.py: pairs -> Kaldi tables, every unusable utterance rejected with its reason."""
from __future__ import annotations

import csv
import importlib

import pytest

import prepare_data
from recipe_helpers import BAD_FOLDER_EXPECTED, ROOT, snapshot, write_text, write_wav
from cosyvoice.dataset.datadir import read_table, validate_data_dir


def read_rejected(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["utt", "reason", "detail"]
    return {utt: reason for utt, reason, _ in rows[1:]}


def test_each_rejection_reason_lands_on_the_right_utterance(bad_folder, tmp_path, capsys):
    before = snapshot(bad_folder)
    des = tmp_path / "data" / "train"
    assert prepare_data.main(["--src_dir", str(bad_folder), "--des_dir", str(des)]) == 0

    good = sorted((u for u, r in BAD_FOLDER_EXPECTED.items() if r is None), key=lambda u: u.encode())
    bad = {u: r for u, r in BAD_FOLDER_EXPECTED.items() if r is not None}
    assert [k for k, _ in read_table(des / "wav.scp")] == good
    assert read_rejected(des / "rejected.tsv") == bad
    assert validate_data_dir(des) == {"utterances": 6, "speakers": 1}
    text = dict(read_table(des / "text"))
    assert text["spk_good3"] == "two lines"
    assert text["spk_good2"] == "你好，世界。"
    assert dict(read_table(des / "utt2spk")) == {u: "spk" for u in good}
    assert dict(read_table(des / "utt2dur"))["spk_good2"] == "2.000"
    assert snapshot(bad_folder) == before  # the source folder is only read

    out = capsys.readouterr().out
    assert "kept 6 utterances" in out and "rejected 17" in out
    assert ("ignored 1 audio file(s) in a format that is not read (e.g. spk_m4a.m4a): only .wav/.flac/.ogg/.mp3 are"
            in out)
    assert "empty_audio" in out and "     2  audio has no samples" in out
    assert "ignored 2 other files" in out
    assert "1 of them look like the transcripts of audio here (e.g. spk_notext.lab)" in out
    assert dict(read_table(des / "wav.scp"))["spk_flac"].endswith("spk_flac.flac")


def test_spk_id_option_overrides_file_name_prefix(bad_folder, tmp_path):
    des = tmp_path / "train"
    assert prepare_data.main(["--src_dir", str(bad_folder), "--des_dir", str(des), "--spk_id", "alice"]) == 0
    assert set(dict(read_table(des / "utt2spk")).values()) == {"alice"}
    assert read_table(des / "spk2utt")[0][0] == "alice"


def test_speaker_is_the_prefix_before_the_first_underscore(tmp_path):
    src = tmp_path / "src"
    for utt in ("bob_a_1", "amy_2", "amy_1", "solo"):
        write_wav(src / f"{utt}.wav", 0.6)
        write_text(src / f"{utt}.normalized.txt", "x")
    des = tmp_path / "des"
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 0
    assert read_table(des / "utt2spk") == [("amy_1", "amy"), ("amy_2", "amy"), ("bob_a_1", "bob"), ("solo", "solo")]
    assert read_table(des / "spk2utt") == [("amy", "amy_1 amy_2"), ("bob", "bob_a_1"), ("solo", "solo")]


def test_tables_are_byte_sorted_not_locale_sorted(tmp_path):
    src = tmp_path / "src"
    for utt in ("s_b", "s_B", "s_a", "s_é", "s_Z"):
        write_wav(src / f"{utt}.wav", 0.6)
        write_text(src / f"{utt}.normalized.txt", utt)
    des = tmp_path / "des"
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 0
    assert [k for k, _ in read_table(des / "text")] == ["s_B", "s_Z", "s_a", "s_b", "s_é"]


def test_duration_limits_are_options(bad_folder, tmp_path):
    des = tmp_path / "des"
    args = ["--src_dir", str(bad_folder), "--des_dir", str(des), "--min_dur", "0.9", "--max_dur", "40"]
    assert prepare_data.main(args) == 0
    rejected = read_rejected(des / "rejected.tsv")
    assert rejected["spk_中文"] == "too_short"  # 0.8 s
    assert "spk_long" not in rejected


def test_nothing_left_fails_with_one_error_line(tmp_path, capsys):
    src = tmp_path / "src"
    write_wav(src / "a_1.wav", 0.1)
    write_text(src / "a_1.normalized.txt", "too short")
    write_text(src / "a_2.normalized.txt", "no wav")
    des = tmp_path / "des"
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"prepare_data.py: error: no usable utterance in {src} (reasons in {des / 'rejected.tsv'})"]
    assert read_rejected(des / "rejected.tsv") == {"a_1": "too_short", "a_2": "no_wav"}
    assert not (des / "wav.scp").exists()


def test_rerun_replaces_stale_tables(tmp_path):
    src = tmp_path / "src"
    for utt in ("a_1", "a_2"):
        write_wav(src / f"{utt}.wav", 0.6)
        write_text(src / f"{utt}.normalized.txt", "x")
    des = tmp_path / "des"
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 0
    (src / "a_2.wav").unlink()
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 0
    assert [k for k, _ in read_table(des / "wav.scp")] == ["a_1"]
    assert read_rejected(des / "rejected.tsv") == {"a_2": "no_wav"}


def test_flat_folder_split_into_train_and_test(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        write_wav(src / f"s_{i:02d}.wav", 0.6)
        write_text(src / f"s_{i:02d}.normalized.txt", f"utt {i}")
    write_text(src / "s_bad.normalized.txt", "no wav")

    def split(out, seed):
        args = ["--src_dir", str(src), "--des_dir", str(out / "train"), "--test_des_dir", str(out / "test"),
                "--num_test", "3", "--seed", str(seed)]
        assert prepare_data.main(args) == 0
        return ([k for k, _ in read_table(out / "train" / "text")], [k for k, _ in read_table(out / "test" / "text")])

    train, test = split(tmp_path / "a", 7)
    assert len(train) == 7 and len(test) == 3 and not set(train) & set(test)
    assert split(tmp_path / "b", 7) == (train, test)
    assert read_rejected(tmp_path / "a" / "train" / "rejected.tsv") == {"s_bad": "no_wav"}
    assert read_rejected(tmp_path / "a" / "test" / "rejected.tsv") == {}


@pytest.mark.parametrize(
    "n, num_test, ratio, expected",
    [(20, 0, 0.05, 1), (100, 0, 0.05, 5), (100, 7, 0.05, 7), (2, 0, 0.5, 1)],
)
def test_split_sizes(n, num_test, ratio, expected):
    ids = [f"u{i:03d}" for i in range(n)]
    train, test = prepare_data.split_test(ids, num_test, ratio, seed=1)
    assert len(test) == expected and sorted(train + test) == ids


@pytest.mark.parametrize("n, num_test, expected", [(1, 0, 0), (1, 3, 0), (2, 2, 1), (3, 5, 2), (5, 2, 2)])
def test_split_in_a_cast_keeps_one_utterance_to_train_on(n, num_test, expected):
    ids = [f"u{i}" for i in range(n)]
    train, test = prepare_data.split_test(ids, num_test, 0.05, seed=1, in_cast=True)
    assert len(test) == expected and sorted(train + test) == ids and train


def test_an_empty_cast_member_writes_rejected_tsv_only(tmp_path, capsys):
    src = tmp_path / "src"
    write_wav(src / "a_1.wav", 0.1)  # shorter than --min_dur
    write_text(src / "a_1.normalized.txt", "x")
    des = tmp_path / "des"
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des), "--in_cast", "true"]) == 0
    assert sorted(p.name for p in des.iterdir()) == ["rejected.tsv"]
    assert read_rejected(des / "rejected.tsv") == {"a_1": "too_short"}
    assert (f"prepare_data.py: note: no usable utterance in {src} (reasons in {des / 'rejected.tsv'}): it adds "
            "nothing to the cast") in capsys.readouterr().out.splitlines()
    assert prepare_data.main(["--src_dir", str(src), "--des_dir", str(des)]) == 2  # alone: an error, as before


def test_split_refuses_to_leave_no_training_data():
    with pytest.raises(ValueError, match="--num_test 3 leaves no training utterance"):
        prepare_data.split_test(["a", "b", "c"], 3, 0.05, seed=1)
    with pytest.raises(ValueError, match="need at least 2 usable utterances"):
        prepare_data.split_test(["a"], 0, 0.05, seed=1)


@pytest.mark.parametrize("module", ["prepare_data", "convert_raw_pack"])
def test_readme_names_every_rejection_reason(module):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [r for r in importlib.import_module(module).REASONS if f"`{r}`" not in readme]
    assert not missing, f"README.md does not explain these {module} reasons: {missing}"
