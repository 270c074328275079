"""Engine speed and memory: ``run.scores()`` versus a bare DuckDB aggregate over the same Parquet columns.

Writes a synthetic run of N samples x E epochs with the real recorder (10 classes plus the threshold class,
N // 11 threshold samples, batches of 65,536), then, in this one process:

1. ``bare``: one DuckDB ``GROUP BY sample_id`` over the records files reading the columns the scores use
   (margin, loss, prob, el2n, pred, target, epoch) - the floor any engine pays to scan them;
2. ``scores``: ``analytics.open_run(run).scores(epochs=None)`` - every epoch: attempt resolution, per-epoch
   averaging, every score, the threshold cutoff, the GMM on AUL and the join with the samples table, as a
   Polars DataFrame;
3. ``auto``: ``scores()`` with its default ``epochs="auto"``: the epoch-window search (one more pass over
   the records) and then the scores over the chosen window.

Before them, once: the readers' content checks of every data file (page checksums, footer statistics:
what ``open_run`` does the first time it sees a file) on a cold cache, and again with every file's
identity known (what every later ``open_run`` pays). The three are interleaved ``--repeats`` times (this
machine is noisy); reports the median wall times, the ratios of the medians, every ratio, and the
process's peak RSS; writes JSON.

Usage: python benchmarks/engine.py [--samples 1000000] [--epochs 100] [--small] [--repeats 3]
                                   [--memory-limit 3GB] [--run DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time

import duckdb
import sklearn.mixture  # noqa: F401  (imported here: its import time is not part of what is measured)
import torch

import tdlog.analytics as analytics
from tdlog.analytics.integrity import CheckedFiles
from tdlog.analytics.store import RunStore
from tdlog.recorder import Recorder, threshold_samples

CLASSES, BATCH = 10, 65_536


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def write_run(path: Path, samples: int, epochs: int) -> float:
    """Record ``epochs`` epochs of random logits for ``samples`` samples; return seconds taken."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (samples,), generator=generator)
    targets = threshold_samples(labels, CLASSES, seed=0)
    with Recorder(path, num_classes=CLASSES, with_threshold_class=True, flush_rows=1 << 20,
                  coalesce_rows=1 << 17) as rec:
        rec.register_samples(torch.arange(samples), labels, targets=targets)
        for epoch in range(epochs):
            for first in range(0, samples, BATCH):
                ids = torch.arange(first, min(first + BATCH, samples))
                logits = torch.randn(len(ids), CLASSES + 1, generator=generator)
                logits[torch.arange(len(ids)), labels[ids]] += epoch / epochs * 4
                rec.log(ids, logits, targets[ids], epoch=epoch)
            print(f"\rwriting epoch {epoch + 1}/{epochs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - start


def bare_scan(path: Path, threads: int | None, memory_limit: str | None) -> tuple[float, int]:
    config = {"memory_limit": memory_limit} if memory_limit else {}
    if threads:
        config["threads"] = threads
    connection = duckdb.connect(config=config)
    start = time.perf_counter()
    rows = connection.sql(
        f"SELECT sample_id, avg(margin) AS aum, sum(loss) AS aul, avg(prob) AS confidence, "
        f"stddev_pop(prob) AS variability, avg(CASE WHEN pred = target THEN 1.0 ELSE 0.0 END) AS correctness, "
        f"avg(CASE WHEN epoch < 10 THEN el2n END) AS el2n, count(*) AS epochs "
        f"FROM read_parquet('{path}/records/*/*/*.parquet', hive_partitioning = true) GROUP BY sample_id"
    ).pl().height
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed, rows


def time_file_checks(path: Path, cache: Path) -> tuple[float, float]:
    """Seconds of the readers' content checks of every data file (page checksums, footer statistics,
    attempt and rank: :mod:`tdlog.analytics.integrity`) on a cold identity cache, then with every
    identity known (what each later ``open_run`` pays)."""
    store = RunStore(path)
    files = store.snapshot().files
    names = files.records + files.samples
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        CheckedFiles(store.location).check(store.identities_of(names), store.source, store.location)
        timings.append(time.perf_counter() - start)
    assert any(cache.rglob("*.json"))
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--small", action="store_true", help="100,000 samples x 20 epochs (a quick check)")
    parser.add_argument("--repeats", type=int, default=3, help="bare / scores pairs, interleaved")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-limit", default="3GB", help="DuckDB memory limit for both queries")
    parser.add_argument("--run", type=Path, default=None, help="reuse (or keep) the synthetic run here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine.json"))
    args = parser.parse_args()
    if args.small:
        args.samples, args.epochs = 100_000, 20

    scratch = None
    scratch_cache = Path(tempfile.mkdtemp(prefix="tdlog-engine-cache-"))
    os.environ["TDLOG_CACHE_DIR"] = str(scratch_cache)  # the file checks start cold, whatever ran before
    if args.run is None:
        scratch = Path(tempfile.mkdtemp(prefix="tdlog-engine-"))
        args.run = scratch / "run"
    try:
        write_seconds = None
        if not (args.run / "run.json").exists():
            write_seconds = write_run(args.run, args.samples, args.epochs)
        size = sum(f.stat().st_size for f in args.run.rglob("*.parquet"))
        check_seconds, warm_check_seconds = time_file_checks(args.run, scratch_cache)
        bare_times, score_times, auto_times = [], [], []
        for _ in range(args.repeats):
            bare_seconds, bare_rows = bare_scan(args.run, args.threads, args.memory_limit)
            bare_times.append(bare_seconds)
            rss_after_bare = peak_rss_gib()
            for epochs, times in ((None, score_times), ("auto", auto_times)):
                start = time.perf_counter()
                with analytics.open_run(args.run, threads=args.threads, memory_limit=args.memory_limit) as run:
                    scores = run.scores(epochs=epochs)
                    times.append(time.perf_counter() - start)  # "auto" searched the window inside scores()
                    window = run.epoch_window()
                assert scores.height == bare_rows == args.samples, (scores.height, bare_rows)
                del scores
        bare_seconds, score_seconds = statistics.median(bare_times), statistics.median(score_times)
        auto_seconds = statistics.median(auto_times)
    finally:
        shutil.rmtree(scratch_cache, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "machine": f"{platform.machine()} duckdb {duckdb.__version__} cores {torch.get_num_threads()}",
        "samples": args.samples,
        "epochs": args.epochs,
        "rows": args.samples * args.epochs,
        "parquet_bytes": size,
        "write_seconds": write_seconds,
        "bare_scan_seconds": bare_seconds,
        "file_check_cold_seconds": check_seconds,
        "file_check_warm_seconds": warm_check_seconds,
        "ratio_file_check_cold_vs_bare": check_seconds / bare_seconds,
        "ratio_file_check_warm_vs_bare": warm_check_seconds / bare_seconds,
        "scores_seconds": score_seconds,
        "auto_seconds": auto_seconds,
        "chosen_window": [window.epochs.start, window.epochs.stop],
        "repeats": args.repeats,
        "bare_scan_seconds_each": bare_times,
        "scores_seconds_each": score_times,
        "auto_seconds_each": auto_times,
        "ratio_scores_vs_bare": score_seconds / bare_seconds,
        "ratio_auto_vs_bare": auto_seconds / bare_seconds,
        "ratios_each": [s / b for s, b in zip(score_times, bare_times, strict=True)],
        "auto_ratios_each": [s / b for s, b in zip(auto_times, bare_times, strict=True)],
        "peak_rss_gib_after_bare": rss_after_bare,
        "peak_rss_gib": peak_rss_gib(),
        "memory_limit": args.memory_limit,
        "targets": {"ratio": "<= 2", "auto_ratio": "<= 1.5", "peak_rss_gib": "<= 4"},
    }
    print(f"{'measure':<34}{'value':>14}")
    print(f"{'rows (samples x epochs)':<34}{result['rows']:>14,}")
    print(f"{'parquet size (MiB)':<34}{size / 2**20:>14,.0f}")
    print(f"{'bare DuckDB aggregate (s, median)':<34}{bare_seconds:>14.2f}")
    print(f"{'file checks, first read (s)':<34}{check_seconds:>14.2f}")
    print(f"{'  ratio to the bare aggregate':<34}{result['ratio_file_check_cold_vs_bare']:>13.2f}x")
    print(f"{'file checks, identities known (s)':<34}{warm_check_seconds:>14.3f}")
    print(f"{'  ratio to the bare aggregate':<34}{result['ratio_file_check_warm_vs_bare']:>13.3f}x")
    print(f"{'scores(epochs=None) (s, median)':<34}{score_seconds:>14.2f}")
    print(f"{'ratio of the medians':<34}{result['ratio_scores_vs_bare']:>13.2f}x")
    each = " ".join(f"{r:.2f}" for r in result["ratios_each"])
    print(f"{'ratio of each pair':<34}{each:>14}")
    print(f"{'scores() epochs=auto (s, median)':<34}{auto_seconds:>14.2f}")
    print(f"{'ratio of the medians':<34}{result['ratio_auto_vs_bare']:>13.2f}x")
    each = " ".join(f"{r:.2f}" for r in result["auto_ratios_each"])
    print(f"{'ratio of each pair':<34}{each:>14}")
    print(f"{'chosen window':<34}{f'{window.epochs.start}:{window.epochs.stop}':>14}")
    print(f"{'peak RSS (GiB)':<34}{result['peak_rss_gib']:>14.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
