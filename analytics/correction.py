"""MAP-D label correction and training priority (Siddiqui et al. 2022, eqs. 8 and 9) from clean/noisy votes."""

from __future__ import annotations

import numpy as np
import polars as pl


def soft_labels(votes: pl.DataFrame, num_classes: int) -> pl.DataFrame:
    """``soft_label = p_clean * onehot(label) + p_noisy * onehot(predicted)`` (``p_noisy = 1 - p_clean``),
    ``corrected_label`` = its argmax (``label`` when ``p_clean >= 0.5``, else ``predicted``).

    ``votes`` holds ``sample_id, label, predicted, p_clean``; a prediction outside ``[0, num_classes)``
    (the threshold class) or missing leaves the label as it is. ``soft_label`` is an
    ``Array(Float64, num_classes)`` column."""
    labels = votes["label"].to_numpy()
    predicted = votes["predicted"].fill_null(-1).to_numpy()
    predicted = np.where((predicted >= 0) & (predicted < num_classes), predicted, labels)
    p_clean = votes["p_clean"].to_numpy()
    rows = np.arange(votes.height)
    soft = np.zeros((votes.height, num_classes))
    soft[rows, labels] += p_clean
    soft[rows, predicted] += 1.0 - p_clean
    return votes.with_columns(
        predicted=pl.Series(predicted, dtype=votes["label"].dtype),
        p_noisy=1.0 - pl.col("p_clean"),
        soft_label=pl.Series(soft, dtype=pl.Array(pl.Float64, num_classes)),
        corrected_label=pl.Series(np.where(p_clean >= 0.5, labels, predicted), dtype=votes["label"].dtype),
    )


def training_priority(votes: pl.DataFrame) -> pl.DataFrame:
    """``priority = (p_clean + (1 - p_target)) / 2``: high for clean samples the model has not learned yet.
    ``votes`` holds ``sample_id, p_clean, p_target``; the result is sorted by descending priority."""
    return votes.with_columns(priority=(pl.col("p_clean") + 1.0 - pl.col("p_target")) / 2).sort(
        ["priority", "sample_id"], descending=[True, False]
    )
