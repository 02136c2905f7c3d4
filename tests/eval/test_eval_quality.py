"""Data quality report: clipping, loudness, speaking rate and speaker outliers on crafted clips; --drop_flagged."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cosyvoice.eval import quality as Q
from eval_helpers import load_tool, tone, write_data_dir, write_wav

NORMAL_TEXT = "今天天气很好啊"  # 7 syllables in 2 s


def test_clipped_ratio_counts_runs_at_full_scale():
    x = np.zeros(1000, np.float32)
    x[10:20] = 1.0      # a run of 10: clipped
    x[100] = -1.0       # a lone full-scale sample: a peak, not clipping
    x[200:202] = 1.0    # a run of 2: not counted
    assert Q.clipped_ratio(x) == pytest.approx(10 / 1000)
    stereo = np.stack([x, np.zeros_like(x)], axis=1)
    assert Q.clipped_ratio(stereo) == pytest.approx(10 / 2000)


def test_active_loudness_ignores_silence():
    sine = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert Q.active_loudness_db(sine, 16000) == pytest.approx(-3.01, abs=0.05)
    padded = np.concatenate([np.zeros(8000), sine, np.zeros(8000)])
    assert Q.active_loudness_db(padded, 16000) == pytest.approx(-3.01, abs=0.05)
    assert Q.active_loudness_db(np.zeros(1600), 16000) == float("-inf")


def test_syllable_estimates():
    assert Q.syllable_count("The quick brown fox jumps over the lazy dog.") == 11
    assert Q.syllable_count("我们周末去 shopping 吧。") == 8
    assert Q.syllable_count("My favorite season is autumn, 10 days.") == 12


@pytest.fixture
def crafted_dir(tmp_path):
    """8 clips of speaker s1: 4 fine, one clipped, one very quiet, one too fast for its text, one other voice."""
    rng = np.random.default_rng(0)
    voice = rng.standard_normal(192)
    utts, emb = {}, {}
    for i in range(8):
        utt = f"s1_{i:02d}"
        wav, text = tone(2.0, 200 + 10 * i, seed=i), NORMAL_TEXT
        if i == 4:
            wav = np.sign(tone(2.0, 200, seed=i)).astype(np.float32)   # square wave at full scale
        if i == 5:
            wav = tone(2.0, 200, amp=0.002, seed=i)                    # about -57 dBFS
        if i == 6:
            text = NORMAL_TEXT * 5                                     # 35 syllables in 2 s
        emb[utt] = (voice + 0.05 * rng.standard_normal(192) if i != 7 else rng.standard_normal(192)).tolist()
        utts[utt] = (write_wav(tmp_path / "wavs" / f"{utt}.wav", wav), text, "s1")
    d = write_data_dir(tmp_path / "train", utts)
    (d / "utt2dur").write_text("".join(f"{u} 2.0\n" for u in sorted(utts)))
    torch.save(emb, d / "utt2embedding.pt")
    torch.save({"s1": np.mean(list(emb.values()), axis=0).tolist()}, d / "spk2embedding.pt")
    return d


EXPECTED = {"s1_04": ["clipping"], "s1_05": ["low_loudness"], "s1_06": ["rate_high"], "s1_07": ["speaker_outlier"]}


def test_report_flags_exactly_the_crafted_problems(crafted_dir):
    tool = load_tool("data_quality")
    assert tool.main(["--data_dir", str(crafted_dir)]) == 0
    lines = (crafted_dir / "quality.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == list(Q.TSV_COLUMNS)
    rows = {line.split("\t")[0]: dict(zip(Q.TSV_COLUMNS, line.split("\t"))) for line in lines[1:]}
    assert sorted(rows) == [f"s1_{i:02d}" for i in range(8)]
    assert {u: r["flags"].split(",") for u, r in rows.items() if r["flags"] != "-"} == EXPECTED
    assert float(rows["s1_00"]["duration"]) == pytest.approx(2.0)
    assert float(rows["s1_00"]["sps"]) == pytest.approx(3.5)
    assert float(rows["s1_04"]["clip_ratio"]) > 0.5
    assert float(rows["s1_05"]["loudness_db"]) < -50
    assert float(rows["s1_06"]["sps_z"]) > 3.5
    assert float(rows["s1_07"]["spk_dist"]) > 0.5 > float(rows["s1_00"]["spk_dist"])
    summary = json.loads((crafted_dir / "quality_summary.json").read_text())
    assert summary["flagged_utts"] == EXPECTED and summary["utterances"] == 8
    assert summary["flag_counts"] == {"rate_high": 1, "rate_low": 0, "clipping": 1, "low_loudness": 1,
                                      "speaker_outlier": 1, "unreadable": 0}
    assert (crafted_dir / "flagged.tsv").read_text().splitlines() == [f"{u}\t{f[0]}" for u, f in EXPECTED.items()]
    assert not (crafted_dir.parent / "train_filtered").exists()


def test_drop_flagged_writes_a_filtered_data_dir(crafted_dir, tmp_path):
    tool = load_tool("data_quality")
    out = tmp_path / "train_kept"
    assert tool.main(["--data_dir", str(crafted_dir), "--drop_flagged", "true", "--out_dir", str(out)]) == 0
    kept = [f"s1_{i:02d}" for i in range(4)]
    for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
        assert [line.split(" ")[0] for line in (out / name).read_text().splitlines()] == kept
    assert (out / "spk2utt").read_text() == "s1 " + " ".join(kept) + "\n"
    utt2emb = torch.load(out / "utt2embedding.pt")
    assert sorted(utt2emb) == kept
    np.testing.assert_allclose(torch.load(out / "spk2embedding.pt")["s1"],
                               np.mean([utt2emb[u] for u in kept], axis=0), rtol=1e-5, atol=1e-6)
    assert (out / "dropped.tsv").read_text().splitlines() == [f"{u}\t{f[0]}" for u, f in EXPECTED.items()]
    validate = load_tool("validate_data_dir")
    assert validate.validate_data_dir(out) == {"utterances": 4, "speakers": 1}


def test_missing_embeddings_name_stage_1(crafted_dir, capsys):
    (crafted_dir / "utt2embedding.pt").unlink()
    tool = load_tool("data_quality")
    assert tool.main(["--data_dir", str(crafted_dir)]) == 2
    err = capsys.readouterr().err
    assert f"required file {crafted_dir / 'utt2embedding.pt'} is missing; run stage 1" in err
    assert tool.main(["--data_dir", str(crafted_dir), "--no_speaker_check"]) == 0
    summary = json.loads((crafted_dir / "quality_summary.json").read_text())
    assert "speaker_outlier" not in {f for fl in summary["flagged_utts"].values() for f in fl}
    assert summary["not_judged"] == ["speaker outliers (no utt2embedding.pt / spk2embedding.pt: run stage 1 first)"]


def test_nothing_left_is_an_error(crafted_dir, capsys):
    tool = load_tool("data_quality")
    assert tool.main(["--data_dir", str(crafted_dir), "--drop_flagged", "true", "--min_loudness_db", "0"]) == 2
    assert "every utterance of" in capsys.readouterr().err


def test_small_groups_are_not_judged():
    rows = Q.assess({}, {}, {})
    assert rows == []
    r = [Q.UttQuality(utt=f"u{i}", spk="s", lang="zh", sps=3.0 * (1 + 5 * (i == 0))) for i in range(4)]
    Q.judge_speaking_rate(r, Q.QualityThresholds())
    assert all(x.sps_z is None and not x.flags for x in r)
    assert math.isclose(Q.robust_z([1.0, 1.0, 1.0, 2.0], 0.5)[3], 1 / (1.4826 * 0.5))
