"""The score table computed and written by Spark's executors (:meth:`tdlog.analytics.run.Run.write_scores` on
``engine="spark"``): nothing per sample is collected to the driver."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from . import queries
from .epochs import early_end, epoch_bounds, recorded_epochs, recorded_span
from .gmm import DEFAULT_FIT_SAMPLE, fit_mixture, nothing_to_separate
from .spark_engine import to_polars

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from .spark_engine import SparkEngine


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
    from pyspark.sql import functions as F

    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    lower, upper = epoch_bounds(epochs)
    recorded = recorded_epochs(engine, split)
    el2n_to = early_end(recorded) if el2n_epochs is None else epoch_bounds(el2n_epochs)[1]
    scores = engine.frame(queries.load("scores"), {"split": split, "epoch_from": lower, "epoch_to": upper,
                                                   "el2n_to": el2n_to})
    first, end = recorded_span(recorded, epochs)
    table = scores.join(engine.session.table("samples"), "sample_id", "left").withColumns({
        "is_threshold": F.coalesce(F.col("is_threshold"), F.lit(False)),
        "epoch_from": F.lit(first).cast("bigint"), "epoch_to": F.lit(end).cast("bigint")})
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
        return engine.session.read.option("header", "true").csv(str(out)).count()
    writer.parquet(str(out))
    return engine.session.read.parquet(str(out)).count()


def _gmm_fit_values(real: DataFrame, seed: int, fit_sample: int | None) -> np.ndarray:
    """The AUL values the mixture is fitted on, collected to the driver in ``sample_id`` order: every
    real sample's, or a seeded Bernoulli sample of about ``fit_sample`` of them."""
    count = real.count()
    if fit_sample is not None and count > fit_sample:
        real = real.sample(fraction=min(1.0, 1.1 * fit_sample / count), seed=seed).limit(fit_sample)
    return to_polars(real.select("sample_id", "aul").orderBy("sample_id"))["aul"].to_numpy()


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
