"""Helpers shared by the stage tools (extract_embedding, extract_speech_token, make_parquet_list, save_spk2info).

Kaldi-style tables, the .pt tables the stages write, atomic writes, a threaded map with a progress bar, and input
checks whose one-line errors name the missing file and the stage that makes it.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Callable, Dict, Iterable

from cosyvoice.utils.errors import EXIT_USER_ERROR, UserError, WriteError, one_line, write_error

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
    """A stage input is missing or malformed; the message says which file and how to make it."""


def report_error(error: BaseException) -> int:
    """Print a user error as ``ERROR: <one line>`` on stderr (no traceback); returns the exit status for it, 2."""
    print(f"ERROR: {one_line(error)}", file=sys.stderr)
    return EXIT_USER_ERROR


def require_file(path: str, tool: str) -> str:
    """Return ``path`` if it is a file; otherwise raise one line naming it and the stage that makes it."""
    if not os.path.isfile(path):
        maker = MADE_BY.get(os.path.basename(path))
        hint = f"run {maker} first" if maker else "check the path"
        raise StageInputError(f"{tool}: required file {path} is missing; {hint}")
    return path


def read_table(path: str, tool: str) -> Dict[str, str]:
    """Read a Kaldi table into ``{key: value}`` with tools/validate_data_dir.py's reader (sorted, unique keys)."""
    from validate_data_dir import DataDirError, read_table as read_entries

    require_file(path, tool)
    try:
        return dict(read_entries(path))
    except DataDirError as e:
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


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def require_writable_dir(path: str, tool: str) -> str:
    """Return ``path`` (created if missing) if files can be written in it; otherwise raise one line naming it.

    Tools that write tables call it before any long computation, so a read-only ``--data_root`` fails at once."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", suffix=f".tmp{os.getpid()}", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        error = write_error(path, e, hint=" (the data dir, e.g. run.sh --data_root, must be writable)")
        if isinstance(error, WriteError):
            raise StageInputError(f"{tool}: {error}") from e
        raise
    return path


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` (named ``*.tmp<pid>``, so that
    ``cosyvoice.utils.checkpoint.clean_stale_temp`` removes it if this process is killed), then rename it onto
    ``path``. A full disk or an unwritable folder is one line naming ``path``; nothing is left half-written."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{os.getpid()}", dir=d)
    except OSError as e:
        raise _stage_write_error(path, e) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        raise _stage_write_error(path, e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _stage_write_error(path: str, e: OSError) -> OSError:
    error = write_error(path, e)
    return StageInputError(str(error)) if isinstance(error, WriteError) else error


def save_pt(obj, path: str) -> None:
    import torch

    def write(tmp: str) -> None:
        # a file object: the same object gives the same bytes, and a full disk is an OSError (not a RuntimeError)
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def write_lines(path: str, lines: Iterable[str]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")

    atomic_write(path, write)


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
