"""Combining two (or more) runs of one dataset whose threshold samples are disjoint (two threshold passes,
Pleiss et al. 2020), so that every sample is scored as a real sample at least once."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from . import queries
from .run import Run

RULES = ("all", "any", "mean")


def combine_threshold_runs(
    runs: Sequence[Run],
    *,
    rule: str = "all",
    percentile: float = 99,
    epochs: range | None = None,
    split: str = "train",
) -> pl.DataFrame:
    """One row per sample that was a real (non-threshold) sample in at least one run.

    Each run flags its real samples with AUM below its own threshold cutoff. Then ``flagged`` is:

    - ``all`` (default): flagged in every run where the sample was real;
    - ``any``: flagged in at least one such run;
    - ``mean``: ``mean_aum < mean_cutoff``, both averaged over the runs where the sample was real.

    Columns ``sample_id, runs, mean_aum, mean_cutoff, flagged``, ascending ``mean_aum``.
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if len(runs) < 1:
        raise ValueError("runs: expected at least one run")
    per_run = []
    for index, run in enumerate(runs):
        cutoff = run.threshold_cutoff(percentile=percentile, epochs=epochs, split=split)
        threshold_ids = run.sql(queries.load("sample_roles")).filter("is_threshold").select("sample_id")
        real = run.aum(epochs=epochs, split=split).join(threshold_ids, on="sample_id", how="anti")
        per_run.append(real.with_columns(run_index=pl.lit(index), cutoff=pl.lit(cutoff)))
    stacked = pl.concat(per_run).with_columns(flagged=pl.col("aum") < pl.col("cutoff"))
    combined = stacked.group_by("sample_id").agg(
        runs=pl.len(),
        mean_aum=pl.col("aum").mean(),
        mean_cutoff=pl.col("cutoff").mean(),
        flagged_all=pl.col("flagged").all(),
        flagged_any=pl.col("flagged").any(),
    )
    flagged = {
        "all": pl.col("flagged_all"),
        "any": pl.col("flagged_any"),
        "mean": pl.col("mean_aum") < pl.col("mean_cutoff"),
    }[rule]
    return combined.select("sample_id", "runs", "mean_aum", "mean_cutoff", flagged.alias("flagged")).sort(
        ["mean_aum", "sample_id"]
    )

