"""The writer's side of device batches (recorder/device.py), run on CPU tensors: a CUDA event stand-in
whose synchronize() is a no-op replaces the copies' event (the CUDA test itself skips without a GPU)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from tdlog.recorder.device import DeviceBatches, PendingBatch
from tdlog.recorder.stats import batch_statistics
from tdlog.recorder.writer import RejectedBatch


class CopiesDone:
    def __init__(self) -> None:
        self.waited = False

    def synchronize(self) -> None:
        self.waited = True


def pending(ids, targets: torch.Tensor, *, epoch: int, step: int, num_outputs: int = 4) -> PendingBatch:
    logits = torch.randn(len(targets), num_outputs, generator=torch.Generator().manual_seed(step))
    floats, ints = batch_statistics(logits, targets.clamp(0, num_outputs - 1), None)
    return PendingBatch(
        split="train", epoch=epoch, step=step, ids=ids, targets=targets, floats=floats, ints=ints,
        kept=(logits.half(),), target_out_of_range=((targets < 0) | (targets >= num_outputs)).any(),
        copied=CopiesDone(),
    )


def test_rows_of_device_batches_in_order_with_runs_per_epoch() -> None:
    batches = [pending(torch.arange(3), torch.tensor([0, 1, 2]), epoch=0, step=0),
               pending(torch.arange(3, 5), torch.tensor([3, 0]), epoch=0, step=1),
               pending(torch.arange(2), torch.tensor([1, 1]), epoch=1, step=2)]
    rejected: list[BaseException] = []
    rows = DeviceBatches(batches, started=12.5).rows(4, rejected)
    assert rejected == [] and all(batch.copied.waited for batch in batches)
    np.testing.assert_array_equal(rows.floats, np.concatenate([b.floats.numpy() for b in batches], axis=1))
    np.testing.assert_array_equal(rows.ints, np.concatenate([b.ints.numpy() for b in batches], axis=1))
    assert rows.ids.to_pylist() == [0, 1, 2, 3, 4, 0, 1]
    assert rows.steps.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert rows.runs == [(("train", 0), 0, 5), (("train", 1), 5, 7)]
    np.testing.assert_array_equal(rows.kept[0], np.concatenate([b.kept[0].numpy() for b in batches]))
    assert rows.started == 12.5


def test_a_batch_with_targets_out_of_range_is_refused_and_reported() -> None:
    good = pending(pa.array(["a", "b"]), torch.tensor([0, 1]), epoch=0, step=0)
    bad = pending(pa.array(["c", "d"]), torch.tensor([1, 4]), epoch=0, step=1)
    rejected: list[BaseException] = []
    rows = DeviceBatches([good, bad], started=0.0).rows(4, rejected)
    assert rows.ids.to_pylist() == ["a", "b"] and rows.runs == [(("train", 0), 0, 2)]
    assert len(rejected) == 1 and isinstance(rejected[0], RejectedBatch)
    assert str(rejected[0]) == "targets: expected class indices in [0, 4), got 4 (the batch of step 1 was not written)"
    assert DeviceBatches([bad], started=0.0).rows(4, rejected) is None
