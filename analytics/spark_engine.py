"""The Apache Spark engine: the same views and the same ``sql/`` files in a ``SparkSession``, for runs
that outgrow one machine. ``tdlog.analytics.open_run(path, engine="spark", spark=session)`` returns a
:class:`~tdlog.analytics.run.Run` on a :class:`SparkEngine`; every method works on it (results come back as
Polars), and :meth:`~tdlog.analytics.run.Run.write_scores` computes and writes the score table on the executors
(:mod:`tdlog.analytics.spark_scores`). The views live in ``session.newSession()``: their own temporary views,
the caller's SparkContext, so two runs in one application never see each other's views.

Dialect switch: the ``sql/`` files mark parameters DuckDB's way, ``$name``; :func:`spark_dialect` rewrites
the markers to Spark's ``:name`` and the values stay bound (``spark.sql(query, args=...)``), never
formatted into the text. Everything else in the files is portable SQL, ``scores_one_pass.sql`` (the score
table's fast path) included.

pyspark is optional: ``pip install 'tdlog[spark]'`` (Spark 4 needs Java 17 or newer).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from tdlog.format import RECORDS_DIR, SAMPLES_DIR

from .engine import RESULT_VIEWS, VIEWS
from .spark_guard import check_read_only
from .views import EPOCH_STATS_SELECT, attempt_rows, raw_records_stub, records_select, samples_stub

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .store import RunSnapshot

# string literals, quoted names and comments (left as they are), or a $name parameter marker
_TOKEN = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/|\$([A-Za-z_]\w*)", re.DOTALL)


def spark_dialect(query: str) -> str:
    """``$name`` parameter markers (DuckDB) -> ``:name`` (Spark SQL); string literals, quoted names and
    comments are left alone."""
    return _TOKEN.sub(lambda m: f":{m.group(1)}" if m.group(1) else m.group(0), query)


def spark_session(master: str = "local[2]", *, config: Mapping[str, str] | None = None) -> SparkSession:
    """A ``SparkSession`` on ``master`` (``local[2]``, ``spark://host:7077``, ``yarn``, ...) for tdlog;
    ``config``: extra Spark settings (e.g. ``{"spark.executor.memory": "8g"}``). Python workers run
    ``PYSPARK_PYTHON``; for a ``local`` master it defaults to this interpreter, on a cluster set it to one
    with tdlog and FAISS installed on every executor."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise ImportError("engine='spark' needs pyspark: pip install 'tdlog[spark]' (and Java 17+)") from error
    builder = (SparkSession.builder.master(master).appName("tdlog").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower()))
    if master.startswith("local"):  # Python workers (MAP-D's mapInArrow) run this interpreter, not PATH's python3
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def to_polars(frame: DataFrame) -> pl.DataFrame:
    """Collect a Spark DataFrame to the driver as Polars (decimals as Float64)."""
    table = frame.toArrow()
    decimals = [f.name for f in table.schema if pa.types.is_decimal(f.type)]
    result = pl.from_arrow(table)
    return result.with_columns(pl.col(decimals).cast(pl.Float64)) if decimals else result


class SparkEngine:
    """Implements :class:`tdlog.analytics.engine.Engine` with Spark: ``raw_records`` and ``samples`` are
    DataFrames read from the committed files (partitions discovered below ``records/``), ``attempts`` is
    built from the attempt files, ``records`` and ``epoch_stats`` are the same SQL text as on DuckDB."""

    dialect = "spark"

    def __init__(self, spark: SparkSession) -> None:
        self.session = spark.newSession()
        self.session.conf.set("spark.sql.runSQLOnFiles", "false")  # no `parquet.`/path`` even past the check
        self._records_filter = self._unscored_filter = ""
        self._location = ""

    def register(self, snapshot: RunSnapshot) -> None:
        sql_id = "BIGINT" if snapshot.id_type == "int64" else "STRING"
        base = self._location = snapshot.location
        if snapshot.files.records:  # the committed files only, partitions discovered below basePath
            raw = (self.session.read.option("basePath", f"{base}/{RECORDS_DIR}").option("mergeSchema", "true")
                   .parquet(*snapshot.paths(snapshot.files.records)))
            raw = raw.withColumn("split", raw["split"].cast("string")).withColumn("epoch", raw["epoch"].cast("bigint"))
        else:
            raw = self.session.sql(raw_records_stub(sql_id))
        raw.createOrReplaceTempView("raw_records")
        self._attempts_frame(snapshot.attempts).createOrReplaceTempView("attempts")
        self._records_filter = records_select(list(snapshot.attempts), snapshot.splits, raw.columns)
        self.session.sql(self._records_filter).createOrReplaceTempView("records")
        self._unscored_filter = records_select(list(snapshot.attempts), snapshot.splits, raw.columns, scored=False)
        self.session.sql(self._unscored_filter).createOrReplaceTempView("unscored")
        self.session.sql(EPOCH_STATS_SELECT).createOrReplaceTempView("epoch_stats")
        if snapshot.files.samples:
            frame = self.session.read.option("mergeSchema", "true").parquet(*snapshot.paths(snapshot.files.samples))
        else:
            frame = self.session.sql(samples_stub(sql_id))
        frame.createOrReplaceTempView("samples")

    def show_result(self, name: str, frame: pl.DataFrame) -> None:
        if name not in RESULT_VIEWS:
            raise ValueError(f"name: expected one of {RESULT_VIEWS}, got {name!r}")
        self.session.createDataFrame(frame.to_arrow()).createOrReplaceTempView(name)

    def _attempts_frame(self, attempts: tuple[dict, ...]) -> DataFrame:
        schema = "attempt INT, start_epoch BIGINT, end_epoch BIGINT, world_size INT, started_at STRING"
        return self.session.createDataFrame(attempt_rows(attempts), schema)

    def frame(self, query: str, params: Mapping[str, Any] | None = None) -> DataFrame:
        """``query`` (``$name`` or ``:name`` markers, values bound) as a lazy Spark DataFrame; one read of the
        views only (:func:`tdlog.analytics.spark_guard.check_read_only`), else ``ValueError``."""
        query = spark_dialect(query)
        check_read_only(self.session, query)
        return self.session.sql(query, args=dict(params or {}))

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        return to_polars(self.frame(query, params))

    def user_sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """:meth:`sql` for a query of the user's (what comes back to the driver is capped by Spark's
        ``spark.driver.maxResultSize``, 1g by default)."""
        return self.sql(query, params)

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [row.asDict() for row in self.frame(query, params).collect()]

    def view_definitions(self) -> str:
        base = self._location
        return "\n".join([
            f"-- raw_records: spark.read.option('basePath', '{base}/{RECORDS_DIR}').parquet(<committed files>)",
            f"-- samples: spark.read.parquet(<committed files in {base}/{SAMPLES_DIR}>); attempts: _attempts/*.json",
            f"CREATE OR REPLACE TEMP VIEW records AS {self._records_filter};",
            f"CREATE OR REPLACE TEMP VIEW unscored AS {self._unscored_filter};",
            f"CREATE OR REPLACE TEMP VIEW epoch_stats AS {EPOCH_STATS_SELECT};",
        ])

    def close(self) -> None:
        """Drop this run's views (the SparkContext stays: it is the caller's)."""
        for name in (*RESULT_VIEWS, *reversed(VIEWS)):  # a view before the views it reads
            self.session.catalog.dropTempView(name)
