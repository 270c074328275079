"""Background writer thread: turns handed-over batches into Arrow rows and commits Parquet files.

It imports NumPy and PyArrow only and runs no torch ops: a torch op in a second live thread made every
training step of the main thread twice as slow (see :mod:`tdlog.recorder.host_stats`); device batches bring
their own ``rows()`` (:mod:`tdlog.recorder.device`), which only waits for the copies and reads pinned buffers.
It computes the statistics of staged CPU batches (and hands their chunk back for reuse), buffers rows per
``(split, epoch)`` and commits a file when a buffer reaches ``flush_rows``, when an epoch of a split ends,
when ``flush_seconds`` have passed since the rows were logged, on ``flush()`` and on ``close()``. An
exception here is kept and raised from the recorder's next call. The training thread only hands over; a
bounded queue gives back-pressure instead of unbounded memory.
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

from tdlog.format import FLOAT_STATS, INT_STATS, NO_CLASS, part_name, records_partition, records_schema

from .chunk import Chunk, key_runs, step_column
from .commit import commit_table
from .host_stats import host_kept_logits, host_statistics


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
    fence: Callable[[], None] | None = None  # raises when a later attempt superseded this writer


@dataclass
class Rows:
    """Rows ready to buffer: statistics ``[7, n]``/``[4, n]`` in the order of ``FLOAT_STATS``/``INT_STATS``
    (CPU classification chunks bring the first ``[6, n]``/``[3, n]``: ``correct`` and ``tokens`` follow
    from them), ids, steps, kept logits, the ``((split, epoch), start, stop)`` runs they belong to, and when
    they were logged."""

    floats: np.ndarray
    ints: np.ndarray
    ids: pa.Array
    steps: np.ndarray
    kept: list[np.ndarray]
    runs: list[tuple[tuple[str, int], int, int]]
    started: float  # time.monotonic() when the first of these rows was logged


class RejectedBatch(ValueError):
    """A batch whose values were found bad on the writer side (CUDA batches are checked there, since
    checking them in ``log()`` would need a host sync). Raised from the next call; later batches go on."""


def _lower_thread_priority() -> None:
    """Run this thread at a lower CPU priority than the training threads (Linux: per-thread nice)."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere, or not permitted: default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_CLOSE = object()


class RecordWriter(threading.Thread):
    """Daemon thread owning every records file of one (attempt, rank).

    Items handed to :meth:`submit` are a :class:`tdlog.recorder.chunk.Chunk` (CPU batches; given back through
    :meth:`take_chunk` once read) or an object with a ``rows(num_outputs, rejected)`` method returning
    :class:`Rows` (device batches, :class:`tdlog.recorder.device.DeviceBatches`).
    """

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
        self.free_chunks: queue.SimpleQueue[Chunk] = queue.SimpleQueue()  # read chunks, for reuse
        self.on_nonfinite = on_nonfinite
        self.fatal: BaseException | None = None
        self.rejected: list[BaseException] = []
        self._seq = 0
        self._buffers: dict[tuple[str, int], list[pa.RecordBatch]] = {}
        self._oldest: float | None = None

    # --- producer side (training thread) -------------------------------------------------------
    def take_chunk(self, capacity: int) -> Chunk | None:
        """A chunk given back after reading, with at least ``capacity`` rows, if there is one."""
        with contextlib.suppress(queue.Empty):
            chunk = self.free_chunks.get_nowait()
            if chunk.capacity >= capacity:
                return chunk
        return None

    def submit(self, item: Any) -> None:
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

    def _accept(self, item: Any) -> None:
        """Buffer the rows of a staged chunk of CPU batches, or of a list of device batches."""
        rows = self._chunk_rows(item) if isinstance(item, Chunk) else item.rows(self.config.num_outputs, self.rejected)
        if rows is not None:
            self._buffer_rows(rows)

    def _chunk_rows(self, chunk: Chunk) -> Rows:
        """Statistics of a chunk of CPU batches, computed once over all its rows (NumPy: see
        :mod:`tdlog.recorder.host_stats`); the chunk is then given back for reuse."""
        try:
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
            steps, runs = step_column(chunk.steps, chunk.stops), key_runs(chunk.keys, chunk.stops)
            return Rows(floats, ints, chunk.sample_ids(), steps, kept, runs, chunk.started)
        finally:
            self.free_chunks.put(chunk.reset())

    def _buffer_rows(self, rows: Rows) -> None:
        """One Arrow batch of all the rows, buffered slice by slice under each run's (split, epoch);
        rows with NaN/Inf are counted (and kept), except sequence rows with nothing to score."""
        count = rows.floats.shape[1]
        finite = np.isfinite(rows.floats).all(axis=0)
        if len(rows.ints) == len(INT_STATS):  # sequence rows (target NO_CLASS): their loss; none when tokens = 0
            sequence = rows.ints[INT_STATS.index("target")] == NO_CLASS
            finite |= sequence & (np.isfinite(rows.floats[FLOAT_STATS.index("loss")])
                                  | (rows.ints[INT_STATS.index("tokens")] == 0))
        nonfinite = count - int(finite.sum())
        if nonfinite:
            self.on_nonfinite(nonfinite)
        columns: dict[str, pa.Array] = {
            "sample_id": rows.ids,
            "step": pa.array(rows.steps),
            "attempt": pa.array(np.full(count, self.config.attempt, dtype=np.int32)),
            "rank": pa.array(np.full(count, self.config.rank, dtype=np.int32)),
        }
        floats, ints = rows.floats, rows.ints
        if len(floats) < len(FLOAT_STATS):  # classification rows: one token each, correct = (pred == target)
            floats = [*floats, (ints[2] == ints[0]).astype(np.float32)]
            ints = [*ints, np.ones(count, dtype=np.int32)]
        columns.update((name, pa.array(ints[index])) for index, name in enumerate(INT_STATS))
        columns.update((name, pa.array(floats[index])) for index, name in enumerate(FLOAT_STATS))
        for name, values in zip(self._kept_columns(), rows.kept, strict=True):
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        record_batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        for key, start, stop in rows.runs:
            self._buffer(key, record_batch.slice(start, stop - start), rows.started)

    def _buffer(self, key: tuple[str, int], record_batch: pa.RecordBatch, started: float) -> None:
        for other in [k for k in self._buffers if k[0] == key[0] and k[1] != key[1]]:
            self._commit(other)  # that split moved to another epoch: its earlier epoch is complete
        self._buffers.setdefault(key, []).append(record_batch)
        if self._oldest is None or started < self._oldest:
            self._oldest = started
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
        if self.config.fence is not None:
            self.config.fence()
        committed = commit_table(self.config.run_dir, f"{records_partition(split, epoch)}/{name}", table)
        if self.config.on_commit is not None:
            self.config.on_commit(committed)
        self._seq += 1

    def _commit_all(self) -> None:
        for key in list(self._buffers):
            self._commit(key)
