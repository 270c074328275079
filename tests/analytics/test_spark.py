"""The Spark engine: the same views and sql/ files give the DuckDB results (local[2]; skipped without
pyspark or Java)."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.analytics.epoch_masks import MAX_EPOCHS
from tdlog.analytics.spark_engine import spark_session
from tdlog.cli import main
from tdlog.recorder import Recorder

from ..conftest import write_run
from .test_engines import write_object_store_run
from .test_mapd import write_probe_run
from .test_one_pass import EPOCHS, gappy_run  # noqa: F401  (the fixture)

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17+)", allow_module_level=True)


# both engines aggregate float32 columns in double precision, in different orders: last-bit differences
CLOSE = {"check_exact": False, "rel_tol": 1e-9, "abs_tol": 1e-12, "check_dtypes": False}


@pytest.fixture(scope="module")
def spark():
    return spark_session("local[2]")


def _same(duck: pl.DataFrame, spark_frame: pl.DataFrame) -> None:
    assert spark_frame.columns == duck.columns
    assert_frame_equal(spark_frame.sort("sample_id"), duck.sort("sample_id"), **CLOSE)


def test_every_score_equals_duckdb(scored_run, spark) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as duck, analytics.open_run(path, engine="spark", spark=spark) as on_spark:
        for name, kwargs in [("aum", {}), ("aum", {"per_update": True}), ("aum", {"epochs": range(1, 4)}),
                             ("aul", {}), ("data_map", {}), ("forgetting", {}), ("el2n", {}),
                             ("el2n", {"epochs": range(0, 3)})]:
            _same(getattr(duck, name)(**kwargs), getattr(on_spark, name)(**kwargs))
        assert on_spark.threshold_cutoff(percentile=90) == pytest.approx(duck.threshold_cutoff(percentile=90),
                                                                         rel=1e-12)
        duck_window, spark_window = duck.epoch_window(), on_spark.epoch_window()
        assert spark_window.epochs == duck_window.epochs  # every sample used: the engines' hashes do not matter
        assert_frame_equal(spark_window.criterion, duck_window.criterion, **CLOSE)
        _same(duck.scores(), on_spark.scores())
        _same(duck.query("last_epoch", split="train", epoch_from=0, epoch_to=6),
              on_spark.query("last_epoch", split="train", epoch_from=0, epoch_to=6))
        assert on_spark.info()["splits"] == duck.info()["splits"]
        assert on_spark.epochs() == duck.epochs() == list(range(6))


def test_a_resumed_run_counts_each_epoch_once_on_spark(tmp_path, spark) -> None:
    path = tmp_path / "run"
    for attempt, epochs in enumerate((range(0, 4), range(2, 5))):
        with Recorder(path, num_classes=2) as rec:
            for epoch in epochs:
                logits = torch.zeros(4, 2)
                logits[:, 0] = 10 * attempt + epoch
                rec.log(torch.arange(4), logits, torch.zeros(4, dtype=torch.long), epoch=epoch)
    with analytics.open_run(path, engine="spark", spark=spark) as run:
        aum = run.aum()
        attempts = run.sql("SELECT attempt, start_epoch, end_epoch FROM attempts ORDER BY attempt")
    assert aum["aum"].to_list() == [pytest.approx(np.mean([0, 1, 12, 13, 14]))] * 4
    assert attempts.rows() == [(0, 0, 2), (1, 2, 9223372036854775807)]


def test_gmm_on_the_executors_equals_the_driver_fit(scored_run, spark, tmp_path) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as duck:
        expected = duck.scores()
    with analytics.open_run(path, engine="spark", spark=spark) as on_spark:
        rows = on_spark.write_scores(tmp_path / "scores.parquet")
    written = pl.read_parquet(tmp_path / "scores.parquet" / "*.parquet")
    assert rows == written.height == expected.height
    _same(expected, written.select(expected.columns))
    assert written["gmm_flagged"].sum() == expected["gmm_flagged"].sum() > 0


def test_parameters_stay_data_on_spark(scored_run, spark) -> None:
    path, _ = scored_run
    with analytics.open_run(path, engine="spark", spark=spark) as run:
        hostile = run.sql("SELECT count(*) AS n FROM records WHERE split = $split", {"split": "train' OR '1'='1"})
        assert hostile["n"][0] == 0
        assert run.sql("SELECT count(*) AS n FROM records WHERE split = :split", {"split": "train"})["n"][0] == 780


def test_cli_scores_on_spark(scored_run, spark, tmp_path, capsys) -> None:
    path, _ = scored_run
    out = tmp_path / "scores.parquet"
    assert main(["score", str(path), "--engine", "spark", "--master", "local[2]", "--out", str(out)]) == 0
    assert "wrote 120 samples" in capsys.readouterr().out
    assert pl.read_parquet(out / "*.parquet").height == 120
    assert main(["sql", str(path), "SELECT nope FROM records", "--engine", "spark"]) == 1
    assert "tdlog sql: error:" in capsys.readouterr().err


def test_unknown_engine_is_a_clear_error(scored_run) -> None:
    path, _ = scored_run
    with pytest.raises(ValueError, match="engine: expected 'duckdb' or 'spark', got 'presto'"):
        analytics.open_run(path, engine="presto")


@pytest.mark.parametrize("skip_epoch", [None, 2])
def test_mapd_on_spark_equals_duckdb(tmp_path, spark, skip_epoch) -> None:
    """Probe trajectories shipped to the executors, FAISS per partition: the DuckDB votes, with a sample
    seen twice in an epoch, one that misses an epoch and (parametrised) an epoch nobody was logged in."""
    path = tmp_path / "run"
    write_probe_run(path, skip_epoch=skip_epoch)
    with analytics.open_run(path) as duck, analytics.open_run(path, engine="spark", spark=spark) as on_spark:
        expected = duck.mapd(k=5, device="cpu").sort("sample_id")
        assert on_spark.mapd(k=5, device="cpu").sort("sample_id").equals(expected)
        online = on_spark.mapd(k=5, upto_epoch=1, suites=["clean", "random_labels"])
        assert online.sort("sample_id").equals(
            duck.mapd(k=5, upto_epoch=1, suites=["clean", "random_labels"]).sort("sample_id"))
        assert "mapd_suite" in on_spark.scores().columns
        with pytest.raises(ValueError, match="k: expected at most the number of reference probes with records"):
            on_spark.mapd(k=10_000)


def test_spark_reads_only_committed_files_of_an_object_store_run(tmp_path, spark) -> None:
    """A run written with the object-store protocol (here into a local folder through pyarrow's local file
    system), plus a data file no manifest lists: Spark, given the folder as a file:// URI, reads the
    committed files only and equals DuckDB on the plain local run."""
    store, plain = write_object_store_run(tmp_path)
    assert (store / "_committed" / "a0-r0.json").exists()
    stray = next((store / "records" / "split=train" / "epoch=0").glob("*.parquet"))
    (stray.parent / "part-a0-r0-s3.parquet").write_bytes(stray.read_bytes())  # its writer's last upload, unlisted
    with analytics.open_run(f"file://{store}", engine="spark", spark=spark) as on_spark, \
            analytics.open_run(plain) as duck:
        _same(duck.scores(), on_spark.scores())
        assert on_spark.info()["splits"] == duck.info()["splits"]


def test_two_runs_in_one_spark_session_each_return_their_own_rows(tmp_path, spark) -> None:
    write_run(tmp_path / "a", num_samples=30)
    write_run(tmp_path / "b", num_samples=20, seed=1)
    run_a = analytics.open_run(tmp_path / "a", engine="spark", spark=spark)
    alone = run_a.aum()
    assert alone.height == 30
    run_b = analytics.open_run(tmp_path / "b", engine="spark", spark=spark)
    assert run_b.aum().height == 20
    assert_frame_equal(run_a.aum(), alone)
    run_b.close()
    assert_frame_equal(run_a.aum(), alone)
    run_a.close()
    assert "records" not in [table.name for table in spark.catalog.listTables()]  # nothing in the caller's session


def test_report_on_spark_goes_into_the_run_folder(scored_run, tmp_path) -> None:
    path = shutil.copytree(scored_run[0], tmp_path / "run")
    assert main(["report", str(path), "--engine", "spark"]) == 0
    page = (path / "report.html").read_text()
    assert '"name":"data_map"' in page and '"name":"aum_histogram"' in page and "most suspicious samples" in page


@pytest.mark.parametrize("epochs", [range(0, 60), range(5, 5 + MAX_EPOCHS), None])
def test_the_one_pass_scores_equal_scores_sql_on_spark(gappy_run, spark, tmp_path, epochs) -> None:  # noqa: F811
    """Gaps, repeats within an epoch (the exact query's samples), 260 epochs (more than the masks hold)."""
    lower, upper = (0, 2**62) if epochs is None else (epochs.start, epochs.stop)
    with analytics.open_run(gappy_run, engine="spark", spark=spark) as run:
        fast = run.scores(epochs=epochs, el2n_epochs=range(0, 30))
        exact = run.query("scores", split="train", epoch_from=lower, epoch_to=upper, el2n_to=30)
        written = run.write_scores(tmp_path / "scores.parquet", epochs=epochs, el2n_epochs=range(0, 30))
    with analytics.open_run(gappy_run) as duck:
        on_duckdb = duck.scores(epochs=epochs, el2n_epochs=range(0, 30))
    _same(exact.select(exact.columns), fast.select(exact.columns))
    _same(on_duckdb, fast)
    assert fast["forgetting_events"].max() >= 2 and fast["epochs"].min() < min(upper, EPOCHS) - lower
    from_files = pl.read_parquet(tmp_path / "scores.parquet" / "*.parquet")
    assert written == from_files.height == fast.height
    _same(fast.select(exact.columns), from_files.select(exact.columns))


def test_selection_and_its_signals_equal_duckdb(tmp_path, spark) -> None:
    from .test_selection import write_run as write_selection_run

    write_selection_run(tmp_path / "run", thresholds=20, repeat_every=9)
    with analytics.open_run(tmp_path / "run") as duck, \
            analytics.open_run(tmp_path / "run", engine="spark", spark=spark) as on_spark:
        for arguments in ({"method": "s2l", "clusters": 5, "source": "source", "seed": 4},
                          {"method": "random", "seed": 1}, {"method": "learning_percentage", "source": "source"}):
            chosen = on_spark.select(0.15, **arguments)
            assert_frame_equal(chosen, duck.select(0.15, **arguments), **CLOSE)
        assert on_spark.sql("SELECT count(*) AS n FROM selection")["n"].item() == chosen.height
        _same(duck.loss_drop(), on_spark.loss_drop())
        assert_frame_equal(on_spark.source_curves(), duck.source_curves(), **CLOSE)
