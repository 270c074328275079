"""The DuckDB engine (default): a run's views in a DuckDB connection of their own."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from .views import duckdb_view_definitions, union_view_definitions

if TYPE_CHECKING:
    from .store import RunSnapshot


READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class DuckDBEngine:
    """Implements :class:`tdlog.analytics.engine.Engine` with DuckDB, read-only.

    Without ``connection`` it opens an in-memory database bounded by ``threads`` and ``memory_limit``
    (e.g. ``"4GB"``), spilling to ``temp_directory`` (default: ``tdlog-duckdb`` in the system temp folder),
    with DuckDB's progress bar when ``progress`` (default: when stderr is a terminal). That database can
    open files in ``allowed_directories`` only (the run's folder and the temp folder: no other file, no
    ``ATTACH``, no extension install), and its configuration is locked. With ``connection`` (yours) the views
    live in a cursor of it: they see your tables, you keep your connection (and its settings), and another
    run opened on the same connection has views of its own. Either way :meth:`sql` and :meth:`frame` run one
    ``SELECT`` (or ``EXPLAIN``) per call: ``COPY``, ``INSERT``, ``CREATE``, ``SET``, ``ATTACH``, ... raise
    ``ValueError``.
    """

    dialect = "duckdb"

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        allowed_directories: list[str | os.PathLike] = (),
        threads: int | None = None,
        memory_limit: str | None = None,
        temp_directory: str | os.PathLike | None = None,
        progress: bool | None = None,
    ) -> None:
        if connection is not None:
            self.connection = connection.cursor()
        else:
            temp = Path(temp_directory or Path(tempfile.gettempdir()) / "tdlog-duckdb").resolve()
            config: dict[str, Any] = {"temp_directory": str(temp)}
            if threads is not None:
                config["threads"] = threads
            if memory_limit is not None:
                config["memory_limit"] = memory_limit
            self.connection = duckdb.connect(":memory:", config=config)
            show = sys.stderr.isatty() if progress is None else progress
            self.connection.execute(f"SET enable_progress_bar = {'true' if show else 'false'}")
            folders = [str(Path(folder).resolve()) + "/" for folder in (*allowed_directories, temp)]
            self.connection.execute("SET allowed_directories = $folders", {"folders": folders})
            self.connection.execute("SET enable_external_access = false")
            self.connection.execute("SET lock_configuration = true")
        self.records_paths: list[str] = []  # the committed records files (MAP-D reads their footers)
        self.id_type = "int64"
        self._definitions: dict[str, str] = {}

    def register(self, snapshot: RunSnapshot) -> None:
        self.records_paths = snapshot.paths(snapshot.files.records)
        self.id_type = snapshot.id_type
        self._definitions = duckdb_view_definitions(snapshot)
        self.connection.execute(f"CREATE OR REPLACE TEMP VIEW raw_records AS {self._definitions['raw_records']}")
        columns = self._columns_of_older_files()
        if columns is not None:
            self._definitions = duckdb_view_definitions(snapshot, columns)
        for name, select in self._definitions.items():
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")

    @property
    def definitions(self) -> dict[str, str]:
        """``{view name: SELECT ...}`` of the views registered last."""
        return dict(self._definitions)

    def register_union(self, per_run: list[dict[str, str]], locations: list[str]) -> None:
        """(Re)create views over several runs at once, every row tagged with its ``run`` (see
        :func:`tdlog.analytics.views.union_view_definitions`), from each run's :attr:`definitions`."""
        self._definitions = union_view_definitions(per_run, locations)
        for name, select in self._definitions.items():
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")

    def _columns_of_older_files(self) -> list[str] | None:
        """``raw_records``' columns when some records file predates format version 2 (no ``correct``
        column: the footers tell), else None."""
        if not self.records_paths:
            return None
        columns = [row[0] for row in self.connection.execute("DESCRIBE raw_records").fetchall()]
        if "correct" in columns:
            with_correct = self.connection.execute(
                "SELECT count(DISTINCT file_name) FROM parquet_schema($files) WHERE name = 'correct'",
                {"files": self.records_paths}).fetchone()[0]
            if with_correct == len(self.records_paths):
                return None
        return columns

    def frame(self, query: str, params: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
        statements = self.connection.extract_statements(query)
        kinds = [statement.type.name for statement in statements]
        if len(statements) != 1 or statements[0].type not in READ_ONLY_STATEMENTS:
            raise ValueError(f"query: expected one read-only statement (SELECT, WITH ... SELECT, EXPLAIN), got "
                             f"{' + '.join(kinds) or 'none'}; the engine never writes")
        return self.connection.sql(query, params=dict(params or {}))

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        relation = self.frame(query, params)
        try:
            return relation.pl()
        except pl.exceptions.PolarsError as error:
            types = ", ".join(f"{name} {kind}" for name, kind in zip(relation.columns, relation.types, strict=True))
            raise ValueError(f"query: Polars cannot hold a column of the result ({types}): "
                             f"{str(error).splitlines()[0]}; cast it in the query, e.g. CAST(x AS VARCHAR)") from None

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        relation = self.frame(query, params)
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]

    def view_definitions(self) -> str:
        return "\n".join(f"CREATE OR REPLACE VIEW {n} AS {s};" for n, s in self._definitions.items())

    def close(self) -> None:
        self.connection.close()
