"""The engine never writes: one read-only statement per call, no file outside the run, no ATTACH, no
extension install; Spark's marker rewrite leaves literals and comments alone."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

import tdlog.analytics as analytics
from tdlog.analytics.spark_engine import spark_dialect
from tdlog.cli import main


def fingerprint(path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("query", [
    "COPY (SELECT * FROM records LIMIT 400) TO '{partition}/part-a0-r0-s99.parquet'",
    "COPY (SELECT 1 AS format) TO '{run}/run.json' (FORMAT json)",
    "CREATE TABLE stolen AS SELECT * FROM records",
    "SELECT 1; SELECT 2",
    "SET memory_limit = '1GB'",
])
def test_statements_that_write_or_change_the_session_are_refused(small_run, query) -> None:
    path, _ = small_run
    before = fingerprint(path)
    partition = path / "records" / "split=train" / "epoch=0"
    with analytics.open_run(path) as run, pytest.raises(ValueError, match="query: expected one read-only statement"):
        run.sql(query.format(partition=partition, run=path))
    assert fingerprint(path) == before


@pytest.mark.parametrize("query", ["SELECT * FROM read_csv('/etc/passwd')", "ATTACH '/tmp/tdlog-elsewhere.db' AS x",
                                   "INSTALL httpfs"])
def test_nothing_outside_the_run_is_opened(small_run, query) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run, pytest.raises((ValueError, duckdb.PermissionException)):
        run.sql(query)
    with analytics.open_run(path) as run:  # the run's own files stay readable, by the views and directly
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 120
        parquet = str(next((path / "records").rglob("*.parquet")))
        assert run.sql("SELECT count(*) AS n FROM read_parquet($f)", {"f": parquet})["n"][0] == 40


def test_the_cli_refuses_a_copy_in_one_line(small_run, capsys) -> None:
    path, _ = small_run
    before = fingerprint(path)
    assert main(["sql", str(path), f"COPY (SELECT 1) TO '{path}/x.csv'"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog sql: error: query: expected one read-only statement") and error.count("\n") == 1
    assert fingerprint(path) == before


def test_spark_marker_rewrite_leaves_literals_and_comments_alone() -> None:
    query = ("SELECT 'price $usd', 'it''s $x' AS a, `col$1` FROM t -- $comment\n"
             "WHERE a = $split /* $block */ AND b < $epoch_to")
    assert spark_dialect(query) == ("SELECT 'price $usd', 'it''s $x' AS a, `col$1` FROM t -- $comment\n"
                                    "WHERE a = :split /* $block */ AND b < :epoch_to")
