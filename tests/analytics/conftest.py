"""A run with threshold samples, true labels, repeated observations and given losses, written by the
real recorder, plus everything that was logged (for the NumPy reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdlog.recorder import Recorder, threshold_samples

NUM_SAMPLES, NUM_CLASSES, EPOCHS = 120, 4, 6


def write_scored_run(path: Path, *, seed: int = 0, pass_index: int = 0, epochs: int = EPOCHS) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=torch.Generator().manual_seed(99))
    true_labels = labels.clone()
    noisy = torch.arange(0, NUM_SAMPLES, 5)
    labels[noisy] = (labels[noisy] + 1) % NUM_CLASSES
    targets = torch.as_tensor(threshold_samples(labels, NUM_CLASSES, seed=7, pass_index=pass_index))
    # separable-ish logits: the true class gets a bonus that grows with the epoch, so clean samples are
    # learned, noisy ones mostly not, with randomness for forgetting events
    logged: dict[str, list] = {"ids": [], "epoch": [], "logits": [], "targets": []}
    with Recorder(path, num_classes=NUM_CLASSES, with_threshold_class=True) as rec:
        rec.register_samples(torch.arange(NUM_SAMPLES), labels, targets=targets, true_label=true_labels)
        for epoch in range(epochs):
            order = torch.randperm(NUM_SAMPLES, generator=generator)
            batches = list(order.split(32))
            batches.append(order[:10])  # ten samples seen twice this epoch: per-epoch means must apply
            for ids in batches:
                logits = torch.randn(len(ids), NUM_CLASSES + 1, generator=generator) * 1.5
                logits[torch.arange(len(ids)), true_labels[ids]] += 0.5 * epoch
                loss = F.cross_entropy(logits, targets[ids], reduction="none") if epoch % 2 else None
                rec.log(ids, logits, targets[ids], loss=loss, epoch=epoch)
                logged["ids"].append(ids.numpy())
                logged["epoch"].append(np.full(len(ids), epoch))
                logged["logits"].append(logits.numpy())
                logged["targets"].append(targets[ids].numpy())
    return {name: np.concatenate(parts) for name, parts in logged.items()} | {
        "labels": labels.numpy(),
        "true_labels": true_labels.numpy(),
        "targets_by_id": targets.numpy(),
    }


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("scored") / "run"
    return path, write_scored_run(path)
