"""The threshold-sample cutoff (Pleiss et al. 2020): the AUM below which a real sample is flagged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from . import queries
from .epochs import epoch_bounds

if TYPE_CHECKING:
    from .engine import Engine


def cutoff_of(scores: pl.DataFrame, percentile: float = 99) -> float | None:
    """``threshold_cutoff.sql`` on a score table already computed: the ``percentile``-th percentile (linear
    interpolation, as ``numpy.percentile``) of the AUM of the rows with ``is_threshold``; ``None`` when
    there are none."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    threshold_aum = scores.filter("is_threshold")["aum"]
    return threshold_aum.quantile(percentile / 100, interpolation="linear") if threshold_aum.len() else None


def threshold_cutoff(engine: Engine, *, percentile: float = 99, epochs: range | None = None,
                     split: str = "train") -> float:
    """``sql/threshold_cutoff.sql``: the ``percentile``-th percentile (linear interpolation) of the threshold
    samples' AUM. Raises ``ValueError`` if no threshold sample has records in ``split``."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    lower, upper = epoch_bounds(epochs)
    row = engine.sql(queries.load("threshold_cutoff"), {"split": split, "epoch_from": lower, "epoch_to": upper,
                                                         "percentile": percentile / 100}).row(0, named=True)
    if not row["threshold_samples"]:
        raise ValueError(f"samples: no threshold samples with records in split {split!r}; "
                         "register them with tdlog.recorder.threshold_samples(...)")
    return float(row["cutoff"])
