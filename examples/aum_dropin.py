"""The ``aum`` package's AUMCalculator, swapped for tdlog's: same calls, same aum_values.csv, and a tdlog run.

    python examples/aum_dropin.py --out runs/aum --epochs 10
    # before: from aum import AUMCalculator
"""

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from tdlog.recorder import AUMCalculator

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="save_dir: aum_values.csv here, the tdlog run in OUT/tdlog")
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

torch.manual_seed(0)
digits = load_digits()
inputs = torch.tensor(digits.data / 16.0, dtype=torch.float32)
labels = torch.tensor(digits.target)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

aum_calculator = AUMCalculator(args.out, compressed=True)
for _ in range(args.epochs):
    for ids in torch.randperm(len(labels)).split(64):
        logits = model(inputs[ids])
        records = aum_calculator.update(logits.detach(), labels[ids], ids)  # as with the aum package
        optimizer.zero_grad()
        F.cross_entropy(logits, labels[ids]).backward()
        optimizer.step()
aum_calculator.finalize()  # writes OUT/aum_values.csv and closes the run OUT/tdlog
print(f"wrote {args.out}/aum_values.csv and the tdlog run {aum_calculator.run_dir}")
