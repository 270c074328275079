"""Detection without tuning: ``tdlog demo``'s pipeline on every noise setting and seed, defaults unchanged.

For each noise model (uniform, pairflip), noise rate (0.2, 0.3) and seed (0, 1, 2): two threshold passes of
the digits CNN (40 epochs), each scored on the epoch window its threshold samples choose (``epochs="auto"``),
combined per sample (``open_runs``); F1 of AUM + threshold and AUL + GMM against the injected truth, both
noise-rate estimates, the chosen windows, and the F1 both methods get over every epoch of the same runs (what
tdlog scored before the window was chosen). No retraining, no cleanlab. Prints a table, writes JSON.

Usage: python benchmarks/detection.py [--seeds 0 1 2] [--keep DIR] [--out benchmarks/results/detection.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import shutil
import tempfile
import time
import warnings

import polars as pl

from tdlog.analytics import open_runs
from tdlog.analytics.evaluate import evaluate_scores
from tdlog.analytics.scores import noise_rates
from tdlog.demo import DemoConfig
from tdlog.demo.pipeline import prepare_data, record_training, run_dirs

TARGET_F1, TARGET_RATE_ERROR = 0.8, 0.05


def score(dirs: list[Path], epochs) -> dict:
    with open_runs(dirs) as runs:
        windows = runs.epoch_windows(epochs=epochs)
        scores = runs.scores(epochs=epochs)
    f1 = dict(zip(*evaluate_scores(scores).select("method", "f1"), strict=True))
    truth = scores.select((pl.col("label") != pl.col("true_label")).mean()).item()
    return {"f1_aum": f1["aum_threshold"], "f1_aul": f1["aul_gmm"], "true_rate": truth,
            **{f"rate_{name}": value for name, value in noise_rates(scores).items()},
            "windows": [f"{w['epoch_from']}:{w['epoch_to']}" for w in windows.iter_rows(named=True)]}


def score_setting(dirs: list[Path]) -> dict:
    """:func:`score` on the chosen windows, with the F1 both methods get over every epoch of the same runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the memorisation warning of epochs=None
        every = score(dirs, None)
    return {**score(dirs, "auto"), "every_epoch_f1_aum": every["f1_aum"], "every_epoch_f1_aul": every["f1_aul"]}


def describe(row: dict) -> str:
    """One printed line of a setting's results (after its own labels)."""
    return (f"windows {' '.join(row['windows']):<12}F1 AUM {row['f1_aum']:.3f} (every epoch "
            f"{row['every_epoch_f1_aum']:.3f})  F1 AUL {row['f1_aul']:.3f} ({row['every_epoch_f1_aul']:.3f})  "
            f"rate true {row['true_rate']:.3f} threshold {row['rate_threshold']:.3f} gmm {row['rate_gmm']:.3f}")


def finish(rows: list[dict], out: Path) -> None:
    """Print how many settings met the targets and write the rows as JSON to ``out``."""
    failed = [r for r in rows if min(r["f1_aum"], r["f1_aul"]) < TARGET_F1]
    off = [r for r in rows if abs(r["rate_threshold"] - r["true_rate"]) > TARGET_RATE_ERROR]
    print(f"F1 >= {TARGET_F1} for both methods: {len(rows) - len(failed)}/{len(rows)} settings; threshold noise "
          f"estimate within {TARGET_RATE_ERROR}: {len(rows) - len(off)}/{len(rows)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "targets": {"f1": TARGET_F1, "rate_error": TARGET_RATE_ERROR}},
                              indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/detection.json"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the recorded runs here (and reuse them)")
    args = parser.parse_args()
    rows = []
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="tdlog-detection-"))
    try:
        for model in ("uniform", "pairflip"):
            for rate in (0.2, 0.3):
                for seed in args.seeds:
                    start = time.perf_counter()
                    config = DemoConfig(noise_rate=rate, noise_model=model, seed=seed)
                    data = prepare_data(config)
                    dirs = run_dirs(scratch / f"{model}-{rate}-{seed}", config.threshold_passes)
                    for pass_index, run_dir in enumerate(dirs):
                        if not (run_dir / "run.json").exists():
                            record_training(run_dir, data, config, pass_index=pass_index)
                    row = {"noise_model": model, "noise_rate": rate, "seed": seed, **score_setting(dirs),
                           "seconds": time.perf_counter() - start}
                    rows.append(row)
                    print(f"{model:<9}{rate:>5}{seed:>5}  {describe(row)}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    finish(rows, args.out)


if __name__ == "__main__":
    main()
