"""``tdlog demo``: record a small model trained on noisy digits, then rank samples by AUM.

Data: scikit-learn's bundled handwritten digits (1,797 8x8 images, no download). A share of the labels
(``noise_rate``) is replaced by a uniformly drawn *different* class; the true labels are kept in the
samples table so the ranking can be checked.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

from recorder import Recorder

from .run import open_run

NUM_CLASSES = 10


def inject_uniform_noise(labels: np.ndarray, noise_rate: float, seed: int) -> np.ndarray:
    """Observed labels: ``round(noise_rate * N)`` samples, chosen at random, get a uniformly drawn other class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flipped = rng.choice(len(labels), size=round(noise_rate * len(labels)), replace=False)
    noisy[flipped] = (labels[flipped] + rng.integers(1, NUM_CLASSES, size=len(flipped))) % NUM_CLASSES
    return noisy


def default_out_dir() -> Path:
    return Path("tdlog-demo") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def train_and_record(run_dir: Path, *, noise_rate: float, epochs: int, seed: int, progress: bool) -> None:
    """Train an MLP on the noisy digits, logging every batch of every epoch to ``run_dir``."""
    torch.manual_seed(seed)
    digits = load_digits()
    inputs = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    true_labels = digits.target.astype(np.int64)
    observed = inject_uniform_noise(true_labels, noise_rate, seed)
    targets = torch.from_numpy(observed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, NUM_CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    metadata = {"demo": "digits", "noise_rate": noise_rate, "epochs": epochs, "seed": seed}
    with Recorder(run_dir, num_classes=NUM_CLASSES, metadata=metadata) as rec:
        rec.register_samples(np.arange(len(observed)), observed, true_label=true_labels)
        for epoch in tqdm(range(epochs), desc="training", unit="epoch", disable=not progress):
            for ids in torch.randperm(len(targets), generator=generator).split(64):
                logits = model(inputs[ids])
                loss = F.cross_entropy(logits, targets[ids], reduction="none")
                rec.log(ids, logits, targets[ids], loss=loss, epoch=epoch)
                optimizer.zero_grad()
                loss.mean().backward()
                optimizer.step()


def lowest_aum(run_dir: Path, count: int) -> tuple[pl.DataFrame, float]:
    """The ``count`` lowest-AUM samples with observed and true labels, and the share of truly mislabeled
    samples among the lowest ``noise count`` AUMs (precision at the true noise rate)."""
    with open_run(run_dir) as run:
        samples = run.sql("SELECT sample_id, label AS observed, true_label FROM samples")
        ranked = (
            run.aum()
            .join(samples, on="sample_id")
            .with_columns(mislabeled=pl.col("observed") != pl.col("true_label"))
            .sort(["aum", "sample_id"])
        )
    noisy = int(ranked["mislabeled"].sum())
    precision = float(ranked.head(noisy)["mislabeled"].mean()) if noisy else float("nan")
    return ranked.head(count), precision


def run_demo(out: Path | None, *, noise_rate: float, epochs: int, seed: int, progress: bool) -> Path:
    """Train, record and print the lowest-AUM samples; return the run directory."""
    out = out or default_out_dir()
    run_dir = out / "run"
    if run_dir.exists():
        raise FileExistsError(f"--out: {run_dir} already holds a run; choose a fresh folder")
    train_and_record(run_dir, noise_rate=noise_rate, epochs=epochs, seed=seed, progress=progress)
    table, precision = lowest_aum(run_dir, 10)
    print(f"run recorded in {run_dir}  ({noise_rate:.0%} uniform label noise, {epochs} epochs)")
    print("10 lowest-AUM samples (most likely mislabeled):")
    with pl.Config(tbl_rows=20, tbl_hide_dataframe_shape=True, float_precision=3):
        print(table.select("sample_id", "aum", "observed", "true_label", "mislabeled"))
    print(f"precision of AUM at the true noise rate: {precision:.3f}")
    return run_dir
