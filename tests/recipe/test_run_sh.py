"""run.sh as a user runs it: options, stage guards, stage -1 and stage 0, reruns."""
from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from recipe_helpers import BAD_FOLDER_EXPECTED, ROOT, make_bad_folder, snapshot, write_text, write_wav
from cosyvoice.dataset.datadir import read_table, validate_data_dir


def assert_players_resolve(report: Path, count: int) -> None:
    """Every <audio src> of the report is a relative path that names an existing file beside the report."""
    srcs = re.findall(r"<audio [^>]*src='([^']+)'", report.read_text(encoding="utf-8"))
    assert len(srcs) == count
    for src in srcs:
        assert not Path(src).is_absolute(), src
        assert (report.parent / src).is_file(), src


def table_keys(path):
    return [k for k, _ in read_table(path)]


def rejected(path):
    with open(path, encoding="utf-8", newline="") as f:
        return {row[0]: row[1] for row in list(csv.reader(f, delimiter="\t"))[1:]}


def test_help_lists_the_options(run_recipe):
    r = run_recipe("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: bash run.sh [options]")
    for opt in ("--stage N", "--stop_stage N", "--data_dir DIR", "--raw_pack_dir DIR", "--spk_id ID",
                "--pretrained_model_dir D", "--exp_dir DIR", "--gpus IDS", "--train_engine NAME", "--force BOOL"):
        assert opt in r.stdout


def test_unknown_option_fails_clearly(run_recipe):
    r = run_recipe("--no_such_option", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[0] == "run.sh: unknown option --no_such_option"


def test_bad_values_fail_clearly(run_recipe):
    cases = {
        ("--stage", "x"): "run.sh: error: --stage must be an integer, got 'x'",
        ("--stage", "2", "--stop_stage", "1"): "run.sh: error: --stage 2 is after --stop_stage 1",
        ("--train_engine", "horovod"): "run.sh: error: --train_engine must be torch_ddp or deepspeed, got 'horovod'",
        ("extra",): "run.sh: error: unexpected argument 'extra' (options are --name value; see --help)",
        ("--force", "1"): "run.sh: option --force takes true or false, got '1'",
        ("--gpus", "cuda:0"): "run.sh: error: --gpus takes GPU ids separated by commas, e.g. 0 or 0,1 (empty: every "
                              "visible GPU), got 'cuda:0'",
    }
    for args, message in cases.items():
        r = run_recipe(*args)
        assert r.returncode == 2, args
        assert r.stderr.splitlines()[0] == message


def test_stage0_keeps_good_pairs_lists_bad_ones_and_leaves_data_dir_alone(run_recipe, tmp_path):
    d = tmp_path / "D"
    make_bad_folder(d / "train")
    for utt in ("spk_t1", "spk_t2"):
        write_wav(d / "test" / f"{utt}.wav", 1.0)
        write_text(d / "test" / f"{utt}.normalized.txt", f"test {utt}")
    before = snapshot(d)
    data = tmp_path / "data"
    r = run_recipe("--stage", "0", "--stop_stage", "0", "--data_dir", d, "--data_root", data)
    assert r.returncode == 0, r.stderr

    good = sorted((u for u, reason in BAD_FOLDER_EXPECTED.items() if reason is None), key=lambda u: u.encode())
    assert table_keys(data / "train" / "wav.scp") == good
    assert rejected(data / "train" / "rejected.tsv") == {u: r for u, r in BAD_FOLDER_EXPECTED.items() if r}
    assert table_keys(data / "test" / "text") == ["spk_t1", "spk_t2"]
    assert rejected(data / "test" / "rejected.tsv") == {}
    assert validate_data_dir(data / "train")["utterances"] == 6
    assert snapshot(d) == before
    assert f"Stage 0: prepare data: {d} -> {data}/{{train,test}}" in r.stdout
    assert "kept 6 utterances" in r.stdout and "rejected 17" in r.stdout


def test_stage0_reruns_only_when_inputs_change_or_forced(run_recipe, tmp_path):
    d = tmp_path / "D"
    for s, n in (("train", 3), ("test", 1)):
        for i in range(n):
            write_wav(d / s / f"a_{s}{i}.wav", 0.7)
            write_text(d / s / f"a_{s}{i}.normalized.txt", "x")
    args = ("--data_dir", d, "--data_root", tmp_path / "data", "--stop_stage", "0")
    first = run_recipe(*args)
    assert first.returncode == 0 and "prepare_data.py" in first.stdout
    again = run_recipe(*args)
    assert again.returncode == 0
    assert "Stage 0: already done with these inputs; skipped" in again.stdout and "prepare_data.py" not in again.stdout
    forced = run_recipe(*args, "--force", "true")
    assert "prepare_data.py" in forced.stdout
    write_text(d / "train" / "a_train9.normalized.txt", "new transcript without wav")
    changed = run_recipe(*args)
    assert "prepare_data.py" in changed.stdout
    assert rejected(tmp_path / "data" / "train" / "rejected.tsv") == {"a_train9": "no_wav"}
    other_opts = run_recipe(*args, "--spk_id", "bob")
    assert "prepare_data.py" in other_opts.stdout
    assert set(dict(read_table(tmp_path / "data" / "train" / "utt2spk")).values()) == {"bob"}
    shutil.rmtree(tmp_path / "data" / "test")
    rebuilt = run_recipe(*args, "--spk_id", "bob")
    assert "prepare_data.py" in rebuilt.stdout and (tmp_path / "data" / "test" / "wav.scp").is_file()


def test_stage0_flat_folder_is_split(run_recipe, tmp_path, bad_folder):
    r = run_recipe("--data_dir", bad_folder, "--data_root", tmp_path / "data", "--num_test", "1", "--stop_stage", "0")
    assert r.returncode == 0, r.stderr
    assert "is one flat folder: splitting off the test set" in r.stdout
    train, test = table_keys(tmp_path / "data" / "train" / "text"), table_keys(tmp_path / "data" / "test" / "text")
    good = [u for u, reason in BAD_FOLDER_EXPECTED.items() if reason is None]
    assert len(train) == len(good) - 1 and len(test) == 1
    assert sorted(train + test) == sorted(u for u, reason in BAD_FOLDER_EXPECTED.items() if reason is None)


def test_stage0_guards_name_what_is_missing(run_recipe, tmp_path):
    r = run_recipe("--data_dir", tmp_path / "nope", "--data_root", tmp_path / "data", "--stop_stage", "0")
    assert r.returncode == 2
    assert r.stderr.strip() == f"run.sh: error: stage 0: data folder {tmp_path / 'nope'} not found: give --data_dir"

    (tmp_path / "only_train" / "train").mkdir(parents=True)
    r = run_recipe("--data_dir", tmp_path / "only_train", "--data_root", tmp_path / "data", "--stop_stage", "0")
    assert r.returncode == 2
    assert r.stderr.strip() == f"run.sh: error: stage 0: {tmp_path / 'only_train' / 'test'} not found: put the test pairs there"

    r = run_recipe("--raw_pack_dir", tmp_path, "--stage", "0", "--stop_stage", "0", "--data_root", tmp_path / "data")
    assert r.returncode == 2
    assert r.stderr.strip().endswith("not found: run stage -1 first (--stage -1)")


def test_stage0_fails_with_one_line_when_nothing_is_usable(run_recipe, tmp_path):
    for s in ("train", "test"):
        write_wav(tmp_path / "D" / s / "a_1.wav", 0.1)
        write_text(tmp_path / "D" / s / "a_1.normalized.txt", "too short")
    r = run_recipe("--data_dir", tmp_path / "D", "--data_root", tmp_path / "data", "--stop_stage", "0")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"prepare_data.py: error: no usable utterance in {tmp_path / 'D' / 'train'} "
                                f"(reasons in {tmp_path / 'data' / '.stage0.new' / 'train' / 'rejected.tsv'})")
    assert not (tmp_path / "data" / ".stage0.done").exists()


def test_raw_pack_to_tables(run_recipe, tmp_path, raw_pack):
    before = snapshot(raw_pack)
    data = tmp_path / "data"
    r = run_recipe("--raw_pack_dir", raw_pack, "--stage", "-1", "--stop_stage", "0", "--data_root", data,
                   "--num_test", "2")
    assert r.returncode == 0, r.stderr
    assert f"Stage -1: convert raw character pack: {raw_pack} -> {data}/pack_pairs/{{train,test}}" in r.stdout
    assert snapshot(raw_pack) == before
    train, test = table_keys(data / "train" / "wav.scp"), table_keys(data / "test" / "wav.scp")
    assert len(train) == 7 and len(test) == 2
    assert sorted(train + test) == [f"Hu-Tao_{i:04d}" for i in range(1, 10)]
    assert read_table(data / "train" / "spk2utt") == [("Hu-Tao", " ".join(train))]
    assert dict(read_table(data / "train" / "text"))["Hu-Tao_0001"] == "顶层的一句。"

    again = run_recipe("--raw_pack_dir", raw_pack, "--stage", "-1", "--stop_stage", "0", "--data_root", data,
                       "--num_test", "2")
    assert "Stage -1: already done with these inputs; skipped" in again.stdout
    assert "Stage 0: already done with these inputs; skipped" in again.stdout


def test_a_folder_pattern_trains_every_character_folder_of_a_dataset_root_as_a_cast(run_recipe, tmp_path):
    """--raw_pack_dir "ROOT/*": one pack (and speaker) per character folder, in byte order, experiment ROOT-cast; the
    root given as one pack gets a note saying how to do that instead of silently making one speaker of everyone."""
    root = tmp_path / "Chinese"
    for name in ("Zhongli", "Hu Tao"):
        for i in range(4):
            write_wav(root / name / f"vo_{i}.wav", 0.8 + 0.1 * i)
            write_text(root / name / f"vo_{i}.lab", f"第{i}句话。")
    write_text(root / "README.txt", "not a character")
    r = run_recipe("--raw_pack_dir", f"{root}/*", "--stage", "-1", "--stop_stage", "0", "--num_test", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Experiment 'Chinese-cast': data in data/Chinese-cast" in r.stdout
    assert f"Stage -1: convert raw character pack: {root}/Hu Tao -> data/Chinese-cast/pack_pairs/1/" in r.stdout
    assert f"Stage -1: convert raw character pack: {root}/Zhongli -> data/Chinese-cast/pack_pairs/2/" in r.stdout
    assert "note:" not in r.stdout  # each pack is one character of the cast
    spk2utt = dict(read_table(tmp_path / "data" / "Chinese-cast" / "train" / "spk2utt"))
    assert sorted(spk2utt) == ["Hu-Tao", "Zhongli"] and all(len(u.split()) == 3 for u in spk2utt.values())

    one = run_recipe("--raw_pack_dir", root, "--stage", "-1", "--stop_stage", "-1", "--num_test", "1", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert (f"convert_raw_pack.py: note: the clips are in 2 folders of {root} (Hu Tao 4, Zhongli 4 clips), and all of "
            f"them become speaker 'Chinese'; if each folder is one character, train them as a cast, one speaker per "
            f"folder: --raw_pack_dir \"{root}/*\"") in one.stdout.splitlines()

    r = run_recipe("--raw_pack_dir", f"{tmp_path}/nowhere/*", "--stage", "-1", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"run.sh: error: --raw_pack_dir {tmp_path}/nowhere/*: the pattern matches no folder"


def test_a_cast_member_with_too_few_clips_adds_what_it_has(run_recipe, tmp_path):
    """In a cast a character with one usable clip trains on it (no test clip) and one with none is left out, each
    with a note, instead of stopping the whole cast; alone, the same packs are still errors naming the fix."""
    root = tmp_path / "Chinese"
    for i in range(3):
        write_wav(root / "Amber" / f"vo_{i}.wav", 0.8 + 0.1 * i)
        write_text(root / "Amber" / f"vo_{i}.lab", f"第{i}句话。")
    for i in range(2):
        write_wav(root / "Kaeya" / f"vo_{i}.wav", 0.8 + 0.1 * i)
        write_text(root / "Kaeya" / f"vo_{i}.lab", f"第{i}句。")
    write_wav(root / "Lisa" / "vo_0.wav", 0.9)
    write_text(root / "Lisa" / "vo_0.lab", "只有一句。")
    write_wav(root / "Npc" / "vo_0.wav", 0.9)
    write_text(root / "Npc" / "vo_0.lab", "{NICKNAME}，你好。")
    r = run_recipe("--raw_pack_dir", f"{root}/*", "--stage", "-1", "--stop_stage", "0", "--num_test", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert not any(line.startswith(f"convert_raw_pack.py: note: {root}/Amber") for line in lines)  # split as asked
    assert (f"convert_raw_pack.py: note: {root}/Kaeya has 2 usable clips: 1 held out for the test set, not "
            "--num_test 2, so that one is left to train on") in lines
    assert f"convert_raw_pack.py: note: {root}/Lisa has 1 usable clip: speaker 'Lisa' trains on it and has no test clip" in lines
    assert f"convert_raw_pack.py: {root}/Lisa: 1 clip, kept 1, dropped 0" in lines
    assert f"convert_raw_pack.py: note: no usable clip in {root}/Npc: speaker 'Npc' is left out of the cast" in lines
    assert sum("note:" in line for line in lines) == 6  # and stage 0 on Lisa's empty test set, Npc's empty sets
    data = tmp_path / "data" / "Chinese-cast"
    train, test = dict(read_table(data / "train" / "spk2utt")), dict(read_table(data / "test" / "spk2utt"))
    assert {spk: len(u.split()) for spk, u in train.items()} == {"Amber": 1, "Kaeya": 1, "Lisa": 1}
    assert {spk: len(u.split()) for spk, u in test.items()} == {"Amber": 2, "Kaeya": 1}
    assert dict(read_table(data / "train" / "text"))["Lisa_0001"] == "只有一句。"

    alone = run_recipe("--raw_pack_dir", root / "Lisa", "--stage", "-1", "--stop_stage", "-1", cwd=tmp_path)
    assert alone.returncode == 2
    assert alone.stderr.strip() == (f"convert_raw_pack.py: error: {root}/Lisa: need at least 2 usable utterances to "
                                    "split off a test set, have 1: add clips")

    lisa = run_recipe("--raw_pack_dir", f"{root}/Lisa:{root}/Npc", "--stage", "-1", "--stop_stage", "0", cwd=tmp_path)
    assert lisa.returncode == 2
    assert lisa.stderr.strip() == (
        "merge_data_dirs.py: error: no utterance for the test set in any of the 2 datasets (data/Lisa-Npc/pack_pairs/1, "
        "data/Lisa-Npc/pack_pairs/2): a dataset gives the test set one only when it has 2 or more usable clips")
    assert not (tmp_path / "data" / "Lisa-Npc" / "train").exists()  # stage 0 wrote nothing half


def test_a_flat_pair_folder_of_one_clip_joins_a_cast_without_a_test_clip(run_recipe, tmp_path):
    for spk, n in (("eve", 3), ("bob", 1)):
        for i in range(n):
            write_wav(tmp_path / spk / f"{spk}_{i}.wav", 0.8)
            write_text(tmp_path / spk / f"{spk}_{i}.normalized.txt", f"第{i}句。")
    r = run_recipe("--data_dir", f"{tmp_path}/eve:{tmp_path}/bob", "--stop_stage", "0", "--num_test", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (f"prepare_data.py: note: {tmp_path}/bob has 1 usable utterance: it is trained on, and none is held out "
            "for the test set") in r.stdout.splitlines()
    data = tmp_path / "data" / "eve-bob"
    assert sorted(dict(read_table(data / "train" / "spk2utt"))) == ["bob", "eve"]
    assert sorted(dict(read_table(data / "test" / "spk2utt"))) == ["eve"]


def test_a_folder_whose_name_holds_pattern_characters_is_read_as_it_is(run_recipe, tmp_path):
    """"take [2]" is a folder, not a pattern: stage 0 reads its pairs (a glob of its name would find none)."""
    d = tmp_path / "take [2]"
    for i in range(3):
        write_wav(d / f"eve_{i}.wav", 0.8)
        write_text(d / f"eve_{i}.normalized.txt", f"第{i}句。")
    r = run_recipe("--data_dir", d, "--stop_stage", "0", "--num_test", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Experiment 'take-2'" in r.stdout and f"{d}: kept 3 utterances" in r.stdout


def test_a_long_cast_gets_a_short_experiment_name(run_recipe, tmp_path):
    names = [f"character-with-a-long-name-{k}" for k in range(5)]
    r = run_recipe("--data_dir", ":".join(str(tmp_path / n) for n in names), "--stage", "-1", "--stop_stage", "-1",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Experiment 'character-with-a-long-name-0-and-4-more'" in r.stdout


def test_raw_pack_and_data_dir_exclude_each_other(run_recipe, tmp_path, raw_pack):
    r = run_recipe("--raw_pack_dir", raw_pack, "--data_dir", tmp_path, "--stage", "-1")
    assert r.returncode == 2
    assert r.stderr.startswith("run.sh: error: give --raw_pack_dir or --data_dir, not both")


def test_stage_minus1_without_pack_is_a_no_op(run_recipe, tmp_path):
    r = run_recipe("--stage", "-1", "--stop_stage", "-1", "--data_root", tmp_path / "data")
    assert r.returncode == 0
    assert "Stage -1: nothing to convert (no --raw_pack_dir given)" in r.stdout
    assert not (tmp_path / "data").exists()


def test_demo_defaults_from_another_directory(demo_run):
    """The README's demo command: the whole recipe on the demo voice and the stand-in (the CPU smoke run).

    The defaults point into the project, so run.sh works from any directory; outputs go to the cwd, into the
    experiment 'demo_voice' (data/demo_voice, exp/demo_voice).
    """
    cwd, r = demo_run
    data = cwd / "data" / "demo_voice"
    assert table_keys(data / "train" / "wav.scp")[:2] == ["demo_0001", "demo_0002"]
    assert validate_data_dir(data / "test") == {"utterances": 12, "speakers": 1}
    assert dict(read_table(data / "train" / "wav.scp"))["demo_0001"] == str(
        ROOT / "local" / "demo_voice" / "train" / "demo_0001.wav")
    assert r.stdout.splitlines()[0].endswith("run.sh --setup_env false")
    assert r.stdout.splitlines()[-1].split(") ", 1)[1].startswith("Done: stages 0..8 in ")
    # stages 1-4 ran on the tiny stand-in written into the cwd's exp/
    for x in ("train", "test"):
        for name in ("utt2embedding.pt", "spk2embedding.pt", "utt2speech_token.pt", "parquet/data.list",
                     "quality.tsv"):
            assert (data / x / name).is_file(), name
    assert (cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny" / ".stand_in.done").is_file()
    exp = cwd / "exp" / "demo_voice"
    model = exp / "model"
    assert (model / "spk2info.pt").is_file()
    # stages 5-7: two epochs of each model, averaged weights replace the links, the flow is exported
    for m in ("llm", "flow"):
        assert (exp / m / "epoch_0_whole.pt").is_file() and (exp / m / "epoch_1_whole.pt").is_file()  # from 0
        assert list((exp / m / "samples" / "epoch_1").glob("*.wav")), m
        assert (model / f"{m}.pt").is_file() and not (model / f"{m}.pt").is_symlink()
    assert (model / "flow.decoder.estimator.fp32.onnx").is_file() and (model / "flow.encoder.fp32.zip").is_file()
    # stage 8: the report, with one player per clip (real / base / fine-tuned for each of the 12 test texts), each
    # pointing at an existing file relative to the report itself; the stand-in is named at the top
    html = (exp / "report.html").read_text(encoding="utf-8")
    assert html.count("<audio") == 3 * 12
    assert_players_resolve(exp / "report.html", 36)
    assert "tiny random <b>stand-in</b>" in html
    assert "Where things are (experiment 'demo_voice', speaker(s) demo)" in r.stdout
    assert (f"bash {ROOT}/inference.sh --model_dir exp/demo_voice/model --spk_id demo --test_data_dir "
            "data/demo_voice/test") in r.stdout.splitlines()
    # the model dir is an official one: official yaml names only, exactly the official files (issue 22)
    from official_layout import LOADED, check_official_dir

    check_official_dir(model, LOADED | {"spk2info.pt", "flow.encoder.fp32.zip", "flow.decoder.estimator.fp32.onnx"})


def test_unknown_training_yaml_key_stops_stage_5_in_one_line(demo_run, run_recipe, tmp_path):
    """A training yaml with an unknown key: one line naming it and the closest valid one, before anything runs."""
    cwd, _ = demo_run
    exp = cwd / "exp" / "demo_voice"
    bad = tmp_path / "bad.yaml"
    text = (cwd / "exp" / "pretrained" / "CosyVoice2-0.5B-tiny" / "cosyvoice2.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("    max_epoch: 200\n", "    max_epochz: 200\n", 1), encoding="utf-8")
    before = (exp / "llm" / "config.yaml").read_text(encoding="utf-8")
    r = run_recipe("--stage", "5", "--stop_stage", "5", "--train_config", bad, cwd=cwd)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"cosyvoice.utils.config: error: {bad}: unknown key 'max_epochz' in train_conf (the trainer does not "
                                     "read it); did you mean 'max_epoch'?"]
    assert (exp / "llm" / "config.yaml").read_text(encoding="utf-8") == before  # the finished run is untouched


def test_gpus_that_torch_does_not_see_stop_stage_5_instead_of_training_on_the_cpu(demo_run, run_recipe):
    """--gpus 99: no machine has a GPU with that id, so torch sees none; stage 5 must not fall back to the CPU (or
    to fewer GPUs) quietly, and the finished run stays as it was."""
    cwd, _ = demo_run
    exp = cwd / "exp" / "demo_voice"
    before = (exp / "llm" / "config.yaml").read_text(encoding="utf-8")
    r = run_recipe("--stage", "5", "--stop_stage", "5", "--force", "true", "--gpus", "99", cwd=cwd)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("run.sh: error: stage 5: --gpus 99 asks for 1 GPU(s), but ") and \
        line.endswith("or leave --gpus empty to train on what there is (the CPU when there is no GPU)")
    assert "CPU-only build" in line or "sees 0 of them" in line
    assert "Stage 5: train" not in r.stdout
    assert (exp / "llm" / "config.yaml").read_text(encoding="utf-8") == before


def test_pretrained_dir_missing_a_file_fails_at_once_naming_it(run_recipe, tmp_path):
    from cosyvoice.utils.pretrained import REQUIRED_FILES

    model = tmp_path / "model"
    for rel in REQUIRED_FILES:
        if rel != "campplus.onnx":
            write_text(model / rel, "x")
    r = run_recipe("--stage", "1", "--stop_stage", "4", "--pretrained_model_dir", model,
                   "--data_root", tmp_path / "data", cwd=tmp_path)
    assert r.returncode == 2
    assert "is missing 1 file(s): campplus.onnx" in r.stderr
    assert "Stage 1" not in r.stdout  # nothing ran
    assert not (tmp_path / "data").exists()


def test_stage0_reads_a_flat_folder_of_flac_ogg_and_mp3_clips(run_recipe, tmp_path):
    d = tmp_path / "D"
    for i, suffix in enumerate((".flac", ".FLAC", ".ogg", ".mp3")):
        write_wav(d / "tmp.wav", 0.8 + 0.1 * i, rate=44100)
        sf.write(d / f"bob_{i}{suffix}", *sf.read(d / "tmp.wav"))
        (d / "tmp.wav").unlink()
        write_text(d / f"bob_{i}.normalized.txt", f"clip {i}")
    data = tmp_path / "data"
    r = run_recipe("--data_dir", d, "--data_root", data, "--num_test", "1", "--stop_stage", "0")
    assert r.returncode == 0, r.stderr
    assert "is one flat folder" in r.stdout and "kept 4 utterances" in r.stdout
    wavs = dict(read_table(data / "train" / "wav.scp")) | dict(read_table(data / "test" / "wav.scp"))
    assert sorted(os.path.basename(w) for w in wavs.values()) == ["bob_0.flac", "bob_1.FLAC", "bob_2.ogg", "bob_3.mp3"]


@pytest.mark.parametrize("layout, hint", [
    ({"metadata.csv": "a_1|Hello.|Hello.\n", "wavs/a_1.wav": None}, "LJSpeech or Hugging Face audiofolder dataset: give it as --raw_pack_dir"),
    ({"wav.scp": "a_1 /x/a_1.wav\n", "text": "a_1 hi\n"}, "it looks like a Kaldi data dir"),
    ({"Hu Tao/vo/a_1.wav": None, "Hu Tao/vo/a_1.lab": "hi"}, "a raw character pack is read with --raw_pack_dir"),
    ({"alice/alice_1.wav": None, "alice/alice_1.normalized.txt": "hi", "bob/bob_1.wav": None,
      "bob/bob_1.normalized.txt": "hi"}, "its folders hold pairs: give each one as a dataset of its own, all of them "
                                         "with --data_dir \"{d}/*\""),
])
def test_stage0_names_the_layout_of_a_folder_that_holds_no_pairs(run_recipe, tmp_path, layout, hint):
    d = tmp_path / "D"
    for name, text in layout.items():
        if text is None:
            write_wav(d / name, 0.7)
        else:
            write_text(d / name, text)
    r = run_recipe("--data_dir", d, "--data_root", tmp_path / "data", "--stop_stage", "0")
    assert r.returncode == 2
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"run.sh: error: stage 0: {d} holds neither train/ and test/ folders nor")
    assert hint.format(d=d) in line
