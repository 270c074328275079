"""Selection speed and memory: ``run.select(method="s2l")`` end to end versus bare FAISS k-means on the same
trajectories already in memory.

Writes a synthetic run of N examples x E checkpoints with the real recorder (two classes; each example's
margin grows at one of eight rates, so its loss trajectory falls at one of eight speeds, plus noise), then
measures, each in a fresh process, interleaved ``--repeats`` times (this machine is noisy):

1. ``bare``: the trajectory matrix ``[N, E]`` float32 read into memory first (not timed), then
   ``faiss.Kmeans(E, K, niter=20, seed=0)`` trained on it (FAISS samples 256 K rows itself) and every row
   assigned to its nearest centroid (``index.search(matrix, 1)``) - the floor of any S2L;
2. ``select``: ``open_run(run).select(budget, method="s2l", clusters=K)``: reading the records, the
   training sample, k-means, the assignment in blocks, the balanced draw, the selection as a table.

3. ``read``: a bare DuckDB read of the same records' ``sample_id, epoch, loss`` into Arrow
   (``read_parquet`` over the files, no tdlog): the floor any selection pays to get the trajectories off disk,
   which ``bare`` does not include.

Reports the median wall times, their ratios, every pair's ratio, and each process's peak RSS; writes JSON.
The child processes inherit the environment: ``NUMPY_MADVISE_HUGEPAGE=0`` stops NumPy asking for transparent
huge pages, which on kernels that compact memory for them on first touch (THP ``defrag=madvise``) makes
every large fresh array slow to fill (the JSON records the setting).

Usage: python benchmarks/select.py [--samples 10000000] [--epochs 10] [--clusters 100] [--budget 0.1]
                                   [--repeats 3] [--run DIR] [--small]
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
import subprocess
import tempfile
import time

BATCH = 1 << 17
RATES = 8


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def write_run(path: Path, samples: int, epochs: int) -> float:
    """Record ``epochs`` epochs of two-class logits for ``samples`` examples; return seconds taken."""
    import torch

    from tdlog.recorder import Recorder

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (samples,), generator=generator)
    rates = torch.randint(0, RATES, (samples,), generator=generator).float() / RATES
    with Recorder(path, num_classes=2, flush_rows=1 << 20, coalesce_rows=1 << 17) as rec:
        for epoch in range(epochs):
            for first in range(0, samples, BATCH):
                ids = torch.arange(first, min(first + BATCH, samples))
                logits = torch.randn(len(ids), 2, generator=generator) * 0.5
                logits[torch.arange(len(ids)), labels[ids]] += rates[ids] * epoch
                rec.log(ids, logits, labels[ids], epoch=epoch)
            print(f"\rwriting epoch {epoch + 1}/{epochs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - start


def measure_bare(run: Path, clusters: int) -> dict:
    import faiss
    import numpy as np

    import tdlog.analytics as analytics
    from tdlog.analytics.selection import candidate_blocks, excluded_ids

    with analytics.open_run(run) as opened:
        epochs = opened.epochs()
        blocks = list(candidate_blocks(opened.engine, split="train", epoch_list=epochs, block_values=1 << 40,
                                       excluded=excluded_ids(opened.engine)))
    matrix = np.ascontiguousarray(np.concatenate([b[1] for b in blocks]))
    del blocks
    start = time.perf_counter()
    kmeans = faiss.Kmeans(matrix.shape[1], clusters, niter=20, seed=0, verbose=False)
    kmeans.train(matrix)
    _, assigned = kmeans.index.search(matrix, 1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(assigned), "peak_rss_gib": peak_rss_gib()}


def measure_read(run: Path) -> dict:
    import duckdb

    start = time.perf_counter()
    rows = 0
    query = (f"SELECT sample_id, epoch, loss FROM read_parquet('{run}/records/*/*/*.parquet', "
             "hive_partitioning = true)")
    for batch in duckdb.connect().sql(query).to_arrow_reader(1 << 20):
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - start, "rows": rows, "peak_rss_gib": peak_rss_gib()}


def measure_select(run: Path, clusters: int, budget: float) -> dict:
    import tdlog.analytics as analytics

    start = time.perf_counter()
    with analytics.open_run(run) as opened:
        chosen = opened.select(budget, method="s2l", clusters=clusters)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": chosen.height, "clusters": chosen["cluster"].n_unique(),
            "peak_rss_gib": peak_rss_gib()}


def child(measure: str, run: Path, clusters: int, budget: float) -> dict:
    """Run one measure in a fresh process (its own peak RSS, nothing cached in this one)."""
    output = subprocess.run([sys.executable, __file__, "--measure", measure, "--run", str(run), "--clusters",
                             str(clusters), "--budget", str(budget)], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--budget", type=float, default=0.1, help="share of the examples selected")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="1,000,000 examples (a quick check)")
    parser.add_argument("--run", type=Path, default=None, help="reuse (or keep) the synthetic run here")
    parser.add_argument("--measure", choices=("bare", "read", "select"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/select.json"))
    args = parser.parse_args()
    if args.measure:
        measures = {"bare": lambda: measure_bare(args.run, args.clusters), "read": lambda: measure_read(args.run),
                    "select": lambda: measure_select(args.run, args.clusters, args.budget)}
        measure = measures[args.measure]()
        print(json.dumps(measure))
        return
    if args.small:
        args.samples = 1_000_000

    scratch = None
    if args.run is None:
        scratch = Path(tempfile.mkdtemp(prefix="tdlog-select-"))
        args.run = scratch / "run"
    try:
        write_seconds = None
        if not (args.run / "run.json").exists():
            write_seconds = write_run(args.run, args.samples, args.epochs)
        bare, read, chosen = [], [], []
        for _ in range(args.repeats):
            bare.append(child("bare", args.run, args.clusters, args.budget))
            read.append(child("read", args.run, args.clusters, args.budget))
            chosen.append(child("select", args.run, args.clusters, args.budget))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    bare_seconds = statistics.median(m["seconds"] for m in bare)
    select_seconds = statistics.median(m["seconds"] for m in chosen)
    read_seconds = statistics.median(m["seconds"] for m in read)
    assert all(m["rows"] == round(args.budget * args.samples) for m in chosen), chosen
    result = {
        "machine": f"{platform.machine()} cores {len(os.sched_getaffinity(0))}",
        "NUMPY_MADVISE_HUGEPAGE": os.environ.get("NUMPY_MADVISE_HUGEPAGE"),
        "samples": args.samples,
        "epochs": args.epochs,
        "clusters": args.clusters,
        "budget": args.budget,
        "write_seconds": write_seconds,
        "bare_seconds": bare_seconds,
        "select_seconds": select_seconds,
        "ratio_select_vs_bare": select_seconds / bare_seconds,
        "ratios_each": [s["seconds"] / b["seconds"] for s, b in zip(chosen, bare, strict=True)],
        "read_seconds": read_seconds,
        "ratio_select_vs_read_plus_bare": select_seconds / (read_seconds + bare_seconds),
        "ratios_vs_read_plus_bare_each": [s["seconds"] / (r["seconds"] + b["seconds"])
                                          for s, r, b in zip(chosen, read, bare, strict=True)],
        "read_each": read,
        "bare_each": bare,
        "select_each": chosen,
        "select_peak_rss_gib": max(m["peak_rss_gib"] for m in chosen),
        "bare_peak_rss_gib": max(m["peak_rss_gib"] for m in bare),
        "targets": {"ratio": "<= 1.5", "select_peak_rss_gib": "<= 4"},
    }
    print(f"{'measure':<40}{'value':>14}")
    print(f"{'examples x checkpoints':<40}{f'{args.samples:,} x {args.epochs}':>14}")
    print(f"{'bare FAISS k-means + assign (s, median)':<40}{bare_seconds:>14.2f}")
    print(f"{'select(method=s2l) (s, median)':<40}{select_seconds:>14.2f}")
    print(f"{'ratio of the medians':<40}{result['ratio_select_vs_bare']:>13.2f}x")
    each = " ".join(f"{r:.2f}" for r in result["ratios_each"])
    print(f"{'ratio of each pair':<40}{each:>14}")
    print(f"{'bare DuckDB read of the records (s)':<40}{read_seconds:>14.2f}")
    print(f"{'select vs read + bare k-means':<40}{result['ratio_select_vs_read_plus_bare']:>13.2f}x")
    each = " ".join(f"{r:.2f}" for r in result["ratios_vs_read_plus_bare_each"])
    print(f"{'  each':<40}{each:>14}")
    print(f"{'select peak RSS (GiB)':<40}{result['select_peak_rss_gib']:>14.2f}")
    print(f"{'bare peak RSS (GiB, matrix in memory)':<40}{result['bare_peak_rss_gib']:>14.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
