"""MAP-D on Spark: each sample's observed losses gathered into one row by the executors in one aggregation
over the records (``sql/trajectory_points.sql``; averaged per epoch here), the reference probes'
trajectories collected to the driver and shipped with the task, and each partition searched with FAISS
(``mapInArrow``). Same columns and values as the DuckDB path of :func:`tdlog.analytics.mapd.mapd`. On a
cluster, tdlog and FAISS must be installed on the executors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from . import queries
from .probes import forward_fill, reference_probes
from .spark_engine import to_polars

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from .spark_engine import SparkEngine


def mapd_frame(engine: SparkEngine, *, k: int, suites: list[str] | None, epoch_list: list[int], split: str,
               device: str) -> DataFrame:
    """MAP-D over the recorded epochs ``epoch_list`` as a lazy Spark DataFrame: ``sample_id, p_<suite>...,
    mapd_suite``."""
    points = engine.frame(queries.load("trajectory_points"),
                          {"split": split, "epoch_from": epoch_list[0], "epoch_last": epoch_list[-1]})
    reference = reference_probes(engine, suites)
    probe_points = to_polars(points.join(engine.session.createDataFrame(reference.to_arrow()), "sample_id"))
    if probe_points.height < k:
        raise ValueError(f"k: expected at most the number of reference probes with records, "
                         f"{probe_points.height}, got {k}")
    probe_matrix = points_matrix(probe_points["points"].to_arrow(), epoch_list)
    probe_suites = probe_points["probe"].to_numpy()
    names = sorted(set(probe_suites.tolist()))
    id_type = points.schema["sample_id"].dataType.simpleString()
    schema = f"sample_id {id_type}, " + ", ".join(f"p_{name} DOUBLE" for name in names) + ", mapd_suite STRING"

    def search(batches):
        from tdlog.analytics.probes import ProbeIndex

        index = ProbeIndex.build(probe_matrix, probe_suites, device=device)
        for batch in batches:
            votes = index.vote(points_matrix(batch.column("points"), epoch_list), k)
            yield pa.RecordBatch.from_arrays(
                [batch.column("sample_id"), *(pa.array(votes[:, j]) for j in range(len(names))),
                 pa.array(np.asarray(names)[votes.argmax(1)] if len(votes) else [], pa.string())],
                names=["sample_id", *(f"p_{name}" for name in names), "mapd_suite"])

    return points.mapInArrow(search, schema)


def points_matrix(points: pa.Array | pa.ChunkedArray, epochs: list[int]) -> np.ndarray:
    """``list<struct<epoch, loss>>`` per sample -> ``[n, len(epochs)]`` float32 trajectories: the mean of
    each epoch's points (float64 sums), forward-filled (the epochs are every recorded epoch of the range, so
    each point has its column)."""
    if isinstance(points, pa.ChunkedArray):
        points = points.combine_chunks()
    lengths = points.value_lengths().to_numpy(zero_copy_only=False)
    flat = points.flatten()
    column_of = np.full(epochs[-1] - epochs[0] + 1, -1, dtype=np.int64)
    column_of[np.asarray(epochs) - epochs[0]] = np.arange(len(epochs))
    columns = column_of[flat.field("epoch").to_numpy(zero_copy_only=False) - epochs[0]]
    cells = np.repeat(np.arange(len(lengths)) * len(epochs), lengths) + columns
    size = len(lengths) * len(epochs)
    sums = np.bincount(cells, weights=flat.field("loss").to_numpy(zero_copy_only=False), minlength=size)
    counts = np.bincount(cells, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (sums / counts).astype(np.float32).reshape(len(lengths), len(epochs))
    return forward_fill(matrix)
