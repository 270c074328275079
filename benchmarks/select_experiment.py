"""Does choosing training data by its training dynamics beat choosing it at random? An honest check on the
digits task (scikit-learn's bundled 8x8 digits: 1,437 training and 360 test images, no download).

For each noise setting (clean labels, and 20 % uniform label noise) and seed:

1. a proxy run: the demo's small CNN trained for ``--proxy-epochs`` epochs on the (noisy) training set with
   the recorder attached, after a pre-training pass (split ``initial``: the same initial weights, no update);
2. selections of 10 %, 30 %, 50 % and 90 % of the training set from that run by ``run.select`` with every method at
   its defaults: ``s2l`` (100 k-means clusters of the loss trajectories), ``loss_drop``,
   ``learning_percentage`` and ``random`` (the baseline), seeded with the seed;
3. a fresh CNN (seeded with the seed) trained on each selection for as many SGD steps as the full-data model
   takes in ``--epochs`` epochs (equal compute: a 10 % subset runs ten times the epochs), and on the full
   training set; accuracy on the clean test labels.

Prints the table (mean and standard deviation over the seeds, and the share of mislabeled samples each
selection kept) and writes JSON. Usage: python benchmarks/select_experiment.py [--seeds 0 1 2] [--epochs 20]
[--proxy-epochs 10] [--budgets 0.1 0.3 0.5 0.9] [--noise 0 0.2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import math
import tempfile
import time

import numpy as np
import polars as pl
import torch

import tdlog.analytics as analytics
from tdlog.demo.classifier import accuracy, small_cnn, train_classifier
from tdlog.demo.digits import NUM_CLASSES, inject_noise, load_digits_split
from tdlog.recorder import Recorder

METHODS = ("s2l", "loss_drop", "learning_percentage", "random")


def record_proxy(path: Path, inputs: torch.Tensor, labels: torch.Tensor, *, epochs: int, seed: int) -> None:
    """The pre-training pass (the model ``train_classifier`` starts from) and ``epochs`` recorded epochs."""
    ids = torch.arange(len(labels))
    with Recorder(path, num_classes=NUM_CLASSES) as rec:
        rec.register_samples(ids, labels)
        torch.manual_seed(seed)  # train_classifier seeds the same way: these are its initial weights
        with torch.no_grad():
            rec.log(ids, small_cnn(NUM_CLASSES)(inputs), labels, epoch=0, split="initial")
        train_classifier(inputs, labels, num_outputs=NUM_CLASSES, epochs=epochs, seed=seed, recorder=rec,
                         sample_ids=ids)


def test_accuracy(rows: np.ndarray, inputs, labels, split, *, epochs: int, seed: int) -> float:
    """A fresh CNN trained on ``rows`` for the steps ``epochs`` full-data epochs take; clean test accuracy."""
    rows = torch.from_numpy(np.array(rows, dtype=np.int64))  # a writable copy (the ids come read-only)
    equal_steps = math.ceil(epochs * len(labels) / len(rows))
    model = train_classifier(inputs[rows], labels[rows], num_outputs=NUM_CLASSES, epochs=equal_steps, seed=seed)
    return accuracy(model, split.test_inputs, split.test_labels, NUM_CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="full-data epochs of the final models")
    parser.add_argument("--proxy-epochs", type=int, default=10)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.9])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2], help="uniform label-noise rates")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/select_experiment.json"))
    args = parser.parse_args()

    rows = []
    start = time.perf_counter()
    for noise in args.noise:
        for seed in args.seeds:
            split = load_digits_split(seed=seed)
            clean = split.train_labels.numpy()
            labels = torch.from_numpy(inject_noise(clean, noise, seed=seed)) if noise else split.train_labels
            mislabeled = labels.numpy() != clean
            options = {"epochs": args.epochs, "seed": seed}
            everything = np.arange(len(labels))
            full = test_accuracy(everything, split.train_inputs, labels, split, **options)
            rows.append({"noise": noise, "seed": seed, "method": "full data", "budget": 1.0,
                         "mislabeled_kept": float(mislabeled.mean()), "accuracy": full})
            with tempfile.TemporaryDirectory() as scratch:
                record_proxy(Path(scratch) / "proxy", split.train_inputs, labels, epochs=args.proxy_epochs, seed=seed)
                with analytics.open_run(Path(scratch) / "proxy") as run:
                    for budget in args.budgets:
                        for method in METHODS:
                            chosen = run.select(budget, method=method, seed=seed)["sample_id"].to_numpy()
                            rows.append({"noise": noise, "seed": seed, "method": method, "budget": budget,
                                         "mislabeled_kept": float(mislabeled[chosen].mean()),
                                         "accuracy": test_accuracy(chosen, split.train_inputs, labels, split,
                                                                   **options)})
            print(f"noise {noise:.0%} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    table = (pl.DataFrame(rows).group_by("noise", "budget", "method", maintain_order=True)
             .agg(accuracy_mean=pl.col("accuracy").mean(), accuracy_std=pl.col("accuracy").std(),
                  mislabeled_kept=pl.col("mislabeled_kept").mean(), seeds=pl.len()))
    random = table.filter(pl.col("method") == "random").select("noise", "budget", random_mean="accuracy_mean")
    table = table.join(random, on=["noise", "budget"], how="left", maintain_order="left").with_columns(
        vs_random=pl.col("accuracy_mean") - pl.col("random_mean")).drop("random_mean")
    print(f"{'noise':>6} {'budget':>7} {'method':<20} {'test accuracy':>16} {'vs random':>10} {'mislabeled kept':>16}")
    for row in table.iter_rows(named=True):
        versus = "" if row["vs_random"] is None else f"{row['vs_random']:+.3f}"
        print(f"{row['noise']:>6.0%} {row['budget']:>7.0%} {row['method']:<20} "
              f"{row['accuracy_mean']:>9.3f} ± {row['accuracy_std'] or 0.0:.3f} {versus:>10} "
              f"{row['mislabeled_kept']:>16.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "out"},
                                    "seconds": time.perf_counter() - start, "table": table.to_dicts(), "runs": rows},
                                   indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
