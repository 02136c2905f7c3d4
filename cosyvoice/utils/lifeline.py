"""Processes that die with their parent, so that stopping the recipe stops everything it started.

    python -m cosyvoice.utils.lifeline --parent PID -- CMD [ARG...]

runs CMD (exec, same pid) after asking Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and
exits at once when the parent ``PID`` is already gone. run.sh starts its long commands this way, so that killing
run.sh, even with SIGKILL, also ends torchrun and the stage tools. ``die_with_parent()`` does the same from inside a
process: the training workers call it, so that they end with their torchrun agent (which starts them in a session of
their own, out of reach of a kill of run.sh's process group). Elsewhere than Linux both do nothing.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from typing import List, Optional

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: Optional[int] = None, sig: int = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the parent process dies; True when the request took effect.

    ``parent``: the pid the parent should have; if it is already gone (this process was re-parented), ``sig`` is
    raised at once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def parent_cmdline() -> str:
    """The parent process's command line ('' where /proc cannot tell)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def die_with_torchrun_agent() -> None:
    """In a torchrun worker: end with the agent. A worker that starts after its agent already died (killed while the
    worker was still importing) has been re-parented, so it is told by its parent no longer being torchrun."""
    if not sys.platform.startswith("linux"):
        return
    die_with_parent()
    if not any(name in parent_cmdline() for name in ("torch.distributed.run", "torchrun")):
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parent", type=int, required=True, help="pid of the parent this command must not outlive")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given")
    die_with_parent(args.parent)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"lifeline: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
