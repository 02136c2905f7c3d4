"""torchrun for the recipe: the same launch, with a user error told in one line instead of torchrun's report.

    python -m cosyvoice.bin.launch [torchrun options] -m cosyvoice.bin.train [train options]

runs ``python -m torch.distributed.run`` with these arguments and passes its output through. When a worker stops
on a user error (a line ``train.py: error: ...``: a bad option or file, a diverged run, a damaged shard), torchrun's
own failure report (its traceback and the per-rank table, ~40 lines) is left out, the error is printed once, and the
exit status is 2. Any other failure shows everything torchrun printed. torchrun ends with this process (SIGTERM when
it dies), and a SIGTERM or SIGINT sent here is passed on to it.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from typing import List, Optional

from cosyvoice.utils.errors import EXIT_USER_ERROR
from cosyvoice.utils.lifeline import die_with_parent

USER_ERROR = re.compile(r"^train\.py: error: ")
# where torchrun's failure report begins: its error log line, or the agent's traceback
REPORT_START = re.compile(r"^E\d{4} [\d:.]+ +\d+ .*torch/distributed/elastic/|^Traceback \(most recent call last\):")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *argv], stderr=subprocess.PIPE,
                            text=True, errors="replace", bufsize=1, preexec_fn=die_with_parent)

    def forward(signum, _frame):
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    held: List[str] = []      # lines from the first sign of a failure report on, printed only if they matter
    errors: List[str] = []

    def pump() -> None:
        for line in proc.stderr:
            if USER_ERROR.match(line):
                if line not in errors:
                    errors.append(line)
                continue
            if held or REPORT_START.match(line):
                held.append(line)
                continue
            sys.stderr.write(line)
            sys.stderr.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join()
    if rc != 0 and errors:
        sys.stderr.write(errors[0])  # the same line on every rank: once
        return EXIT_USER_ERROR
    sys.stderr.writelines(held)
    for line in errors:
        sys.stderr.write(line)
    return rc


if __name__ == "__main__":
    sys.exit(main())
