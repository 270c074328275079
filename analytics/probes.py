"""What both MAP-D paths (DuckDB's :mod:`tdlog.analytics.mapd`, Spark's :mod:`tdlog.analytics.spark_mapd`)
share: the reference probes of a run, the filling of epochs a trajectory misses, and the FAISS index the
trajectories are searched in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from . import queries

if TYPE_CHECKING:
    from .engine import Engine


def forward_fill(matrix: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """Fill NaN entries of each row from the left (then leading NaN from the first value), in place;
    ``missing``: ``np.isnan(matrix)`` when the caller has it."""
    missing = np.isnan(matrix) if missing is None else missing
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


def reference_probes(engine: Engine, suites: list[str] | None = None) -> pl.DataFrame:
    """``sample_id, probe`` of the reference probes (of ``suites`` only, when given), by ``sample_id``."""
    roles = engine.sql(queries.load("sample_roles"))
    reference = roles.filter(pl.col("probe_role") == "reference").select("sample_id", "probe")
    return reference if suites is None else reference.filter(pl.col("probe").is_in(suites))


def probe_suites(engine: Engine) -> list[str]:
    """Names of the suites that have reference probes, sorted."""
    return sorted(reference_probes(engine)["probe"].unique().to_list())


def gpu_available() -> bool:
    """FAISS was built with GPU support and sees at least one GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def use_gpu(device: str) -> bool:
    """Whether FAISS work runs on the GPU for ``device``: ``"auto"`` (when FAISS can use one), ``"cpu"`` or
    ``"cuda"`` (an error when it cannot)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    gpu = gpu_available()
    if device == "cuda" and not gpu:
        raise ValueError("device: 'cuda' asked for, but FAISS has no GPU support or sees no GPU "
                         "(install faiss-gpu-cu12, see the README)")
    return gpu and device != "cpu"


@dataclass
class ProbeIndex:
    """Exact L2 index over the reference probes' trajectories, on the GPU when FAISS and a GPU allow."""

    suites: list[str]
    suite_of_neighbour: np.ndarray
    index: Any  # faiss.Index
    device: str

    @classmethod
    def build(cls, trajectories: np.ndarray, suites: np.ndarray, *, device: str = "auto") -> ProbeIndex:
        import faiss

        gpu = use_gpu(device)
        names = sorted(set(suites.tolist()))
        index = faiss.IndexFlatL2(trajectories.shape[1])
        used = "cpu"
        if gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            used = "cuda"
        index.add(np.ascontiguousarray(trajectories, dtype=np.float32))
        return cls(names, np.searchsorted(names, suites), index, used)

    def vote(self, trajectories: np.ndarray, k: int) -> np.ndarray:
        """``[n, len(suites)]`` share of each suite among the ``k`` nearest probes of every row."""
        _, neighbours = self.index.search(np.ascontiguousarray(trajectories, dtype=np.float32), k)
        suites = len(self.suites)
        cells = self.suite_of_neighbour[neighbours] + suites * np.arange(len(neighbours))[:, None]
        return np.bincount(cells.ravel(), minlength=len(neighbours) * suites).reshape(-1, suites) / k
