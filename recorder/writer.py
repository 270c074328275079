"""Background writer: turns queued batches into Arrow rows and commits Parquet files.

The training thread only enqueues (a bounded queue gives back-pressure instead of unbounded memory).
This thread waits for device copies, computes statistics for CPU batches, buffers rows per
``(split, epoch)`` and commits a file when a buffer reaches ``flush_rows``, when an epoch of a split
ends, when ``flush_seconds`` have passed, on ``flush()`` and on ``close()``. An exception here is kept
and raised from the recorder's next call.
"""

from __future__ import annotations

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
        except RejectedBatch as exc:  # bad input found on this side: refuse that batch only
            self.rejected.append(exc)
        except BaseException as exc:
            self.fatal = exc

    def _accept(self, batch: PendingBatch) -> None:
        if batch.copied is not None:
            batch.copied.synchronize()
        if batch.target_out_of_range is not None and bool(batch.target_out_of_range):
            targets = batch.targets.numpy()
            try:
                check_target_range("targets", int(targets.min()), int(targets.max()), self.config.num_outputs)
            except ValueError as exc:
                raise RejectedBatch(f"{exc} (batch of step {batch.step} was not written)") from None
        if batch.logits is not None:
            batch.floats, batch.ints = batch_statistics(batch.logits, batch.targets, batch.loss)
            batch.kept = kept_logits(batch.logits, self.config.logits, self.config.topk, self.config.logits_dtype)
        record_batch = self._to_arrow(batch)
        nonfinite = int((~np.isfinite(batch.floats.numpy())).any(axis=1).sum())
        if nonfinite:
            self.on_nonfinite(nonfinite)
        key = (batch.split, batch.epoch)
        for other in [k for k in self._buffers if k[0] == batch.split and k[1] != batch.epoch]:
            self._commit(other)  # that split moved to another epoch: its earlier epoch is complete
        self._buffers.setdefault(key, []).append(record_batch)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if sum(b.num_rows for b in self._buffers[key]) >= self.config.flush_rows:
            self._commit(key)

    def _to_arrow(self, batch: PendingBatch) -> pa.RecordBatch:
        floats = batch.floats.numpy()
        ints = batch.ints.numpy()
        rows = floats.shape[0]
        ids = batch.ids if isinstance(batch.ids, pa.Array) else pa.array(batch.ids.numpy())
        columns: dict[str, pa.Array] = {
            "sample_id": ids,
            "step": pa.array(np.full(rows, batch.step, dtype=np.int64)),
        }
        for index, name in enumerate(INT_STATS):
            columns[name] = pa.array(ints[:, index])
        for index, name in enumerate(FLOAT_STATS):
            columns[name] = pa.array(floats[:, index])
        columns["attempt"] = pa.array(np.full(rows, self.config.attempt, dtype=np.int32))
        columns["rank"] = pa.array(np.full(rows, self.config.rank, dtype=np.int32))
        for name, tensor in zip(self._kept_columns(), batch.kept):
            values = tensor.numpy()
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
        commit_table(self.config.run_dir, f"{records_partition(split, epoch)}/{name}", table)
        self._seq += 1
        self.committed_files += 1
        self.committed_rows += table.num_rows

    def _commit_all(self) -> None:
        for key in list(self._buffers):
            self._commit(key)
