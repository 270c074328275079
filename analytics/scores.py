"""The score table: every score per sample in one pass over the records, joined with the samples table.

``sql/scores.sql`` is the definition. Both engines compute it with ``sql/scores_one_pass.sql``: one
``GROUP BY sample_id`` (no per-epoch averaging, no window), packing per sample which epochs were recorded
and which were learned into bit masks (:mod:`tdlog.analytics.epoch_masks`); a sample's row is exact when each of
its epochs was observed once (observations = bits set), and the other samples (DDP padding, sampling with
replacement) and ranges longer than ``MAX_EPOCHS`` epochs are computed by ``scores.sql`` itself. DuckDB
finishes the masks here, Spark on its executors (:func:`tdlog.analytics.spark_scores.score_frame`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from . import queries
from .epoch_masks import MAX_EPOCHS, forgetting_columns, packed_query, popcount, words_for
from .epochs import recorded_epochs, score_params
from .gmm import fit_gmm
from .threshold import cutoff_of

if TYPE_CHECKING:
    from .engine import Engine

def score_table(engine: Engine, *, epochs: range | None = None, split: str = "train",
                el2n_epochs: range | None = None) -> pl.DataFrame:
    """``sample_id, aum, aul, confidence, variability, correctness, el2n, never_learned, forgetting_events,
    first_learned_epoch, learned_for_good_epoch, epochs`` of every sample with rows in ``split`` and
    ``epochs`` (see ``sql/scores.sql``), joined with the samples table (``is_threshold`` false where
    unregistered), by ``sample_id``, and ``epoch_from, epoch_to``: the recorded epochs the scores span
    (the same in every row). EL2N spans ``el2n_epochs`` (default: the first 10 % of the recorded epochs)."""
    recorded = recorded_epochs(engine, split)
    params, first, end = score_params(recorded, epochs=epochs, el2n_epochs=el2n_epochs, split=split)
    if engine.dialect == "spark":
        from .spark_engine import to_polars
        from .spark_scores import score_frame

        persisted: list = []
        rows = to_polars(score_frame(engine, epochs=epochs, split=split, el2n_epochs=el2n_epochs, recorded=recorded,
                                     persisted=persisted))
        for frame in persisted:
            frame.unpersist()
    elif first is not None and end - first <= MAX_EPOCHS:
        rows = _one_pass_rows(engine, params | {"epoch_from": first}, params, words_for(end - first))
    else:
        rows = engine.sql(queries.load("scores"), params)
    samples = engine.sql("SELECT * FROM samples")
    return rows.sort("sample_id").join(samples, on="sample_id", how="left", maintain_order="left").with_columns(
        pl.col("is_threshold").fill_null(False), epoch_from=pl.lit(first, pl.Int64), epoch_to=pl.lit(end, pl.Int64))


def _one_pass_rows(engine: Engine, packed_params: dict, params: dict, words: int) -> pl.DataFrame:
    """``scores.sql``'s rows from ``scores_one_pass.sql`` (``words`` mask words), the inexact samples from
    ``scores.sql``."""
    packed = engine.sql(packed_query(words), packed_params)
    recorded, learned = (np.ascontiguousarray(packed.select(f"{name}_{w}" for w in range(words)).fill_null(0)
                                              .to_numpy().T) for name in ("recorded", "learned"))
    exact = popcount(recorded) == packed["observations"].to_numpy()
    inexact = None if exact.all() else packed.filter(~exact)["sample_id"]
    if inexact is not None:
        packed, recorded, learned = packed.filter(exact), recorded[:, exact], learned[:, exact]
    forgetting = forgetting_columns(recorded, learned, packed_params["epoch_from"])
    rows = packed.select(
        "sample_id", "aum", "aul", "confidence", "variability", "correctness", "el2n",
        never_learned=pl.Series(forgetting["never_learned"]),
        **{name: pl.Series(forgetting[name], nan_to_null=True).cast(pl.Int64)
           for name in ("forgetting_events", "first_learned_epoch", "learned_for_good_epoch")},
        epochs=pl.col("observations"),
    )
    if inexact is None:
        return rows
    rechecked = engine.sql(f"SELECT * FROM ({queries.load('scores')}) WHERE sample_id IN (SELECT unnest($ids))",
                           params | {"ids": inexact.to_list()})
    return pl.concat([rows, rechecked.select(rows.columns)], how="vertical_relaxed")


def suspicion_order(scores: pl.DataFrame) -> tuple[pl.Expr, bool, str]:
    """How to rank samples most suspicious first: ``(column, descending, in words)``, by lowest AUM when the
    table has AUM values, else by highest AUL."""
    if "aum" in scores.columns and scores["aum"].is_not_null().any():
        return pl.col("aum"), False, "lowest AUM"
    return pl.col("aul"), True, "highest AUL"


def real_samples(table: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``table`` that are real samples: neither threshold samples nor probes."""
    return table.filter(~pl.col("is_threshold") & pl.col("probe").is_null())


def add_flags(table: pl.DataFrame, *, percentile: float = 99, seed: int = 0) -> pl.DataFrame:
    """``table`` (a :func:`score_table`) with ``aum_flagged`` (AUM below the threshold samples'
    ``percentile``-th percentile, when there are threshold samples) and the AUL GMM's ``p_mislabeled,
    gmm_flagged, weight`` over the real samples (see :func:`tdlog.analytics.gmm.fit_gmm`)."""
    cutoff = cutoff_of(table, percentile)
    if cutoff is not None:
        table = table.with_columns(aum_flagged=(pl.col("aum") < cutoff) & ~pl.col("is_threshold"))
    real = real_samples(table)
    if real["aul"].is_not_null().sum() >= 2:
        fitted = fit_gmm(real, "aul", seed=seed).table.select(
            "sample_id", "p_mislabeled", pl.col("flagged").alias("gmm_flagged"), "weight")
        table = table.join(fitted, on="sample_id", how="left", maintain_order="left")
    return table


def noise_rates(scores: pl.DataFrame) -> dict[str, float]:
    """The two estimates of the share of mislabeled samples, over the real samples of a score table (one
    run's :func:`add_flags` or the combined table of several runs), where their columns exist:
    ``threshold`` = share of samples with ``aum_flagged`` (AUM below the threshold samples' cutoff) and
    ``gmm`` = mean ``p_mislabeled`` (the AUL mixture's weight of the mislabeled component)."""
    real = real_samples(scores) if "is_threshold" in scores.columns else scores
    estimates = {}
    if "aum_flagged" in real.columns and real["aum_flagged"].is_not_null().any():
        estimates["threshold"] = float(real["aum_flagged"].mean())
    if "p_mislabeled" in real.columns and real["p_mislabeled"].is_not_null().any():
        estimates["gmm"] = float(real["p_mislabeled"].mean())
    return estimates
