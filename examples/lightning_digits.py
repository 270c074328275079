"""Digits with Lightning, recorded by tdlog's RecorderCallback (CPU, no download).

The module calls itself for its logits (``self(x)``) and returns only the loss; the callback takes the
logits through a forward hook and the ids from the batches of ``DatasetWithIndex``.

    python examples/lightning_digits.py --out runs/lightning-digits --epochs 10 [--devices 2]
"""

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import tdlog.analytics as analytics
from tdlog.recorder import DatasetWithIndex
from tdlog.recorder.integrations.lightning import RecorderCallback

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--devices", type=int, default=1, help="processes (2: DDP on the CPU, gloo)")
args = parser.parse_args()


class DigitsClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _ids = batch
        return F.cross_entropy(self(x), y)  # self(x): the callback sees the logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


digits = load_digits()
dataset = TensorDataset(torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target))
loader = DataLoader(DatasetWithIndex(dataset), batch_size=64, shuffle=True)
pl.seed_everything(0)
trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, logger=False,
                     strategy="ddp" if args.devices > 1 else "auto", enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[RecorderCallback(args.out, num_classes=10)])
trainer.fit(DigitsClassifier(), loader)

if trainer.is_global_zero:
    with analytics.open_run(args.out) as run:
        print(run.scores().select("sample_id", "aum", "aul", "forgetting_events").sort("aum").head(10))
