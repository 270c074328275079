"""``open_run``: a read-only view of a tdlog run as DuckDB views, results as Polars DataFrames."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recorder.format import MANIFEST, RECORDS_DIR, SAMPLES_DIR, read_json
from recorder.manifest import check_manifest

from . import queries
from .views import view_definitions


class Run:
    """A recorded run, opened read-only. Use :func:`open_run` to create one."""

    def __init__(self, path: Path, manifest: dict[str, Any], connection: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self.manifest = manifest
        self.connection = connection
        self._has_files: tuple[bool, bool] | None = None
        self._definitions: dict[str, str] = {}
        self._refresh_views()

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    def _refresh_views(self) -> None:
        """(Re)create the views when records or samples appeared since the last query (a live run)."""
        has_files = (
            any((self.path / RECORDS_DIR).glob("*/*/*.parquet")),
            any((self.path / SAMPLES_DIR).glob("*.parquet")),
        )
        if has_files == self._has_files:
            return
        self.manifest = read_json(self.path / MANIFEST)
        self._definitions = view_definitions(
            self.path.resolve(),
            has_records=has_files[0],
            has_samples=has_files[1],
            id_type=self.manifest.get("sample_id_type") or "int64",
        )
        for name, select in self._definitions.items():
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")
        self._has_files = has_files

    def view_definitions(self) -> str:
        """``CREATE VIEW`` statements that reproduce this run's views in any DuckDB session."""
        self._refresh_views()
        return "\n".join(f"CREATE OR REPLACE VIEW {n} AS {s};" for n, s in self._definitions.items())

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` over the views with ``$name`` parameters bound (never formatted into the text)."""
        self._refresh_views()
        return self.connection.sql(query, params=dict(params or {})).pl()

    def query(self, name: str, **params: Any) -> pl.DataFrame:
        """Run the shipped query ``sql/NAME.sql`` with its parameters bound."""
        return self.sql(queries.load(name), params)

    def epochs(self, split: str = "train") -> list[int]:
        """Epochs of ``split`` that have committed rows, ascending."""
        frame = self.sql("SELECT DISTINCT epoch FROM records WHERE split = $split ORDER BY epoch", {"split": split})
        return frame["epoch"].to_list()

    def aum(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """AUM per sample: ``aum = mean_e margin_e`` over epochs ``e`` in ``epochs`` (default: all recorded
        epochs of ``split``), ``margin_e`` the sample's mean margin ``z_y - max_{j != y} z_j`` in epoch ``e``.
        Columns ``sample_id, aum, epochs``, ascending AUM (most suspicious first)."""
        lower, upper = (0, 2**62) if epochs is None else (epochs.start, epochs.stop)
        frame = self.query("aum", split=split, epoch_from=lower, epoch_to=upper)
        return frame.sort(["aum", "sample_id"])

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, num_classes={self.num_classes})"


def open_run(path: str | os.PathLike, *, threads: int | None = None, memory_limit: str | None = None) -> Run:
    """Open the tdlog run at ``path`` read-only. Raises ``FileNotFoundError`` if there is no run there and
    ``ValueError`` if it is not a tdlog run or was written by a newer format version."""
    run_dir = Path(path)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"path: no tdlog run at {run_dir} (no {MANIFEST})")
    manifest = read_json(manifest_path)
    check_manifest(manifest, manifest_path)
    config: dict[str, Any] = {}
    if threads is not None:
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    return Run(run_dir, manifest, duckdb.connect(":memory:", config=config))
