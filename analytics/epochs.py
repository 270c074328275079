"""Epoch ranges: the ``epochs=`` argument of every score, and the epochs a run has recorded."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import queries

if TYPE_CHECKING:
    from .engine import Engine

ALL_EPOCHS = 2**62  # upper bound of the default epoch range


def epoch_bounds(epochs: range | None) -> tuple[int, int]:
    """``[epoch_from, epoch_to)`` of ``epochs`` (default: every epoch, recorded or to come)."""
    if epochs is None:
        return 0, ALL_EPOCHS
    if not isinstance(epochs, range) or epochs.step != 1 or epochs.start < 0 or epochs.start >= epochs.stop:
        raise ValueError(f"epochs: expected a non-empty range of consecutive epochs from 0 on, such as range(0, 50), "
                         f"got {epochs!r}")
    return epochs.start, epochs.stop


def recorded_epochs(engine: Engine, split: str = "train") -> list[int]:
    """Epochs of ``split`` that have rows that count, ascending (``sql/epochs.sql``)."""
    return engine.sql(queries.load("epochs"), {"split": split})["epoch"].to_list()


def recorded_span(recorded: list[int], epochs: range | None) -> tuple[int | None, int | None]:
    """``(epoch_from, epoch_to)``: the first and one past the last of the ``recorded`` epochs inside
    ``epochs`` (default: all); ``(None, None)`` when there are none."""
    lower, upper = epoch_bounds(epochs)
    inside = [e for e in recorded if lower <= e < upper]
    return (inside[0], inside[-1] + 1) if inside else (None, None)


def score_params(recorded: list[int], *, epochs: range | None, el2n_epochs: range | None,
                 split: str) -> tuple[dict, int | None, int | None]:
    """The parameters of ``sql/scores.sql`` for ``epochs`` (EL2N over ``el2n_epochs``, default: the first
    10 % of the ``recorded`` epochs), and :func:`recorded_span` of ``epochs``."""
    lower, upper = epoch_bounds(epochs)
    el2n_to = early_end(recorded) if el2n_epochs is None else epoch_bounds(el2n_epochs)[1]
    return ({"split": split, "epoch_from": lower, "epoch_to": upper, "el2n_to": el2n_to},
            *recorded_span(recorded, epochs))


def early_end(recorded: list[int]) -> int:
    """End (exclusive) of the first 10 % of the ``recorded`` epochs, at least one: EL2N's default range."""
    return recorded[max(1, math.ceil(len(recorded) / 10)) - 1] + 1 if recorded else 0
