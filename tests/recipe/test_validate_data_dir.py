"""tools/validate_data_dir.py: sorted, unique, consistent Kaldi tables."""
from __future__ import annotations

import subprocess
import sys

import pytest

from recipe_helpers import ROOT, write_wav
from cosyvoice.dataset.datadir import DataDirError, validate_data_dir


def make_dir(tmp_path, utts=("a_1", "a_2", "b_1")):
    d = tmp_path / "data"
    d.mkdir()
    wavs = {u: write_wav(tmp_path / "wav" / f"{u}.wav", 0.6) for u in utts}
    (d / "wav.scp").write_text("".join(f"{u} {wavs[u]}\n" for u in utts))
    (d / "text").write_text("".join(f"{u} text of {u}\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in utts))
    spk2utt = {}
    for u in utts:
        spk2utt.setdefault(u.split("_")[0], []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in spk2utt.items()))
    return d


def test_a_good_dir_passes(tmp_path):
    assert validate_data_dir(make_dir(tmp_path)) == {"utterances": 3, "speakers": 2}


def edit(path, old, new):
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: edit(d / "text", "a_1 text of a_1\na_2 text of a_2\n", "a_2 text of a_2\na_1 text of a_1\n"),
         "text line 2: 'a_1' comes after 'a_2'; tables must be sorted in byte order"),
        (lambda d: edit(d / "text", "a_2 text of a_2", "a_1 again"), "text line 2: duplicate key 'a_1'"),
        (lambda d: edit(d / "text", "b_1 text of b_1\n", ""), "text: utterance 'b_1' from wav.scp is missing"),
        (lambda d: edit(d / "utt2spk", "b_1 b\n", "b_1 b\nc_1 c\n"), "utt2spk: utterance 'c_1' is not in wav.scp"),
        (lambda d: edit(d / "spk2utt", "a a_1 a_2", "a a_1"), "spk2utt: speaker 'a' lists ['a_1'] but utt2spk gives"),
        (lambda d: edit(d / "utt2spk", "b_1 b", "b_1 a"), "spk2utt: speaker 'a' lists ['a_1', 'a_2'] but utt2spk"),
        (lambda d: edit(d / "text", "text of a_2", ""), "text line 2: expected '<key> <value>'"),
        (lambda d: edit(d / "text", "\n", "\r\n"), "text line 1: carriage return"),
        (lambda d: (d / "text").write_bytes(b"a_1 caf\xe9\n"), "text line 1: not valid UTF-8"),
        (lambda d: (d / "spk2utt").unlink(), "spk2utt: missing"),
        (lambda d: edit(d / "wav.scp", "wav/a_1.wav", "wav/gone.wav"), "wav.scp: audio of 'a_1' not found"),
    ],
)
def test_corrupt_tables_are_caught(tmp_path, corrupt, message):
    d = make_dir(tmp_path)
    corrupt(d)
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d)
    assert message in str(e.value)


def test_byte_order_not_locale_order(tmp_path):
    # Locale-aware sorting puts 'a_1' before 'B_1'; byte order (LC_ALL=C) puts 'B_1' first.
    d = make_dir(tmp_path, utts=("a_1", "B_1"))
    with pytest.raises(DataDirError, match="'B_1' comes after 'a_1'"):
        validate_data_dir(d)


def test_non_ascii_ids_sorted_by_utf8_bytes(tmp_path):
    d = make_dir(tmp_path, utts=("z_1", "é_1", "中_1"))
    assert validate_data_dir(d) == {"utterances": 3, "speakers": 3}


def test_command_line_exit_codes_and_messages(tmp_path):
    d = make_dir(tmp_path)
    tool = str(ROOT / "tools" / "validate_data_dir.py")
    ok = subprocess.run([sys.executable, tool, str(d)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == f"validate_data_dir.py: {d} OK (3 utterances, 2 speaker(s))\n"
    edit(d / "text", "a_2 text", "a_2  text")
    bad = subprocess.run([sys.executable, tool, str(d)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"validate_data_dir.py: error: {d / 'text'} line 2: expected '<key> <value>'")
