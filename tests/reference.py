"""Independent NumPy computation of every score from the logits a test logged (float64 throughout)."""

from __future__ import annotations

import numpy as np


def record_statistics(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-observation statistic of the recorder (DESIGN.md, Definitions), plus ``correct``."""
    z = logits.astype(np.float64)
    rows = np.arange(len(z))
    z_y = z[rows, targets]
    others = z.copy()
    others[rows, targets] = -np.inf
    other = others.max(1)
    shifted = np.exp(z - z.max(1, keepdims=True))
    p = shifted / shifted.sum(1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[rows, targets] = 1.0
    return {
        "margin": z_y - other,
        "loss": np.log(shifted.sum(1)) + z.max(1) - z_y,
        "target_logit": z_y,
        "other_logit": other,
        "other_class": others.argmax(1),
        "prob": p[rows, targets],
        "pred": z.argmax(1),
        "el2n": np.linalg.norm(p - onehot, axis=1),
        "correct": (z.argmax(1) == targets).astype(np.float64),
    }


def per_epoch_means(ids: np.ndarray, epochs: np.ndarray, stats: dict[str, np.ndarray]) -> dict[int, dict]:
    """{sample_id: {"epochs": sorted epochs, name: per-epoch mean values}}."""
    out: dict[int, dict] = {}
    for sample in np.unique(ids):
        mine = ids == sample
        sample_epochs = np.unique(epochs[mine])
        entry = {"epochs": sample_epochs}
        for name, values in stats.items():
            entry[name] = np.array([values[mine & (epochs == e)].mean() for e in sample_epochs])
        out[int(sample)] = entry
    return out


def forgetting(learned: np.ndarray) -> tuple[int | None, int | None, int | None]:
    """(forgetting events or None if never learned, first learned index, learned-for-good index)."""
    if not learned.any():
        return None, None, None
    events = int(np.sum(learned[:-1] & ~learned[1:]))
    first = int(np.argmax(learned))
    if not learned[-1]:
        return events, first, None
    unlearned = np.flatnonzero(~learned)
    return events, first, int(unlearned[-1] + 1) if unlearned.size else 0
