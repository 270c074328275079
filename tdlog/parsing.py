"""The argument parser of every ``tdlog`` command line (``tdlog``, ``tdlog demo``): argparse with the error
contract of the command line."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse with the command line's error contract: one line on stderr, exit status 1."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(1)
