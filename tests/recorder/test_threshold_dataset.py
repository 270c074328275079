"""Threshold samples and DatasetWithIndex."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tdlog.recorder import DatasetWithIndex, Recorder, threshold_sample_indices, threshold_samples


def test_threshold_samples_count_disjoint_passes_and_seed() -> None:
    labels = np.arange(103) % 10
    first = threshold_samples(labels, 10, seed=3, pass_index=0)
    second = threshold_samples(labels, 10, seed=3, pass_index=1)
    moved_first, moved_second = np.nonzero(first == 10)[0], np.nonzero(second == 10)[0]
    assert len(moved_first) == len(moved_second) == 103 // 11 == 9  # the AUM paper's N // (C + 1)
    assert not set(moved_first) & set(moved_second)
    np.testing.assert_array_equal(first[first != 10], labels[first != 10])  # others untouched
    np.testing.assert_array_equal(threshold_samples(labels, 10, seed=3), first)  # seeded
    assert not np.array_equal(threshold_samples(labels, 10, seed=4), first)
    permutation = np.random.default_rng(3).permutation(103)  # one seeded permutation, sliced per pass
    np.testing.assert_array_equal(moved_second, np.sort(permutation[9:18]))


def test_threshold_samples_keep_tensor_type_and_validate() -> None:
    result = threshold_samples(torch.arange(20) % 4, 4, seed=0)
    assert isinstance(result, torch.Tensor) and int((result == 4).sum()) == 20 // 5
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 4\)"):
        threshold_samples(np.array([0, 5]), 4)
    with pytest.raises(ValueError, match="pass_index: expected 0 <= pass_index < 5"):
        threshold_sample_indices(20, 4, pass_index=5)


def test_threshold_run_registers_flags_and_accepts_extra_class(tmp_path) -> None:
    labels = np.arange(30) % 3
    targets = threshold_samples(labels, 3, seed=0)
    with Recorder(tmp_path / "run", num_classes=3, with_threshold_class=True) as rec:
        rec.register_samples(np.arange(30), labels, targets=targets)
        rec.log(torch.arange(30), torch.randn(30, 4), torch.from_numpy(targets), epoch=0)
    samples = pq.read_table(tmp_path / "run" / "samples").sort_by("sample_id")
    np.testing.assert_array_equal(samples["is_threshold"].to_numpy(), targets == 3)
    np.testing.assert_array_equal(samples["label"].to_numpy(), labels)


def test_dataset_with_index_feeds_ids() -> None:
    dataset = DatasetWithIndex(TensorDataset(torch.randn(10, 2), torch.arange(10) % 2))
    assert len(dataset) == 10
    _, y, index = dataset[7]
    assert index == 7 and int(y) == 1
    batches = list(DataLoader(dataset, batch_size=4))
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.arange(10))
