"""The engine interface: what tdlog asks of a query engine. DuckDB (:mod:`tdlog.analytics.duckdb_engine`) and
Spark (:mod:`tdlog.analytics.spark_engine`) implement it; :class:`tdlog.analytics.run.Run` and the algorithm modules
(scores, threshold, GMM, MAP-D) use nothing else.

Each engine object holds one run's views in a session of its own (its own DuckDB connection, or a cursor of
the caller's connection; a ``SparkSession.newSession()`` of the caller's session), so the views keep their
plain names (``records``, ``samples``, ...) in user SQL and two runs open at once never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import polars as pl

    from .store import RunSnapshot

VIEWS = ("raw_records", "attempts", "records", "unscored", "epoch_stats", "samples")
RESULT_VIEWS = ("selection",)  # results tdlog computed, shown to SQL by name once computed (Run.select)


class Engine(Protocol):
    """A query engine holding one run's views.

    ``dialect`` names the SQL dialect (``"duckdb"`` or ``"spark"``): the algorithm modules take an
    engine-specific fast path by it (DuckDB's one-pass score query, Spark's executor-side MAP-D).
    """

    dialect: str

    def register(self, snapshot: RunSnapshot) -> None:
        """(Re)create the views ``VIEWS`` over the committed files of ``snapshot``."""

    def show_result(self, name: str, frame: pl.DataFrame) -> None:
        """Make ``frame`` readable by SQL as the view ``name`` (one of ``RESULT_VIEWS``), replacing an earlier
        one; it stays while the engine is open, across :meth:`register`."""

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` (``$name`` parameter markers, values bound, never formatted into the text) and
        collect the result as Polars."""

    def user_sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """:meth:`sql` for a query of the user's, with what comes back into Python capped (DuckDB:
        ``max_result_bytes``; Spark: ``spark.driver.maxResultSize``)."""

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A small result as Python rows (no Arrow conversion: what ``tdlog info`` needs, fast)."""

    def frame(self, query: str, params: Mapping[str, Any] | None = None) -> Any:
        """The same query, lazy: a ``duckdb.DuckDBPyRelation`` or a Spark ``DataFrame``."""

    def view_definitions(self) -> str:
        """Statements that reproduce the views elsewhere (DuckDB: ``CREATE VIEW``; Spark: the reads as
        comments and the SQL views)."""

    def close(self) -> None:
        """Drop the views and release what the engine opened (never the caller's connection or session)."""
