"""Threshold samples (Pleiss et al. 2020): a share of the data relabelled to a fake extra class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def threshold_sample_indices(num_samples: int, num_classes: int, *, seed: int = 0, pass_index: int = 0) -> np.ndarray:
    """Indices of the threshold samples of one pass: ``m = N // (C + 1)`` of them (the AUM paper's share:
    the fake class as large as an average real class), slice ``pass_index`` of one seeded permutation of
    ``range(N)``, so passes ``0`` and ``1`` are disjoint."""
    count = num_samples // (num_classes + 1)
    if pass_index < 0 or (pass_index + 1) * count > num_samples:
        raise ValueError(
            f"pass_index: expected 0 <= pass_index < {num_samples // max(count, 1)} "
            f"(N={num_samples}, m=N//(C+1)={count}), got {pass_index}"
        )
    permutation = np.random.default_rng(seed).permutation(num_samples)
    return np.sort(permutation[pass_index * count : (pass_index + 1) * count])


def threshold_samples(labels: Any, num_classes: int, *, seed: int = 0, pass_index: int = 0) -> Any:
    """Training targets with threshold samples: ``labels`` with ``N // (num_classes + 1)`` entries moved to the
    extra class ``num_classes`` (the model needs ``num_classes + 1`` outputs).

    Returns the same kind of object as ``labels`` (torch tensor or numpy array). Register the result as
    ``Recorder.register_samples(ids, labels, targets=result)`` so the samples table flags them.
    """
    is_tensor = isinstance(labels, torch.Tensor)
    array = labels.detach().cpu().numpy() if is_tensor else np.asarray(labels)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TypeError(f"labels: expected a 1-D integer array of class indices, got {array.dtype} {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"labels: expected class indices in [0, {num_classes}), got [{array.min()}, {array.max()}]")
    targets = array.copy()
    targets[threshold_sample_indices(array.size, num_classes, seed=seed, pass_index=pass_index)] = num_classes
    return torch.from_numpy(targets).to(labels.device) if is_tensor else targets
