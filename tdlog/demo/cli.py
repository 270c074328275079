"""``tdlog demo``'s options (the main command line hands them over untouched)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tdlog.parsing import OneLineParser

from .digits import NOISE_MODELS
from .sft import CORRUPTIONS


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tdlog demo", description="end to end on data it makes: record, detect, compare, retrain, report; "
                                       "noisy digits (--task digits) or instruction fine-tuning (--task sft)")
    parser.add_argument("--task", choices=("digits", "sft"), default="digits",
                        help="digits: a CNN on noisy handwritten digits; sft: a tiny causal LM fine-tuned with TRL's "
                             "SFTTrainer on an instruction dataset with corrupted completions (default digits)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a fresh ./tdlog-demo/DATE)")
    parser.add_argument("--noise-rate", type=float, default=None,
                        help="share of labels flipped, or of completions corrupted (default 0.2 digits, 0.1 sft)")
    parser.add_argument("--noise-model", choices=NOISE_MODELS, default="uniform",
                        help="digits: uniform (any other class) or pairflip (the next class) (default uniform)")
    parser.add_argument("--corruption", choices=CORRUPTIONS, default="random",
                        help="sft: random (random words) or off-by-one (each word moved two on, not one) "
                             "(default random)")
    parser.add_argument("--lora", action="store_true", help="sft: fine-tune LoRA adapters instead of every weight")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 40 digits, 8 sft)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, noise, probes, initialisation and batches")
    parser.add_argument("--probes-per-suite", type=int, default=50, help="MAP-D probes per suite (default 50)")
    parser.add_argument("--cv-folds", type=int, default=3, help="cross-validation folds for cleanlab (default 3)")
    parser.add_argument("--threshold-passes", type=int, choices=(1, 2), default=2,
                        help="runs with disjoint threshold samples, scored together (default 2: every sample scored)")
    parser.add_argument("--no-cleanlab", action="store_true", help="skip cleanlab's cross-validated comparison")
    parser.add_argument("--no-retrain", action="store_true", help="skip the retrainings (digits: four; sft: three)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with ``argv`` (the arguments after ``tdlog demo``); errors are one line, status 1."""
    from .pipeline import DemoConfig, default_out_dir, run_demo

    args = build_parser().parse_args(argv)
    sft = args.task == "sft"
    if args.noise_rate is None:
        args.noise_rate = 0.1 if sft else 0.2
    if args.epochs is None:
        args.epochs = 8 if sft else 40
    try:
        if not 0.0 <= args.noise_rate < 0.9:
            raise ValueError(f"--noise-rate: expected a value in [0, 0.9), got {args.noise_rate}")
        if sft:
            from .sft import SFTDemoConfig, run_sft_demo

            if args.epochs < 1:
                raise ValueError(f"--epochs: expected a positive number, got {args.epochs}")
            config = SFTDemoConfig(noise_rate=args.noise_rate, corruption=args.corruption, epochs=args.epochs,
                                   seed=args.seed, lora=args.lora, retrain=not args.no_retrain)
            result = run_sft_demo(args.out or default_out_dir(), config)
            print(f"wrote {result.run_dir} and {result.report}")
            return 0
        for name in ("epochs", "probes_per_suite"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
        if args.cv_folds < 2:
            raise ValueError(f"--cv-folds: expected at least 2, got {args.cv_folds}")
        config = DemoConfig(noise_rate=args.noise_rate, noise_model=args.noise_model, epochs=args.epochs,
                            seed=args.seed, probes_per_suite=args.probes_per_suite, cv_folds=args.cv_folds,
                            threshold_passes=args.threshold_passes, compare_cleanlab=not args.no_cleanlab,
                            progress=sys.stderr.isatty())
        run_demo(args.out, config, retrain=not args.no_retrain)
    except (OSError, ValueError) as exc:
        print(f"tdlog demo: error: {exc}", file=sys.stderr)
        return 1
    return 0
