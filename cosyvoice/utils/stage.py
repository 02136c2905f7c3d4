"""What the data-stage tools share (stage 1 to 4: extract_embedding, extract_speech_token, data_quality,
make_parquet_list, save_spk2info): their input checks, whose one-line errors name the missing file and the stage
that makes it, the .pt tables they read and write, and a threaded map with a progress bar.

Writes go through :mod:`cosyvoice.utils.fileio` (atomic, one line on a full disk or a read-only folder).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, List

from cosyvoice.utils import fileio
from cosyvoice.utils.errors import UserError, WriteError

# Which recipe stage writes each data-dir file (for error messages).
MADE_BY = {
    "wav.scp": "stage 0 (data preparation)",
    "text": "stage 0 (data preparation)",
    "utt2spk": "stage 0 (data preparation)",
    "spk2utt": "stage 0 (data preparation)",
    "utt2embedding.pt": "stage 1 (tools/extract_embedding.py)",
    "spk2embedding.pt": "stage 1 (tools/extract_embedding.py)",
    "utt2speech_token.pt": "stage 2 (tools/extract_speech_token.py)",
}


class StageInputError(UserError, FileNotFoundError):
    """A stage input is missing or malformed, or an output cannot be written; the message says which file and how
    to fix it."""


def require_file(path: str, tool: str) -> str:
    """Return ``path`` if it is a file; otherwise raise one line naming it and the stage that makes it."""
    if not os.path.isfile(path):
        maker = MADE_BY.get(os.path.basename(path))
        hint = f"run {maker} first" if maker else "check the path"
        raise StageInputError(f"{tool}: required file {path} is missing; {hint}")
    return path


def read_table(path: str, tool: str) -> Dict[str, str]:
    """A Kaldi table as ``{key: value}`` (sorted, unique keys: :func:`cosyvoice.utils.fileio.read_table`)."""
    require_file(path, tool)
    try:
        return fileio.read_table_dict(path)
    except fileio.TableError as e:
        raise StageInputError(f"{tool}: {e} (check the data dir: python tools/validate_data_dir.py)") from e


def load_pt_table(path: str, tool: str) -> dict:
    """Load a ``{key: value}`` table saved with torch.save (utt2embedding.pt etc.)."""
    import torch

    require_file(path, tool)
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        maker = MADE_BY.get(os.path.basename(path), "the stage that makes it")
        raise StageInputError(f"{tool}: cannot read {path}: {e}; rerun {maker}") from e
    if not isinstance(table, dict):
        raise StageInputError(f"{tool}: {path} holds a {type(table).__name__}, expected a dict")
    return table


def _as_stage_error(tool: str, write: Callable[[], None]) -> None:
    try:
        write()
    except WriteError as e:
        raise StageInputError(f"{tool}: {e}" if tool else str(e)) from e


def require_writable_dir(path: str, tool: str) -> str:
    """Return ``path`` (created if missing) if files can be written in it; otherwise raise one line naming it.

    Tools that write tables call it before any long computation, so a read-only ``--data_root`` fails at once."""
    _as_stage_error(tool, lambda: fileio.require_writable_dir(
        path, "the data dir, e.g. run.sh --data_root, must be writable"))
    return path


def save_pt(obj, path: str, tool: str = "") -> None:
    _as_stage_error(tool, lambda: fileio.atomic_torch_save(obj, path))


def write_lines(path: str, lines: Iterable[str], tool: str = "") -> None:
    _as_stage_error(tool, lambda: fileio.atomic_write_lines(path, lines))


def write_text(path: str, text: str, tool: str = "") -> None:
    _as_stage_error(tool, lambda: fileio.atomic_write_text(path, text))


def speaker_means(utt2embedding: Dict[str, List[float]], utt2spk: Dict[str, str]) -> Dict[str, List[float]]:
    """{spk: element-wise mean of its utterances' embeddings}, speakers in sorted order."""
    import torch

    by_spk: Dict[str, List[List[float]]] = {}
    for utt in sorted(utt2embedding):
        by_spk.setdefault(utt2spk[utt], []).append(utt2embedding[utt])
    return {spk: torch.tensor(embs, dtype=torch.float32).mean(dim=0).tolist() for spk, embs in sorted(by_spk.items())}


def extraction_args(description: str, tables: str, onnx: str, argv=None):
    """The command line of an extraction tool (stages 1-2): --data_dir, --onnx_path, --num_workers."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", "--dir", dest="data_dir", required=True, help=f"Kaldi data dir ({tables})")
    p.add_argument("--onnx_path", required=True, help=f"{onnx} of the pretrained model dir")
    p.add_argument("--num_workers", "--num_thread", dest="num_workers", type=int, default=2,
                   help="parallel extraction threads")
    return p.parse_args(argv)


def map_utts(fn: Callable, utts: Iterable[str], num_workers: int, desc: str) -> Dict[str, object]:
    """``{utt: fn(utt)}`` over a thread pool with a progress bar; the first exception stops the rest and is raised.

    Threads suit these jobs: onnxruntime, soundfile and torch release the GIL while they compute.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    utts = list(utts)
    results: Dict[str, object] = {}
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        futures = {pool.submit(fn, utt): utt for utt in utts}
        try:
            for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="utt"):
                results[futures[fut]] = fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
