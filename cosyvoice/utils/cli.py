"""How every entry point of the toolkit starts and fails: one logging setup, one way to report a user error.

    @entry_point("extract_embedding")
    def main(argv=None) -> int:
        ...

``main(argv)`` then logs as every other tool does (``LOG_FORMAT``), and a :class:`~cosyvoice.utils.errors.UserError`
it raises (a bad option, file or data; a write that failed), or a FileNotFoundError, is printed as one line
``<prog>: error: <message>`` on stderr, with no traceback, and ``main`` returns 2
(:data:`~cosyvoice.utils.errors.EXIT_USER_ERROR`), as argparse does for a bad option. Anything else is a bug and keeps
its traceback. The recipe scripts (run.sh, inference.sh, serve.sh) follow the same convention.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, List, Optional

from cosyvoice.utils.errors import EXIT_USER_ERROR, UserError, one_line

LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging in the toolkit's format (a no-op when the process already configured logging)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def report(prog: str, error: BaseException) -> int:
    """Print ``<prog>: error: <one line>`` on stderr (a message that starts with ``<prog>:`` is not prefixed
    twice); returns :data:`EXIT_USER_ERROR`."""
    text = one_line(error)
    name = prog[:-3] if prog.endswith(".py") else prog
    for prefix in (f"{prog}: ", f"{name}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    print(f"{prog}: error: {text}", file=sys.stderr)
    return EXIT_USER_ERROR


USER_ERRORS = (UserError, FileNotFoundError)


def entry_point(prog: str, on_error: Optional[Callable[[BaseException], bool]] = None,
                logging_setup: Optional[Callable[[], None]] = setup_logging) -> Callable:
    """Decorate ``main(argv)``: logging set up, a user error reported in one line with exit status 2.

    ``on_error(e)``, when given, is called first (e.g. to log the error into a file) and says whether this process
    prints the line (several ranks of one run failing alike: one says it). ``logging_setup``: None when ``main``
    sets up its own logging (the trainer: a file per run, the rank in every line)."""
    def wrap(fn: Callable[[Optional[List[str]]], Optional[int]]) -> Callable[[Optional[List[str]]], int]:
        @functools.wraps(fn)
        def main(argv: Optional[List[str]] = None) -> int:
            if logging_setup is not None:
                logging_setup()
            try:
                return int(fn(argv) or 0)
            except USER_ERRORS as e:
                if on_error is not None and not on_error(e):
                    return EXIT_USER_ERROR
                return report(prog, e)
        return main
    return wrap
