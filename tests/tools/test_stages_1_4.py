"""Stages 1-4 (embeddings, speech tokens, parquet lists, spk2info + model dir) on synthetic clips and the stand-in."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice.utils.pretrained import check_pretrained_dir
from stage_test_utils import ROOT, call_tool, make_data_dir, run_stages_1_4, run_tool, sweep


@pytest.fixture(scope="module")
def stages(tmp_path_factory, stand_in_dir, synthetic_utts):
    """Run stages 1-4 once through the tools' command lines; return the dirs."""
    extra = {"extract_embedding": ["--num_workers", 2], "extract_speech_token": ["--num_workers", 2],
             "make_parquet_list": ["--num_utts_per_parquet", 3, "--num_processes", 2]}
    return run_stages_1_4(tmp_path_factory.mktemp("stages"), synthetic_utts, stand_in_dir, "speech_tokenizer_v2.onnx",
                          extra)


def _wav_16k(data: Path, utt: str) -> torch.Tensor:
    from cosyvoice.audio.io import load_wav

    path = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())[utt]
    return load_wav(path, 16000)


def test_stage1_embeddings_match_the_inference_frontend(stages, synthetic_utts):
    from cosyvoice.utils.onnx import EmbeddingExtractor

    data = stages["data"]
    utt2emb = torch.load(data / "utt2embedding.pt", weights_only=True)
    spk2emb = torch.load(data / "spk2embedding.pt", weights_only=True)
    assert list(utt2emb) == sorted(synthetic_utts) and list(spk2emb) == ["spkA", "spkB"]
    assert all(isinstance(v, list) and len(v) == 192 and isinstance(v[0], float) for v in utt2emb.values())
    extractor = EmbeddingExtractor(str(stages["pretrained"] / "campplus.onnx"))
    for utt in ("spkA_001", "spkB_001"):  # spkB_001 is a 24 kHz file: resampled to 16 kHz by load_wav
        np.testing.assert_allclose(utt2emb[utt], extractor.extract(_wav_16k(data, utt))[0].numpy(), atol=1e-5)
    mean_a = np.mean([utt2emb["spkA_001"], utt2emb["spkA_002"]], axis=0)
    np.testing.assert_allclose(spk2emb["spkA"], mean_a, atol=1e-6)
    assert np.abs(np.array(utt2emb["spkA_001"]) - np.array(utt2emb["spkB_001"])).max() > 1e-3


def test_stage2_tokens_are_25hz_ids_from_the_inference_tokenizer(stages, synthetic_utts):
    from cosyvoice.utils.onnx import SpeechTokenizer

    data = stages["data"]
    utt2tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    assert list(utt2tok) == sorted(synthetic_utts)
    for utt, (audio, sr) in synthetic_utts.items():
        tokens = utt2tok[utt]
        assert all(isinstance(t, int) and 0 <= t <= 6560 for t in tokens)
        assert len(tokens) == -(-len(audio) * 25 // sr)  # ceil(seconds * 25): whole tokens, as training pads
    tokenizer = SpeechTokenizer(str(stages["pretrained"] / "speech_tokenizer_v2.onnx"))
    assert utt2tok["spkA_002"] == tokenizer.tokenize(_wav_16k(data, "spkA_002"), pad_to_token_grid=True)
    assert (data / "skipped_speech_token.tsv").read_text() == ""


def test_tokens_follow_the_audio(stand_in_dir):
    from cosyvoice.utils.onnx import SpeechTokenizer

    tok = SpeechTokenizer(str(stand_in_dir / "speech_tokenizer_v2.onnx"))
    a = torch.from_numpy(sweep(2.0, 200, 600, seed=5))
    ta, ta2 = tok.tokenize(a), tok.tokenize(a.clone())
    assert ta == ta2 and len(ta) == 50
    assert len(set(ta)) > 5  # a sweep moves through many codes
    b = a.clone()
    b[16000:] = torch.from_numpy(sweep(1.0, 3000, 1500, seed=6))  # change the second second only
    tb = tok.tokenize(b)
    differ = [i for i in range(50) if ta[i] != tb[i]]
    assert sum(i >= 25 for i in differ) >= 15  # most tokens of the changed second differ
    assert tok.tokenize(torch.from_numpy(sweep(2.0, 1000, 300, seed=5))) != ta


def test_parquet_round_trip(stages, synthetic_utts):
    from cosyvoice.dataset.processor import parquet_opener

    data = stages["data"]
    pq_dir = data / "parquet"
    shards = (pq_dir / "data.list").read_text().splitlines()
    assert shards == [str(pq_dir / "parquet_000000000.parquet"), str(pq_dir / "parquet_000000001.parquet")]
    assert (pq_dir / "utt2data.list").read_text().splitlines() == [
        str(pq_dir / f"utt2parquet_00000000{i}.json") for i in range(2)]
    utt2shard = {}
    for line in (pq_dir / "utt2data.list").read_text().splitlines():
        utt2shard.update(json.loads(Path(line).read_text()))
    assert utt2shard == {u: shards[0] if i < 3 else shards[1] for i, u in enumerate(sorted(synthetic_utts))}
    spk2shard = [json.loads(Path(p).read_text()) for p in (pq_dir / "spk2data.list").read_text().splitlines()]
    assert spk2shard == [{"spkA": shards[0], "spkB": shards[0]}, {"spkB": shards[1]}]

    rows = list(parquet_opener([{"src": s} for s in shards]))
    utt2emb = torch.load(data / "utt2embedding.pt", weights_only=True)
    spk2emb = torch.load(data / "spk2embedding.pt", weights_only=True)
    utt2tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    wavs = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
    assert [r["utt"] for r in rows] == sorted(synthetic_utts)
    for r in rows:
        utt = r["utt"]
        assert r["audio_data"] == Path(wavs[utt]).read_bytes() and r["wav"] == wavs[utt]
        assert r["text"] == f"text of {utt}, 你好." and r["spk"] == utt.split("_")[0]
        assert r["speech_token"] == utt2tok[utt]
        np.testing.assert_allclose(r["utt_embedding"], utt2emb[utt], rtol=1e-6)
        np.testing.assert_allclose(r["spk_embedding"], spk2emb[r["spk"]], rtol=1e-6)


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("parquet"))
    return dst


def test_table_mismatch_is_reported(stages, tmp_path):
    data = _copy_data(stages["data"], tmp_path / "data")
    tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    del tok["spkB_002"]
    tok["ghost_001"] = [1, 2]
    torch.save(tok, data / "utt2speech_token.pt")
    rc, err = call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet")
    assert rc == 2
    err = err.strip()
    assert "\n" not in err
    assert "utt2speech_token.pt lacks 1 utterance(s) of wav.scp: spkB_002" in err
    assert "utt2speech_token.pt has 1 utterance(s) not in wav.scp: ghost_001" in err
    assert "--intersect" in err and not (data / "parquet").exists()

    rc, err = call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet", "--intersect")
    assert rc == 0, err
    from cosyvoice.dataset.processor import parquet_opener

    rows = list(parquet_opener([{"src": s} for s in (data / "parquet" / "data.list").read_text().splitlines()]))
    assert [row["utt"] for row in rows] == ["spkA_001", "spkA_002", "spkB_001"]


def test_missing_stage_input_names_the_stage(tmp_path, stages):
    data = _copy_data(stages["data"], tmp_path / "data")
    os.remove(data / "utt2embedding.pt")
    rc, err = call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet")
    assert rc == 2
    assert err.strip() == (f"make_parquet_list: error: required file {data}/utt2embedding.pt is missing; "
                                "run stage 1 (tools/extract_embedding.py) first")


def test_clip_over_30s_is_skipped_and_listed(tmp_path, stand_in_dir, caplog):
    long_clip = np.tile(sweep(1.0, 200, 800, seed=7), 31)  # 31 s
    data = make_data_dir(tmp_path, {"spk_long": (long_clip, 16000), "spk_short": (sweep(0.5, 300, 500), 16000)},
                         spk_of=lambda utt: "spk")
    rc, err = call_tool("extract_speech_token", "--data_dir", data,
                        "--onnx_path", stand_in_dir / "speech_tokenizer_v2.onnx")
    assert rc == 0, err
    tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    assert tok["spk_long"] == [] and len(tok["spk_short"]) == 13  # 0.5 s -> 12.5 -> 13 whole tokens
    assert (data / "skipped_speech_token.tsv").read_text() == "spk_long\t31.00\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"utt spk_long is 31.00 s long, over the speech tokenizer's 30 s: skipped "
                        f"(listed in {data}/skipped_speech_token.tsv)"]


def test_missing_onnx_fails_naming_it(tmp_path, synthetic_utts):
    data = make_data_dir(tmp_path, {"spkA_001": synthetic_utts["spkA_001"]})
    missing = tmp_path / "nowhere" / "campplus.onnx"
    r = run_tool("extract_embedding", "--data_dir", data, "--onnx_path", missing)
    assert r.returncode == 2
    assert r.stderr.strip() == f"extract_embedding: error: required file {missing} is missing; check the path"
    assert not (data / "utt2embedding.pt").exists()


def test_unreadable_audio_names_the_utterance(tmp_path, stand_in_dir, synthetic_utts):
    data = make_data_dir(tmp_path, {"spkA_001": synthetic_utts["spkA_001"], "spkA_002": synthetic_utts["spkA_002"]})
    os.remove(tmp_path / "wavs" / "spkA_002.wav")
    rc, err = call_tool("extract_embedding", "--data_dir", data, "--onnx_path", stand_in_dir / "campplus.onnx")
    assert rc == 2
    assert f"cannot read audio of utt spkA_002 ({tmp_path}/wavs/spkA_002.wav)" in err
    assert not (data / "utt2embedding.pt").exists() and not (data / "spk2embedding.pt").exists()


def test_stage4_spk2info_and_official_model_dir_layout(stages):
    model_dir, data = stages["model_dir"], stages["data"]
    spk2info = torch.load(model_dir / "spk2info.pt", weights_only=True)
    spk2emb = torch.load(data / "spk2embedding.pt", weights_only=True)
    assert list(spk2info) == ["spkA", "spkB"]
    for spk, info in spk2info.items():
        assert list(info) == ["embedding"]
        emb = info["embedding"]
        assert emb.shape == (1, 192) and emb.dtype == torch.float32
        np.testing.assert_allclose(emb[0].numpy(), spk2emb[spk], rtol=1e-6)
    check_pretrained_dir(str(model_dir))  # every file our code (and the official CosyVoice2 class) reads
    assert os.path.realpath(model_dir / "llm.pt") == os.path.realpath(stages["pretrained"] / "llm.pt")
    assert not (model_dir / "flow.encoder.fp32.zip").exists()


def test_stage4_keeps_fine_tuned_weights(tmp_path, stages):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "llm.pt").write_bytes(b"fine-tuned")
    args = ("--data_dir", stages["data"], "--pretrained_model_dir", stages["pretrained"], "--model_dir", model_dir)
    for _ in range(2):  # idempotent
        rc, err = call_tool("save_spk2info", *args)
        assert rc == 0, err
    assert (model_dir / "llm.pt").read_bytes() == b"fine-tuned"
    assert (model_dir / "flow.pt").is_symlink() and (model_dir / "CosyVoice-BlankEN").is_symlink()
    rc, err = call_tool("save_spk2info", *args[:4], "--model_dir", tmp_path / "copied", "--copy")
    assert rc == 0, err
    assert not (tmp_path / "copied" / "hift.pt").is_symlink()
    assert (tmp_path / "copied" / "hift.pt").read_bytes() == (stages["pretrained"] / "hift.pt").read_bytes()


def test_stage4_relinks_after_the_pretrained_dir_changed(tmp_path, stages):
    """A link to the previous --pretrained_model_dir is replaced by one to the new dir; fine-tuned files stay."""
    other = tmp_path / "other_pretrained"
    shutil.copytree(stages["pretrained"], other, symlinks=True)
    model_dir = tmp_path / "model"
    args = ("--data_dir", stages["data"], "--model_dir", model_dir)
    assert call_tool("save_spk2info", *args, "--pretrained_model_dir", stages["pretrained"])[0] == 0
    (model_dir / "llm.pt").unlink()
    (model_dir / "llm.pt").write_bytes(b"fine-tuned")
    rc, err = call_tool("save_spk2info", *args, "--pretrained_model_dir", other)
    assert rc == 0, err
    for name in ("flow.pt", "hift.pt", "cosyvoice2.yaml", "CosyVoice-BlankEN", "campplus.onnx"):
        assert os.path.realpath(model_dir / name) == os.path.realpath(other / name), name
    assert (model_dir / "llm.pt").read_bytes() == b"fine-tuned"


DEMO = ROOT / "local" / "demo_voice" / "train"


def test_stages_1_3_on_demo_voice_clips(tmp_path, stand_in_dir):
    """Four clips of the bundled demo voice, read in place (wav.scp points at them)."""
    import soundfile as sf

    wavs = sorted(DEMO.glob("*.wav"))[:4]
    assert len(wavs) == 4, f"demo voice missing under {DEMO}"
    data = tmp_path / "data"
    data.mkdir()
    utts = [f"demo_{w.stem}" for w in wavs]
    (data / "wav.scp").write_text("".join(f"{u} {w}\n" for u, w in zip(utts, wavs)))
    (data / "text").write_text("".join(f"{u} {w.with_name(w.stem + '.normalized.txt').read_text().strip()}\n"
                                       for u, w in zip(utts, wavs)))
    (data / "utt2spk").write_text("".join(f"{u} demo\n" for u in utts))
    (data / "spk2utt").write_text(f"demo {' '.join(utts)}\n")
    for tool, *args in (("extract_embedding", "--onnx_path", stand_in_dir / "campplus.onnx"),
                        ("extract_speech_token", "--onnx_path", stand_in_dir / "speech_tokenizer_v2.onnx")):
        rc, err = call_tool(tool, "--data_dir", data, *args)
        assert rc == 0, err
    rc, err = call_tool("make_parquet_list", "--src_dir", data, "--des_dir", data / "parquet")
    assert rc == 0, err
    tok = torch.load(data / "utt2speech_token.pt", weights_only=True)
    emb = torch.load(data / "utt2embedding.pt", weights_only=True)
    for utt, wav in zip(utts, wavs):
        info = sf.info(str(wav))
        assert len(tok[utt]) == -(-info.frames * 25 // info.samplerate)  # 25 Hz, whole tokens
        assert len(set(tok[utt])) > 3 and len(emb[utt]) == 192
    assert torch.load(data / "spk2embedding.pt", weights_only=True).keys() == {"demo"}
    assert len((data / "parquet" / "data.list").read_text().splitlines()) == 1


def test_tokens_align_with_the_training_features(stages):
    """Through the stand-in yaml's data pipeline, every utterance has exactly 2 mel frames per stage-2 token."""
    from cosyvoice.dataset.dataset import Dataset
    from cosyvoice.utils.config import load_config

    pre = stages["pretrained"]
    cfg = load_config(str(pre / "cosyvoice2.yaml"), {"qwen_pretrain_path": str(pre / "CosyVoice-BlankEN")},
                      keys=["data_pipeline"])
    dataset = Dataset(str(stages["data"] / "parquet" / "data.list"), cfg["data_pipeline"], shuffle=False,
                      partition=False)
    utts = []
    for batch in dataset:
        assert batch["speech_feat_len"].tolist() == (2 * batch["speech_token_len"]).tolist()
        assert batch["speech_feat"].shape[1] == 2 * batch["speech_token"].shape[1]
        utts += batch["utts"]
    assert sorted(utts) == ["spkA_001", "spkA_002", "spkB_001"]  # the yaml's filter drops spkB_002 (0.8 s < 1 s)
