"""Write result tables to files; the format follows the file name's extension."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

FORMATS = (".parquet", ".csv", ".json")


def write_frame(frame: pl.DataFrame, path: str | os.PathLike, *, argument: str = "path") -> Path:
    """Write ``frame`` to ``path`` as Parquet, CSV or JSON (one object per row), by extension. ``argument`` names
    the option in the error raised for another extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{argument}: expected a file name ending in one of {FORMATS}, got {str(path)!r}")
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    if suffix == ".csv" and nested:
        raise ValueError(f"{argument}: CSV cannot hold the list columns {nested}; write .parquet or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_json(path)
    return path


def write_index_list(ids: pl.Series, path: str | os.PathLike) -> Path:
    """One sample id per line (a cleaned or flagged index list)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{value}\n" for value in ids.to_list()))
    return path
