"""A plain PyTorch training loop with the tdlog recorder, then the scores (digits, CPU, no download).

    python examples/train_loop.py --out runs/digits --epochs 20
    tdlog sql runs/digits -f examples/queries/hardest_now.sql     # while it trains, or after
"""

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import tdlog.analytics as analytics
from tdlog.recorder import DatasetWithIndex, Recorder

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--epoch-pause", type=float, default=0.0, help="seconds to sleep per epoch (live-query demos)")
args = parser.parse_args()

digits = load_digits()
inputs = torch.tensor(digits.data / 16.0, dtype=torch.float32)
labels = torch.tensor(digits.target)
loader = DataLoader(DatasetWithIndex(TensorDataset(inputs, labels)), batch_size=64, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

with Recorder(args.out, num_classes=10, flush_seconds=1.0) as rec:  # commit at least every second: live SQL
    rec.register_samples(torch.arange(len(labels)), labels)
    for epoch in range(args.epochs):
        for x, y, ids in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y, reduction="none")
            rec.log(ids, logits, y, loss=loss, epoch=epoch)  # one call per step, no host sync
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
        time.sleep(args.epoch_pause)

with analytics.open_run(args.out) as run:
    scores = run.scores()
print(scores.sort("aum").head(10).select("sample_id", "label", "aum", "aul", "confidence", "forgetting_events"))
