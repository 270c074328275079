"""MAP-D (Siddiqui et al. 2022): which probe suite's loss trajectories a sample's trajectory resembles.

A trajectory is the vector of a sample's per-epoch mean losses over the chosen epochs; epochs it missed
take the value of its previous recorded epoch (forward fill; missing leading epochs take its first
recorded value). The reference probes' trajectories form an exact L2 FAISS index; sample trajectories
stream from DuckDB in blocks (memory does not grow with the number of samples) and each sample's k
nearest probes vote: ``p(suite) = share of the k neighbours from that suite``, assignment = argmax
(ties: the suite first in alphabetical order).

Blocks of integer ids that are dense (the usual ``0..N-1``) are ranges of ids: one unsorted scan per range
writes each observation straight into its (sample, epoch) cell, and a range in which some sample was seen
twice in an epoch is read again the exact way. Other ids (text, sparse) stream sorted by ``sample_id``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from . import queries
from .epochs import epoch_bounds, recorded_epochs
from .probes import ProbeIndex, forward_fill, reference_probes

if TYPE_CHECKING:
    import duckdb

    from .engine import Engine


BLOCK_VALUES = 1 << 27  # trajectory values (samples x epochs) held at a time by default: 512 MiB of float32
FILL_ROWS = 1 << 16  # rows checked and forward-filled at a time
SPARSE_IDS = 4  # id ranges more than this many times the number of samples are read sorted instead


def trajectory_blocks(
    connection: duckdb.DuckDBPyConnection,
    *,
    split: str,
    epochs: list[int],
    block_values: int = BLOCK_VALUES,
    reference_only: bool = False,
    id_range: tuple[int, int] | None = None,
) -> Iterator[tuple[pl.Series, np.ndarray]]:
    """Yield ``(sample_ids, trajectories[n, len(epochs)] float32)`` blocks holding about ``block_values``
    trajectory values (samples x epochs) each; a sample is never split across blocks. ``id_range`` (from
    :func:`dense_id_range`) reads integer ids range by range, unsorted; without it, observations stream
    sorted by ``sample_id``. ``reference_only`` reads only the reference probes (the samples table says
    which)."""
    params = {"split": split, "epoch_from": epochs[0], "epoch_to": epochs[-1] + 1}
    if id_range is None or reference_only:
        yield from _sorted_blocks(connection, params, epochs, max(1, block_values // 8), reference_only)
        return
    per_block = max(1, block_values // len(epochs))
    for low in range(id_range[0], id_range[1], per_block):
        block = _id_range_block(connection, params, epochs, low, min(low + per_block, id_range[1]))
        if len(block[0]):
            yield block


def dense_id_range(connection: duckdb.DuckDBPyConnection, records_files: list[str]) -> tuple[int, int] | None:
    """``(lowest, highest + 1)`` integer sample id in the Parquet files ``records_files``,
    read from their footers alone, when the range is at most ``SPARSE_IDS`` times the most observations
    one epoch of one split holds (dense ids); ``None`` otherwise."""
    low, high, per_epoch = connection.sql(
        "SELECT min(low), max(high), max(observations) FROM (SELECT min(stats_min_value::BIGINT) AS low, "
        "max(stats_max_value::BIGINT) AS high, sum(num_values) AS observations "
        "FROM parquet_metadata($files) WHERE path_in_schema = 'sample_id' "
        "GROUP BY regexp_extract(file_name, '(split=[^/]*/epoch=[^/]*)/', 1))", params={"files": records_files}
    ).fetchall()[0]
    if low is None or high - low + 1 > SPARSE_IDS * per_epoch:
        return None
    return int(low), int(high) + 1


def nan_matrix(size: int) -> np.ndarray:
    """``size`` float32 NaN in fresh anonymous memory (``mmap``), not NumPy's allocator: NumPy asks the kernel
    for transparent huge pages on large arrays (``madvise``), and where the kernel compacts memory to find
    them on first touch (THP ``defrag=madvise``, a common default) that costs seconds per GiB; measured on
    this project's CI machine: 7.2-7.6 s against 0.5-0.6 s for 400 MB. The array keeps the mapping alive."""
    if size * 4 < 1 << 22:  # small: NumPy's allocator reuses memory
        return np.full(size, np.nan, dtype=np.float32)
    matrix = np.frombuffer(mmap.mmap(-1, size * 4), dtype=np.float32)
    matrix.fill(np.nan)
    return matrix


def _id_range_block(connection, params, epochs: list[int], low: int, high: int) -> tuple[pl.Series, np.ndarray]:
    """Trajectories of the ids in ``[low, high)``: each observation written into its cell in one unsorted
    scan; if any sample was seen twice in an epoch (more observations than cells filled), the exact
    per-epoch means from a sorted read of the range instead."""
    span, width = epochs[-1] - epochs[0] + 1, len(epochs)
    column_of = None
    if span != width:  # epochs with no records in between: cell offsets -> matrix columns
        column_of = np.full(span, -1, dtype=np.int64)
        column_of[np.asarray(epochs) - epochs[0]] = np.arange(width)
    matrix = nan_matrix((high - low) * width)
    observations = 0
    range_params = params | {"low": low, "high": high}
    cells_query = queries.load("trajectory_cells")
    for batch in connection.sql(cells_query, params=range_params | {"span": span}).to_arrow_reader(1 << 20):
        cells, losses = (batch.column(i).to_numpy(zero_copy_only=False) for i in range(2))
        if column_of is not None:
            cells = cells // span * width + column_of[cells % span]
        matrix[cells] = losses
        observations += len(cells)
    matrix = matrix.reshape(-1, width)
    filled, recorded = 0, np.ones(len(matrix), dtype=bool)
    for start in range(0, len(matrix), FILL_ROWS):  # a chunk at a time: no temporary the size of the block
        part = matrix[start:start + FILL_ROWS]
        missing = np.isnan(part)
        filled += part.size - int(np.count_nonzero(missing))
        recorded[start:start + FILL_ROWS] = ~missing.all(1)
        forward_fill(part, missing)
    if filled != observations:  # repeats (or NaN losses): exact means
        blocks = list(_sorted_blocks(connection, range_params, epochs, 1 << 20, False))
        if not blocks:
            return pl.Series("sample_id", [], pl.Int64), np.empty((0, width), dtype=np.float32)
        return pl.concat([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    rows = np.flatnonzero(recorded)
    return pl.Series("sample_id", rows + low), matrix if len(rows) == len(matrix) else matrix[rows]


def _sorted_blocks(connection, params, epochs: list[int], batch_rows: int,
                   reference_only: bool) -> Iterator[tuple[pl.Series, np.ndarray]]:
    """Blocks from observations streamed in ``sample_id`` order, ``batch_rows`` at a time: the reference
    probes' (``sql/probe_observations.sql``) or those of the ids in ``[params["low"], params["high"])``, if
    given (``sql/trajectory_observations.sql``)."""
    epoch_values = np.asarray(epochs, dtype=np.int64)
    if reference_only:
        query = queries.load("probe_observations")
    else:
        query, params = queries.load("trajectory_observations"), {"low": None, "high": None} | params
    carry: list[np.ndarray] | None = None
    for batch in connection.sql(query, params=params).to_arrow_reader(batch_rows):
        columns = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(3)]
        if carry is not None:
            columns = [np.concatenate([old, new]) for old, new in zip(carry, columns, strict=True)]
        if not len(columns[0]):
            continue
        tail = _last_sample_start(columns[0])
        carry = [c[tail:] for c in columns]
        if tail:
            yield _to_matrix(*(c[:tail] for c in columns), epoch_values)
    if carry is not None and len(carry[0]):
        yield _to_matrix(*carry, epoch_values)


def _last_sample_start(ids: np.ndarray) -> int:
    """Index of the first row of the last sample in ``ids`` (rows grouped by sample)."""
    other = np.flatnonzero(ids != ids[-1])
    return int(other[-1]) + 1 if other.size else 0


def _to_matrix(ids: np.ndarray, epochs: np.ndarray, losses: np.ndarray,
               epoch_values: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    """Per-epoch mean loss of each sample (rows grouped by sample), forward-filled."""
    new_sample = np.empty(len(ids), dtype=bool)
    new_sample[0] = True
    np.not_equal(ids[1:], ids[:-1], out=new_sample[1:])
    row = np.cumsum(new_sample) - 1
    width = len(epoch_values)
    cells = row * width + np.searchsorted(epoch_values, epochs)
    size = (int(row[-1]) + 1) * width
    sums = np.bincount(cells, weights=losses, minlength=size)
    counts = np.bincount(cells, minlength=size)
    means = np.full(size, np.nan, dtype=np.float32)
    np.divide(sums, counts, out=means, where=counts > 0, casting="unsafe")
    return pl.Series("sample_id", ids[new_sample]), forward_fill(means.reshape(-1, width))


def mapd_epochs(engine: Engine, *, epochs: range | None, upto_epoch: int | None, split: str) -> list[int]:
    """The recorded epochs of ``split`` a MAP-D trajectory spans: those in ``epochs`` up to ``upto_epoch``."""
    lower, upper = epoch_bounds(epochs)
    epoch_list = [e for e in recorded_epochs(engine, split)
                  if lower <= e < upper and (upto_epoch is None or e <= upto_epoch)]
    if not epoch_list:
        raise ValueError(f"epochs: no recorded epochs of split {split!r} in the range asked for")
    return epoch_list


def mapd(
    engine: Engine,
    *,
    k: int = 20,
    suites: list[str] | None = None,
    epoch_list: list[int],
    split: str = "train",
    device: str = "auto",
    block_values: int = BLOCK_VALUES,
) -> pl.DataFrame:
    """MAP-D over the recorded epochs ``epoch_list``: ``sample_id, p_<suite>..., mapd_suite`` with
    ``p_<suite>`` = share of the ``k`` nearest reference-probe trajectories (exact L2) in ``suite`` and
    ``mapd_suite`` = the argmax (first suite alphabetically on ties). DuckDB streams trajectory blocks of
    about ``block_values`` values; Spark searches each partition on the executors
    (:func:`tdlog.analytics.spark_mapd.mapd_frame`)."""
    if engine.dialect == "spark":
        from .spark_engine import to_polars
        from .spark_mapd import mapd_frame

        return to_polars(mapd_frame(engine, k=k, suites=suites, epoch_list=epoch_list, split=split, device=device))
    dense = engine.records_paths and engine.id_type == "int64"
    id_range = dense_id_range(engine.connection, engine.records_paths) if dense else None
    blocks = trajectory_blocks(engine.connection, split=split, epochs=epoch_list, block_values=block_values,
                               id_range=id_range)
    if id_range is not None and (id_range[1] - id_range[0]) * len(epoch_list) <= block_values:
        blocks = list(blocks)  # one block, every sample: the probes' trajectories are in it
        index = _probe_index(engine, k, suites, split, epoch_list, device, blocks[:1])
    else:  # read the probes first: a query cannot start while the blocks stream
        index = _probe_index(engine, k, suites, split, epoch_list, device, None)
    parts = []
    for ids, trajectories in blocks:
        votes = index.vote(trajectories, k)
        columns = {f"p_{suite}": votes[:, j] for j, suite in enumerate(index.suites)}
        parts.append(pl.DataFrame({"sample_id": ids, **columns,
                                   "mapd_suite": pl.Series(index.suites)[votes.argmax(1)]}))
    return pl.concat(parts)


def _probe_index(engine: Engine, k: int, suites: list[str] | None, split: str, epoch_list: list[int], device: str,
                 blocks: list | None) -> ProbeIndex:
    """FAISS index over the reference probes' trajectories, taken from ``blocks`` (holding every sample)
    or, when ``None``, read on their own."""
    reference = reference_probes(engine, suites)
    if blocks is None:
        blocks = list(trajectory_blocks(engine.connection, split=split, epochs=epoch_list, reference_only=True))
    ids = pl.concat([b[0] for b in blocks]) if blocks else pl.Series("sample_id", [], reference["sample_id"].dtype)
    keep = np.isin(ids.to_numpy(), reference["sample_id"].to_numpy())  # the suites asked for
    if keep.sum() < k:
        raise ValueError(f"k: expected at most the number of reference probes with records, {keep.sum()}, got {k} "
                         "(register probes with register_samples(..., probe=..., probe_role='reference'))")
    trajectories = np.concatenate([b[1] for b in blocks])[keep]
    probe_of = dict(reference.iter_rows())
    labels = np.array([probe_of[i] for i in ids.filter(keep).to_list()])
    return ProbeIndex.build(trajectories, labels, device=device)


def mapd_accuracy(engine: Engine, assigned: pl.DataFrame) -> pl.DataFrame:
    """Confusion matrix of MAP-D on the held-out probes from ``assigned`` (``sample_id, mapd_suite``): one
    row per true ``probe`` suite, one count column per assigned suite, and ``accuracy`` = share assigned
    to their own suite."""
    roles = engine.sql(queries.load("sample_roles"))
    heldout = roles.filter(pl.col("probe_role") == "heldout").select("sample_id", "probe")
    joined = heldout.join(assigned.select("sample_id", "mapd_suite"), on="sample_id", how="inner")
    table = joined.pivot(on="mapd_suite", index="probe", values="sample_id", aggregate_function="len")
    counts = sorted(c for c in table.columns if c != "probe")
    table = table.select("probe", *counts).with_columns(pl.col(counts).fill_null(0))
    own = pl.sum_horizontal([pl.when(pl.col("probe") == c).then(pl.col(c)).otherwise(0) for c in counts])
    return table.with_columns(accuracy=own / pl.sum_horizontal(counts)).sort("probe")
