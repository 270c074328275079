"""Spark at the speed of Spark: tdlog's score table on Spark against a bare Spark aggregate, on 1 and 2 cores.

Writes a synthetic run of N samples x E epochs with the real recorder (default 100,000 x 100 = 10^7 rows,
10 % threshold samples, the generator of benchmarks/engine.py). Then, for each ``--masters`` entry (default
``local[2]`` and ``local[1]``) a fresh process with its own Spark session times, interleaved ``--repeats``
times:

1. ``bare``: ``spark.read.parquet(records).groupBy("sample_id").agg(...)`` over the columns the scores use
   (avg margin, sum loss, avg and stddev prob, avg correct, early el2n, count), written as Parquet - the floor
   Spark pays to scan and aggregate them;
2. ``write_scores``: ``open_run(run, engine="spark").write_scores(dir)`` with its default ``epochs="auto"``
   (the window search, then the one-pass score table, cutoff, GMM, written by the executors);
3. ``write_scores(epochs=None)``: the same without the window search;
4. ``duckdb``: ``open_run(run, threads=N).scores()`` with as many threads as the master has cores.

Each process is pinned to as many CPUs as its ``local[N]`` master has cores (the JVM's garbage collector and
compiler threads, the Python workers and DuckDB included), so that the two masters compare 1 and 2 cores of
the machine. The Spark session starts once per process (its start-up is reported on its own). Reports the medians, the
ratios to the bare aggregate, and the speed-up of the first master over the second; writes JSON.

Usage: python benchmarks/spark.py [--samples 100000] [--epochs 100] [--small] [--masters local[2] local[1]]
                                  [--repeats 3] [--run DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import duckdb

from benchmarks.engine import write_run

MEASURES = ("bare", "write_scores", "write_scores_every_epoch", "duckdb")


def measure(run_path: Path, master: str, repeats: int, scratch: Path) -> dict:
    """In this process: start a session on ``master`` and time every measure ``repeats`` times, interleaved."""
    import sklearn.mixture  # noqa: F401  (import time is not part of what is measured)
    from pyspark.sql import functions as F

    import tdlog.analytics as analytics
    from tdlog.analytics.spark_engine import spark_session

    cores = int(re.fullmatch(r"local\[(\d+)\]", master).group(1)) if master.startswith("local[") else None
    if cores is not None and cores < len(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))  # the JVM (GC, JIT) gets N cores too
    start = time.perf_counter()
    session = spark_session(master)
    startup = time.perf_counter() - start

    def bare(out: Path) -> int:
        records = session.read.parquet(str(run_path / "records"))
        records.groupBy("sample_id").agg(
            F.avg("margin").alias("aum"), F.sum("loss").alias("aul"), F.avg("prob").alias("confidence"),
            F.stddev_pop("prob").alias("variability"), F.avg("correct").alias("correctness"),
            F.avg(F.when(F.col("epoch") < 10, F.col("el2n"))).alias("el2n"), F.count("*").alias("epochs"),
        ).write.mode("overwrite").parquet(str(out))
        return session.read.parquet(str(out)).count()

    def tdlog_spark(out: Path, epochs) -> int:
        with analytics.open_run(run_path, engine="spark", spark=session) as run:
            return run.write_scores(out, epochs=epochs)

    def duck(_: Path) -> int:
        with analytics.open_run(run_path, threads=cores) as run:
            return run.scores().height

    steps = {"bare": bare, "write_scores": lambda out: tdlog_spark(out, "auto"),
             "write_scores_every_epoch": lambda out: tdlog_spark(out, None), "duckdb": duck}
    times: dict[str, list[float]] = {name: [] for name in MEASURES}
    for repeat in range(repeats):
        for name in MEASURES:
            start = time.perf_counter()
            rows = steps[name](scratch / f"{name}-{repeat}.parquet")
            times[name].append(time.perf_counter() - start)
            assert rows > 0, name
    version = session.version
    session.stop()
    return {"master": master, "spark": version, "startup_seconds": startup, "seconds_each": times,
            "seconds": {name: statistics.median(values) for name, values in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--small", action="store_true", help="10,000 samples x 20 epochs (a quick check)")
    parser.add_argument("--masters", nargs="+", default=["local[2]", "local[1]"], help="Spark masters, in turn")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the four measures, interleaved")
    parser.add_argument("--run", type=Path, default=None, help="reuse (or keep) the synthetic run here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/spark.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one master, in a fresh process
    args = parser.parse_args()
    if args.small:
        args.samples, args.epochs = 10_000, 20

    scratch = Path(tempfile.mkdtemp(prefix="tdlog-spark-"))
    try:
        if args.child is not None:
            print(json.dumps(measure(args.run, args.child, args.repeats, scratch)))
            return
        run_path = args.run or scratch / "run"
        write_seconds = None
        if not (run_path / "run.json").exists():
            write_seconds = write_run(run_path, args.samples, args.epochs)
        results = []
        for master in args.masters:
            child = subprocess.run([sys.executable, __file__, "--child", master, "--run", str(run_path),
                                    "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = {
        "machine": f"{platform.machine()} duckdb {duckdb.__version__} spark {results[0]['spark']}",
        "samples": args.samples, "epochs": args.epochs, "rows": args.samples * args.epochs,
        "write_seconds": write_seconds, "repeats": args.repeats, "masters": results,
        "targets": {"write_scores_vs_bare_local2": "<= 2", "speedup_local2_vs_local1": ">= 1.6"},
    }
    print(f"{'rows (samples x epochs)':<44}{summary['rows']:>14,}")
    for result in results:
        seconds, bare = result["seconds"], result["seconds"]["bare"]
        result["ratios_to_bare"] = {name: seconds[name] / bare for name in MEASURES}
        print(f"--- {result['master']} (Spark session start-up {result['startup_seconds']:.1f} s)")
        for name in MEASURES:
            each = " ".join(f"{s:.1f}" for s in result["seconds_each"][name])
            print(f"{name:<28}{seconds[name]:>8.2f} s  {seconds[name] / bare:>5.2f}x bare   ({each})")
    if len(results) >= 2:
        first, second = results[0]["seconds"], results[1]["seconds"]
        summary["speedup"] = {name: second[name] / first[name] for name in MEASURES}
        print(f"speed-up {results[0]['master']} over {results[1]['master']}: "
              + ", ".join(f"{name} {value:.2f}x" for name, value in summary["speedup"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
