#!/usr/bin/env python3
"""Check Kaldi-style data dirs (see cosyvoice.dataset.datadir); one line per dir, or one error line (exit 2).

    python tools/validate_data_dir.py data/train [data/test ...] [--no_check_files]
"""
from __future__ import annotations

import argparse
import sys

from cosyvoice.dataset.datadir import validate_data_dir
from cosyvoice.utils.cli import entry_point

PROG = "validate_data_dir.py"


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dirs", nargs="+", help="data dirs to check")
    p.add_argument("--no_check_files", action="store_true", help="do not check that the wav files exist")
    return p.parse_args(argv)


@entry_point(PROG)
def main(argv=None) -> int:
    args = get_args(argv)
    for d in args.data_dirs:
        info = validate_data_dir(d, check_files=not args.no_check_files)
        print(f"{PROG}: {d} OK ({info['utterances']} utterances, {info['speakers']} speaker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
