"""Each data pipeline stage on its own, on tiny parquet files."""
from __future__ import annotations

import io
import math
import random
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from cosyvoice.dataset import processor as P

from dataset_helpers import (EMB_DIM, UTTS_A, UTTS_B, FakePyworld, FakeTokenizer, fake_mel, make_row, sine_wav_bytes,
                       write_parquet)


def opened(data_list):
    srcs = data_list.read_text().split()
    return list(P.parquet_opener(iter([{"src": s, "rank": 0} for s in srcs])))


def decoded(data_list, **filter_kw):
    samples = P.tokenize(iter(opened(data_list)), FakeTokenizer, "all")
    kw = dict(max_length=6000, min_length=0, token_max_length=200, token_min_length=1)
    kw.update(filter_kw)
    return list(P.filter(samples, **kw))


def featurised(data_list, sr=24000):
    samples = P.resample(iter(decoded(data_list)), resample_rate=sr)
    samples = P.compute_fbank(samples, fake_mel, num_frames=960)
    return list(P.parse_embedding(samples, normalize=True))


def test_parquet_opener_yields_rows_with_the_source_keys(parquet_lists):
    rows = opened(parquet_lists)
    assert [r["utt"] for r in rows] == list(UTTS_A) + list(UTTS_B)
    assert rows[0]["src"].endswith("a.parquet") and rows[3]["src"].endswith("b.parquet")
    assert rows[0]["rank"] == 0
    assert isinstance(rows[0]["audio_data"], bytes)
    assert len(rows[0]["utt_embedding"]) == EMB_DIM
    assert len(rows[1]["speech_token"]) == int(UTTS_A["a2"][0] * 25)
    assert rows[0] is not rows[1]


def test_parquet_opener_names_a_missing_file(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(OSError, match=f"^parquet shard {missing} not found \\(it is listed in data.list\\): rerun "
                                      f"stage 3 \\(tools/make_parquet_list.py\\) for its data dir$"):
        list(P.parquet_opener(iter([{"src": str(missing)}])))


def test_tokenize_calls_get_tokenizer_once_and_encodes_instruct():
    made = []

    def get_tokenizer():
        made.append(FakeTokenizer())
        return made[-1]

    samples = [{"utt": "x", "text": "ab"}, {"utt": "y", "text": "c", "instruct": "hi"}]
    out = list(P.tokenize(iter(samples), get_tokenizer, "all"))
    assert len(made) == 1
    assert out[0]["text_token"] == [ord("a") % 95 + 1, ord("b") % 95 + 1]
    assert "instruct_token" not in out[0]
    assert out[1]["instruct_token"] == [ord("h") % 95 + 1, ord("i") % 95 + 1]


def test_filter_decodes_audio_to_mono_float(parquet_lists):
    samples = decoded(parquet_lists)
    a1 = samples[0]
    assert "audio_data" not in a1
    assert a1["sample_rate"] == 16000
    assert a1["speech"].shape == (1, round(0.6 * 16000)) and a1["speech"].dtype == torch.float32
    assert abs(a1["speech"].abs().max().item() - 0.5) < 1e-3


def test_filter_averages_stereo_channels(tmp_path):
    rng = np.random.default_rng(1)
    row = make_row("st", 0.5, 16000, "stereo", rng, audio_data=sine_wav_bytes(0.5, 16000, channels=2))
    write_parquet(tmp_path / "s.parquet", [row])
    (tmp_path / "l").write_text(f"{tmp_path / 's.parquet'}\n")
    (s,) = decoded(tmp_path / "l")
    assert s["speech"].shape == (1, 8000)
    assert abs(s["speech"].abs().max().item() - 0.75 * 0.5) < 1e-3


def test_filter_decodes_flac_bytes_to_the_samples_of_the_wav(tmp_path):
    rng = np.random.default_rng(2)
    wav_bytes = sine_wav_bytes(0.5, 24000)
    samples, sr = sf.read(io.BytesIO(wav_bytes), dtype="int16")
    flac = io.BytesIO()
    sf.write(flac, samples, sr, format="FLAC")  # what `ffmpeg -i x.wav x.flac` makes: the same 16-bit samples
    # stage 0 reads .flac clips; their parquet rows hold the .flac bytes
    rows = [make_row(f"u{i}", 0.5, 24000, "x", rng, audio_data=data)
            for i, data in enumerate((wav_bytes, flac.getvalue()))]
    write_parquet(tmp_path / "s.parquet", rows)
    (tmp_path / "l").write_text(f"{tmp_path / 's.parquet'}\n")
    wav, flac = decoded(tmp_path / "l")
    assert rows[0]["audio_data"] != rows[1]["audio_data"] and flac["sample_rate"] == 24000
    assert torch.equal(wav["speech"], flac["speech"])


def test_filter_length_rules(parquet_lists):
    def kept(**kw):
        return [s["utt"] for s in decoded(parquet_lists, **kw)]

    assert kept() == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert kept(min_length=50) == ["a1", "a2", "a3", "b1", "b2"]            # b3 is 0.4 s = 40 frames
    assert kept(max_length=150) == ["a1", "a2", "b1", "b3"]                 # a3 (210), b2 (170) too long
    assert kept(token_max_length=11) == ["a1", "b1", "b3"]                  # 'good morning to you' = 19 chars
    assert kept(token_min_length=4) == ["a1", "a2", "a3", "b1", "b2"]       # 'yes' = 3 tokens
    # text tokens per 10 ms frame: a1 11/60, b3 3/40 = 0.075
    assert kept(min_output_input_ratio=0.08) == ["a1", "a2", "a3", "b1", "b2"]
    assert kept(max_output_input_ratio=0.15) == ["a2", "a3", "b1", "b2", "b3"]


def test_filter_drops_empty_speech_token_and_names_a_missing_one(tmp_path):
    rng = np.random.default_rng(2)
    rows = [make_row("ok", 0.5, 16000, "fine", rng), make_row("empty", 0.5, 16000, "none", rng, n_tokens=0),
            make_row("gone", 0.5, 16000, "none", rng, speech_token=None)]
    write_parquet(tmp_path / "t.parquet", rows)
    (tmp_path / "l").write_text(f"{tmp_path / 't.parquet'}\n")
    samples = P.filter(P.tokenize(iter(opened(tmp_path / "l")), FakeTokenizer, "all"), min_length=0)
    assert next(samples)["utt"] == "ok"
    with pytest.raises(KeyError, match="utt 'gone' .*has no speech_token; run the speech-token stage"):
        next(samples)


def test_resample_to_24k_length_and_rate(parquet_lists):
    samples = list(P.resample(iter(decoded(parquet_lists)), resample_rate=24000))
    for s in samples:
        seconds, sr, _ = (UTTS_A | UTTS_B)[s["utt"]]
        assert s["sample_rate"] == 24000
        assert s["speech"].shape == (1, round(seconds * sr) * 24000 // sr)  # whole numbers of samples here
    a2 = samples[1]["speech"][0]
    # still a 220 Hz sine at 24 kHz: strongest FFT bin at 220 Hz
    spectrum = np.abs(np.fft.rfft(a2.numpy()))
    assert abs(np.argmax(spectrum) * 24000 / a2.numel() - 220) < 1.0


def test_resample_odd_lengths_are_the_official_ceiling():
    for n, sr, expected in [(12345, 16000, 18518), (16001, 16000, 24002), (9999, 44100, 5442), (7, 22050, 8),
                            (175930, 22050, 191489)]:
        s = {"utt": "x", "speech": torch.zeros(1, n), "sample_rate": sr}
        (out,) = P.resample(iter([s]), resample_rate=24000)
        assert out["speech"].dtype == torch.float32
        assert out["speech"].shape == (1, expected) and expected == math.ceil(n * 24000 / sr)


def test_resample_drops_low_rate_and_normalises_peak():
    low = {"utt": "low", "speech": torch.zeros(1, 800), "sample_rate": 8000}
    loud = {"utt": "loud", "speech": torch.tensor([[0.5, -4.0, 2.0]]), "sample_rate": 24000}
    out = list(P.resample(iter([low, loud]), resample_rate=24000))
    assert [s["utt"] for s in out] == ["loud"]
    assert torch.equal(out[0]["speech"], torch.tensor([[0.125, -1.0, 0.5]]))


def test_truncate_cuts_randomly_and_pads_with_zeros():
    wav = torch.arange(100, dtype=torch.float32).view(1, 100)
    runs = []
    for _ in range(2):
        rng = random.Random(7)
        out = list(P.truncate(iter([{"speech": wav, "rng": rng} for _ in range(5)]), truncate_length=30))
        runs.append([int(s["speech"][0, 0]) for s in out])
        for s in out:
            start = int(s["speech"][0, 0])
            assert torch.equal(s["speech"], wav[:, start:start + 30])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    (short,) = P.truncate(iter([{"speech": wav[:, :10]}]), truncate_length=30)
    assert short["speech"].shape == (1, 30)
    assert torch.equal(short["speech"][:, :10], wav[:, :10]) and short["speech"][:, 10:].abs().sum() == 0


def test_compute_fbank_pads_speech_to_whole_tokens(parquet_lists):
    samples = featurised(parquet_lists)
    for s in samples:
        seconds, sr, _ = (UTTS_A | UTTS_B)[s["utt"]]
        n = round(seconds * sr) * 24000 // sr
        padded = math.ceil(n / 960) * 960
        assert s["speech"].shape == (1, padded)
        assert s["speech"][0, n:].abs().sum() == 0
        assert s["speech_feat"].shape == (padded // 480, 80)
    (raw,) = P.compute_fbank(iter([{"speech": torch.ones(1, 1000), "sample_rate": 24000}]), fake_mel)
    assert raw["speech"].shape == (1, 1000) and raw["speech_feat"].shape == (2, 80)


def test_compute_whisper_fbank(fake_features):
    s = {"utt": "w", "speech": 0.1 * torch.ones(1, 1920), "sample_rate": 24000}
    (out,) = P.compute_whisper_fbank(iter([s]), num_frames=960)
    assert out["speech_16k"].shape == (1, 1280)
    assert out["whisper_feat"].shape == (8, 128)
    bad = {"utt": "bad", "speech": torch.ones(1, 1000), "sample_rate": 24000}
    with pytest.raises(ValueError, match="speech of utt 'bad' is not aligned with speech_token"):
        list(P.compute_whisper_fbank(iter([bad]), num_frames=960))


def test_compute_f0_without_pyworld_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworld", None)
    with pytest.raises(ImportError, match=r"^compute_f0 needs pyworld for vocoder GAN training: pip install pyworld$"):
        list(P.compute_f0(iter([]), sample_rate=24000, hop_size=480))


@pytest.mark.parametrize("harvest_fails,value,calls", [(False, 100.0, ["harvest", "stonemask"]),
                                                        (True, 200.0, ["harvest", "dio", "stonemask"])])
def test_compute_f0_interpolates_to_feature_length(monkeypatch, harvest_fails, value, calls):
    fake = FakePyworld(harvest_fails)
    monkeypatch.setitem(sys.modules, "pyworld", fake)
    s = {"utt": "f", "speech": torch.zeros(1, 24000), "sample_rate": 24000, "speech_feat": torch.zeros(37, 80)}
    (out,) = P.compute_f0(iter([s]), sample_rate=24000, hop_size=480)
    assert fake.calls == calls
    assert out["pitch_feat"].shape == (37,) and out["pitch_feat"].dtype == torch.float32
    assert torch.allclose(out["pitch_feat"], torch.full((37,), value))
    wrong = dict(s, sample_rate=16000)
    with pytest.raises(ValueError, match="is at 16000 Hz, not 24000 Hz; put resample before compute_f0"):
        list(P.compute_f0(iter([wrong]), sample_rate=24000, hop_size=480))


def test_parse_embedding_normalises():
    s = {"utt": "e", "utt_embedding": [3.0, 4.0], "spk_embedding": np.array([0.0, 2.0], dtype=np.float32)}
    (out,) = P.parse_embedding(iter([dict(s)]), normalize=True)
    assert torch.allclose(out["utt_embedding"], torch.tensor([0.6, 0.8]))
    assert torch.equal(out["spk_embedding"], torch.tensor([0.0, 1.0]))
    (raw,) = P.parse_embedding(iter([dict(s)]), normalize=False)
    assert raw["utt_embedding"].dtype == torch.float32 and torch.equal(raw["utt_embedding"], torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("missing", [{"utt_embedding": None}, {"spk_embedding": []}, {"utt_embedding": "drop"}])
def test_parse_embedding_without_embedding_fails_clearly(missing):
    s = {"utt": "u9", "src": "x.parquet", "utt_embedding": [1.0], "spk_embedding": [1.0]}
    for k, v in missing.items():
        s.pop(k) if v == "drop" else s.update({k: v})
    key = next(iter(missing))
    with pytest.raises(ValueError, match=rf"^utt 'u9' \(from x.parquet\) has no {key}: run stage 1 \(speaker embed"):
        list(P.parse_embedding(iter([s]), normalize=True))


def test_shuffle_is_a_seeded_permutation():
    def run(seed, size):
        rng = random.Random(seed)
        return [s["i"] for s in P.shuffle(iter([{"i": i, "rng": rng} for i in range(50)]), shuffle_size=size)]

    assert sorted(run(1, 10)) == list(range(50))
    assert run(1, 10) == run(1, 10)
    assert run(1, 10) != run(2, 10)
    assert run(1, 10) != list(range(50))
    # buffered: with a buffer of 10, the first five out all come from the first ten in
    assert max(run(3, 10)[:5]) < 10


def test_sort_orders_each_buffer_by_feature_length():
    lengths = [5, 3, 9, 1, 7, 2, 8]
    out = list(P.sort(iter([{"speech_feat": torch.zeros(n, 1)} for n in lengths]), sort_size=4))
    assert [s["speech_feat"].size(0) for s in out] == [1, 3, 5, 9, 2, 7, 8]


def test_static_batch_sizes():
    out = list(P.batch(iter([{"i": i} for i in range(7)]), batch_type="static", batch_size=3))
    assert [len(b) for b in out] == [3, 3, 1]


def test_dynamic_batch_respects_max_frames_in_batch():
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 250, 5]
    samples = [{"utt": str(n), "speech_feat": torch.zeros(n, 80)} for n in lengths]
    out = list(P.batch(iter(samples), batch_type="dynamic", max_frames_in_batch=200))
    # (longest in batch) x (batch size) <= 200; 250 alone is over budget and forms its own batch
    assert [[s["utt"] for s in b] for b in out] == [["10", "20", "30", "40"], ["50", "60"], ["70", "80"],
                                                    ["250"], ["5"]]
    for b in out:
        if len(b) > 1:
            assert max(s["speech_feat"].size(0) for s in b) * len(b) <= 200
    assert sum(len(b) for b in out) == len(samples)


def test_batch_rejects_unknown_type():
    with pytest.raises(ValueError, match="unknown batch_type 'bucket'"):
        P.batch(iter([]), batch_type="bucket")


def _batch_of(parquet_lists):
    samples = featurised(parquet_lists)
    return [samples[0], samples[2], samples[4]]  # a1 (0.6 s), a3 (2.1 s), b2 (1.7 s)


@pytest.mark.parametrize("use_spk", [True, False])
def test_padding_keys_dtypes_and_order(parquet_lists, use_spk):
    samples = _batch_of(parquet_lists)
    (b,) = P.padding(iter([samples]), use_spk_embedding=use_spk)
    assert set(b) == {"utts", "text", "text_token", "text_token_len", "speech_feat", "speech_feat_len",
                      "utt_embedding", "spk_embedding", "speech_token", "speech_token_len", "embedding"}
    assert b["utts"] == ["a3", "b2", "a1"]                      # longest waveform first
    assert b["text"] == [UTTS_A["a3"][2], UTTS_B["b2"][2], UTTS_A["a1"][2]]
    by_utt = {s["utt"]: s for s in samples}
    assert b["text_token"].dtype == torch.int64 and b["text_token_len"].dtype == torch.int32
    assert b["text_token_len"].tolist() == [len(by_utt[u]["text_token"]) for u in b["utts"]]
    assert b["text_token"].shape == (3, max(b["text_token_len"]))
    assert b["text_token"][2, len(by_utt["a1"]["text_token"]):].eq(0).all()
    assert b["text_token"][2, :11].tolist() == by_utt["a1"]["text_token"]
    assert b["speech_token"].dtype == torch.int64 and b["speech_token_len"].dtype == torch.int32
    assert b["speech_token_len"].tolist() == [52, 42, 15]
    assert b["speech_token"][1, :42].tolist() == list(by_utt["b2"]["speech_token"])
    assert b["speech_token"][1, 42:].eq(0).all()
    assert b["speech_feat"].dtype == torch.float32 and b["speech_feat_len"].dtype == torch.int32
    assert b["speech_feat_len"].tolist() == [106, 86, 30]
    assert b["speech_feat"].shape == (3, 106, 80)
    assert b["speech_feat"][2, 30:].eq(0).all() and torch.equal(b["speech_feat"][2, :30], by_utt["a1"]["speech_feat"])
    assert b["utt_embedding"].shape == (3, EMB_DIM) and b["utt_embedding"].dtype == torch.float32
    assert torch.allclose(b["utt_embedding"].norm(dim=1), torch.ones(3))
    assert torch.equal(b["spk_embedding"][0], by_utt["a3"]["spk_embedding"])
    assert b["embedding"] is (b["spk_embedding"] if use_spk else b["utt_embedding"])
    assert not torch.equal(b["spk_embedding"], b["utt_embedding"])


def test_padding_optional_keys(parquet_lists):
    samples = _batch_of(parquet_lists)
    for i, s in enumerate(samples):
        s["instruct_token"] = [7] * (i + 1)
        s["whisper_feat"] = torch.ones(10 * (i + 1), 128)
        s["pitch_feat"] = torch.ones(s["speech_feat"].size(0))
        s["reject_speech_token"] = [5] * (i + 2)
    (b,) = P.padding(iter([samples]), use_spk_embedding=False, gan=True, dpo=True)
    assert b["instruct_token"].tolist() == [[7, 7, 0], [7, 7, 7], [7, 0, 0]]   # order a3, b2, a1
    assert b["instruct_token_len"].tolist() == [2, 3, 1] and b["instruct_token"].dtype == torch.int64
    assert b["whisper_feat"].shape == (3, 30, 128) and b["whisper_feat_len"].tolist() == [20, 30, 10]
    assert b["speech"].shape == (3, b["speech_len"][0]) and b["speech_len"].tolist() == [50880, 41280, 14400]
    assert b["pitch_feat"].shape == (3, 106) and b["pitch_feat_len"].tolist() == [106, 86, 30]
    assert b["reject_speech_token_len"].tolist() == [3, 4, 2]
    for key in ("speech_len", "pitch_feat_len", "reject_speech_token_len", "whisper_feat_len"):
        assert b[key].dtype == torch.int32
    del samples[0]["instruct_token"], samples[1]["whisper_feat"]
    (b,) = P.padding(iter([samples]), use_spk_embedding=False)
    assert not {"instruct_token", "whisper_feat", "speech", "pitch_feat", "reject_speech_token"} & set(b)


def test_padding_needs_lists():
    with pytest.raises(TypeError, match="put batch before padding"):
        list(P.padding(iter([{"utt": "x"}]), use_spk_embedding=True))


def test_stage_defaults_match_the_official_signatures():
    import inspect

    def defaults(f):
        return {k: v.default for k, v in inspect.signature(f).parameters.items()}

    assert defaults(P.filter) == dict(data=inspect._empty, max_length=10240, min_length=10, token_max_length=200,
                                      token_min_length=1, min_output_input_ratio=0.0005, max_output_input_ratio=1,
                                      mode="train")
    assert defaults(P.resample)["resample_rate"] == 22050 and defaults(P.resample)["min_sample_rate"] == 16000
    assert defaults(P.truncate)["truncate_length"] == 24576
    assert defaults(P.compute_fbank)["num_frames"] == -1
    assert defaults(P.shuffle)["shuffle_size"] == 10000 and defaults(P.sort)["sort_size"] == 500
    assert defaults(P.batch) == dict(data=inspect._empty, batch_type="static", batch_size=16,
                                     max_frames_in_batch=12000, mode="train")
    assert defaults(P.padding) == dict(data=inspect._empty, use_spk_embedding=inspect._empty, mode="train",
                                       gan=False, dpo=False)
