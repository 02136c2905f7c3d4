"""cosyvoice/bin/export.py: TorchScript encoder and ONNX estimator of a fine-tuned flow, checked against eager."""
from __future__ import annotations

import logging
import re
import shutil

import pytest
import torch

from cosyvoice.bin import export


@pytest.fixture(scope="module")
def model_dir(stand_in, flow_run, tmp_path_factory):
    """A model dir like the recipe's: the stand-in's files with the fine-tuned flow.pt."""
    d = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(stand_in, d)
    shutil.copy(flow_run / "epoch_0_whole.pt", d / "flow.pt")
    return d


def check_onnx_estimator(model_dir, estimator, inputs):
    """The exported ONNX estimator of ``model_dir`` takes the official inputs and computes what ``estimator`` does on
    ``inputs``; returns its session."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_dir / export.ESTIMATOR_FILE), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["x", "mask", "mu", "t", "spks", "cond"]
    got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in zip(names, inputs)})[0])
    with torch.no_grad():
        assert (got - estimator(*inputs)).abs().max() < 1e-4
    return session


def test_export_writes_checked_files(model_dir, caplog):
    with caplog.at_level(logging.INFO):
        assert export.main(["--model_dir", str(model_dir)]) == 0
    diffs = dict(re.findall(r"(flow\.\S+): max \|export - eager\| = (\S+) ", caplog.text))
    assert set(diffs) == {export.ENCODER_FILE, export.ESTIMATOR_FILE}
    assert all(float(v) <= 1e-4 for v in diffs.values())

    flow = export.load_flow(model_dir, None, None)
    gen = torch.Generator().manual_seed(0)
    # the ONNX estimator on a length it was not exported with
    inputs = export.estimator_inputs(flow.decoder.estimator, 2, 91, gen)
    session = check_onnx_estimator(model_dir, flow.decoder.estimator, inputs)
    # as the official file: batch 2 for every input, only the time axis dynamic (what the official load_trt's
    # TensorRT profiles expect: shapes for x, mask, mu and cond only)
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["t"] == [2] and shapes["spks"] == [2, 80]
    assert all(shapes[k][:2] == [2, 80 if k != "mask" else 1] and isinstance(shapes[k][2], str)
               for k in ("x", "mask", "mu", "cond"))
    # the TorchScript encoder, likewise, called the way the official flow calls the encoder that load_jit puts in
    # place: (token, token_len, streaming=...) and, for a non-final streaming chunk, with context=<3 look-ahead>
    with export._quiet():
        encoder = torch.jit.load(str(model_dir / export.ENCODER_FILE))
    xs, lens = torch.randn(1, 29, flow.input_size, generator=gen), torch.tensor([29], dtype=torch.int32)
    context = torch.randn(1, 3, flow.input_size, generator=gen)
    with torch.no_grad():
        (h, _), (ref, _) = encoder(xs, lens), flow.encoder(xs, lens)
        assert h.shape == (1, 58, flow.encoder.output_size()) and (h - ref).abs().max() < 1e-4
        (h, _), (ref, _) = encoder(xs, lens, streaming=True), flow.encoder(xs, lens, streaming=True)
        assert (h - ref).abs().max() < 1e-4
        (h_full, _) = flow.encoder(xs, lens)
        assert (ref - h_full).abs().max() > 1e-3  # chunked attention differs: the modes are really two
        (h, _) = encoder(xs, lens + 3, context=context, streaming=True)
        (ref, _) = flow.encoder(xs, lens + 3, context=context, streaming=True)
        assert h.shape == ref.shape and (h - ref).abs().max() < 1e-4


def test_a_failed_check_removes_the_file(model_dir):
    # an impossible tolerance: the check must fail and leave no file behind
    flow = export.load_flow(model_dir, None, None)
    with pytest.raises(RuntimeError, match="estimator export differs from the eager module by .* > --atol -1"):
        export.export_estimator(flow, model_dir / "x.onnx", -1.0, torch.Generator().manual_seed(0))
    assert not (model_dir / "x.onnx").exists()


def test_cosyvoice3_exports_the_dit_estimator_only(stand_in3_dir, tmp_path, caplog):
    """CosyVoice3's flow has no token encoder: only the DiT estimator is exported (as the official export_onnx does;
    its export_jit refuses CosyVoice3), checked with onnxruntime on a length it was not exported with."""
    model_dir = tmp_path / "model3"
    shutil.copytree(stand_in3_dir, model_dir)
    with caplog.at_level(logging.INFO):
        assert export.main(["--model_dir", str(model_dir)]) == 0
    assert not (model_dir / export.ENCODER_FILE).exists()
    assert ("CausalMaskedDiffWithDiT has no token encoder (CosyVoice3's DiT flow): no flow.encoder.fp32.zip"
            in caplog.text)
    diffs = dict(re.findall(r"(flow\.\S+): max \|export - eager\| = (\S+) ", caplog.text))
    assert set(diffs) == {export.ESTIMATOR_FILE} and float(diffs[export.ESTIMATOR_FILE]) <= 1e-4

    flow = export.load_flow(model_dir, None, None)
    assert type(flow).__name__ == "CausalMaskedDiffWithDiT"
    inputs = export.estimator_inputs(flow.decoder.estimator, 2, 67, torch.Generator().manual_seed(3))
    check_onnx_estimator(model_dir, flow.decoder.estimator, inputs)
