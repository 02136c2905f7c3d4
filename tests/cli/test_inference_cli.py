"""inference.sh and cosyvoice.bin.inference: the shipped text json, prompt selection from a data dir, the job
plan, input errors that leave nothing behind, and one end-to-end run of inference.sh in every mode."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess

import pytest
import soundfile as sf

from cli_helpers import PROMPT_TEXT
from cosyvoice.bin import inference as cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINES = {"sft_inference": ["你好"], "zero-shot": ["你好"], "cross-lingual": ["Hi."],
         "instruction-zero-shot": {"instruction": "用开心的语气说", "text": ["你好"]}}


@pytest.fixture()
def text_json(tmp_path):
    path = tmp_path / "tts_text.json"
    path.write_text(json.dumps({"demo": LINES}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture()
def pair_dir(tmp_path, prompt_wav):
    d = tmp_path / "test_pairs"
    d.mkdir()
    for utt in ("demo_0002", "demo_0001"):
        os.symlink(prompt_wav, d / f"{utt}.wav")
        (d / f"{utt}.normalized.txt").write_text(f"{PROMPT_TEXT} {utt}\n", encoding="utf-8")
    return d


def test_shipped_text_json_matches_the_demo_speaker():
    spk, jobs = cli.load_text_json(os.path.join(ROOT, "local", "tts_text.json"), "")
    demo_speakers = {name.split("_")[0] for name in os.listdir(os.path.join(ROOT, "local", "demo_voice", "train"))}
    assert spk == "demo" and demo_speakers == {"demo"}
    assert list(jobs) == ["sft", "zero-shot", "cross-lingual", "instruct"]
    assert all(len(jobs[m]) >= 1 for m in jobs)
    assert jobs["instruct"][0].instruction == "用开心的语气说"
    assert jobs["zero-shot"][1].name == "zero-shot_01.wav"


def test_prompt_from_pair_folder_and_kaldi_dir(tmp_path, pair_dir, prompt_wav):
    args = cli.get_args(["--model_dir", "m", "--text_json", "t", "--result_dir", "r", "--test_data_dir", str(pair_dir)])
    assert cli.resolve_prompt(args) == (str(pair_dir / "demo_0001.wav"), f"{PROMPT_TEXT} demo_0001")
    args.example_id = "demo_0002"
    assert cli.resolve_prompt(args) == (str(pair_dir / "demo_0002.wav"), f"{PROMPT_TEXT} demo_0002")
    args.prompt_text = "given"
    assert cli.resolve_prompt(args)[1] == "given"

    flac = tmp_path / "flac"  # a pair folder of other audio formats stage 0 reads
    flac.mkdir()
    (pair_dir / "demo_0002.wav").rename(flac / "demo_0002.FLAC")
    (pair_dir / "demo_0002.normalized.txt").rename(flac / "demo_0002.normalized.txt")
    args = cli.get_args(["--model_dir", "m", "--text_json", "t", "--result_dir", "r", "--test_data_dir", str(flac)])
    assert cli.resolve_prompt(args) == (str(flac / "demo_0002.FLAC"), f"{PROMPT_TEXT} demo_0002")

    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"utt_a {prompt_wav}\nutt_b {prompt_wav}\n")  # a valid (sorted) table
    (kaldi / "text").write_text("utt_a 你好 世界\nutt_b hello\n")
    args = cli.get_args(["--model_dir", "m", "--text_json", "t", "--result_dir", "r", "--test_data_dir", str(kaldi)])
    assert cli.resolve_prompt(args) == (str(prompt_wav), "你好 世界")
    args.example_id = "utt_c"
    with pytest.raises(cli.InputError, match="--example_id utt_c not in .*kaldi \\(e.g. utt_a, utt_b\\)"):
        cli.resolve_prompt(args)


def test_plan_all_skips_sft_without_the_speaker(text_json, caplog):
    _, jobs = cli.load_text_json(str(text_json), "")
    with caplog.at_level(logging.WARNING, logger="inference"):
        plan = cli.plan_jobs("all", jobs, "demo", [], str(text_json))
    assert [j.mode for j in plan] == ["zero-shot", "cross-lingual", "instruct"]
    assert "skipping sft: the model dir's spk2info.pt has no speaker 'demo' (known: none)" in caplog.text
    assert [j.mode for j in cli.plan_jobs("all", jobs, "demo", ["demo"], str(text_json))][0] == "sft"
    with pytest.raises(cli.InputError, match="^unknown speaker 'demo' for sft; the model dir knows: other"):
        cli.plan_jobs("sft", jobs, "demo", ["other"], str(text_json))


@pytest.mark.parametrize("extra, message", [
    (["--prompt_wav", "/nonexistent/p.wav"], "prompt wav not found: /nonexistent/p.wav"),
    (["--spk_id", "alice", "--text_json", "TWO"], "speaker 'alice' not in .*two.json \\(it has: bob, carol\\); add a "
                                                  "section for it or a 'default' one"),
    (["--stream", "true", "--speed", "1.5"], "--speed 1.5: must be > 0, and 1.0 when --stream true"),
    (["--prompt_text", ""], "zero-shot needs the prompt's transcript: give --prompt_text"),
    (["--mode", "instruct", "--text_json", "EMPTY"], "speaker 'demo' has no 'instruction-zero-shot' lines"),
    ([], "pretrained model dir /nonexistent/model does not exist"),  # checked last, before loading anything
])
def test_bad_input_writes_nothing(tmp_path, text_json, prompt_wav, capsys, extra, message):
    result_dir = tmp_path / "out"
    empty_json = tmp_path / "empty.json"
    empty_json.write_text(json.dumps({"demo": {"zero-shot": ["x"]}}))
    two_json = tmp_path / "two.json"
    two_json.write_text(json.dumps({"bob": {"zero-shot": ["x"]}, "carol": {"zero-shot": ["y"]}}))
    argv = ["--model_dir", "/nonexistent/model", "--text_json", str(text_json), "--result_dir", str(result_dir),
            "--prompt_wav", str(prompt_wav), "--prompt_text", PROMPT_TEXT]
    argv += [{"EMPTY": str(empty_json), "TWO": str(two_json)}.get(a, a) for a in extra]  # the later option wins
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("inference.py: error: ")
    assert re.search(message, err[0]), err[0]
    assert not result_dir.exists()


def test_a_speaker_without_a_section_speaks_the_default_or_only_one(tmp_path):
    only = tmp_path / "only.json"
    only.write_text(json.dumps({"demo": {"zero-shot": ["x"]}}))
    spk, jobs = cli.load_text_json(str(only), "alice")
    assert spk == "alice" and [j.text for j in jobs["zero-shot"]] == ["x"]
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"bob": {"zero-shot": ["b"]}, "default": {"sft_inference": ["d"]}}))
    spk, jobs = cli.load_text_json(str(both), "alice")
    assert spk == "alice" and list(jobs) == ["sft"] and jobs["sft"][0].text == "d"
    assert cli.load_text_json(str(both), "bob")[1]["zero-shot"][0].text == "b"


def test_text_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"demo": {"zero_shot": ["x"]}}))
    with pytest.raises(cli.InputError, match="unknown key\\(s\\): zero_shot"):
        cli.load_text_json(str(bad), "")
    bad.write_text(json.dumps({"a": {}, "b": {}}))
    with pytest.raises(cli.InputError, match="has several speakers \\(a, b\\): choose one with --spk_id"):
        cli.load_text_json(str(bad), "")
    bad.write_text(json.dumps({"demo": {"instruction-zero-shot": {"text": "x"}}}))
    with pytest.raises(cli.InputError, match='instruction-zero-shot must be {"instruction": ..., "text": ...}'):
        cli.load_text_json(str(bad), "")
    with pytest.raises(cli.InputError, match="text json not found: .*nope.json"):
        cli.load_text_json(str(tmp_path / "nope.json"), "")


def test_inference_sh_help_and_bad_option():
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--mode MODE               sft | zero-shot | cross-lingual | instruct | all" in r.stdout
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--mode", "karaoke"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "inference.sh: error: --mode must be sft, zero-shot, cross-lingual, instruct or all, got 'karaoke'" \
        in r.stderr
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--fp16", "yes"], capture_output=True, text=True)
    assert r.returncode == 2 and "inference.sh: option --fp16 takes true or false, got 'yes'" in r.stderr


def test_inference_sh_all_modes(tmp_path, model_dir, text_json, pair_dir):
    """One end-to-end run: every mode, streaming, prompt taken from a pair folder, run from another directory."""
    result_dir = tmp_path / "results"
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--mode", "all", "--model_dir", str(model_dir),
                        "--text_json", str(text_json), "--test_data_dir", str(pair_dir), "--result_dir",
                        str(result_dir), "--stream", "true", "--seed", "7", "--fp16", "true"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("\t") for line in (result_dir / "index.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["file", "mode", "chunks", "duration", "rtf", "text"]
    assert [(row[0], row[1], row[5]) for row in rows[1:]] == [
        ("sft_00.wav", "sft", "你好"), ("zero-shot_00.wav", "zero-shot", "你好"),
        ("cross-lingual_00.wav", "cross-lingual", "Hi."), ("instruct_00.wav", "instruct", "你好")]
    for name, _, chunks, duration, rtf, _ in rows[1:]:
        info = sf.info(result_dir / name)
        assert info.samplerate == 24000 and info.channels == 1
        assert info.frames % 960 == 0 and info.frames > 0  # whole speech tokens: 2 mel frames x 480 samples
        assert abs(info.frames / 24000 - float(duration)) < 1e-3
        assert int(chunks) >= 1 and float(rtf) > 0
    assert sorted(os.listdir(result_dir)) == sorted([row[0] for row in rows[1:]] + ["index.tsv"])
    assert f"prompt: demo_0001 ({pair_dir}/demo_0001.wav) '{PROMPT_TEXT} demo_0001'" in r.stderr
    assert "no CUDA device: fp16 is ignored, running in float32" in r.stderr


def test_inference_sh_speaks_one_command_line_text_beside_the_json_results(tmp_path, model_dir, pair_dir):
    """--text: the line in every mode (instruct with --instruction), into <exp_dir>/inference/text by default."""
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--model_dir", str(model_dir), "--text", "旅行者，走吧",
                        "--instruction", "用开心的语气说", "--test_data_dir", str(pair_dir)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result_dir = model_dir.parent / "inference" / "text"
    rows = [line.split("\t") for line in (result_dir / "index.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert [(row[0], row[5]) for row in rows] == [(f"{m}_00.wav", "旅行者，走吧")
                                                  for m in ("sft", "zero-shot", "cross-lingual", "instruct")]
    assert sorted(os.listdir(result_dir)) == sorted([row[0] for row in rows] + ["index.tsv"])
    assert f"Synthesis (all): '旅行者，走吧' with {model_dir} -> {result_dir}/" in r.stdout


@pytest.mark.parametrize("argv, message", [
    (["--text", "  "], "--text is empty: give the line to speak"),
    ([], "give the lines to speak: --text_json FILE, --text LINE or --text_file FILE"),
    (["--text_json", "t.json", "--instruction", "x"], "--instruction goes with --text or --text_file"),
    (["--text", "hi", "--text_file", "f.txt"], "give --text LINE or --text_file FILE, not both"),
    (["--text_file", "f.txt", "--mode", "instruct"], "--mode instruct with --text_file needs --instruction"),
    (["--text", "hi", "--mode", "sft", "--instruction", "x"], "--instruction is for --mode instruct (or all), not sft"),
    (["--text", "hi", "--mode", "instruct"], "--mode instruct with --text needs --instruction"),
])
def test_command_line_text_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.get_args(["--model_dir", "m", "--result_dir", "r", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_command_line_text_jobs():
    assert [(j.mode, j.name, j.text, j.instruction) for js in cli.text_jobs(" 你好 ", "", "all").values() for j in js] \
        == [("sft", "sft_00.wav", "你好", ""), ("zero-shot", "zero-shot_00.wav", "你好", ""),
            ("cross-lingual", "cross-lingual_00.wav", "你好", "")]
    assert [(j.mode, j.instruction) for j in cli.text_jobs("你好", "慢一点", "instruct")["instruct"]] == [
        ("instruct", "慢一点")]
    with pytest.raises(cli.InputError, match="sft needs a speaker and the model dir has none"):
        cli.plan_jobs("sft", cli.text_jobs("你好", "", "sft"), "", [], "--text")
    with pytest.raises(cli.InputError, match="sft needs a speaker: give --spk_id \\(the model dir knows: a, b\\)"):
        cli.plan_jobs("sft", cli.text_jobs("你好", "", "sft"), "", ["a", "b"], "--text")


def test_inference_sh_speaks_every_line_of_a_text_file_into_a_folder_of_its_name(tmp_path, model_dir, pair_dir):
    """--text_file script.txt: each non-blank line (UTF-8, a byte-order mark dropped) in --mode, into
    <exp_dir>/inference/script/, numbered in file order, with its text in index.tsv."""
    script = tmp_path / "script.txt"
    script.write_bytes("\ufeff旅行者，走吧\n\n  今天天气很好。  \r\nPaimon is hungry.\n".encode("utf-8"))
    r = subprocess.run(["bash", os.path.join(ROOT, "inference.sh"), "--model_dir", str(model_dir), "--text_file",
                        str(script), "--mode", "zero-shot", "--test_data_dir", str(pair_dir)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result_dir = model_dir.parent / "inference" / "script"
    rows = [line.split("\t") for line in (result_dir / "index.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert [(row[0], row[5]) for row in rows] == [("zero-shot_00.wav", "旅行者，走吧"),
                                                  ("zero-shot_01.wav", "今天天气很好。"),
                                                  ("zero-shot_02.wav", "Paimon is hungry.")]
    assert sorted(os.listdir(result_dir)) == sorted([row[0] for row in rows] + ["index.tsv"])
    assert f"Synthesis (zero-shot): {script} with {model_dir} -> {result_dir}/" in r.stdout


class UnnormalizedModel:
    """Stands in for a CosyVoice2 in check_texts: its front end leaves every text as it is."""

    class frontend:  # noqa: N801 - the attribute name of CosyVoice2
        @staticmethod
        def text_normalize(text, split, text_frontend):
            return [text]


def test_a_bad_text_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(cli.InputError, match=re.escape(f"text file not found: {tmp_path}/none.txt")):
        cli.read_text_file(str(tmp_path / "none.txt"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("hello\nwie geht's, Jürgen?\n".encode("latin-1"))
    with pytest.raises(cli.InputError, match=re.escape(f"{latin} line 2 is not UTF-8: save the file as UTF-8")):
        cli.read_text_file(str(latin))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(cli.InputError, match=re.escape(f"{blank} holds no line to speak")):
        cli.read_text_file(str(blank))
    lines = tmp_path / "lines.txt"
    lines.write_text("你好\n\n{NICKNAME}，你好。\n", encoding="utf-8")
    assert cli.read_text_file(str(lines)) == [(f"{lines} line 1", "你好"), (f"{lines} line 3", "{NICKNAME}，你好。")]

    jobs = cli.text_jobs(cli.read_text_file(str(lines)), "", "sft")["sft"]
    assert [(j.name, j.text) for j in jobs] == [("sft_00.wav", "你好"), ("sft_01.wav", "{NICKNAME}，你好。")]
    with pytest.raises(cli.InputError, match=re.escape(f"{lines} line 3 ('{{NICKNAME}}，你好。') holds template "
                                                       "variable '{NICKNAME}'")):
        cli.check_texts(UnnormalizedModel(), jobs, True)


def test_markup_in_a_line_is_refused_before_synthesis(tmp_path):
    ok = cli.Job("sft", 0, "[breath]你好<strong>世界</strong>")
    cli.check_texts(UnnormalizedModel(), [ok], True)  # CosyVoice's own control tags are fine
    for text, what in (("{NICKNAME}，你好。", "template variable '{NICKNAME}'"),
                       ("<color=#FFD780FF>小心</color>", "markup '<color=#FFD780FF>'")):
        with pytest.raises(cli.InputError, match=re.escape(f"sft line 0 ({text!r}) holds {what}")):
            cli.check_texts(UnnormalizedModel(), [cli.Job("sft", 0, text)], True)
