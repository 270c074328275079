"""Background writer: turns queued batches into Arrow rows and commits Parquet files.

The training thread only enqueues (a bounded queue gives back-pressure instead of unbounded memory).
This thread waits for device copies, computes statistics for staged CPU batches (and hands their chunk
back for reuse), buffers rows per
``(split, epoch)`` and commits a file when a buffer reaches ``flush_rows``, when an epoch of a split
ends, when ``flush_seconds`` have passed, on ``flush()`` and on ``close()``. An exception here is kept
and raised from the recorder's next call.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .commit import commit_table
from .format import FLOAT_STATS, INT_STATS, part_name, records_partition, records_schema
from .host_stats import host_kept_logits, host_statistics
from .staging import HostChunk
from .validate import check_target_range


@dataclass
class PendingBatch:
    """One ``log()`` call of a device batch on its way to disk: its statistics were computed on the
    device and are being copied to pinned host memory (``copied`` is recorded after the copies)."""

    split: str
    epoch: int
    step: int
    ids: pa.Array | torch.Tensor
    targets: torch.Tensor
    floats: torch.Tensor
    ints: torch.Tensor
    kept: tuple[torch.Tensor, ...]
    target_out_of_range: torch.Tensor
    copied: Any  # torch.cuda.Event


@dataclass
class WriterConfig:
    run_dir: Path
    id_type: str
    attempt: int
    rank: int
    num_outputs: int
    logits: str
    topk: int
    logits_dtype: str
    flush_rows: int
    flush_seconds: float
    max_pending: int
    on_commit: Callable[[Path], None] | None = None  # called with each committed file (object-store upload)


def _lower_thread_priority() -> None:
    """Run this thread at a lower CPU priority than the training threads (Linux: per-thread nice)."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere, or not permitted: default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _concat_ids(parts: list[pa.Array | torch.Tensor]) -> pa.Array:
    if isinstance(parts[0], torch.Tensor):
        return pa.array(np.concatenate([part.numpy() for part in parts]))
    return pa.concat_arrays(parts)


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_CLOSE = object()


class RejectedBatch(ValueError):
    """A batch whose values were found bad on the writer side (CUDA batches are checked there, since
    checking them in ``log()`` would need a host sync). Raised from the next call; later batches go on."""


class RecordWriter(threading.Thread):
    """Daemon thread owning every records file of one (attempt, rank)."""

    def __init__(self, config: WriterConfig, on_nonfinite: Callable[[int], None]) -> None:
        super().__init__(name=f"tdlog-writer-a{config.attempt}-r{config.rank}", daemon=True)
        self.config = config
        self.schema = records_schema(
            config.id_type,
            logits=config.logits,
            num_outputs=config.num_outputs,
            topk=config.topk,
            logits_dtype=config.logits_dtype,
        )
        self.queue: queue.Queue = queue.Queue(maxsize=config.max_pending)
        self.free_chunks: queue.SimpleQueue[HostChunk] = queue.SimpleQueue()  # consumed chunks, for reuse
        self.on_nonfinite = on_nonfinite
        self.fatal: BaseException | None = None
        self.rejected: list[BaseException] = []
        self.committed_files = 0
        self.committed_rows = 0
        self._seq = 0
        self._buffers: dict[tuple[str, int], list[pa.RecordBatch]] = {}
        self._oldest: float | None = None

    # --- producer side (training thread) -------------------------------------------------------
    def submit(self, item: HostChunk | list[PendingBatch]) -> None:
        self.queue.put(item)

    def flush(self) -> None:
        marker = _Flush()
        self.queue.put(marker)
        while not marker.done.wait(0.05):
            if not self.is_alive():
                break

    def close(self) -> None:
        self.queue.put(_CLOSE)
        self.join()

    # --- consumer side (this thread) -----------------------------------------------------------
    def run(self) -> None:
        _lower_thread_priority()
        while True:
            try:
                item = self.queue.get(timeout=self._wait_seconds())
            except queue.Empty:
                self._guarded(self._commit_all)
                continue
            if item is _CLOSE:
                self._guarded(self._commit_all)
                return
            if isinstance(item, _Flush):
                self._guarded(self._commit_all)
                item.done.set()
                continue
            self._guarded(self._accept, item)
            if self._oldest is not None and time.monotonic() - self._oldest >= self.config.flush_seconds:
                self._guarded(self._commit_all)

    def _wait_seconds(self) -> float | None:
        if self._oldest is None:
            return None
        return max(0.0, self.config.flush_seconds - (time.monotonic() - self._oldest))

    def _guarded(self, action: Callable[..., None], *args: Any) -> None:
        if self.fatal is not None:
            return  # keep draining the queue so the training loop never blocks on a dead writer
        try:
            action(*args)
        except BaseException as exc:
            self.fatal = exc

    def _accept(self, item: HostChunk | list[PendingBatch]) -> None:
        """Turn a staged chunk of CPU batches, or a list of device batches, into rows buffered per
        (split, epoch)."""
        if isinstance(item, HostChunk):
            self._accept_host(item)
        else:
            self._accept_device(item)

    def _accept_host(self, chunk: HostChunk) -> None:
        """Statistics of a chunk of CPU batches, computed once over all its rows (NumPy: see
        :mod:`recorder.host_stats`); the chunk is then handed back for reuse."""
        rows = chunk.rows
        config = self.config
        logits = chunk.logits[:rows]
        kept = host_kept_logits(logits, config.logits, config.topk, config.logits_dtype)
        all_given = all(chunk.loss_given)
        floats, ints = host_statistics(logits, chunk.targets[:rows], chunk.loss[:rows] if all_given else None)
        if not all_given:  # some batches came with their own loss: it replaces the cross-entropy
            start = 0
            for stop, given in zip(chunk.stops, chunk.loss_given, strict=True):
                if given:
                    floats[0, start:stop] = chunk.loss[start:stop]
                start = stop
        ids, steps, runs = chunk.sample_ids(), chunk.step_column(), chunk.key_runs()
        self.free_chunks.put(chunk.reset())
        self._buffer_rows(floats, ints, ids, steps, kept, runs)

    def _accept_device(self, batches: list[PendingBatch]) -> None:
        """Rows of device batches whose statistics were computed on the device and copied to the host."""
        accepted = [batch for batch in batches if self._check(batch)]
        if not accepted:
            return
        runs: list[tuple[tuple[str, int], int, int]] = []
        start = 0
        for batch in accepted:
            key, stop = (batch.split, batch.epoch), start + batch.targets.shape[0]
            runs.append((key, runs.pop()[1], stop) if runs and runs[-1][0] == key else (key, start, stop))
            start = stop
        sizes = [batch.targets.shape[0] for batch in accepted]
        self._buffer_rows(
            np.concatenate([b.floats.numpy() for b in accepted], axis=1),  # [6, rows], rows contiguous
            np.concatenate([b.ints.numpy() for b in accepted], axis=1),
            _concat_ids([b.ids for b in accepted]),
            np.repeat(np.array([b.step for b in accepted], dtype=np.int64), sizes),
            [np.concatenate([b.kept[i].numpy() for b in accepted]) for i in range(len(accepted[0].kept))],
            runs,
        )

    def _check(self, batch: PendingBatch) -> bool:
        """Wait for a device batch's copies and check its targets; a bad batch is refused, others go on."""
        batch.copied.synchronize()
        if not batch.target_out_of_range.numpy():
            return True
        targets = batch.targets.numpy()
        try:
            check_target_range("targets", int(targets.min()), int(targets.max()), self.config.num_outputs)
        except ValueError as exc:
            self.rejected.append(RejectedBatch(f"{exc} (the batch of step {batch.step} was not written)"))
        return False

    def _buffer_rows(self, floats: np.ndarray, ints: np.ndarray, ids: pa.Array, steps: np.ndarray,
                     kept: list[np.ndarray], runs: list[tuple[tuple[str, int], int, int]]) -> None:
        """One Arrow batch of all the rows, buffered slice by slice under each run's (split, epoch);
        rows with NaN/Inf are counted (and kept)."""
        rows = floats.shape[1]
        nonfinite = rows - int(np.isfinite(floats).all(axis=0).sum())
        if nonfinite:
            self.on_nonfinite(nonfinite)
        columns: dict[str, pa.Array] = {
            "sample_id": ids,
            "step": pa.array(steps),
            "attempt": pa.array(np.full(rows, self.config.attempt, dtype=np.int32)),
            "rank": pa.array(np.full(rows, self.config.rank, dtype=np.int32)),
        }
        columns.update((name, pa.array(ints[index])) for index, name in enumerate(INT_STATS))
        columns.update((name, pa.array(floats[index])) for index, name in enumerate(FLOAT_STATS))
        for name, values in zip(self._kept_columns(), kept, strict=True):
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        record_batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        for key, start, stop in runs:
            self._buffer(key, record_batch.slice(start, stop - start))

    def _buffer(self, key: tuple[str, int], record_batch: pa.RecordBatch) -> None:
        for other in [k for k in self._buffers if k[0] == key[0] and k[1] != key[1]]:
            self._commit(other)  # that split moved to another epoch: its earlier epoch is complete
        self._buffers.setdefault(key, []).append(record_batch)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if sum(b.num_rows for b in self._buffers[key]) >= self.config.flush_rows:
            self._commit(key)

    def _kept_columns(self) -> tuple[str, ...]:
        return {"none": (), "full": ("logits",), "topk": ("topk_logits", "topk_classes")}[self.config.logits]

    def _commit(self, key: tuple[str, int]) -> None:
        batches = self._buffers.pop(key)
        if not self._buffers:
            self._oldest = None
        table = pa.Table.from_batches(batches, schema=self.schema)
        split, epoch = key
        name = part_name(self.config.attempt, self.config.rank, self._seq)
        committed = commit_table(self.config.run_dir, f"{records_partition(split, epoch)}/{name}", table)
        if self.config.on_commit is not None:
            self.config.on_commit(committed)
        self._seq += 1
        self.committed_files += 1
        self.committed_rows += table.num_rows

    def _commit_all(self) -> None:
        for key in list(self._buffers):
            self._commit(key)
