"""The DuckDB engine (default): a run's views in a DuckDB connection of their own.

Read-only by construction, behind two walls:

1. **The statement.** A query runs only when DuckDB's own parser makes it one ``SELECT`` statement, or an
   ``EXPLAIN`` / ``EXPLAIN ANALYZE`` whose inner statement DuckDB's parser makes one ``SELECT``
   (:func:`check_read_only`). ``COPY``, ``INSERT``, ``CREATE``, ``SET``, ``ATTACH``, ``PRAGMA``, several
   statements, and an ``EXPLAIN ANALYZE`` of any of them raise ``ValueError`` before anything runs.
2. **The files.** A connection tdlog opens may open exactly the data files its views read
   (``allowed_paths``: no folder of the run, so no new file can be created in it, nor ``run.json``, an
   attempt file or a manifest rewritten), with every other file access off (``enable_external_access =
   false``, no ``ATTACH``, no extension install) and its configuration locked. It spills to a folder
   created fresh for it (``tempfile.mkdtemp``: a random name, owner-only permissions, removed at close) that
   it may not open by name. When the run gains files, the views move to a new connection allowing the new
   list (DuckDB does not widen ``allowed_paths`` once external access is off). DuckDB's own ``COPY ... TO``
   writes through a temporary name (refused: not an allowed path); only ``COPY ... (USE_TMP_FILE false)``
   naming a listed file would overwrite it, and such a statement never passes wall 1.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pyarrow as pa

from .engine import RESULT_VIEWS
from .views import duckdb_view_definitions, union_view_definitions

if TYPE_CHECKING:
    from .store import RunSnapshot

# EXPLAIN, optionally ANALYZE (or ANALYSE) or a parenthesised option list, then the inner statement
_EXPLAIN_PREFIX = re.compile(r"\s*EXPLAIN(?:\s+ANALY[SZ]E)?(?:\s*\([^()]*\))?\s", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
RESULT_BATCH_ROWS = 1 << 17


def check_read_only(connection: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ``ValueError`` unless DuckDB's parser makes ``query`` one ``SELECT`` statement, or an
    ``EXPLAIN [ANALYZE]`` of one (``EXPLAIN ANALYZE`` executes its inner statement: that one is checked
    too)."""
    kinds = _statement_kinds(connection, query)
    if kinds == ["SELECT"]:
        return
    if kinds == ["EXPLAIN"]:
        prefix = _EXPLAIN_PREFIX.match(query)
        try:
            inner = _statement_kinds(connection, query[prefix.end():]) if prefix else []
        except ValueError:  # the text after EXPLAIN's options is not a statement on its own
            inner = []
        if inner == ["SELECT"]:
            return
        kinds = [f"EXPLAIN {' + '.join(inner) or 'of something other than one SELECT'}"]
    raise ValueError(f"query: expected one read-only statement (SELECT, WITH ... SELECT, EXPLAIN [ANALYZE] "
                     f"SELECT), got {' + '.join(kinds) or 'none'}; the engine never writes")


def _statement_kinds(connection: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    try:
        return [statement.type.name for statement in connection.extract_statements(query)]
    except duckdb.Error as error:
        raise ValueError(f"query: {str(error).splitlines()[0]}") from None


def size_in_bytes(size: str | int) -> int:
    """``"200MB"`` -> 200,000,000 (units B, KB, MB, GB, TB and KiB, MiB, GiB, TiB; a bare number is
    bytes), as DuckDB reads ``memory_limit``."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = _SIZE.match(str(size))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"size: expected a positive size such as '4GB' or '512MiB', got {size!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class DuckDBEngine:
    """Implements :class:`tdlog.analytics.engine.Engine` with DuckDB, read-only (see the module's two walls).

    Without ``connection`` it opens in-memory databases bounded by ``threads`` and ``memory_limit`` (e.g.
    ``"4GB"``: DuckDB's buffer manager, i.e. what its operators hold, e.g. hash tables and sorts, spilling
    the rest to ``temp_directory``, default a fresh private folder; a single value, e.g. one huge list, is
    not bounded by it), with DuckDB's progress bar when ``progress`` (default: when stderr is a terminal).
    ``max_result_bytes`` (default: ``memory_limit``, when given) caps what :meth:`sql` brings
    into Python: a larger result raises ``ValueError`` instead of exhausting memory. With ``connection``
    (yours) the views live in a cursor of it: they see your tables, you keep your connection and its settings
    (wall 2 is then yours to set), and another run opened on it has views of its own.
    """

    dialect = "duckdb"

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        temp_directory: str | os.PathLike | None = None,
        progress: bool | None = None,
        max_result_bytes: str | int | None = None,
    ) -> None:
        self._private_temp = None if temp_directory is not None else tempfile.mkdtemp(prefix="tdlog-duckdb-")
        self._temp = Path(temp_directory) if temp_directory is not None else Path(self._private_temp)
        self._settings = {"threads": threads, "memory_limit": memory_limit}
        self._progress = sys.stderr.isatty() if progress is None else progress
        limit = max_result_bytes if max_result_bytes is not None else memory_limit
        self.max_result_bytes = None if limit is None else size_in_bytes(limit)
        self._spills: list[str] = []
        self._earlier: list[duckdb.DuckDBPyConnection] = []  # superseded: results made from them stay valid
        if connection is not None:
            self.connection = connection.cursor()
            self._own = False
        else:
            self._own = True
            self.connection = self._connect(())
        self.records_paths: list[str] = []  # the committed records files (MAP-D reads their footers)
        self.readable_paths: tuple[str, ...] = ()  # every data file the views read (what a connection we own allows)
        self.id_type = "int64"
        self._definitions: dict[str, str] = {}
        self._results: dict[str, pa.Table] = {}

    def _connect(self, paths: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
        """A new in-memory connection that may open ``paths`` and nothing else (wall 2)."""
        self._temp.mkdir(parents=True, exist_ok=True)
        spill = tempfile.mkdtemp(prefix="spill-", dir=self._temp)  # one per connection, removed at close
        self._spills.append(spill)
        config: dict[str, Any] = {"temp_directory": spill}
        config |= {key: value for key, value in self._settings.items() if value is not None}
        connection = duckdb.connect(":memory:", config=config)
        connection.execute(f"SET enable_progress_bar = {'true' if self._progress else 'false'}")
        if paths:
            connection.execute("SET allowed_paths = $paths", {"paths": list(paths)})
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        return connection

    def _allow(self, paths: list[str]) -> None:
        """Move to a connection allowing exactly ``paths`` when it differs from the current one's list."""
        paths = tuple(sorted(paths))
        if self._own and paths != self.readable_paths:
            self._earlier.append(self.connection)
            self.connection = self._connect(paths)
        self.readable_paths = paths

    def register(self, snapshot: RunSnapshot) -> None:
        self.records_paths = snapshot.paths(snapshot.files.records)
        self._allow(self.records_paths + snapshot.paths(snapshot.files.samples))
        self.id_type = snapshot.id_type
        self._definitions = duckdb_view_definitions(snapshot)
        self.connection.execute(f"CREATE OR REPLACE TEMP VIEW raw_records AS {self._definitions['raw_records']}")
        columns = self._columns_of_older_files()
        if columns is not None:
            self._definitions = duckdb_view_definitions(snapshot, columns)
        self._create_views()

    def _create_views(self) -> None:
        for name, select in self._definitions.items():
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")
        for name, table in self._results.items():
            self.connection.register(name, table)

    def show_result(self, name: str, frame: pl.DataFrame) -> None:
        if name not in RESULT_VIEWS:
            raise ValueError(f"name: expected one of {RESULT_VIEWS}, got {name!r}")
        self._results[name] = frame.to_arrow()
        self.connection.register(name, self._results[name])

    @property
    def definitions(self) -> dict[str, str]:
        """``{view name: SELECT ...}`` of the views registered last."""
        return dict(self._definitions)

    def register_union(self, per_run: list[dict[str, str]], locations: list[str], paths: list[str]) -> None:
        """(Re)create views over several runs at once, every row tagged with its ``run`` (see
        :func:`tdlog.analytics.views.union_view_definitions`), from each run's :attr:`definitions`;
        ``paths``: the data files of every run."""
        self._allow(paths)
        self._definitions = union_view_definitions(per_run, locations)
        self._create_views()

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
        check_read_only(self.connection, query)
        return self.connection.sql(query, params=dict(params or {}))

    def _fetch(self, relation: duckdb.DuckDBPyRelation, capped: bool) -> pa.Table:
        """The result as Arrow; ``capped``: read in batches so that one larger than ``max_result_bytes``
        raises ``ValueError`` as soon as it passes the cap."""
        if not capped or self.max_result_bytes is None:
            return relation.to_arrow_table()
        batches, size = [], 0
        reader = relation.to_arrow_reader(RESULT_BATCH_ROWS)
        for batch in reader:
            size += batch.nbytes
            if size > self.max_result_bytes:
                raise ValueError(f"query: the result passed max_result_bytes={self.max_result_bytes:,} bytes "
                                 f"(memory_limit unless given); aggregate or filter in SQL, add a LIMIT, or "
                                 f"open the run with a larger max_result_bytes")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        return self._polars(self.frame(query, params), capped=False)

    def user_sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """:meth:`sql` for a query of the user's: capped at ``max_result_bytes``."""
        return self._polars(self.frame(query, params), capped=True)

    def _polars(self, relation: duckdb.DuckDBPyRelation, capped: bool) -> pl.DataFrame:
        table = self._fetch(relation, capped)
        try:
            return pl.from_arrow(table)
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
        for connection in (*self._earlier, self.connection):
            connection.close()
        for folder in (*self._spills, self._private_temp):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
