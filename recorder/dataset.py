"""``DatasetWithIndex``: a dataset wrapper that appends the sample index, so a loader yields ids."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class DatasetWithIndex(Dataset):
    """Wraps a map-style dataset; ``ds[i]`` returns ``(*base[i], i)`` (same contract as ``aum``'s)."""

    def __init__(self, base_dataset: Dataset) -> None:
        self.base_dataset = base_dataset

    def __len__(self) -> int:
        return len(self.base_dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.base_dataset[index], index)
