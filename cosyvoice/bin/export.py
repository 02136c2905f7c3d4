"""Export the flow for deployment: TorchScript of the token encoder and ONNX of the flow-matching estimator.

    python -m cosyvoice.bin.export --model_dir exp/sft/model [--config <model_dir>/cosyvoice2.yaml]

Builds the flow from the config (default: the model dir's cosyvoice2.yaml or cosyvoice3.yaml), loads
``<model_dir>/flow.pt`` strictly, and writes, under the official names:

* ``flow.encoder.fp32.zip`` (CosyVoice2 only): TorchScript of ``flow.encoder`` with the official call signature
  ``(xs (1, T, D), xs_lens (1,), ..., streaming=False) -> (h, mask)``, which the official ``load_jit`` puts in place
  of the flow's encoder: traces of its three inference modes (full context, chunked, chunked with look-ahead
  context), chosen by the arguments. CosyVoice3's flow has no encoder (a look-ahead conv feeds the DiT directly)
  and the official code exports no TorchScript for it, so nothing is written;
* ``flow.decoder.estimator.fp32.onnx``: ``flow.decoder.estimator`` (x, mask, mu, t, spks, cond -> estimator_out;
  CosyVoice3: the DiT, offline attention) with batch 2 (the classifier-free-guidance pair) and a dynamic time
  axis, like the official file, so that the official ``load_trt`` builds its TensorRT engine from it (legacy
  exporter, opset 18).

Each export is run on a fresh input of another length than the one it was made with and compared with the eager
module; the largest absolute difference is logged and must stay below ``--atol``, else the file is removed and the
command fails.

``--merge true --character <exp>/characters/<spk>`` first folds the character's LoRA adapter into its base llm.pt
and writes the result as ``<model_dir>/llm.pt``: a plain official-format file with exactly the pretrained keys,
which the official code (and vLLM) load like any llm.pt. The merged module's hidden states are compared with the
unmerged adapter's on a fresh input (must agree within ``--atol``). The character's flow (fine-tuned, or its
adapter merged) becomes ``flow.pt`` and its speaker entry joins ``spk2info.pt``, so the model dir speaks as the
character without this toolkit's character support.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from cosyvoice.cli.character import CharacterError, read_character
from cosyvoice.utils import lora
from cosyvoice.utils.checkpoint import atomic_torch_save, sha256_file
from cosyvoice.utils.cli import entry_point
from cosyvoice.utils.common import load_checkpoint_strict
from cosyvoice.utils.config import load_config
from cosyvoice.utils.pretrained import model_version


logger = logging.getLogger("cosyvoice.bin.export")

ENCODER_FILE = "flow.encoder.fp32.zip"
ESTIMATOR_FILE = "flow.decoder.estimator.fp32.onnx"


def get_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export the flow encoder (TorchScript) and estimator (ONNX).")
    p.add_argument("--model_dir", required=True, help="model dir holding flow.pt (and cosyvoice2/3.yaml)")
    p.add_argument("--config", help="yaml to build the flow from [<model_dir>/cosyvoice2.yaml or cosyvoice3.yaml]")
    p.add_argument("--qwen_pretrain_path", help="CosyVoice-BlankEN dir [<model_dir>/CosyVoice-BlankEN]")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |export - eager|")
    p.add_argument("--seed", type=int, default=1986, help="seed of the check inputs")
    p.add_argument("--merge", default="false", choices=["true", "false"],
                   help="first merge --character's LoRA adapter into a plain <model_dir>/llm.pt (and its flow)")
    p.add_argument("--character", default="", help="the character folder to merge (<exp>/characters/<spk>)")
    return p.parse_args(argv)


def _base_weights(character, part: str, model_dir: Path) -> Path:
    """The file the character's ``part`` adapter was trained on: ``<model_dir>/<part>.pt`` while it is still
    the base (a link to the pretrained file), else the base model dir's (after an earlier merge)."""

    want = character.manifest["base_model"][f"{part}.pt"]
    candidates = [model_dir / f"{part}.pt", Path(character.manifest["base_model"]["dir"]) / f"{part}.pt"]
    for path in candidates:
        if path.is_file() and sha256_file(path) == want:
            return path
    raise CharacterError(f"--merge: neither {candidates[0]} nor {candidates[1]} is the {part}.pt the adapter of "
                         f"{character.path} was trained on (sha256 {want[:12]}...): point the character's base "
                         f"model dir back at it")


@torch.no_grad()
def merge_character(model_dir: Path, character_dir: str, config: Optional[str], qwen: Optional[str], atol: float,
                    gen: torch.Generator) -> float:
    """Write the character's merged llm.pt (and its flow.pt, spk2info entry) into ``model_dir``. Returns the
    largest |merged - unmerged| of the llm's hidden states on the check input."""
    import copy


    character = read_character(character_dir)
    if character.kind("llm") != "lora":
        raise CharacterError(f"--merge: {character_dir} has no llm adapter to merge (its llm is the base model's)")
    configs = load_config(config or str(model_dir / "cosyvoice2.yaml"),
                          {"qwen_pretrain_path": qwen or str(model_dir / "CosyVoice-BlankEN")}, keys=["llm", "flow"])
    llm = configs["llm"]
    load_checkpoint_strict(llm, _base_weights(character, "llm", model_dir))
    adapted = copy.deepcopy(llm)
    lora.add_adapter(adapted, character.lora_settings("llm"), trainable=False)
    lora.load_adapter_state_dict(adapted, character.file("llm"))
    merged = lora.merged_state_dict(adapted)
    plain = copy.deepcopy(llm)
    load_checkpoint_strict(plain, merged)  # the plain module takes it strictly: the official layout
    x = torch.randn(1, 23, llm.llm_input_size, generator=gen)
    diff = float((plain.eval().llm.forward_one_step(x)[0] - adapted.eval().llm.forward_one_step(x)[0]).abs().max())
    logger.info("llm.pt: max |merged - adapter| of the hidden states = %.3g (limit %.1g)", diff, atol)
    if not diff <= atol:
        raise RuntimeError(f"the merged llm differs from the adapter by {diff:.3g} > --atol {atol}; nothing written")
    atomic_torch_save(merged, model_dir / "llm.pt")  # replaces the link to the base file, never writes through it
    if character.kind("flow") == "full":
        atomic_torch_save(torch.load(character.file("flow"), map_location="cpu", weights_only=True),
                          model_dir / "flow.pt")
    elif character.kind("flow") == "lora":
        flow = configs["flow"]
        load_checkpoint_strict(flow, _base_weights(character, "flow", model_dir))
        atomic_torch_save(lora.merge_adapter(flow, character.file("flow"), character.lora_settings("flow")),
                          model_dir / "flow.pt")
    table_path = model_dir / "spk2info.pt"
    table = torch.load(table_path, map_location="cpu", weights_only=True) if table_path.is_file() else {}
    table[character.spk_id] = character.spk2info_entry()
    atomic_torch_save(table, table_path)
    logger.info("merged %s into %s/llm.pt (plain, official layout)%s; speaker %s in spk2info.pt", character_dir,
                model_dir, "" if character.kind("flow") == "base" else " and its flow into flow.pt", character.spk_id)
    return diff


def load_flow(model_dir: Path, config: Optional[str], qwen: Optional[str]) -> torch.nn.Module:
    config = config or str(model_dir / model_version(str(model_dir)).config_file)
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


class _Mode(torch.nn.Module):
    """``encoder(xs, xs_lens[, context], streaming=...)`` with the mode fixed, so that it can be traced."""

    def __init__(self, encoder: torch.nn.Module, streaming: bool):
        super().__init__()
        self.encoder = encoder
        self.chunked = streaming

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor,
                context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(xs, xs_lens, context=context, streaming=self.chunked)


class JitEncoder(torch.nn.Module):
    """The exported flow encoder: the official encoder's call signature over three traces (full context; chunked;
    chunked with the look-ahead tokens of a non-final streaming chunk).

    The official ``CosyVoice2Model.load_jit`` puts the loaded file in place of ``flow.encoder``; the official flow
    then calls it as ``encoder(token, token_len, streaming=streaming)`` and, for a non-final streaming chunk,
    ``encoder(token, token_len, context=context, streaming=True)``. A bare trace takes only ``(xs, xs_lens)``.
    """

    def __init__(self, full: torch.jit.ScriptModule, chunked: torch.jit.ScriptModule,
                 chunked_context: torch.jit.ScriptModule):
        super().__init__()
        self.full = full
        self.chunked = chunked
        self.chunked_context = chunked_context

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor, context: torch.Tensor = torch.zeros(0, 0, 0),
                decoding_chunk_size: int = 0, num_decoding_left_chunks: int = -1,
                streaming: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        if context.size(1) != 0:
            if not streaming:
                raise RuntimeError("exported flow encoder: look-ahead context comes with streaming=True")
            return self.chunked_context(xs, xs_lens, context)
        if streaming:
            return self.chunked(xs, xs_lens)
        return self.full(xs, xs_lens)


@torch.no_grad()
def export_encoder(flow: torch.nn.Module, out: Path, atol: float, gen: torch.Generator) -> float:
    """Trace ``flow.encoder`` in its three inference modes on 37 tokens, script them behind the official signature
    (:class:`JitEncoder`), save atomically, check every mode on 53 tokens. Returns the max abs diff."""
    encoder = flow.encoder
    dim = flow.input_size
    lookahead = encoder.pre_lookahead_layer.pre_lookahead_len

    def inputs(n: int):
        """Tokens, their count and the look-ahead tokens after them; the count includes the look-ahead, as the
        official flow passes it."""
        xs, context = torch.randn(1, n, dim, generator=gen), torch.randn(1, lookahead, dim, generator=gen)
        return xs, torch.tensor([n], dtype=torch.int32), context

    with _quiet():
        xs, lens, context = inputs(37)
        full = torch.jit.trace(_Mode(encoder, False).eval(), (xs, lens), check_trace=False)
        chunked = torch.jit.trace(_Mode(encoder, True).eval(), (xs, lens), check_trace=False)
        chunked_context = torch.jit.trace(_Mode(encoder, True).eval(), (xs, lens + lookahead, context),
                                          check_trace=False)
        scripted = torch.jit.script(JitEncoder(full, chunked, chunked_context))
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with _quiet():
        torch.jit.save(scripted, str(tmp))
        os.replace(tmp, out)
        loaded = torch.jit.load(str(out))
    xs, lens, context = inputs(53)
    diff = 0.0
    for streaming, ctx, n in ((False, None, lens), (True, None, lens), (True, context, lens + lookahead)):
        h_ref, mask_ref = encoder(xs, n, context=ctx, streaming=streaming)
        h, mask = loaded(xs, n, streaming=streaming) if ctx is None else loaded(xs, n, context=ctx, streaming=True)
        if h.shape != h_ref.shape or not torch.equal(mask, mask_ref):
            out.unlink(missing_ok=True)
            raise RuntimeError(f"exported encoder (streaming={streaming}, context={ctx is not None}) gives shape "
                               f"{list(h.shape)} for 53 tokens, eager {list(h_ref.shape)}; {out} removed")
        diff = max(diff, float((h - h_ref).abs().max()))
    return _check("encoder", out, diff, atol)


def estimator_inputs(estimator, batch: int, frames: int, gen: torch.Generator):
    c = estimator.out_channels
    return (torch.rand(batch, c, frames, generator=gen), torch.ones(batch, 1, frames),
            torch.rand(batch, c, frames, generator=gen), torch.rand(batch, generator=gen),
            torch.rand(batch, c, generator=gen), torch.rand(batch, c, frames, generator=gen))


@torch.no_grad()
def export_estimator(flow: torch.nn.Module, out: Path, atol: float, gen: torch.Generator) -> float:
    """ONNX of ``flow.decoder.estimator`` (batch 2, dynamic time), checked with onnxruntime on another length."""
    import onnxruntime

    estimator = flow.decoder.estimator
    names = ["x", "mask", "mu", "t", "spks", "cond"]
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    # as the official file: batch 2 (the CFG pair), only the time axis dynamic. The official load_trt builds its
    # TensorRT engine with optimization profiles for x, mask, mu and cond only, so t and spks must be static.
    axes = {k: {2: "seq_len"} for k in ("x", "mask", "mu", "cond", "estimator_out")}
    with _quiet():
        torch.onnx.export(estimator, estimator_inputs(estimator, 2, 128, gen), str(tmp), export_params=True,
                          opset_version=18, do_constant_folding=True, input_names=names,
                          output_names=["estimator_out"], dynamo=False, dynamic_axes=axes)
    os.replace(tmp, out)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out), sess_options=options, providers=["CPUExecutionProvider"])
    check = estimator_inputs(estimator, 2, 173, gen)
    ref = estimator(*check)
    got = session.run(None, {k: v.numpy() for k, v in zip(names, check)})[0]
    return _check("estimator", out, float((torch.from_numpy(got) - ref).abs().max()), atol)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args(argv)
    model_dir = Path(args.model_dir)
    gen = torch.Generator().manual_seed(args.seed)
    if args.merge == "true":
        if not args.character:
            raise CharacterError("--merge true needs --character <exp>/characters/<spk> (the adapter to merge)")
        merge_character(model_dir, args.character, args.config, args.qwen_pretrain_path, args.atol, gen)
    flow = load_flow(model_dir, args.config, args.qwen_pretrain_path)
    written = []
    if has_encoder(flow):
        export_encoder(flow, model_dir / ENCODER_FILE, args.atol, gen)
        written.append(ENCODER_FILE)
    else:
        logger.info("%s has no token encoder (CosyVoice3's DiT flow): no %s, as in the official export",
                    type(flow).__name__, ENCODER_FILE)
    export_estimator(flow, model_dir / ESTIMATOR_FILE, args.atol, gen)
    written.append(ESTIMATOR_FILE)
    logger.info("exported %s into %s", " and ".join(written), model_dir)
    return 0


def has_encoder(flow: torch.nn.Module) -> bool:
    """Whether the flow has a token encoder to TorchScript (CosyVoice2's CausalMaskedDiffWithXvec does)."""
    return isinstance(getattr(flow, "encoder", None), torch.nn.Module)


# the command line: a bad input is one line (exit status 2), not a traceback
cli = entry_point("export.py")(main)


if __name__ == "__main__":
    sys.exit(cli())
