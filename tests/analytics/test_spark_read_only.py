"""The Spark engine never writes either: user SQL is checked on Spark's own parsed plan (no command, no
DDL/DML, no SET, no file read as a table, no file-reading table function, no reflection), and the session
does not read files named as tables; every refused statement leaves the run byte-identical."""

from __future__ import annotations

import pytest

import tdlog.analytics as analytics
from tdlog.analytics.spark_engine import spark_session
from tdlog.cli import main

from .test_read_only import fingerprint

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def spark():
    return spark_session("local[2]")


@pytest.mark.parametrize("query", [
    "INSERT OVERWRITE DIRECTORY '{partition}' USING parquet SELECT * FROM records",
    "INSERT OVERWRITE LOCAL DIRECTORY '{run}/records' SELECT * FROM records",
    "CREATE TABLE stolen USING parquet LOCATION '{run}/stolen' AS SELECT * FROM records",
    "SET spark.sql.runSQLOnFiles = true",
    "CREATE OR REPLACE TEMP VIEW records AS SELECT * FROM raw_records LIMIT 0",
    "SELECT java_method('java.lang.System', 'getenv', 'HOME') AS home",
    "SELECT * FROM records WHERE reflect('java.lang.System', 'exit', 0) IS NULL",
    "SELECT system.builtin.try_reflect('java.lang.Runtime', 'getRuntime') AS r",
    "SELECT * FROM text.`/etc/hostname`",
    "SELECT * FROM parquet.`{partition}`",
    "SELECT count(*) FROM records WHERE sample_id IN (SELECT 1 FROM csv.`/etc/passwd`)",
    "SELECT * FROM read_files('/etc/hostname')",
    "WITH t AS (SELECT 1 AS x) SELECT * FROM default.some_table",
    "CACHE TABLE hot AS SELECT * FROM records",
    "EXECUTE IMMEDIATE 'DROP VIEW records'",
    "DROP VIEW records",
    "SELECT 1; SELECT 2",
])
def test_statements_that_write_read_files_or_change_the_session_are_refused(small_run, spark, query) -> None:
    path, _ = small_run
    before = fingerprint(path)
    partition = path / "records" / "split=train" / "epoch=0"
    with analytics.open_run(path, engine="spark", spark=spark) as run:
        with pytest.raises(ValueError, match=r"^query: "):
            run.sql(query.format(partition=partition, run=path))
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 120  # the views are untouched
    assert fingerprint(path) == before


def test_queries_over_views_ctes_and_row_functions_still_run(small_run, spark) -> None:
    path, _ = small_run
    with analytics.open_run(path, engine="spark", spark=spark) as run:
        answer = run.sql("WITH per AS (SELECT sample_id, avg(margin) AS m FROM records GROUP BY sample_id) "
                         "SELECT count(*) AS n FROM per JOIN samples USING (sample_id) "
                         "WHERE sample_id IN (SELECT id FROM range(1000)) AND m > -1e9")
        assert answer["n"][0] == 40
        assert run.sql("SELECT explode(array(1, 2)) AS x")["x"].to_list() == [1, 2]


def test_the_session_reads_no_file_named_as_a_table(small_run, spark) -> None:
    """Wall 2 alone: the engine's session, past the check."""
    path, _ = small_run
    with analytics.open_run(path, engine="spark", spark=spark) as run, \
            pytest.raises(Exception, match=r"(?i)unsupported|not allowed|disabled|table or view"):
        run.engine.session.sql(f"SELECT * FROM parquet.`{path}/records`").collect()


def test_the_cli_refuses_a_spark_write_in_one_line(small_run, capsys) -> None:
    path, _ = small_run
    before = fingerprint(path)
    partition = path / "records" / "split=train" / "epoch=0"
    assert main(["sql", "--engine", "spark", str(path),
                 f"INSERT OVERWRITE DIRECTORY '{partition}' USING parquet SELECT * FROM records"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog sql: error: query: expected one read-only query") and error.count("\n") == 1
    assert fingerprint(path) == before
