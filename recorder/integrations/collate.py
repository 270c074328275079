"""Sample ids through any data collator: :class:`CarryIds` takes the id column out of each example before
the collator sees it and puts it back, as one batch entry, into what the collator returns (TRL's SFT
collators, ``DataCollatorForSeq2Seq``, ``DataCollatorWithPadding`` and a user's own build the batch from
the fields they know and drop the others)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


class CarryIds:
    """``collator`` with the ``column`` of every example carried around it: integer ids become an int64
    tensor ``[B]``, string ids a list of str."""

    def __init__(self, collator: Callable[[list], Any], column: str) -> None:
        self.collator, self.column = collator, column

    def __call__(self, examples: list) -> Any:
        ids, rest = [], []
        for example in examples:
            if not isinstance(example, Mapping) or self.column not in example:
                keys = sorted(example) if isinstance(example, Mapping) else type(example).__name__
                raise KeyError(f"id_column: an example has no {self.column!r} (it has {keys}); add one with "
                               "add_sample_ids(dataset)")
            ids.append(example[self.column])
            rest.append({key: value for key, value in example.items() if key != self.column})
        batch = self.collator(rest)
        batch[self.column] = batch_ids(ids)
        return batch

    def __getattr__(self, name: str) -> Any:  # the wrapped collator's settings (tokenizer, padding, ...)
        if name in ("collator", "column"):
            raise AttributeError(name)
        return getattr(self.collator, name)


def batch_ids(ids: list) -> torch.Tensor | list[str]:
    """The ids of one batch: an int64 tensor for integer ids, a list of str for string ids."""
    values = [value.item() if isinstance(value, torch.Tensor | np.generic) else value for value in ids]
    if all(isinstance(value, str) for value in values):
        return values
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return torch.tensor(values, dtype=torch.int64)
    kinds = sorted({type(value).__name__ for value in values})
    raise TypeError(f"id_column: expected integer or string ids (one type), got {kinds}")
