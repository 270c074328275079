"""FAISS k-means over loss trajectories, as both selection paths (DuckDB's :mod:`tdlog.analytics.selection`,
Spark's :mod:`tdlog.analytics.spark_selection`) run it: centroids trained on a seeded sample of the
trajectories, every trajectory assigned to its nearest centroid (exact L2)."""

from __future__ import annotations

import warnings

import numpy as np

from .allocation import sample_keys
from .probes import use_gpu

POINTS_PER_CLUSTER = 256  # training sample = this many trajectories per cluster at most (FAISS's own default cap)


class TrainingSample:
    """The ``size`` trajectories with the lowest :func:`~tdlog.analytics.allocation.sample_keys` (stream 1) of
    their ids, kept while blocks of trajectories stream past: a uniform random sample without replacement
    that depends on the ids and the seed alone."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.ids: np.ndarray | None = None
        self.keys = np.empty(0, dtype=np.uint64)
        self.matrix: np.ndarray | None = None

    def add(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        keys = sample_keys(ids, self.seed, stream=1)
        if self.matrix is not None:
            ids, keys = np.concatenate([self.ids, ids]), np.concatenate([self.keys, keys])
            matrix = np.concatenate([self.matrix, matrix])
        if len(keys) > self.size:
            kept = np.argpartition(keys, self.size - 1)[:self.size]
            ids, keys, matrix = ids[kept], keys[kept], matrix[kept]
        self.ids, self.keys, self.matrix = ids, keys, matrix

    def trajectories(self) -> np.ndarray:
        """The sample, ordered by key (the same order whatever order the blocks came in)."""
        if self.matrix is None:
            return np.empty((0, 0), dtype=np.float32)
        return np.ascontiguousarray(self.matrix[np.argsort(self.keys, kind="stable")], dtype=np.float32)


def train_centroids(sample: np.ndarray, clusters: int, *, iterations: int, seed: int, device: str) -> np.ndarray:
    """``[k, d]`` float32 centroids: ``faiss.Kmeans`` (``iterations`` Lloyd iterations, FAISS's seeded
    initialisation) on the rows of ``sample``, ``k = min(clusters, rows)`` (a warning when fewer rows than
    clusters). ``device`` as in :func:`tdlog.analytics.probes.use_gpu`."""
    import faiss

    gpu = use_gpu(device)
    if len(sample) < clusters:
        warnings.warn(f"clusters: {clusters} asked for, but only {len(sample)} trajectories: using {len(sample)}",
                      UserWarning, stacklevel=3)
        clusters = len(sample)
    kmeans = faiss.Kmeans(sample.shape[1], clusters, niter=iterations, seed=seed, gpu=gpu, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(POINTS_PER_CLUSTER, len(sample)))
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


class CentroidIndex:
    """Exact L2 index over the centroids (on the GPU when ``device`` allows): ``assign`` gives each row of a
    trajectory block its nearest centroid."""

    def __init__(self, centroids: np.ndarray, device: str) -> None:
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        if use_gpu(device):
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.index = index

    def assign(self, trajectories: np.ndarray) -> np.ndarray:
        """int32 cluster of each row: ``argmin_c ||x - centroid_c||^2``."""
        if not len(trajectories):
            return np.empty(0, dtype=np.int32)
        _, nearest = self.index.search(np.ascontiguousarray(trajectories, dtype=np.float32), 1)
        return nearest[:, 0].astype(np.int32)
