"""Guarantees of the engine layer on DuckDB: runs open side by side never mix, and readers take exactly the
committed files (FORMAT.md, "Reader rules")."""

from __future__ import annotations

import shutil

import duckdb
import pyarrow.fs as pafs
import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.recorder import Recorder

from ..conftest import write_run


def test_two_runs_on_one_duckdb_connection_each_return_their_own_rows(tmp_path) -> None:
    write_run(tmp_path / "a", num_samples=30)
    write_run(tmp_path / "b", num_samples=20, seed=1)
    connection = duckdb.connect()
    connection.execute("CREATE TABLE mine AS SELECT 42 AS answer")
    run_a = analytics.open_run(tmp_path / "a", connection=connection)
    alone = run_a.aum()
    assert alone.height == 30
    run_b = analytics.open_run(tmp_path / "b", connection=connection)
    assert run_b.aum().height == 20
    assert_frame_equal(run_a.aum(), alone)
    assert run_b.sql("SELECT answer FROM mine")["answer"].to_list() == [42]  # the caller's tables stay visible
    run_b.close()
    assert_frame_equal(run_a.aum(), alone)
    run_a.close()
    assert connection.sql("SELECT answer FROM mine").fetchall() == [(42,)]  # the caller's connection stays open
    with pytest.raises(duckdb.CatalogException):
        connection.sql("SELECT * FROM records")  # no view leaked into the caller's own namespace


def test_two_runs_open_side_by_side_in_one_process_each_return_their_own_rows(tmp_path) -> None:
    write_run(tmp_path / "a", num_samples=30)
    write_run(tmp_path / "b", num_samples=20, seed=1)
    with analytics.open_run(tmp_path / "a") as run_a, analytics.open_run(tmp_path / "b") as run_b:
        assert (run_a.aum().height, run_b.aum().height) == (30, 20)
        assert run_a.info()["registered_samples"] == 30 and run_b.info()["registered_samples"] == 20


def write_object_store_run(tmp_path):
    """The same run twice: with the object-store protocol into a local folder (manifests in
    ``_committed/``), and plainly; returns both folders."""
    store = tmp_path / "bucket" / "run"
    for target, options in ((f"store://{store}", {"filesystem": pafs.LocalFileSystem(),
                                                  "local_dir": tmp_path / "mirror"}), (tmp_path / "plain", {})):
        with Recorder(target, num_classes=3, **options) as rec:
            rec.register_samples(torch.arange(12), torch.arange(12) % 3)
            for epoch in range(3):
                logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(epoch))
                rec.log(torch.arange(12), logits, torch.arange(12) % 3, epoch=epoch)
    return store, tmp_path / "plain"


def test_duckdb_ignores_a_data_file_that_no_manifest_lists(tmp_path) -> None:
    store, plain = write_object_store_run(tmp_path)
    assert (store / "_committed" / "a0-r0.json").exists()
    committed = next((store / "records" / "split=train" / "epoch=0").glob("*.parquet"))
    shutil.copy(committed, committed.parent / "part-a0-r0-s3.parquet")  # its writer's last upload, never listed
    with analytics.open_run(store) as run, analytics.open_run(plain) as expected:
        assert_frame_equal(run.scores(), expected.scores())
        assert run.info()["splits"] == expected.info()["splits"]
        assert run.sql("SELECT count(*) AS n FROM raw_records")["n"][0] == 36


def test_a_local_run_reads_write_once_names_only(tmp_path) -> None:
    write_run(tmp_path / "run", num_samples=16, epochs=2)
    partition = tmp_path / "run" / "records" / "split=train" / "epoch=0"
    committed = next(partition.glob("part-*.parquet"))
    with analytics.open_run(tmp_path / "run") as run:
        before = run.scores()
        rows = run.sql("SELECT count(*) AS n FROM raw_records")["n"][0]
        for stray in (partition / "copy.parquet", partition / "part-a0-r0-s9.parquet.partial",
                      tmp_path / "run" / "_staging" / "records__split=train__epoch=0__part-a0-r0-s9.parquet"):
            stray.parent.mkdir(exist_ok=True)
            shutil.copy(committed, stray)
        assert run.sql("SELECT count(*) AS n FROM raw_records")["n"][0] == rows
        assert_frame_equal(run.scores(), before)
        shutil.copy(committed, partition / "part-a0-r0-s9.parquet")  # a committed name: it counts
        assert run.sql("SELECT count(*) AS n FROM raw_records")["n"][0] == rows + 16
