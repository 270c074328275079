"""Host staging of CPU batches: ``log()`` copies each batch into preallocated buffers, one copy per tensor.

A :class:`HostChunk` holds consecutive CPU batches until the recorder hands it to the writer thread, which
computes their statistics in one pass and gives the chunk back for reuse. The training thread thus pays a
few ``copy_`` calls per step: no allocation, no per-batch concatenation, no page faults on fresh memory.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

# Chunks hold at most this many logit values (64 MiB of float32), whatever the number of classes.
MAX_CHUNK_VALUES = 1 << 24


def chunk_capacity(coalesce_rows: int, num_outputs: int) -> int:
    """Rows of a chunk: ``coalesce_rows``, fewer when ``rows * num_outputs`` would pass MAX_CHUNK_VALUES."""
    return max(1, min(coalesce_rows, MAX_CHUNK_VALUES // num_outputs))


class HostChunk:
    """Consecutive CPU batches in preallocated NumPy buffers: logits as float32 ``[capacity, num_outputs]``,
    targets and integer ids as int64, given losses as float32; per batch its split, epoch, step, end row
    and whether a loss was given. String ids are kept as the Arrow arrays they arrived as."""

    def __init__(self, capacity: int, num_outputs: int) -> None:
        self.capacity = capacity
        # NumPy arrays for the writer thread (which runs no torch ops), torch views of them for log()
        self.logits = np.empty((capacity, num_outputs), np.float32)
        self.targets = np.empty(capacity, np.int64)
        self.loss = np.empty(capacity, np.float32)
        self.ids = np.empty(capacity, np.int64)
        self._views = tuple(torch.from_numpy(a) for a in (self.logits, self.targets, self.loss, self.ids))
        self.reset()

    def reset(self) -> HostChunk:
        self.rows = 0
        self.id_arrays: list[pa.Array] = []
        self.splits: list[str] = []
        self.epochs: list[int] = []
        self.steps: list[int] = []
        self.stops: list[int] = []
        self.loss_given: list[bool] = []
        return self

    def room(self) -> int:
        return self.capacity - self.rows

    def add(self, ids, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | None,
            split: str, epoch: int, step: int) -> None:
        """Copy one checked CPU batch into the next free rows (the caller made sure it fits)."""
        start = self.rows
        stop = start + logits.shape[0]
        logits_view, targets_view, loss_view, ids_view = self._views
        logits_view[start:stop].copy_(logits.detach())
        targets_view[start:stop].copy_(targets)
        if loss is not None:
            loss_view[start:stop].copy_(loss.detach().reshape(-1))
        if isinstance(ids, torch.Tensor):
            ids_view[start:stop].copy_(ids)
        elif pa.types.is_integer(ids.type):
            self.ids[start:stop] = ids.to_numpy()
        else:
            self.id_arrays.append(ids)
        self.rows = stop
        self.splits.append(split)
        self.epochs.append(epoch)
        self.steps.append(step)
        self.stops.append(stop)
        self.loss_given.append(loss is not None)

    def sample_ids(self) -> pa.Array:
        """The chunk's ids as an Arrow array that owns its memory (the buffers are reused)."""
        if self.id_arrays:
            return pa.concat_arrays(self.id_arrays)
        return pa.array(self.ids[: self.rows].copy())

    def step_column(self) -> np.ndarray:
        """Each row's step: every batch's step repeated over its rows."""
        sizes = np.diff(np.array(self.stops, dtype=np.int64), prepend=0)
        return np.repeat(np.array(self.steps, dtype=np.int64), sizes)

    def key_runs(self) -> list[tuple[tuple[str, int], int, int]]:
        """``((split, epoch), start_row, stop_row)`` of each run of consecutive batches with one key."""
        runs: list[tuple[tuple[str, int], int, int]] = []
        start = 0
        for index, key in enumerate(zip(self.splits, self.epochs, strict=True)):
            stop = self.stops[index]
            if runs and runs[-1][0] == key:
                runs[-1] = (key, runs[-1][1], stop)
            else:
                runs.append((key, start, stop))
            start = stop
        return runs
