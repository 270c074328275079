"""Background writer: turns queued batches into Arrow rows and commits Parquet files.

The training thread only enqueues (a bounded queue gives back-pressure instead of unbounded memory).
This thread waits for device copies, computes statistics for CPU batches, buffers rows per
``(split, epoch)`` and commits a file when a buffer reaches ``flush_rows``, when an epoch of a split
ends, when ``flush_seconds`` have passed, on ``flush()`` and on ``close()``. An exception here is kept
and raised from the recorder's next call.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from .stats import batch_statistics, kept_logits
from .validate import check_target_range


@dataclass
class PendingBatch:
    """One ``log()`` call on its way to disk. Either ``logits`` (CPU: statistics still to compute) or
    ``floats``/``ints`` (computed on the device, copied to pinned host memory) is set."""

    split: str
    epoch: int
    step: int
    ids: pa.Array | torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    floats: torch.Tensor | None = None
    ints: torch.Tensor | None = None
    kept: tuple[torch.Tensor, ...] = ()
    target_out_of_range: torch.Tensor | None = None
    copied: Any = None  # torch.cuda.Event recorded after the device-to-host copies


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


def _confine_torch_to_this_thread() -> None:
    """Make torch ops of this thread single-threaded without touching the training threads' setting.

    ``torch.set_num_threads`` changes the process-wide default; OpenMP's ``omp_set_num_threads`` only
    sets the calling thread's value. Without it, the CPU statistics computed here open a second OpenMP
    team that fights the training thread's team for the same cores (benchmarks/recorder.py: a small
    MLP step went from 1.8 ms to 4.1 ms on 2 cores). Where the OpenMP runtime is not visible the
    statistics are still right, only slower.
    """
    torch.get_num_threads()  # ATen sets this thread's OpenMP value on first use: let it happen first
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).omp_set_num_threads(1)


def _concat_ids(parts: list[pa.Array | torch.Tensor]) -> pa.Array:
    if isinstance(parts[0], torch.Tensor):
        return pa.array(torch.cat(parts).numpy())
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
        self.on_nonfinite = on_nonfinite
        self.fatal: BaseException | None = None
        self.rejected: list[BaseException] = []
        self.committed_files = 0
        self.committed_rows = 0
        self._seq = 0
        self._buffers: dict[tuple[str, int], list[pa.RecordBatch]] = {}
        self._oldest: float | None = None

    # --- producer side (training thread) -------------------------------------------------------
    def submit(self, chunk: list[PendingBatch]) -> None:
        self.queue.put(chunk)

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
        _confine_torch_to_this_thread()
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

    def _accept(self, chunk: list[PendingBatch]) -> None:
        """Turn a chunk of batches (coalesced by the recorder) into rows buffered per (split, epoch)."""
        accepted = [batch for batch in chunk if self._check(batch)]
        raw = [batch for batch in accepted if batch.logits is not None]
        if raw:
            self._compute_statistics(raw)
        start = 0
        while start < len(accepted):  # consecutive batches of one (split, epoch) become one Arrow batch
            key = (accepted[start].split, accepted[start].epoch)
            stop = start + 1
            while stop < len(accepted) and (accepted[stop].split, accepted[stop].epoch) == key:
                stop += 1
            self._buffer(key, self._to_arrow(accepted[start:stop]))
            start = stop

    def _check(self, batch: PendingBatch) -> bool:
        """Wait for a CUDA batch's copies and check its targets; a bad batch is refused, others go on."""
        if batch.copied is not None:
            batch.copied.synchronize()
        if batch.target_out_of_range is None or not bool(batch.target_out_of_range):
            return True
        targets = batch.targets.numpy()
        try:
            check_target_range("targets", int(targets.min()), int(targets.max()), self.config.num_outputs)
        except ValueError as exc:
            self.rejected.append(RejectedBatch(f"{exc} (the batch of step {batch.step} was not written)"))
        return False

    def _compute_statistics(self, raw: list[PendingBatch]) -> None:
        """Statistics of CPU batches, computed once over the whole chunk (one pass per operation)."""
        logits = torch.cat([batch.logits for batch in raw]) if len(raw) > 1 else raw[0].logits
        targets = torch.cat([batch.targets for batch in raw])
        config = self.config
        kept = kept_logits(logits, config.logits, config.topk, config.logits_dtype)
        floats, ints = batch_statistics(logits, targets, None, overwrite_logits=logits.dtype == torch.float32)
        offset = 0
        for batch in raw:
            rows = slice(offset, offset + batch.targets.shape[0])
            batch.floats, batch.ints = floats[:, rows], ints[:, rows]
            if batch.loss is not None:
                batch.floats[0] = batch.loss
            batch.kept = tuple(tensor[rows] for tensor in kept)
            batch.logits = None
            offset = rows.stop

    def _buffer(self, key: tuple[str, int], record_batch: pa.RecordBatch) -> None:
        for other in [k for k in self._buffers if k[0] == key[0] and k[1] != key[1]]:
            self._commit(other)  # that split moved to another epoch: its earlier epoch is complete
        self._buffers.setdefault(key, []).append(record_batch)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if sum(b.num_rows for b in self._buffers[key]) >= self.config.flush_rows:
            self._commit(key)

    def _to_arrow(self, batches: list[PendingBatch]) -> pa.RecordBatch:
        """One Arrow batch from consecutive batches; rows with NaN/Inf are counted (and kept)."""
        floats = np.concatenate([b.floats.numpy() for b in batches], axis=1)  # [6, rows], rows contiguous
        ints = np.concatenate([b.ints.numpy() for b in batches], axis=1)
        rows = floats.shape[1]
        nonfinite = rows - int(np.isfinite(floats).all(axis=0).sum())
        if nonfinite:
            self.on_nonfinite(nonfinite)
        columns: dict[str, pa.Array] = {
            "sample_id": _concat_ids([b.ids for b in batches]),
            "step": pa.array(
                np.repeat(np.array([b.step for b in batches], dtype=np.int64), [b.floats.shape[1] for b in batches])
            ),
            "attempt": pa.array(np.full(rows, self.config.attempt, dtype=np.int32)),
            "rank": pa.array(np.full(rows, self.config.rank, dtype=np.int32)),
        }
        columns.update((name, pa.array(ints[index])) for index, name in enumerate(INT_STATS))
        columns.update((name, pa.array(floats[index])) for index, name in enumerate(FLOAT_STATS))
        for position, name in enumerate(self._kept_columns()):
            values = np.concatenate([b.kept[position].numpy() for b in batches])
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        return pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)

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
