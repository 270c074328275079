"""The SFT demo on every setting, defaults unchanged: ``tdlog demo --task sft``'s pipeline for each corruption
(random, off-by-one), share (0.1, 0.3) and seed (0, 1, 2): controls' AUM F1, AUL+GMM F1 and the final-epoch
loss ranking's F1 (top k, k the true count) against the injected truth, the noise-rate estimates, the chosen
window and the exact-match accuracy on held-out prompts after retraining on the full, the cleaned and the truly
clean data. Prints a table, writes JSON.

Usage: python benchmarks/sft_detection.py [--seeds 0 1 2] [--out benchmarks/results/sft_detection.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
import warnings

from tdlog.demo.sft import CORRUPTIONS, SFTDemoConfig, run_sft_demo

TARGET_F1, TARGET_RATE_ERROR = 0.8, 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--no-retrain", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sft_detection.json"))
    args = parser.parse_args()
    rows = []
    print(f"{'corruption':<11}{'rate':>5}{'seed':>5}{'windows':>10}{'AUM F1':>8}{'AUL F1':>8}{'loss F1':>8}"
          f"{'true':>7}{'thr est':>8}{'gmm est':>8}{'EM full':>8}{'cleaned':>8}{'clean':>7}{'s':>6}")
    for corruption in CORRUPTIONS:
        for rate in args.rates:
            for seed in args.seeds:
                start = time.perf_counter()
                scratch = Path(tempfile.mkdtemp(prefix="tdlog-sft-grid-"))
                try:
                    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                        warnings.simplefilter("ignore")
                        result = run_sft_demo(scratch, SFTDemoConfig(noise_rate=rate, corruption=corruption, seed=seed,
                                                                     retrain=not args.no_retrain), report=False)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                f1 = dict(zip(result.detection["method"].str.split(",").list.first().str.split(" ").list.first(),
                              result.detection["f1"], strict=True))
                rates = dict(zip(result.noise_rates["estimate"], result.noise_rates["noise_rate"], strict=True))
                accuracy = dict(zip(result.retraining["training"], result.retraining["exact_match"], strict=True))
                row = {"corruption": corruption, "rate": rate, "seed": seed,
                       "windows": [None if w is None else [w.start, w.stop] for w in result.windows],
                       "aum_f1": f1["AUM"], "aul_f1": f1["AUL"], "loss_f1": f1["final-epoch"],
                       "true_rate": rates["true"], "threshold_estimate": rates.get("threshold estimate"),
                       "gmm_estimate": rates.get("gmm estimate"),
                       "exact_match": accuracy, "seconds": time.perf_counter() - start}
                rows.append(row)
                window = "/".join("all" if w is None else f"{w[0]}:{w[1]}" for w in row["windows"])
                em = [accuracy.get(k, float("nan")) for k in ("full data", "cleaned (AUM flags dropped)",
                                                                "truly clean")]
                print(f"{corruption:<11}{rate:>5}{seed:>5}{window:>10}{row['aum_f1']:>8.3f}{row['aul_f1']:>8.3f}"
                      f"{row['loss_f1']:>8.3f}{row['true_rate']:>7.3f}{row['threshold_estimate']:>8.3f}"
                      f"{row['gmm_estimate']:>8.3f}{em[0]:>8.3f}{em[1]:>8.3f}{em[2]:>7.3f}{row['seconds']:>6.0f}",
                      flush=True)
    failed = [r for r in rows if r["aum_f1"] < TARGET_F1 or abs(r["threshold_estimate"] - r["true_rate"])
              > TARGET_RATE_ERROR]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("aum_f1", "aul_f1", "loss_f1")}
    print(f"mean F1: AUM {mean['aum_f1']:.3f}, AUL {mean['aul_f1']:.3f}, final-epoch loss {mean['loss_f1']:.3f}; "
          f"settings missing AUM F1 >= {TARGET_F1} or the estimate within {TARGET_RATE_ERROR}: {len(failed)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "mean_f1": mean, "failed": failed}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
