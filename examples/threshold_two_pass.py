"""AUM with threshold samples, two passes (Pleiss et al. 2020): each pass moves a disjoint N/(C+1) share of the
data to a fake class C; samples are flagged when their AUM is below the threshold samples' 99th percentile.

    python examples/threshold_two_pass.py --out runs/two-pass --epochs 30 --noise-rate 0.2
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import tdlog.analytics as analytics
from tdlog.recorder import Recorder, threshold_samples

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, required=True, help="folder for the runs pass-0 and pass-1")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--noise-rate", type=float, default=0.2)
args = parser.parse_args()

digits = load_digits()
inputs = torch.tensor(digits.data / 16.0, dtype=torch.float32)
true_labels = digits.target.astype(np.int64)
rng = np.random.default_rng(0)
observed = true_labels.copy()
flipped = rng.choice(len(observed), round(args.noise_rate * len(observed)), replace=False)
observed[flipped] = (observed[flipped] + rng.integers(1, 10, len(flipped))) % 10

for pass_index in (0, 1):
    targets = threshold_samples(observed, 10, seed=0, pass_index=pass_index)  # disjoint across passes
    torch.manual_seed(pass_index)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 11))  # C + 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    target_tensor = torch.from_numpy(targets)
    with Recorder(args.out / f"pass-{pass_index}", num_classes=10, with_threshold_class=True) as rec:
        rec.register_samples(np.arange(len(observed)), observed, targets=targets, true_label=true_labels)
        for epoch in range(args.epochs):
            for ids in torch.randperm(len(observed)).split(64):
                logits = model(inputs[ids])
                loss = F.cross_entropy(logits, target_tensor[ids], reduction="none")
                rec.log(ids, logits, target_tensor[ids], loss=loss, epoch=epoch)
                optimizer.zero_grad()
                loss.mean().backward()
                optimizer.step()

# both runs in one table: each scored on the epoch window its threshold samples choose, then per sample
# over the passes where it was real: flagged when its mean AUM - cutoff is below 0
with analytics.open_runs([args.out / "pass-0", args.out / "pass-1"]) as runs:
    for window in runs.epoch_windows().iter_rows(named=True):
        print(f"pass {window['run']}: epochs {window['epoch_from']}:{window['epoch_to']} ({window['chosen_by']})")
    combined = runs.scores()
mislabeled = np.isin(combined["sample_id"].to_numpy(), flipped)
flagged = combined["flagged"].to_numpy()
print(f"{len(combined)} samples scored, {flagged.sum()} flagged; precision {mislabeled[flagged].mean():.3f}, "
      f"recall {flagged[mislabeled].mean():.3f}")
