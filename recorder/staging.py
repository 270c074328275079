"""Host staging of CPU batches: ``log()`` copies each batch into a reused chunk, one copy per tensor.

A :class:`HostChunk` holds consecutive CPU batches until the recorder hands it to the writer, which
computes their statistics in one pass and gives the chunk back for reuse. The training thread thus pays a
few ``copy_`` calls per step: no allocation, no per-batch concatenation, no page faults on fresh memory.
"""

from __future__ import annotations

import time

import pyarrow as pa
import torch

from .chunk import Chunk


class HostChunk(Chunk):
    """A :class:`tdlog.recorder.chunk.Chunk` with torch views of its buffer, which ``log()`` copies batches into."""

    def __init__(self, capacity: int, num_outputs: int) -> None:
        super().__init__(capacity, num_outputs)
        self._views = tuple(torch.from_numpy(a) for a in (self.logits, self.targets, self.loss, self.ids))

    def add(self, ids, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | None,
            split: str, epoch: int, step: int) -> None:
        """Copy one checked CPU batch into the next free rows (the caller made sure it fits)."""
        start = self.rows
        stop = start + logits.shape[0]
        if not start:
            self.started = time.monotonic()
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
        self.keys.append((split, epoch))
        self.steps.append(step)
        self.stops.append(stop)
        self.loss_given.append(loss is not None)
