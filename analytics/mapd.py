"""MAP-D (Siddiqui et al. 2022): which probe suite's loss trajectories a sample's trajectory resembles.

A trajectory is the vector of a sample's per-epoch mean losses over the chosen epochs; epochs it missed
take the value of its previous recorded epoch (forward fill; missing leading epochs take its first
recorded value). The reference probes' trajectories form an exact L2 FAISS index; sample trajectories
stream from DuckDB in blocks (memory does not grow with the number of samples) and each sample's k
nearest probes vote: ``p(suite) = share of the k neighbours from that suite``, assignment = argmax
(ties: the suite first in alphabetical order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
import polars as pl

if TYPE_CHECKING:
    import duckdb

TRAJECTORY_QUERY = (
    "SELECT sample_id, epoch, loss FROM epoch_stats WHERE split = $split AND epoch >= $epoch_from "
    "AND epoch < $epoch_to {reference_only} ORDER BY sample_id, epoch"
)
REFERENCE_ONLY = "AND sample_id IN (SELECT sample_id FROM samples WHERE probe IS NOT NULL AND probe_role = 'reference')"


def forward_fill(matrix: np.ndarray) -> np.ndarray:
    """Fill NaN entries of each row from the left (then leading NaN from the first value), in place."""
    missing = np.isnan(matrix)
    if not missing.any():
        return matrix
    columns = np.where(~missing, np.arange(matrix.shape[1]), 0)
    np.maximum.accumulate(columns, axis=1, out=columns)
    filled = matrix[np.arange(matrix.shape[0])[:, None], columns]
    first = np.argmax(~np.isnan(filled), axis=1)
    leading = np.isnan(filled)
    filled[leading] = np.broadcast_to(filled[np.arange(len(filled)), first][:, None], filled.shape)[leading]
    matrix[:] = filled
    return matrix


def trajectory_blocks(
    connection: duckdb.DuckDBPyConnection,
    *,
    split: str,
    epochs: list[int],
    block_rows: int = 1 << 20,
    reference_only: bool = False,
) -> Iterator[tuple[pl.Series, np.ndarray]]:
    """Yield ``(sample_ids, trajectories[n, len(epochs)] float32)`` blocks in ``sample_id`` order, streaming
    about ``block_rows`` (sample, epoch) rows at a time; a sample is never split across blocks.
    ``reference_only`` reads only the reference probes (the samples table says which)."""
    column_of = {epoch: index for index, epoch in enumerate(epochs)}
    params = {"split": split, "epoch_from": epochs[0], "epoch_to": epochs[-1] + 1}
    query = TRAJECTORY_QUERY.format(reference_only=REFERENCE_ONLY if reference_only else "")
    reader = connection.sql(query, params=params).to_arrow_reader(block_rows)
    carry: pl.DataFrame | None = None
    for batch in reader:
        frame = pl.from_arrow(batch)
        if carry is not None:
            frame = pl.concat([carry, frame])
        last_id = frame["sample_id"][-1]
        carry = frame.filter(pl.col("sample_id") == last_id)
        complete = frame.filter(pl.col("sample_id") != last_id)
        if complete.height:
            yield _to_matrix(complete, column_of, len(epochs))
    if carry is not None and carry.height:
        yield _to_matrix(carry, column_of, len(epochs))


def _to_matrix(frame: pl.DataFrame, column_of: dict[int, int], width: int) -> tuple[pl.Series, np.ndarray]:
    ids, row = np.unique(frame["sample_id"].to_numpy(), return_inverse=True)
    matrix = np.full((len(ids), width), np.nan, dtype=np.float32)
    columns = frame["epoch"].replace_strict(column_of, return_dtype=pl.Int64).to_numpy()
    matrix[row, columns] = frame["loss"].to_numpy()
    return pl.Series("sample_id", ids), forward_fill(matrix)


@dataclass
class ProbeIndex:
    """Exact L2 index over the reference probes' trajectories, on the GPU when FAISS and a GPU allow."""

    suites: list[str]
    suite_of_neighbour: np.ndarray
    index: faiss.Index
    device: str

    @classmethod
    def build(cls, trajectories: np.ndarray, suites: np.ndarray, *, device: str = "auto") -> ProbeIndex:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
        names = sorted(set(suites.tolist()))
        index: faiss.Index = faiss.IndexFlatL2(trajectories.shape[1])
        gpu = gpu_available()
        if device == "cuda" and not gpu:
            raise ValueError("device: 'cuda' asked for, but FAISS has no GPU support or sees no GPU "
                             "(install faiss-gpu-cu12, see the README)")
        used = "cpu"
        if gpu and device != "cpu":
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            used = "cuda"
        index.add(np.ascontiguousarray(trajectories, dtype=np.float32))
        return cls(names, np.searchsorted(names, suites), index, used)

    def vote(self, trajectories: np.ndarray, k: int) -> np.ndarray:
        """``[n, len(suites)]`` share of each suite among the ``k`` nearest probes of every row."""
        _, neighbours = self.index.search(np.ascontiguousarray(trajectories, dtype=np.float32), k)
        votes = np.zeros((len(trajectories), len(self.suites)), dtype=np.float64)
        rows = np.repeat(np.arange(len(trajectories)), k)
        np.add.at(votes, (rows, self.suite_of_neighbour[neighbours.reshape(-1)]), 1.0)
        return votes / k


def gpu_available() -> bool:
    """FAISS was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
