"""The engine never writes: one read-only statement per call (EXPLAIN ANALYZE's inner statement checked
too), and behind that a connection that may open the run's data files only (no folder of the run, no
predictable temp folder), no ATTACH, no extension install; Spark's marker rewrite leaves literals and
comments alone."""

from __future__ import annotations

import hashlib
import os
import tempfile

import duckdb
import pytest
from polars.testing import assert_frame_equal

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
    "EXPLAIN ANALYZE COPY (SELECT * FROM records LIMIT 400) TO '{partition}/part-a0-r0-s99.parquet'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS format) TO '{run}/run.json' (FORMAT json)",
    "explain analyse COPY (SELECT 1 AS x) TO '{run}/x.csv'",
    "EXPLAIN (ANALYZE) COPY (SELECT 1 AS x) TO '{run}/x.csv'",
    "EXPLAIN (ANALYZE, FORMAT json) INSERT INTO records SELECT * FROM records",
    "/* first */ EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{run}/x.csv'",
    "EXPLAIN /* between */ ANALYZE COPY (SELECT 1 AS x) TO '{run}/x.csv'",
    "EXPLAIN ANALYZE CREATE OR REPLACE TEMP VIEW records AS SELECT * FROM raw_records LIMIT 0",
    "EXPLAIN ANALYZE SELECT 1; COPY (SELECT 1 AS x) TO '{run}/x.csv'",
    "PRAGMA enable_profiling",
])
def test_statements_that_write_or_change_the_session_are_refused(small_run, query) -> None:
    path, _ = small_run
    before = fingerprint(path)
    partition = path / "records" / "split=train" / "epoch=0"
    with analytics.open_run(path) as run, pytest.raises(ValueError, match="query: expected one read-only statement"):
        run.sql(query.format(partition=partition, run=path))
    assert fingerprint(path) == before


def test_explain_of_a_select_still_runs_and_views_stay_the_runs(small_run) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run:
        before = run.aum(epochs=None)
        with pytest.raises(ValueError, match="EXPLAIN CREATE"):
            run.sql("EXPLAIN ANALYZE CREATE OR REPLACE TEMP VIEW records AS SELECT * FROM raw_records LIMIT 0")
        assert run.sql("EXPLAIN ANALYZE SELECT count(*) FROM records").height >= 1
        assert run.sql("EXPLAIN (FORMAT json) SELECT 1").height == 1
        assert_frame_equal(run.aum(epochs=None), before)


@pytest.mark.parametrize("statement", [
    "COPY (SELECT * FROM records LIMIT 400) TO '{partition}/part-a0-r0-s99.parquet'",
    "COPY (SELECT 1 AS format) TO '{run}/run.json' (FORMAT json)",
    "COPY (SELECT 1 AS format) TO '{run}/_attempts/attempt-0.json' (FORMAT json, USE_TMP_FILE false)",
    "COPY (SELECT * FROM records LIMIT 1) TO '{existing}'",
    "ATTACH '{run}/stolen.db' AS stolen",
])
def test_the_connection_itself_cannot_write_to_the_run(small_run, statement) -> None:
    """Wall 2 alone: a statement sent to tdlog's connection directly, past the statement check."""
    path, _ = small_run
    before = fingerprint(path)
    existing = next((path / "records").rglob("*.parquet"))
    with analytics.open_run(path) as run:
        run.sql("SELECT count(*) FROM records")
        with pytest.raises((duckdb.PermissionException, duckdb.IOException)):
            run.engine.connection.execute(statement.format(
                partition=path / "records" / "split=train" / "epoch=0", run=path, existing=existing))
    assert fingerprint(path) == before


def test_a_planted_temp_folder_cannot_widen_what_duckdb_reads(small_run, tmp_path, monkeypatch) -> None:
    """Someone pre-creates the old predictable temp folder as a symlink to /: the engine's folder is made
    fresh (random name, owner-only) and is not a readable place anyway."""
    path, _ = small_run
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    (shared / "tdlog-duckdb").symlink_to("/")
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    with analytics.open_run(path) as run:
        spill = run.engine._private_temp
        assert spill is not None and os.path.realpath(spill).startswith(str(shared) + "/tdlog-duckdb-")
        assert os.stat(spill).st_mode & 0o077 == 0
        for query in ("SELECT * FROM read_text('/etc/hostname')", f"SELECT * FROM glob('{spill}/*')",
                      "SELECT * FROM read_text('/proc/self/environ')"):
            with pytest.raises(duckdb.PermissionException):
                run.sql(query)
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 120
    assert not os.path.exists(spill)  # removed at close


def test_a_result_larger_than_the_cap_is_refused(small_run) -> None:
    path, _ = small_run
    with analytics.open_run(path, max_result_bytes="1MB") as run:
        assert run.sql("SELECT range FROM range(100000)").height == 100_000  # 0.8 MB
        with pytest.raises(ValueError, match="max_result_bytes=1,000,000"):
            run.sql("SELECT range FROM range(10000000)")
    with analytics.open_run(path, memory_limit="200MB") as run:
        assert run.engine.max_result_bytes == 200_000_000


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


@pytest.mark.parametrize("statement", ["COPY (SELECT 1) TO '{path}/x.csv'",
                                       "EXPLAIN ANALYZE COPY (SELECT 1) TO '{path}/run.json'"])
def test_the_cli_refuses_a_copy_in_one_line(small_run, capsys, statement) -> None:
    path, _ = small_run
    before = fingerprint(path)
    assert main(["sql", str(path), statement.format(path=path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog sql: error: query: expected one read-only statement") and error.count("\n") == 1
    assert fingerprint(path) == before


def test_spark_marker_rewrite_leaves_literals_and_comments_alone() -> None:
    query = ("SELECT 'price $usd', 'it''s $x' AS a, `col$1` FROM t -- $comment\n"
             "WHERE a = $split /* $block */ AND b < $epoch_to")
    assert spark_dialect(query) == ("SELECT 'price $usd', 'it''s $x' AS a, `col$1` FROM t -- $comment\n"
                                    "WHERE a = :split /* $block */ AND b < :epoch_to")


def test_a_given_temp_directory_gets_private_spill_folders_removed_at_close(small_run, tmp_path) -> None:
    path, _ = small_run
    given = tmp_path / "spill-here"
    with analytics.open_run(path, temp_directory=given) as run:
        run.sql("SELECT count(*) FROM records")
        spills = list(given.iterdir())
        assert spills and all(p.name.startswith("spill-") and os.stat(p).st_mode & 0o077 == 0 for p in spills)
    assert given.is_dir() and not any(given.iterdir())
