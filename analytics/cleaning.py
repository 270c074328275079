"""From flags to a clean dataset in one line: ``drop_flagged(dataset, run.scores())``, then train the next
model (``SFTTrainer(train_dataset=cleaned)``) on what is left."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl


def drop_flagged(dataset: Any, flagged: pl.DataFrame | Iterable[Any], *, id_column: str = "sample_id",
                 flag: str = "flagged") -> Any:
    """``dataset`` (a ``datasets.Dataset``, or a list of dicts) without the examples whose ``id_column`` is
    flagged: ``flagged`` is a scores table (its rows where ``flag`` is true; ``"flagged"``, ``"aum_flagged"``,
    ``"gmm_flagged"``) or the ids themselves. Apply it to the original data, not to a copy with control
    examples planted (their completions are wrong on purpose and were never candidates)."""
    if isinstance(flagged, pl.DataFrame):
        if flag not in flagged.columns or "sample_id" not in flagged.columns:
            raise ValueError(f"flagged: expected a scores table with sample_id and {flag!r}, got {flagged.columns}")
        ids = set(flagged.filter(pl.col(flag))["sample_id"].to_list())
    else:
        ids = set(flagged)
    if isinstance(dataset, list):
        return [row for row in dataset if row[id_column] not in ids]
    if id_column not in dataset.column_names:
        raise ValueError(f"id_column: the dataset has no {id_column!r} column (columns: {dataset.column_names})")
    return dataset.filter(lambda values: [value not in ids for value in values], input_columns=id_column,
                          batched=True)
