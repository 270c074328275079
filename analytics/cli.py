"""The ``tdlog`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdlog", description="Training-dynamics log store and analytics.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train on noisy digits, record every epoch, rank samples by AUM")
    demo.add_argument("--out", type=Path, default=None, help="output folder (default: a fresh ./tdlog-demo/DATE)")
    demo.add_argument("--noise-rate", type=float, default=0.2, help="share of labels flipped (default 0.2)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    demo.add_argument("--seed", type=int, default=0, help="seed of noise, initialisation and batches")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            if not 0.0 <= args.noise_rate < 0.9:
                raise ValueError(f"--noise-rate: expected a value in [0, 0.9), got {args.noise_rate}")
            run_demo(args.out, noise_rate=args.noise_rate, epochs=args.epochs, seed=args.seed,
                     progress=sys.stderr.isatty())
    except (OSError, ValueError, KeyError) as exc:
        print(f"tdlog {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
