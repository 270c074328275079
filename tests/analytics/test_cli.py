"""Every CLI command on a real run, and its error paths (one line, no traceback, exit code 1)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.analytics import queries
from tdlog.cli import main


def tdlog(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdlog", *args], capture_output=True, text=True, timeout=120)


def test_info_reports_samples_epochs_attempts_and_size(scored_run, capsys) -> None:
    path, _ = scored_run
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "120 registered" in out and "6 epochs (0..5)" in out and "780 rows" in out
    assert "attempts         1 (attempt@start_epoch: 0@0)" in out and "non-finite rows  0" in out


def test_sql_binds_parameters_and_writes_every_format(scored_run, tmp_path, capsys) -> None:
    path, _ = scored_run
    query = "SELECT epoch, count(*) AS n FROM records WHERE epoch < $e GROUP BY epoch ORDER BY epoch"
    assert main(["sql", str(path), query, "-p", "e=2"]) == 0
    assert "│ 1     ┆ 130 │" in capsys.readouterr().out
    for suffix in ("parquet", "csv", "json"):
        out = tmp_path / f"result.{suffix}"
        assert main(["sql", str(path), query, "-p", "e=2", "--out", str(out)]) == 0
        frame = {"parquet": pl.read_parquet, "csv": pl.read_csv, "json": pl.read_json}[suffix](out)
        assert frame["n"].to_list() == [130, 130]


def test_sql_runs_a_shipped_file_and_prints_views(scored_run, tmp_path, capsys) -> None:
    path, _ = scored_run
    sql_file = tmp_path / "aul.sql"
    sql_file.write_text(queries.load("aul"))
    args = ["-p", "split=train", "-p", "epoch_from=0", "-p", "epoch_to=6", "--out", str(tmp_path / "aul.csv")]
    assert main(["sql", str(path), "-f", str(sql_file), *args]) == 0
    with analytics.open_run(path) as run:
        expected = run.aul()
    assert pl.read_csv(tmp_path / "aul.csv").sort("sample_id")["aul"].to_list() == expected["aul"].to_list()
    capsys.readouterr()
    assert main(["sql", str(path), "--print-views"]) == 0
    views = capsys.readouterr().out
    for name in ("records", "samples", "epoch_stats", "attempts"):
        assert f"CREATE OR REPLACE VIEW {name} AS" in views


def test_score_writes_one_row_per_sample(scored_run, tmp_path) -> None:
    path, _ = scored_run
    assert main(["score", str(path), "--out", str(tmp_path / "scores.parquet")]) == 0
    assert main(["score", str(path), "--out", str(tmp_path / "scores.csv"), "--epochs", "0:3"]) == 0
    full, early = pl.read_parquet(tmp_path / "scores.parquet"), pl.read_csv(tmp_path / "scores.csv")
    with analytics.open_run(path) as run:
        expected = run.scores()
    # DuckDB sums in parallel: float aggregates may differ between two runs in the last bits
    assert_frame_equal(full, expected, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)
    assert early.height == 120 and set(early["epochs"].to_list()) == {3}


def test_export_aum_csv_flagged_and_weights(scored_run, tmp_path) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as run:
        scores = run.scores()
        per_update = run.aum(per_update=True, epochs=None)  # the aum package: every update
    assert main(["export", str(path), "--aum-csv", str(tmp_path / "aum")]) == 0
    with open(tmp_path / "aum" / "aum_values.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["sample_id", "aum"] and len(rows) == 121
    values = [float(r[1]) for r in rows[1:]]
    assert values == sorted(values, reverse=True)  # the aum package's order
    assert dict((int(r[0]), float(r[1])) for r in rows[1:]) == dict(per_update.select("sample_id", "aum").rows())

    assert main(["export", str(path), "--flagged", str(tmp_path / "flagged.txt")]) == 0
    flagged = [int(line) for line in (tmp_path / "flagged.txt").read_text().split()]
    assert flagged == scores.filter(pl.col("aum_flagged"))["sample_id"].to_list()

    assert main(["export", str(path), "--weights", str(tmp_path / "weights.csv")]) == 0
    weights = pl.read_csv(tmp_path / "weights.csv")
    assert weights.equals(scores.filter(pl.col("weight").is_not_null()).select("sample_id", "weight"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "{missing}"], "no tdlog run at"),
        (["sql", "{run}", "SELEC 1"], "Parser Error"),
        (["sql", "{run}", "SELECT nope FROM records"], 'column "nope" not found'),
        (["sql", "{run}", "SELECT * FROM records", "--out", "{tmp}/x.xlsx"], "--out: expected a file name ending"),
        (["sql", "{run}"], "query: give the SQL text or -f FILE"),
        (["score", "{missing}", "--out", "{tmp}/s.parquet"], "no tdlog run at"),
        (["export", "{run}", "--weights", "{tmp}/w.txt"], "--weights: expected a file name ending"),
    ],
)
def test_cli_errors_are_one_line(scored_run, tmp_path, args, message) -> None:
    path, _ = scored_run
    values = {"run": str(path), "missing": str(tmp_path / "nothing"), "tmp": str(tmp_path)}
    result = tdlog(*[a.format(**values) for a in args])
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_epoch_range_is_a_usage_error(scored_run) -> None:
    path, _ = scored_run
    result = tdlog("score", str(path), "--out", "x.parquet", "--epochs", "3")
    assert result.returncode == 1 and "expected auto, all or FROM:TO" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_info_is_plain_data(scored_run) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as run:
        info = run.info()
    json.dumps(info)  # plain data
    assert info["splits"][0]["samples"] == 120 and info["size_bytes"] > 0


@pytest.mark.parametrize("args", [["score", "RUN", "--epochs", "abc", "--out", "x.parquet"], ["info"],
                                  ["nosuchcommand"], ["info", "RUN", "--bogus"]])
def test_usage_errors_are_one_line_with_status_1(args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog") and ": error: " in error and error.count("\n") == 1
