"""Export the flow for deployment: TorchScript of the token encoder and ONNX of the flow-matching estimator.

    python -m cosyvoice.bin.export --model_dir exp/sft/model [--config <model_dir>/cosyvoice2.yaml]

Builds the flow from the config (default: the model dir's cosyvoice2.yaml), loads ``<model_dir>/flow.pt``
strictly, and writes, under the official names:

* ``flow.encoder.fp32.zip``: ``torch.jit.trace`` of ``flow.encoder`` (xs (1, T, D), xs_lens (1,) -> (h, mask));
* ``flow.decoder.estimator.fp32.onnx``: ``flow.decoder.estimator`` (x, mask, mu, t, spks, cond -> estimator_out)
  with dynamic batch and time axes (legacy exporter, opset 18).

Each export is run on a fresh input of another length than the one it was made with and compared with the eager
module; the largest absolute difference is logged and must stay below ``--atol``, else the file is removed and the
command fails.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import torch


logger = logging.getLogger("cosyvoice.bin.export")

ENCODER_FILE = "flow.encoder.fp32.zip"
ESTIMATOR_FILE = "flow.decoder.estimator.fp32.onnx"


def get_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export the flow encoder (TorchScript) and estimator (ONNX).")
    p.add_argument("--model_dir", required=True, help="model dir holding flow.pt (and cosyvoice2.yaml)")
    p.add_argument("--config", help="yaml to build the flow from [<model_dir>/cosyvoice2.yaml]")
    p.add_argument("--qwen_pretrain_path", help="CosyVoice-BlankEN dir [<model_dir>/CosyVoice-BlankEN]")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |export - eager|")
    p.add_argument("--seed", type=int, default=1986, help="seed of the check inputs")
    return p.parse_args(argv)


def load_flow(model_dir: Path, config: Optional[str], qwen: Optional[str]) -> torch.nn.Module:
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    config = config or str(model_dir / "cosyvoice2.yaml")
    qwen = qwen or str(model_dir / "CosyVoice-BlankEN")
    flow = load_config(config, {"qwen_pretrain_path": qwen}, keys=["flow"])["flow"]
    load_checkpoint_strict(flow, model_dir / "flow.pt")
    return flow.eval()


@contextmanager
def _quiet():
    """Silence the tracer's generic warnings (every export is checked numerically instead) and the deprecation
    notes of TorchScript and the legacy ONNX exporter, which are what the official deployment files use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        yield


def _check(name: str, path: Path, diff: float, atol: float) -> float:
    logger.info("%s: max |export - eager| = %.3g (limit %.1g)", path.name, diff, atol)
    if not diff <= atol:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{name} export differs from the eager module by {diff:.3g} > --atol {atol}; "
                           f"{path} removed")
    return diff


@torch.no_grad()
def export_encoder(flow: torch.nn.Module, out: Path, atol: float, gen: torch.Generator) -> float:
    """Trace ``flow.encoder`` on 37 tokens, check it on 53, save atomically. Returns the max abs diff."""
    encoder = flow.encoder
    dim = flow.input_size

    def inputs(n: int):
        return torch.randn(1, n, dim, generator=gen), torch.tensor([n], dtype=torch.int32)

    with _quiet():
        traced = torch.jit.trace(encoder, inputs(37), check_trace=False)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with _quiet():
        torch.jit.save(traced, str(tmp))
        os.replace(tmp, out)
        loaded = torch.jit.load(str(out))
    xs, lens = inputs(53)
    (h_ref, mask_ref), (h, mask) = encoder(xs, lens), loaded(xs, lens)
    if h.shape != h_ref.shape or not torch.equal(mask, mask_ref):
        out.unlink(missing_ok=True)
        raise RuntimeError(f"traced encoder gives shape {list(h.shape)} for 53 tokens, eager {list(h_ref.shape)}")
    return _check("encoder", out, float((h - h_ref).abs().max()), atol)


def estimator_inputs(estimator, batch: int, frames: int, gen: torch.Generator):
    c = estimator.out_channels
    return (torch.rand(batch, c, frames, generator=gen), torch.ones(batch, 1, frames),
            torch.rand(batch, c, frames, generator=gen), torch.rand(batch, generator=gen),
            torch.rand(batch, c, generator=gen), torch.rand(batch, c, frames, generator=gen))


@torch.no_grad()
def export_estimator(flow: torch.nn.Module, out: Path, atol: float, gen: torch.Generator) -> float:
    """ONNX of ``flow.decoder.estimator`` (dynamic batch and time), checked with onnxruntime on another length."""
    import onnxruntime

    estimator = flow.decoder.estimator
    names = ["x", "mask", "mu", "t", "spks", "cond"]
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    axes = {k: {0: "batch", 2: "seq_len"} for k in ("x", "mask", "mu", "cond", "estimator_out")}
    with _quiet():
        torch.onnx.export(estimator, estimator_inputs(estimator, 2, 128, gen), str(tmp), export_params=True,
                          opset_version=18, do_constant_folding=True, input_names=names,
                          output_names=["estimator_out"], dynamo=False,
                          dynamic_axes={**axes, "t": {0: "batch"}, "spks": {0: "batch"}})
    os.replace(tmp, out)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out), sess_options=options, providers=["CPUExecutionProvider"])
    check = estimator_inputs(estimator, 2, 173, gen)
    ref = estimator(*check)
    got = session.run(None, {k: v.numpy() for k, v in zip(names, check)})[0]
    return _check("estimator", out, float((torch.from_numpy(got) - ref).abs().max()), atol)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s")
    args = get_args(argv)
    model_dir = Path(args.model_dir)
    flow = load_flow(model_dir, args.config, args.qwen_pretrain_path)
    gen = torch.Generator().manual_seed(args.seed)
    export_encoder(flow, model_dir / ENCODER_FILE, args.atol, gen)
    export_estimator(flow, model_dir / ESTIMATOR_FILE, args.atol, gen)
    logger.info("exported %s and %s into %s", ENCODER_FILE, ESTIMATOR_FILE, model_dir)
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    """``main`` with a bad model dir or checkpoint (or a full disk) reported as one line, exit status 2."""
    from cosyvoice.utils.config import ConfigError
    from cosyvoice.utils.errors import EXIT_USER_ERROR, UserError, one_line

    try:
        return main(argv)
    except (UserError, ConfigError, FileNotFoundError) as e:
        print(f"export.py: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(cli())
