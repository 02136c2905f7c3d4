"""The common base of the errors that bad input from a user raises.

Every entry point (``cosyvoice/bin/*.py``, ``tools/*.py``, ``local/*.py``, through
:func:`cosyvoice.utils.cli.entry_point`) prints a :class:`UserError` as one line (:func:`one_line`, no traceback)
and exits with :data:`EXIT_USER_ERROR`. The message itself names the file and the fix.
"""
from __future__ import annotations

import errno
import os
import re

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input (a file, an option, data) that the user can fix; its message is one line naming the fix."""


class DataError(UserError, ValueError):
    """Training or CV data that cannot be used; the message names the file (and utterance) and how to remake it."""


class TrainSetupError(UserError, ValueError):
    """A bad training option, file or combination, reported in one line naming the fix."""


class WriteError(UserError, OSError):
    """An output that could not be written (disk full, read-only or foreign folder); nothing half-written is left."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]"
        return self.strerror or super().__str__()


_WRITE_HINTS = {
    errno.ENOSPC: "no space left on device: free some disk space, then rerun",
    errno.EDQUOT: "disk quota exceeded: free some space, then rerun",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
}


def write_error(path, error: OSError, hint: str = "") -> OSError:
    """A :class:`WriteError` naming ``path`` and the fix for the usual reasons a write fails; other OSErrors are
    returned unchanged (raise what this returns)."""
    reason = _WRITE_HINTS.get(getattr(error, "errno", None))
    if reason is None:
        return error
    return WriteError(error.errno, f"cannot write {os.fspath(path)}: {reason}{hint}")


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    An exception re-raised by a DataLoader worker carries the worker's traceback in its message; only its last
    line (the original message) is kept.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        text = re.sub(rf"^[\w.]*\b{re.escape(type(error).__name__)}: ", "", last)
    if isinstance(error, OSError) and error.strerror and not isinstance(error, WriteError) and error.filename:
        text = f"{error.filename}: {error.strerror}"
    return " ".join(text.split("\n")).strip() or type(error).__name__
