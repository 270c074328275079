"""Selection signals of fine-tuning data from one run: loss drop, learning percentage, per-source curves.

The pre-training pass is split ``INITIAL_SPLIT`` (``"initial"``): the training samples passed through the
model before its first update, recorded with ``rec.log(..., split="initial", epoch=0)`` and no optimiser step
(FORMAT.md, "Splits"). Definitions are in ``sql/loss_drop.sql``, ``sql/learning_percentage.sql`` and
``sql/source_curves.sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from . import queries
from .epochs import epoch_bounds, recorded_epochs

if TYPE_CHECKING:
    from .engine import Engine

INITIAL_SPLIT = "initial"


def _in_range(engine: Engine, split: str, epochs: range | None) -> list[int]:
    lower, upper = epoch_bounds(epochs)
    inside = [e for e in recorded_epochs(engine, split) if lower <= e < upper]
    if not inside:
        raise ValueError(f"epochs: no recorded epochs of split {split!r} in the range asked for")
    return inside


def reference_pass(engine: Engine, split: str, epochs: range | None) -> tuple[str, int]:
    """``(split, epoch)`` of the pass a loss drop starts from: the pre-training pass when the run recorded
    one (its first epoch), else the first recorded epoch of ``split`` in ``epochs``."""
    initial = recorded_epochs(engine, INITIAL_SPLIT)
    if initial and split != INITIAL_SPLIT:
        return INITIAL_SPLIT, initial[0]
    return split, _in_range(engine, split, epochs)[0]


def loss_drop_params(engine: Engine, split: str, epochs: range | None) -> dict:
    """The parameters of ``sql/loss_drop.sql``: from the :func:`reference_pass` over ``epochs``."""
    initial_split, initial_epoch = reference_pass(engine, split, epochs)
    lower, upper = epoch_bounds(epochs)
    return {"split": split, "initial_split": initial_split, "initial_epoch": initial_epoch,
            "epoch_from": lower, "epoch_to": upper}


def loss_drop(engine: Engine, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
    """``sample_id, initial_loss, final_loss, loss_drop, final_epoch``: ``loss_drop = initial_loss - final_loss``,
    from the :func:`reference_pass` to each sample's last recorded epoch of ``split`` in ``epochs``
    (``sql/loss_drop.sql``), by ``sample_id``."""
    return engine.sql(queries.load("loss_drop"), loss_drop_params(engine, split, epochs)).sort("sample_id")


def learning_percentage_params(engine: Engine, split: str, epochs: range | None) -> dict:
    """The parameters of ``sql/learning_percentage.sql``; ``ValueError`` without a pre-training pass or
    with fewer than two recorded epochs of ``split`` in ``epochs``."""
    initial = recorded_epochs(engine, INITIAL_SPLIT)
    if not initial:
        raise ValueError(f"split: learning percentage needs the pre-training pass, split {INITIAL_SPLIT!r} "
                         "(rec.log(..., split='initial', epoch=0) over the training samples before the first "
                         "update); the run has none")
    inside = _in_range(engine, split, epochs)
    if len(inside) < 2:
        raise ValueError(f"epochs: learning percentage needs 2 or more recorded epochs of split {split!r} in the "
                         f"range, got {len(inside)}")
    lower, upper = epoch_bounds(epochs)
    return {"split": split, "initial_split": INITIAL_SPLIT, "initial_epoch": initial[0],
            "after_first_epoch": inside[1], "epoch_from": lower, "epoch_to": upper}


def learning_percentage(engine: Engine, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
    """``sample_id, p_initial, p_first, p_last, learning_percentage = (p_initial - p_first) / (p_initial -
    p_last)`` with ``p = exp(mean loss)`` in the pre-training pass, after the first epoch (the second recorded
    epoch of ``split`` in ``epochs``) and in the sample's last one (``sql/learning_percentage.sql``), by
    ``sample_id``."""
    return engine.sql(queries.load("learning_percentage"),
                      learning_percentage_params(engine, split, epochs)).sort("sample_id")


def signal_columns(engine: Engine, *, split: str = "train") -> pl.DataFrame | None:
    """``sample_id, loss_drop, learning_percentage`` over every recorded epoch of ``split``, when the run has
    the pre-training pass (learning percentage: and two or more epochs); None without it."""
    if split == INITIAL_SPLIT or not recorded_epochs(engine, INITIAL_SPLIT) or not recorded_epochs(engine, split):
        return None
    table = loss_drop(engine, split=split).select("sample_id", "loss_drop")
    if len(recorded_epochs(engine, split)) >= 2:
        table = table.join(learning_percentage(engine, split=split).select("sample_id", "learning_percentage"),
                           on="sample_id", how="left", maintain_order="left")
    return table


def quoted(column: str, dialect: str) -> str:
    """``column`` as a quoted SQL name for ``dialect`` (``"duckdb"``: double quotes; ``"spark"``: backticks)."""
    if dialect == "spark":
        return "`" + column.replace("`", "``") + "`"
    return '"' + column.replace('"', '""') + '"'


def source_column_query(column: str, sample_columns: list[str], dialect: str) -> str:
    """``sql/source_curves.sql`` over the samples column ``column`` (checked against ``sample_columns``)."""
    if column not in sample_columns:
        raise ValueError(f"source: expected a column of the samples table ({', '.join(sample_columns)}), "
                         f"got {column!r}")
    query = queries.load("source_curves")
    if column == "source":
        return query
    return query.replace("CAST(source AS STRING)", f"CAST({quoted(column, dialect)} AS STRING)", 1)


def source_curves(engine: Engine, *, column: str = "source", split: str = "train") -> pl.DataFrame:
    """``source, epoch, samples, mean_loss, accuracy``: per value of the samples column ``column`` and per
    recorded epoch of ``split``, the mean over the source's real samples of their per-epoch mean loss and
    accuracy (``sql/source_curves.sql``)."""
    columns = engine.sql("SELECT * FROM samples LIMIT 0").columns
    return engine.sql(source_column_query(column, columns, engine.dialect), {"split": split})
