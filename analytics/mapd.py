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

TRAJECTORY_QUERY = (  # raw observations grouped by sample; the per-epoch means are taken in NumPy per block
    "SELECT sample_id, epoch, loss FROM records WHERE split = $split AND epoch >= $epoch_from "
    "AND epoch < $epoch_to {reference_only} ORDER BY sample_id"
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
    about ``block_rows`` observations at a time; a sample is never split across blocks, so the mean of its
    observations in each epoch is taken within one block. ``reference_only`` reads only the reference
    probes (the samples table says which)."""
    epoch_values = np.asarray(epochs, dtype=np.int64)
    params = {"split": split, "epoch_from": epochs[0], "epoch_to": epochs[-1] + 1}
    query = TRAJECTORY_QUERY.format(reference_only=REFERENCE_ONLY if reference_only else "")
    carry: list[np.ndarray] | None = None
    for batch in connection.sql(query, params=params).to_arrow_reader(block_rows):
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
        suite = self.suite_of_neighbour[neighbours]
        return np.stack([(suite == j).sum(1) for j in range(len(self.suites))], axis=1) / k


def gpu_available() -> bool:
    """FAISS was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
