"""Selection on Spark (:mod:`tdlog.analytics.selection` for the methods): trajectories gathered per sample by
the executors (``sql/trajectory_points.sql``, as MAP-D's Spark path), each partition's part of the k-means
training sample sent to the driver, centroids trained there and shipped with the assignment task
(``mapInArrow``), the group sizes counted by Spark and shared out at the driver
(:func:`~tdlog.analytics.allocation.allocate`), and each group's picks taken by a window over the executors
(one group: a top-k). Only the training sample, the group sizes and the selected rows reach the driver. Same
rows as DuckDB's selection for the same seed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from . import queries
from .allocation import allocate, budget_count, sample_keys, source_codes
from .clustering import POINTS_PER_CLUSTER, CentroidIndex, TrainingSample, train_centroids
from .signals import learning_percentage_params, loss_drop_params, quoted
from .spark_engine import to_polars
from .spark_mapd import points_matrix

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from .spark_engine import SparkEngine

_SIGN = np.uint64(1 << 63)


def ordered_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """:func:`~tdlog.analytics.allocation.sample_keys` as int64 in the same order (Spark has no uint64)."""
    return (sample_keys(ids, seed) ^ _SIGN).view(np.int64)


def spark_select(engine: SparkEngine, *, budget: int | float, method: str, score: str | None, source: str | None,
                 clusters: int, iterations: int, seed: int, epoch_list: list[int], split: str, epochs: range | None,
                 device: str) -> pl.DataFrame:
    """:func:`tdlog.analytics.selection.select` on Spark (``score``: the ranked method's score column, None for
    s2l and random); the same columns."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    excluded = engine.frame("SELECT sample_id FROM samples WHERE is_threshold OR probe IS NOT NULL")
    if score is not None:
        query, params = ((queries.load("loss_drop"), loss_drop_params(engine, split, epochs)) if method == "loss_drop"
                         else (queries.load("learning_percentage"), learning_percentage_params(engine, split, epochs)))
        candidates = engine.frame(query, params).select("sample_id", F.nanvl(score, F.lit(None)).alias(score))
        order = [F.col(score).asc_nulls_last(), F.col("sample_id")]
    else:
        points = engine.frame(queries.load("trajectory_points"),
                              {"split": split, "epoch_from": epoch_list[0], "epoch_last": epoch_list[-1]})
        points = points.join(excluded, "sample_id", "left_anti")
        candidates = (_clusters(engine, points, clusters, iterations, seed, epoch_list, device) if method == "s2l"
                      else _keyed(points.select("sample_id"), seed))
        order = [F.col("pick_key"), F.col("sample_id")]
    candidates = candidates.join(excluded, "sample_id", "left_anti")
    if source is not None:
        sources = engine.frame(f"SELECT sample_id, CAST({quoted(source, 'spark')} AS STRING) AS source FROM samples")
        candidates = candidates.join(sources, "sample_id", "left")
    keys = [c for c in ("source", "cluster") if c in candidates.columns]
    candidates = candidates.cache()
    try:
        sizes = to_polars(candidates.groupBy(*keys).count()) if keys else \
            pl.DataFrame({"count": [candidates.count()]})
        sizes = sizes.sort(keys, nulls_last=False) if keys else sizes
        count = budget_count(budget, int(sizes["count"].sum()))
        group_source = source_codes(sizes["source"]) if "source" in keys else np.zeros(sizes.height, np.int64)
        taken = sizes.with_columns(take=pl.Series(allocate(group_source, sizes["count"].to_numpy(), count)))
        if keys:
            place = F.row_number().over(Window.partitionBy(*keys).orderBy(*order))
            takes = F.broadcast(engine.session.createDataFrame(taken.select(*keys, "take").to_arrow()))
            matched = [candidates[k].eqNullSafe(takes[k]) for k in keys]
            ranked = candidates.withColumn("place", place).join(takes, matched)
            chosen = ranked.filter(F.col("place") <= F.col("take")).drop("place", "take", *[takes[k] for k in keys])
        else:  # one group: the lowest `count`, a top-k on the executors
            chosen = candidates.orderBy(*order).limit(count)
        chosen = chosen.drop("pick_key")
        return to_polars(chosen).sort("sample_id")
    finally:
        candidates.unpersist()


def _keyed(ids: DataFrame, seed: int) -> DataFrame:
    """``sample_id, pick_key`` (:func:`ordered_keys`), computed by the executors."""
    id_type = ids.schema["sample_id"].dataType.simpleString()

    def keyed(batches):
        for batch in batches:
            values = batch.column("sample_id").to_numpy(zero_copy_only=False)
            yield pa.RecordBatch.from_arrays([batch.column("sample_id"), pa.array(ordered_keys(values, seed))],
                                             names=["sample_id", "pick_key"])

    return ids.mapInArrow(keyed, f"sample_id {id_type}, pick_key BIGINT")


def _clusters(engine: SparkEngine, points: DataFrame, clusters: int, iterations: int, seed: int,
              epoch_list: list[int], device: str) -> DataFrame:
    """``sample_id, cluster, pick_key``: the k-means cluster of every trajectory in ``points``."""
    size = POINTS_PER_CLUSTER * clusters
    id_type = points.schema["sample_id"].dataType.simpleString()

    def sample_part(batches):
        part = TrainingSample(size, seed)
        for batch in batches:
            part.add(batch.column("sample_id").to_numpy(zero_copy_only=False),
                     points_matrix(batch.column("points"), epoch_list))
        if part.matrix is not None:
            offsets = np.arange(0, part.matrix.size + 1, len(epoch_list), dtype=np.int32)
            trajectories = pa.ListArray.from_arrays(pa.array(offsets), pa.array(part.matrix.ravel()))
            yield pa.RecordBatch.from_arrays([pa.array(part.ids), trajectories], names=["sample_id", "trajectory"])

    parts = to_polars(points.mapInArrow(sample_part, f"sample_id {id_type}, trajectory ARRAY<FLOAT>"))
    sample = TrainingSample(size, seed)
    if parts.height:
        sample.add(parts["sample_id"].to_numpy(), np.stack(parts["trajectory"].to_numpy()).astype(np.float32))
    centroids = train_centroids(sample.trajectories(), clusters, iterations=iterations, seed=seed, device=device)

    def assign(batches):
        index = CentroidIndex(centroids, device)
        for batch in batches:
            values = batch.column("sample_id").to_numpy(zero_copy_only=False)
            yield pa.RecordBatch.from_arrays(
                [batch.column("sample_id"), pa.array(index.assign(points_matrix(batch.column("points"), epoch_list))),
                 pa.array(ordered_keys(values, seed))], names=["sample_id", "cluster", "pick_key"])

    return points.mapInArrow(assign, f"sample_id {id_type}, cluster INT, pick_key BIGINT")
