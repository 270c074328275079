"""A real Spark standalone cluster: a master and two workers started from the pyspark installation (loopback
only, stopped at the end), running ``tdlog score --engine spark --master spark://127.0.0.1:PORT``; the
result equals DuckDB's. Skipped without pyspark or Java."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from .conftest import NUM_CLASSES, NUM_SAMPLES, write_scored_run

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17+)", allow_module_level=True)

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(log: Path, text: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{log.name}: exited with {process.returncode}: {tail}")
        time.sleep(0.5)
    raise TimeoutError(f"{log.name}: no {text!r} within {seconds} s: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``spark://127.0.0.1:PORT`` with two workers of one core and 1 GiB each."""
    folder = tmp_path_factory.mktemp("cluster")
    env = os.environ | {"SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                        "SPARK_WORKER_DIR": str(folder / "work"), "SPARK_LOG_DIR": str(folder)}
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    processes = []

    def start(name: str, *arguments: str) -> tuple[subprocess.Popen, Path]:
        log = folder / f"{name}.log"
        process = subprocess.Popen([str(SPARK_CLASS), *arguments], env=env, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process, log

    try:
        master, master_log = start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(port), "--webui-port", str(free_port()))
        wait_for(master_log, "I have been elected leader", master)
        for index in range(2):
            worker, worker_log = start(f"worker{index}", "org.apache.spark.deploy.worker.Worker", "--host",
                                       "127.0.0.1", "--cores", "1", "--memory", "1g", "--webui-port",
                                       str(free_port()), url)
            wait_for(worker_log, "Successfully registered with master", worker)
        yield url, env, folder
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_tdlog_score_on_a_standalone_cluster_equals_duckdb(cluster, tmp_path) -> None:
    url, env, folder = cluster
    run = tmp_path / "run"
    write_scored_run(run)
    on_cluster = subprocess.run([sys.executable, "-m", "tdlog", "score", str(run), "--engine", "spark", "--master",
                                 url, "--out", str(tmp_path / "spark.parquet")],
                                env=env, capture_output=True, text=True, timeout=600)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    assert f"chosen from {NUM_SAMPLES // (NUM_CLASSES + 1)} threshold samples" in on_cluster.stdout
    local = subprocess.run([sys.executable, "-m", "tdlog", "score", str(run), "--out", str(tmp_path / "duck.parquet")],
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    spark_scores = pl.read_parquet(tmp_path / "spark.parquet" / "*.parquet").sort("sample_id")
    duck_scores = pl.read_parquet(tmp_path / "duck.parquet")
    assert spark_scores.height == duck_scores.height == 120
    columns = [c for c in duck_scores.columns if c in spark_scores.columns]
    assert {"aum", "aul", "forgetting_events", "aum_flagged", "p_mislabeled", "epoch_to"} <= set(columns)
    # both engines sum float32 columns in double precision, in different orders: last-bit differences
    assert_frame_equal(spark_scores.select(columns), duck_scores.select(columns), check_exact=False, rel_tol=1e-9,
                       abs_tol=1e-12, check_dtypes=False)
    # the work ran on the cluster: each worker started an executor for the application
    assert len(list((folder / "work").glob("app-*/*"))) == 2
