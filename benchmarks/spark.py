"""DuckDB versus Spark on one machine: the same run scored by both engines.

Writes a synthetic run of N samples x E epochs with the real recorder (default 100,000 x 100 = 10^7 rows,
the same generator as benchmarks/engine.py), then, interleaved ``--repeats`` times in this process:

1. ``duckdb``: ``analytics.open_run(run).scores()`` (the one-pass query, GMM, samples join);
2. ``spark``: ``open_run(run, engine="spark", spark=session).write_scores(dir)`` on ``--master`` (default
   ``local[2]``): the portable ``scores.sql``, the GMM posterior on the executors, Parquet written by Spark.

The Spark session is started once beforehand (its start-up time is reported on its own). Reports median
wall times and their ratio; writes JSON.

Usage: python benchmarks/spark.py [--samples 100000] [--epochs 100] [--small] [--master local[2]] [--repeats 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time

import duckdb

import tdlog.analytics as analytics
from benchmarks.engine import write_run
from tdlog.analytics.spark_engine import spark_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--small", action="store_true", help="10,000 samples x 20 epochs (a quick check)")
    parser.add_argument("--master", default="local[2]", help="Spark master URL (default local[2])")
    parser.add_argument("--repeats", type=int, default=2, help="duckdb / spark pairs, interleaved")
    parser.add_argument("--run", type=Path, default=None, help="reuse (or keep) the synthetic run here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/spark.json"))
    args = parser.parse_args()
    if args.small:
        args.samples, args.epochs = 10_000, 20

    scratch = Path(tempfile.mkdtemp(prefix="tdlog-spark-"))
    run_path = args.run or scratch / "run"
    try:
        write_seconds = None
        if not (run_path / "run.json").exists():
            write_seconds = write_run(run_path, args.samples, args.epochs)
        start = time.perf_counter()
        session = spark_session(args.master)
        startup_seconds = time.perf_counter() - start
        duck_times, spark_times = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            with analytics.open_run(run_path) as run:
                rows = run.scores().height
            duck_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            with analytics.open_run(run_path, engine="spark", spark=session) as run:
                written = run.write_scores(scratch / f"scores-{repeat}.parquet")
            spark_times.append(time.perf_counter() - start)
            assert rows == written == args.samples, (rows, written)
        session.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    duck_seconds, spark_seconds = statistics.median(duck_times), statistics.median(spark_times)
    result = {
        "machine": f"{platform.machine()} duckdb {duckdb.__version__} spark {session.version} master {args.master}",
        "samples": args.samples,
        "epochs": args.epochs,
        "rows": args.samples * args.epochs,
        "write_seconds": write_seconds,
        "spark_startup_seconds": startup_seconds,
        "duckdb_scores_seconds_each": duck_times,
        "spark_write_scores_seconds_each": spark_times,
        "duckdb_scores_seconds": duck_seconds,
        "spark_write_scores_seconds": spark_seconds,
        "ratio_spark_vs_duckdb": spark_seconds / duck_seconds,
    }
    print(f"{'measure':<40}{'value':>14}")
    print(f"{'rows (samples x epochs)':<40}{result['rows']:>14,}")
    print(f"{'Spark session start-up (s)':<40}{startup_seconds:>14.2f}")
    print(f"{'DuckDB run.scores() (s, median)':<40}{duck_seconds:>14.2f}")
    print(f"{'Spark write_scores() (s, median)':<40}{spark_seconds:>14.2f}")
    print(f"{'ratio Spark / DuckDB':<40}{result['ratio_spark_vs_duckdb']:>13.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
