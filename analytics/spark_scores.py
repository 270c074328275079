"""The score table on Spark: ``sql/scores_one_pass.sql`` (one aggregation by sample over ``records``, epoch
bit masks) finished by the executors (:func:`score_frame`), and computed and written by them
(:meth:`tdlog.analytics.run.Run.write_scores` on ``engine="spark"``): nothing per sample is collected to the
driver."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from . import queries
from .epoch_masks import MAX_EPOCHS, forgetting_columns, packed_query, popcount, words_for
from .epochs import recorded_epochs, recorded_span, score_params
from .gmm import DEFAULT_FIT_SAMPLE, fit_mixture, nothing_to_separate
from .spark_engine import to_polars

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from .spark_engine import SparkEngine

SCORE_TYPES = ("aum DOUBLE, aul DOUBLE, confidence DOUBLE, variability DOUBLE, correctness DOUBLE, el2n DOUBLE, "
               "never_learned BOOLEAN, forgetting_events BIGINT, first_learned_epoch BIGINT, "
               "learned_for_good_epoch BIGINT, epochs BIGINT")


def score_frame(engine: SparkEngine, *, epochs: range | None = None, split: str = "train",
                el2n_epochs: range | None = None, recorded: list[int] | None = None,
                persisted: list[DataFrame] | None = None) -> DataFrame:
    """``sql/scores.sql``'s rows as a lazy DataFrame, in one pass over the records: ``scores_one_pass.sql``
    aggregates by sample, then each partition of its result gets the forgetting columns from the epoch
    masks (``mapInArrow``, :func:`tdlog.analytics.epoch_masks.forgetting_columns`). Samples whose row is not
    exact (an epoch seen twice) are recomputed with ``scores.sql``, as are ranges longer than ``MAX_EPOCHS``.
    The per-sample result is persisted (one row per sample) and appended to ``persisted`` for the caller to
    unpersist. ``recorded``: the split's recorded epochs, when the caller has them."""
    from pyspark.sql import functions as F

    recorded = recorded_epochs(engine, split) if recorded is None else recorded
    params, first, end = score_params(recorded, epochs=epochs, el2n_epochs=el2n_epochs, split=split)
    if first is None or end - first > MAX_EPOCHS:
        return engine.frame(queries.load("scores"), params)
    words = words_for(end - first)
    packed = engine.frame(packed_query(words), params | {"epoch_from": first})
    # one task per core after the aggregation: the default 200 shuffle partitions would each start a Python
    # worker to finish a handful of rows (measured: 10-17 s instead of 1.3 s for 10^4 samples on local[2])
    packed = packed.coalesce(engine.session.sparkContext.defaultParallelism)
    id_type = packed.schema["sample_id"].dataType.simpleString()
    finished = packed.mapInArrow(partial(_finish_batches, epoch_from=first, words=words),
                                 f"sample_id {id_type}, {SCORE_TYPES}, exact BOOLEAN").persist()
    if persisted is not None:
        persisted.append(finished)
    rows = finished.filter("exact").drop("exact")
    inexact = finished.filter(~F.col("exact")).select("sample_id")
    if inexact.isEmpty():
        return rows
    rechecked = engine.frame(queries.load("scores"), params).join(inexact, "sample_id", "left_semi")
    return rows.unionByName(rechecked)


def _finish_batches(batches: Iterator[pa.RecordBatch], *, epoch_from: int, words: int) -> Iterator[pa.RecordBatch]:
    """``scores_one_pass.sql`` rows -> ``scores.sql`` columns, plus ``exact`` (each recorded epoch observed
    once: observations = bits set)."""
    for batch in batches:
        recorded, learned = (np.vstack([batch.column(f"{name}_{w}").to_numpy(zero_copy_only=False)
                                        for w in range(words)]).astype(np.int64) for name in ("recorded", "learned"))
        observations = batch.column("observations").to_numpy(zero_copy_only=False)
        forgetting = forgetting_columns(recorded, learned, epoch_from)
        counts = [_nullable_int(forgetting[name])
                  for name in ("forgetting_events", "first_learned_epoch", "learned_for_good_epoch")]
        yield pa.RecordBatch.from_arrays(
            [*(batch.column(name) for name in ("sample_id", "aum", "aul", "confidence", "variability",
                                               "correctness", "el2n")),
             pa.array(forgetting["never_learned"]), *counts, batch.column("observations"),
             pa.array(popcount(recorded) == observations)],
            names=["sample_id", "aum", "aul", "confidence", "variability", "correctness", "el2n", "never_learned",
                   "forgetting_events", "first_learned_epoch", "learned_for_good_epoch", "epochs", "exact"])


def _nullable_int(values: np.ndarray) -> pa.Array:
    missing = np.isnan(values)
    return pa.array(np.where(missing, 0, values).astype(np.int64), mask=missing)


def write_scores(
    engine: SparkEngine,
    out: str | os.PathLike,
    *,
    epochs: range | None = None,
    split: str = "train",
    el2n_epochs: range | None = None,
    percentile: float = 99,
    seed: int = 0,
    fit_sample: int | None = DEFAULT_FIT_SAMPLE,
) -> int:
    """``sql/scores.sql`` joined with the samples table, ``epoch_from, epoch_to`` (the recorded epochs the
    scores span), ``aum_flagged`` and the GMM columns, written to
    ``out`` (Parquet, or CSV when ``out`` ends in ``.csv``; Spark writes a folder of part files). Only the
    threshold cutoff (one number) and the GMM fit (on a seeded sample of at most ``fit_sample`` real
    samples' AUL, ordered by ``sample_id``) happen on the driver; each row's ``p_mislabeled`` is the fitted
    posterior of the higher-mean component, computed on the executors. Returns the row count."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    persisted: list[DataFrame] = []
    try:
        return _write(engine, out, epochs=epochs, split=split, el2n_epochs=el2n_epochs, percentile=percentile,
                      seed=seed, fit_sample=fit_sample, persisted=persisted)
    finally:
        for frame in persisted:
            frame.unpersist()


def _write(engine: SparkEngine, out: str | os.PathLike, *, epochs: range | None, split: str,
           el2n_epochs: range | None, percentile: float, seed: int, fit_sample: int | None,
           persisted: list[DataFrame]) -> int:
    from pyspark.sql import functions as F

    recorded = recorded_epochs(engine, split)
    scores = score_frame(engine, epochs=epochs, split=split, el2n_epochs=el2n_epochs, recorded=recorded,
                         persisted=persisted)
    first, end = recorded_span(recorded, epochs)
    table = scores.join(engine.session.table("samples"), "sample_id", "left").withColumns({
        "is_threshold": F.coalesce(F.col("is_threshold"), F.lit(False)),
        "epoch_from": F.lit(first).cast("bigint"), "epoch_to": F.lit(end).cast("bigint")}).persist()
    persisted.append(table)
    cutoff = table.filter("is_threshold").agg(F.percentile("aum", percentile / 100)).first()[0]
    if cutoff is not None:
        table = table.withColumn("aum_flagged", (F.col("aum") < F.lit(cutoff)) & ~F.col("is_threshold"))
    real = ~F.col("is_threshold") & F.col("probe").isNull()
    fit = _gmm_fit_values(table.filter(real & F.col("aul").isNotNull() & ~F.isnan("aul")), seed, fit_sample)
    if len(fit) >= 2 and nothing_to_separate(fit, "aul"):
        table = table.withColumn("p_mislabeled", F.when(real, F.lit(0.0)))
    elif len(fit) >= 2:
        model, noisy = fit_mixture(fit, seed=seed)
        table = table.withColumn("p_mislabeled", F.when(real, _posterior(F.col("aul"), model, noisy)))
    if len(fit) >= 2:
        table = table.withColumn("gmm_flagged", F.col("p_mislabeled") > 0.5).withColumn(
            "weight", 1 - F.col("p_mislabeled"))
    writer = table.orderBy("sample_id").write.mode("overwrite")
    if str(out).endswith(".csv"):
        writer.option("header", "true").csv(str(out))
    else:
        writer.parquet(str(out))
    return table.count()  # the persisted table the files were written from


def _gmm_fit_values(real: DataFrame, seed: int, fit_sample: int | None) -> np.ndarray:
    """The AUL values the mixture is fitted on, collected to the driver in ``sample_id`` order: every
    real sample's, or a seeded Bernoulli sample of about ``fit_sample`` of them."""
    ordered = real.select("sample_id", "aul").orderBy("sample_id")
    if fit_sample is None:
        return to_polars(ordered)["aul"].to_numpy()
    values = to_polars(ordered.limit(fit_sample + 1))["aul"].to_numpy()  # one job when all of them fit
    if len(values) <= fit_sample:
        return values
    sampled = real.sample(fraction=min(1.0, 1.1 * fit_sample / real.count()), seed=seed).limit(fit_sample)
    return to_polars(sampled.select("sample_id", "aul").orderBy("sample_id"))["aul"].to_numpy()


def _posterior(x, model, noisy: int):
    """Spark column: posterior of component ``noisy`` of a fitted 1-D 2-component ``GaussianMixture``:
    ``w_n N(x; m_n, v_n) / sum_j w_j N(x; m_j, v_j)``, as ``1 / (1 + exp(l_c - l_n))`` with
    ``l_j = log w_j - log(2 pi v_j) / 2 - (x - m_j)^2 / (2 v_j)``."""
    from pyspark.sql import functions as F

    def log_density(j: int):
        mean, variance = float(model.means_[j, 0]), float(model.covariances_.reshape(-1)[j])
        constant = math.log(float(model.weights_[j])) - 0.5 * math.log(2 * math.pi * variance)
        return F.lit(constant) - (x - F.lit(mean)) ** 2 / F.lit(2 * variance)

    return 1 / (1 + F.exp(log_density(1 - noisy) - log_density(noisy)))
