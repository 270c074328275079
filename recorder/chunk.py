"""Rows of consecutive CPU batches in NumPy buffers, as the writer thread reads them.

The writer needs NumPy and PyArrow only (it must not run torch ops, see :mod:`tdlog.recorder.host_stats`);
:class:`tdlog.recorder.staging.HostChunk` is the training side's view, which copies torch tensors in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Chunks hold at most this many logit values (64 MiB of float32), whatever the number of classes.
MAX_CHUNK_VALUES = 1 << 24


def chunk_capacity(coalesce_rows: int, num_outputs: int) -> int:
    """Rows of a chunk: ``coalesce_rows``, fewer when ``rows * num_outputs`` would pass MAX_CHUNK_VALUES."""
    return max(1, min(coalesce_rows, MAX_CHUNK_VALUES // num_outputs))


def step_column(steps: list[int], stops: list[int]) -> np.ndarray:
    """Each row's step: batch ``i``'s step repeated over its rows, which end at row ``stops[i]``."""
    sizes = np.diff(np.array(stops, dtype=np.int64), prepend=0)
    return np.repeat(np.array(steps, dtype=np.int64), sizes)


def key_runs(keys: list[tuple[str, int]], stops: list[int]) -> list[tuple[tuple[str, int], int, int]]:
    """``((split, epoch), start_row, stop_row)`` of each run of consecutive batches with one key; batch
    ``i`` has key ``keys[i]`` and its rows end at row ``stops[i]``."""
    runs: list[tuple[tuple[str, int], int, int]] = []
    start = 0
    for key, stop in zip(keys, stops, strict=True):
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1], stop)
        else:
            runs.append((key, start, stop))
        start = stop
    return runs


class Chunk:
    """Consecutive CPU batches in preallocated buffers: targets and integer ids as int64, logits as float32
    ``[capacity, num_outputs]``, given losses as float32; per batch its (split, epoch), step, end row and
    whether a loss was given. String ids are kept as the Arrow arrays they arrived as."""

    def __init__(self, capacity: int, num_outputs: int) -> None:
        self.capacity = capacity
        self.logits = np.empty((capacity, num_outputs), np.float32)
        self.targets = np.empty(capacity, np.int64)
        self.loss = np.empty(capacity, np.float32)
        self.ids = np.empty(capacity, np.int64)
        self.reset()

    def reset(self) -> Chunk:
        self.rows = 0
        self.started = 0.0  # time.monotonic() of the first batch: the writer commits by started + flush_seconds
        self.id_arrays: list[pa.Array] = []
        self.keys: list[tuple[str, int]] = []  # (split, epoch)
        self.steps: list[int] = []
        self.stops: list[int] = []
        self.loss_given: list[bool] = []
        return self

    def room(self) -> int:
        return self.capacity - self.rows

    def sample_ids(self) -> pa.Array:
        """The chunk's ids as an Arrow array that owns its memory (the buffer is reused)."""
        if self.id_arrays:
            return pa.concat_arrays(self.id_arrays)
        return pa.array(self.ids[: self.rows].copy())
