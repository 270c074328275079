"""Shared fixtures: small runs written by the real recorder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tdlog.recorder import Recorder


def write_run(
    path: Path,
    *,
    num_samples: int = 40,
    num_classes: int = 4,
    epochs: int = 3,
    batch_size: int = 16,
    seed: int = 0,
    **recorder_options,
) -> dict[str, np.ndarray]:
    """Log ``epochs`` epochs of random logits for ``num_samples`` samples; return what was logged."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    logged = {"logits": [], "epoch": [], "ids": []}
    with Recorder(path, num_classes=num_classes, **recorder_options) as rec:
        rec.register_samples(torch.arange(num_samples), labels)
        for epoch in range(epochs):
            order = torch.randperm(num_samples, generator=generator)
            for start in range(0, num_samples, batch_size):
                ids = order[start : start + batch_size]
                logits = torch.randn(len(ids), num_classes, generator=generator) * 2
                rec.log(ids, logits, labels[ids], epoch=epoch)
                logged["logits"].append(logits.numpy())
                logged["epoch"].append(np.full(len(ids), epoch))
                logged["ids"].append(ids.numpy())
    return {
        "labels": labels.numpy(),
        "logits": np.concatenate(logged["logits"]),
        "epoch": np.concatenate(logged["epoch"]),
        "ids": np.concatenate(logged["ids"]),
    }


@pytest.fixture
def small_run(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "run"
    return path, write_run(path)


collect_ignore = ["recorder/aum_upstream"]  # the aum package's own tests: run by test_aum_compat.py


# the identities of checked data files (tdlog.analytics.integrity) go to a folder of the test session's own
os.environ.setdefault("TDLOG_CACHE_DIR", tempfile.mkdtemp(prefix="tdlog-test-cache-"))
