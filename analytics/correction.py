"""MAP-D label correction and training priority (Siddiqui et al. 2022, eqs. 8 and 9) from clean/noisy votes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from . import queries
from .epochs import epoch_bounds
from .mapd import mapd, mapd_epochs
from .probes import probe_suites

if TYPE_CHECKING:
    from .engine import Engine


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


def clean_votes(engine: Engine, *, k: int = 20, clean_suite: str = "clean", noisy_suite: str = "random_labels",
                epochs: range | None = None, split: str = "train", device: str = "auto") -> pl.DataFrame:
    """``sample_id, label, predicted, p_target, p_clean`` of every real sample (not threshold, not probe):
    ``p_clean`` = share of ``clean_suite`` among the ``k`` nearest probes of the two suites, ``predicted``
    and ``p_target`` from the sample's last recorded epoch (``sql/last_epoch.sql``)."""
    epoch_list = mapd_epochs(engine, epochs=epochs, upto_epoch=None, split=split)
    votes = mapd(engine, k=k, suites=[clean_suite, noisy_suite], epoch_list=epoch_list, split=split, device=device)
    for argument, suite in (("clean_suite", clean_suite), ("noisy_suite", noisy_suite)):
        if f"p_{suite}" not in votes.columns:
            raise ValueError(f"{argument}: no reference probes of suite {suite!r} with records; suites with "
                             f"probes: {probe_suites(engine)}")
    lower, upper = epoch_bounds(epochs)
    last = engine.sql(queries.load("last_epoch"), {"split": split, "epoch_from": lower, "epoch_to": upper})
    real = engine.sql(queries.load("sample_roles")).filter("is_real").select("sample_id", "label")
    return (real.join(last.select("sample_id", "predicted", "p_target"), on="sample_id")
            .join(votes.select("sample_id", pl.col(f"p_{clean_suite}").alias("p_clean")), on="sample_id")
            .sort("sample_id"))
