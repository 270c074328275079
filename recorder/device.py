"""Device (CUDA) batches: statistics computed on the device, copied to pinned host memory without a sync.

``log()`` turns a CUDA batch into a :class:`PendingBatch`; the recorder hands a list of them to the writer
thread as :class:`DeviceBatches`, which waits for the copies, checks the targets and returns the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .chunk import key_runs, step_column
from .stats import batch_statistics, kept_logits
from .validate import check_target_range
from .writer import RejectedBatch, Rows


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """Start a non-blocking copy of a CUDA tensor into pinned host memory (no host sync)."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def _host_ids(ids: Any) -> Any:
    """A device batch's ids on the host: int64 tensors copied (asynchronously from CUDA), Arrow arrays as they are."""
    if not isinstance(ids, torch.Tensor):
        return ids
    ids = ids.to(torch.int64)
    return _host_copy(ids) if ids.is_cuda else ids.clone()


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
    copied: Any  # torch.cuda.Event; None for CPU tensors


def device_batch(ids, logits, targets, loss, *, epoch: int, split: str, step: int, num_outputs: int,
                 logits_mode: str, topk: int, logits_dtype: str) -> PendingBatch:
    """Statistics (and kept logits) of a CUDA batch, computed on the device and copied to the host; a
    classification row has ``correct = (pred == target)`` and ``tokens = 1``."""
    floats, ints = batch_statistics(logits, targets, loss)
    floats = torch.cat([floats, (ints[2] == ints[0]).to(torch.float32).unsqueeze(0)])
    ints = torch.cat([ints, torch.ones_like(ints[:1])])
    out_of_range = ((targets < 0) | (targets >= num_outputs)).any()
    kept = kept_logits(logits, logits_mode, topk, logits_dtype)
    return statistics_batch(ids, targets, floats, ints, kept, out_of_range, epoch=epoch, split=split, step=step)


def statistics_batch(ids, targets: torch.Tensor, floats: torch.Tensor, ints: torch.Tensor,
                     kept: tuple[torch.Tensor, ...], out_of_range: torch.Tensor, *, epoch: int, split: str,
                     step: int) -> PendingBatch:
    """A batch whose statistics are computed (``[7, B]``, ``[4, B]``), on its way to the writer: CUDA
    tensors are copied to pinned host memory without a sync (the writer waits for ``copied``); CPU
    tensors are handed over as they are. ``targets`` are kept for the writer's error message when
    ``out_of_range`` is true."""
    on_device = floats.is_cuda
    copy = _host_copy if on_device else (lambda tensor: tensor)
    batch = PendingBatch(
        split=split,
        epoch=epoch,
        step=step,
        ids=_host_ids(ids),
        targets=copy(targets),
        floats=copy(floats),
        ints=copy(ints),
        kept=tuple(copy(t) for t in kept),
        target_out_of_range=copy(out_of_range),
        copied=torch.cuda.Event() if on_device else None,
    )
    if on_device:
        batch.copied.record()  # after the copies above: the writer waits for it
    return batch


class DeviceBatches(list):
    """Device batches handed to the writer thread together; ``started`` is when the first was logged."""

    def __init__(self, batches: list[PendingBatch], started: float) -> None:
        super().__init__(batches)
        self.started = started

    def rows(self, num_outputs: int, rejected: list[BaseException]) -> Rows | None:
        """Wait for each batch's copies, refuse batches with targets outside ``[0, num_outputs)`` (their
        error goes to ``rejected``) and return the others' rows, or None if none is left."""
        accepted = [batch for batch in self if _accepted(batch, num_outputs, rejected)]
        if not accepted:
            return None
        stops = np.cumsum([batch.floats.shape[1] for batch in accepted]).tolist()
        ids = [batch.ids for batch in accepted]
        return Rows(
            floats=np.concatenate([b.floats.numpy() for b in accepted], axis=1),  # [6, rows], rows contiguous
            ints=np.concatenate([b.ints.numpy() for b in accepted], axis=1),
            ids=pa.array(np.concatenate([i.numpy() for i in ids])) if isinstance(ids[0], torch.Tensor)
            else pa.concat_arrays(ids),
            steps=step_column([b.step for b in accepted], stops),
            kept=[np.concatenate([b.kept[i].numpy() for b in accepted]) for i in range(len(accepted[0].kept))],
            runs=key_runs([(b.split, b.epoch) for b in accepted], stops),
            started=self.started,
        )


def _accepted(batch: PendingBatch, num_outputs: int, rejected: list[BaseException]) -> bool:
    if batch.copied is not None:
        batch.copied.synchronize()
    if not batch.target_out_of_range.numpy():
        return True
    targets = batch.targets.numpy()
    try:
        check_target_range("targets", int(targets.min()), int(targets.max()), num_outputs)
    except ValueError as exc:
        rejected.append(RejectedBatch(f"{exc} (the batch of step {batch.step} was not written)"))
    return False
