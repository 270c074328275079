"""The demo's data: scikit-learn's bundled handwritten digits (1,797 8x8 images, no download) and the label
noise models of the AUM paper's experiments (Pleiss et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
NOISE_MODELS = ("uniform", "pairflip")


@dataclass
class DigitsSplit:
    """Train and test tensors: inputs ``[n, 1, 8, 8]`` in ``[0, 1]``, labels ``[n]`` int64."""

    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor


def load_digits_split(*, test_share: float = 0.2, seed: int = 0) -> DigitsSplit:
    """Digits scaled to ``[0, 1]``, split into train and test, stratified by class, seeded."""
    digits = load_digits()
    inputs = (digits.images / 16.0).astype(np.float32)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        inputs, digits.target.astype(np.int64), test_size=test_share, random_state=seed, stratify=digits.target
    )
    return DigitsSplit(*(torch.from_numpy(a) for a in (train_x, train_y, test_x, test_y)))


def inject_noise(labels: np.ndarray, noise_rate: float, *, model: str = "uniform", num_classes: int = NUM_CLASSES,
                 seed: int = 0) -> np.ndarray:
    """Observed labels: ``round(noise_rate * N)`` samples chosen at random get a wrong label, drawn
    uniformly among the other ``C - 1`` classes (``uniform``) or the next class ``(y + 1) mod C``
    (``pairflip``, the asymmetric noise where one class is mistaken for one other)."""
    if model not in NOISE_MODELS:
        raise ValueError(f"noise_model: expected one of {NOISE_MODELS}, got {model!r}")
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"noise_rate: expected a value in [0, 1), got {noise_rate}")
    rng = np.random.default_rng(seed)
    noisy = np.array(labels, dtype=np.int64, copy=True)
    flipped = rng.choice(len(noisy), size=round(noise_rate * len(noisy)), replace=False)
    shift = rng.integers(1, num_classes, size=len(flipped)) if model == "uniform" else 1
    noisy[flipped] = (noisy[flipped] + shift) % num_classes
    return noisy
