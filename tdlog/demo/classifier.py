"""The demo's model: a small CNN for 8x8 digits, and the training loop that optionally records every step."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def small_cnn(num_outputs: int) -> nn.Module:
    """Two 3x3 convolutions (32, 64 channels), 2x2 max-pool, a 128-unit hidden layer: ~150k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_outputs),
    )


def train_classifier(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_outputs: int,
    epochs: int = 40,
    seed: int = 0,
    weights: torch.Tensor | None = None,
    recorder: Any = None,
    sample_ids: torch.Tensor | None = None,
    batch_size: int = 64,
    learning_rate: float = 0.05,
    progress: str | None = None,
) -> nn.Module:
    """SGD (momentum 0.9, weight decay 5e-4, cosine learning rate) on ``inputs, targets``; the batch loss is
    ``sum_i w_i * loss_i / sum_i w_i`` with ``weights`` (default 1). With a ``recorder`` every step is logged
    under ``sample_ids``. ``progress`` is the progress bar's label (``None``: no bar)."""
    torch.manual_seed(seed)
    model = small_cnn(num_outputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = -(-len(targets) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    weights = torch.ones(len(targets)) if weights is None else weights
    for epoch in tqdm(range(epochs), desc=progress, unit="epoch", disable=progress is None, leave=False):
        model.train()
        for rows in torch.randperm(len(targets), generator=generator).split(batch_size):
            logits = model(inputs[rows])
            loss = F.cross_entropy(logits, targets[rows], reduction="none")
            if recorder is not None:
                recorder.log(sample_ids[rows], logits, targets[rows], loss=loss, epoch=epoch)
            batch_weights = weights[rows]
            optimizer.zero_grad()
            ((loss * batch_weights).sum() / batch_weights.sum().clamp_min(1e-12)).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, inputs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Softmax over the first ``num_classes`` outputs (a threshold class, if any, left out)."""
    return torch.softmax(model(inputs)[:, :num_classes], dim=1)


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Share of ``inputs`` whose most probable class among the first ``num_classes`` is ``labels``."""
    return float((predict_proba(model, inputs, num_classes).argmax(1) == labels).float().mean())
