"""Choosing a subset of the training data from its training dynamics, under a budget.

Methods (``METHODS``), over the real samples of ``split`` with records in the chosen epochs (threshold and
probe samples left out):

- ``"s2l"`` (SmallToLarge, Yang et al., NeurIPS 2024): every sample's loss trajectory (its per-epoch mean
  losses over the recorded epochs, epochs it missed filled as MAP-D fills them,
  :func:`tdlog.analytics.probes.forward_fill`) is assigned to one of ``clusters`` FAISS k-means clusters
  (:mod:`tdlog.analytics.clustering`: centroids trained on a seeded sample of ``256 * clusters``
  trajectories, ``iterations`` iterations), and the budget is shared equally among the clusters
  (:func:`~tdlog.analytics.allocation.balanced_counts`: a cluster smaller than its share is taken whole);
  inside a cluster the samples are drawn at random.
- ``"random"``: samples drawn uniformly at random: the baseline every selection must be compared with.
- ``"loss_drop"``: the samples whose loss fell least from the first recorded pass (``sql/loss_drop.sql``;
  TailSFT leaves out the ones that fell furthest).
- ``"learning_percentage"``: the samples with the lowest learning percentage, learned late
  (``sql/learning_percentage.sql``; needs the pre-training pass).

With ``source`` (a samples column), the budget is first shared equally among the sources
(:func:`~tdlog.analytics.allocation.balanced_counts` again: a source smaller than its share is taken whole, as
S2L does), and each method chooses inside each source. Random draws use
:func:`~tdlog.analytics.allocation.sample_keys` of the ids and ``seed``: the selection does not depend on
the engine or on the order of the files. Ties of a score go to the lower ``sample_id``.

DuckDB streams trajectory blocks (:func:`tdlog.analytics.mapd.trajectory_blocks`) and holds at most
``block_values`` trajectory values: a run that fits is read once, a larger one twice (once for the training
sample, once to assign every block); Spark assigns on the executors
(:func:`tdlog.analytics.spark_selection.spark_select`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .allocation import allocate, budget_count, sample_keys, source_codes, take_lowest
from .clustering import POINTS_PER_CLUSTER, CentroidIndex, TrainingSample, train_centroids
from .mapd import BLOCK_VALUES, dense_id_range, trajectory_blocks
from .signals import learning_percentage, loss_drop, quoted

if TYPE_CHECKING:
    from .engine import Engine

METHODS = ("s2l", "random", "loss_drop", "learning_percentage")
RANKED = {"loss_drop": "loss_drop", "learning_percentage": "learning_percentage"}  # method -> score, lowest first


def check_selection_arguments(method: str, clusters: int, iterations: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(clusters, int) or clusters < 1:
        raise ValueError(f"clusters: expected a positive int, got {clusters!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations: expected a positive int, got {iterations!r}")


def excluded_ids(engine: Engine) -> np.ndarray:
    """Sorted ids of the threshold and probe samples: never selected."""
    ids = engine.sql("SELECT sample_id FROM samples WHERE is_threshold OR probe IS NOT NULL")["sample_id"]
    return np.sort(ids.to_numpy())


def sample_sources(engine: Engine, source: str) -> pl.DataFrame:
    """``sample_id, source`` (as text) from the samples column ``source``."""
    columns = engine.sql("SELECT * FROM samples LIMIT 0").columns
    if source not in columns:
        raise ValueError(f"source: expected a column of the samples table ({', '.join(columns)}), got {source!r}")
    return engine.sql(f"SELECT sample_id, CAST({quoted(source, engine.dialect)} AS STRING) AS source FROM samples")


def _is_in(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[positions] == ids


def candidate_blocks(engine: Engine, *, split: str, epoch_list: list[int], block_values: int,
                     excluded: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, trajectories)`` blocks of the selectable samples (:func:`tdlog.analytics.mapd.trajectory_blocks`
    less ``excluded``)."""
    dense = engine.records_paths and engine.id_type == "int64"
    id_range = dense_id_range(engine.connection, engine.records_paths) if dense else None
    for ids, matrix in trajectory_blocks(engine.connection, split=split, epochs=epoch_list,
                                         block_values=block_values, id_range=id_range):
        values = ids.to_numpy()
        keep = ~_is_in(values, excluded)
        if not keep.all():
            values, matrix = values[keep], matrix[keep]
        if len(values):
            yield values, matrix


def kmeans_clusters(engine: Engine, *, clusters: int, iterations: int, seed: int, epoch_list: list[int],
                    split: str, device: str, block_values: int = BLOCK_VALUES) -> pl.DataFrame:
    """``sample_id, cluster`` of every selectable sample (see the module docstring), on DuckDB."""
    excluded = excluded_ids(engine)
    options = {"split": split, "epoch_list": epoch_list, "block_values": block_values, "excluded": excluded}
    sample = TrainingSample(POINTS_PER_CLUSTER * clusters, seed)
    held: list | None = []
    values = 0
    for block in candidate_blocks(engine, **options):
        sample.add(*block)
        values += block[1].size
        if held is not None and values <= block_values:
            held.append(block)
        else:
            held = None  # too large to hold: the blocks are read again to be assigned
    trajectories = sample.trajectories()
    if not len(trajectories):
        return pl.DataFrame({"sample_id": [], "cluster": []}, schema={"sample_id": engine_id_dtype(engine),
                                                                     "cluster": pl.Int32})
    index = CentroidIndex(train_centroids(trajectories, clusters, iterations=iterations, seed=seed, device=device),
                          device)
    parts = [pl.DataFrame({"sample_id": ids, "cluster": index.assign(matrix)})
             for ids, matrix in (held if held is not None else candidate_blocks(engine, **options))]
    return pl.concat(parts)


def engine_id_dtype(engine: Engine) -> pl.DataType:
    return pl.Int64 if engine.id_type == "int64" else pl.String


def pick(candidates: pl.DataFrame, budget: int | float, *, seed: int, score: str | None = None) -> pl.DataFrame:
    """The selected rows of ``candidates`` (``sample_id``, optional ``source`` and ``cluster``, and the
    ``score`` column when ranking): the counts of :func:`~tdlog.analytics.allocation.allocate`; inside each
    ``(source, cluster)`` group, the lowest ``score`` (nulls last, ties: lower ``sample_id``) or, without a
    score, the lowest :func:`~tdlog.analytics.allocation.sample_keys`."""
    count = budget_count(budget, candidates.height)
    ids = candidates["sample_id"].to_numpy()
    groups = candidates["cluster"].to_numpy() if "cluster" in candidates.columns else np.zeros(len(ids), np.int32)
    width = int(groups.max(initial=0)) + 1
    if "source" in candidates.columns:
        groups = source_codes(candidates["source"]) * width + groups  # (source, cluster) cells, source first
    sizes = np.bincount(groups, minlength=width)
    present = np.flatnonzero(sizes)
    if len(present) < len(sizes):  # number the non-empty cells 0..G-1, in the same order
        groups = (np.cumsum(sizes > 0) - 1)[groups]
    counts = allocate(present // width, sizes[present], count)
    if score is None:
        order = sample_keys(ids, seed)
    else:
        ranked = candidates.select(pl.col(score).cast(pl.Float64).fill_nan(None), "sample_id").with_row_index()
        order = np.empty(len(ids), dtype=np.int64)
        order[ranked.sort([score, "sample_id"], nulls_last=True)["index"].to_numpy()] = np.arange(len(ids))
    return candidates[take_lowest(groups, order, counts)]


def select(engine: Engine, *, budget: int | float, method: str = "s2l", source: str | None = None,
           clusters: int = 100, iterations: int = 20, seed: int = 0, epoch_list: list[int], split: str = "train",
           epochs: range | None = None, device: str = "auto", block_values: int = BLOCK_VALUES) -> pl.DataFrame:
    """The selection of ``method`` (module docstring): ``sample_id`` (and ``source``, ``cluster`` or the
    method's score) of the selected samples, by ``sample_id``. ``epoch_list``: the recorded epochs the
    trajectories span; ``epochs``: the range the ranked methods' scores span."""
    check_selection_arguments(method, clusters, iterations)
    if engine.dialect == "spark":
        from .spark_selection import spark_select

        return spark_select(engine, budget=budget, method=method, score=RANKED.get(method), source=source,
                            clusters=clusters, iterations=iterations, seed=seed, epoch_list=epoch_list, split=split,
                            epochs=epochs, device=device)
    candidates = candidates_of(engine, method=method, clusters=clusters, iterations=iterations, seed=seed,
                               epoch_list=epoch_list, split=split, epochs=epochs, device=device,
                               block_values=block_values)
    if source is not None:
        candidates = candidates.join(sample_sources(engine, source), on="sample_id", how="left")
    return pick(candidates, budget, seed=seed, score=RANKED.get(method)).sort("sample_id")


def candidates_of(engine: Engine, *, method: str, epoch_list: list[int], split: str, epochs: range | None,
                  **kmeans: Any) -> pl.DataFrame:
    """The selectable samples with what ``method`` ranks or groups them by: ``sample_id`` and ``cluster``
    (s2l), the score (ranked methods) or nothing (random)."""
    if method == "s2l":
        return kmeans_clusters(engine, epoch_list=epoch_list, split=split, **{
            k: kmeans[k] for k in ("clusters", "iterations", "seed", "device", "block_values")})
    if method == "random":
        ids = engine.sql("SELECT DISTINCT sample_id FROM records WHERE split = $split AND epoch >= $lower "
                         "AND epoch <= $upper", {"split": split, "lower": epoch_list[0], "upper": epoch_list[-1]})
        table = ids
    else:
        signal = loss_drop if method == "loss_drop" else learning_percentage
        table = signal(engine, epochs=epochs, split=split).select("sample_id", RANKED[method])
    excluded = pl.Series(excluded_ids(engine), dtype=table["sample_id"].dtype)
    return table.filter(~pl.col("sample_id").is_in(excluded.implode()))


def filter_dataset(dataset: Any, selection: pl.DataFrame, *, id_column: str | None = "sample_id") -> Any:
    """The selected rows of a ``datasets.Dataset``, in the dataset's order: those whose ``id_column`` (the
    ids the recorder logged, e.g. the column :func:`tdlog.recorder.integrations.huggingface.add_sample_ids`
    adds) is a ``sample_id`` of ``selection``; with ``id_column=None`` the ids are row positions."""
    ids = selection["sample_id"]
    if id_column is None:
        if not ids.dtype.is_integer():
            raise TypeError(f"id_column: row positions need integer sample ids, got {ids.dtype}")
        rows = np.sort(ids.to_numpy())
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(dataset)):
            raise ValueError(f"selection: expected row positions 0 to {len(dataset) - 1}, got "
                             f"{int(rows[0])} to {int(rows[-1])}")
        return dataset.select(rows)
    if id_column not in dataset.column_names:
        raise ValueError(f"id_column: expected a column of the dataset ({', '.join(dataset.column_names)}), "
                         f"got {id_column!r} (None: the ids are row positions)")
    column = pl.Series(dataset.data.column(id_column))
    return dataset.select(np.flatnonzero(column.is_in(ids.cast(column.dtype, strict=False).implode()).to_numpy()))
