"""MAP-D speed and memory: ``run.mapd()`` end to end versus bare FAISS search on the same in-memory matrix.

Writes a synthetic run with the real recorder: N samples x E epochs plus 1,500 probes (5 suites x 300, all
``reference``), each sample's given loss following one suite's trajectory plus noise. Then, in this process:

1. ``run.mapd(k=20)``: trajectories streamed from the Parquet files through DuckDB in blocks (per-epoch mean
   loss, forward fill), exact L2 FAISS index over the probes, votes per suite, a Polars DataFrame;
2. ``bare``: the same search with the trajectory matrix already in memory (``IndexFlatL2.search`` plus the
   vote count) - the floor of any MAP-D implementation.

The two are interleaved ``--repeats`` times (this machine is noisy); reports the median wall times, the ratio
of the medians, every ratio, and the peak RSS after the first ``run.mapd()`` (before the bare matrix is
loaded).
``--device cuda`` runs both on the GPU (FAISS with GPU support). Writes JSON.

Usage: python benchmarks/mapd.py [--samples 1000000] [--epochs 100] [--small] [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time

import faiss
import numpy as np
import torch

import tdlog.analytics as analytics
from tdlog.analytics.probes import ProbeIndex
from tdlog.recorder import Recorder

CLASSES, BATCH, K = 10, 65_536, 20
SUITES = ("clean", "atypical", "corrupted", "random_inputs", "random_labels")
PER_SUITE = 300


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def suite_curves(epochs: int) -> np.ndarray:
    """``[len(SUITES), epochs]`` mean loss curves: fast, slower and never-learned decays."""
    t = np.linspace(0, 1, epochs)
    rates = np.array([6.0, 3.0, 4.0, 1.5, 0.4])
    return (2.3 * np.exp(-rates[:, None] * t[None, :])).astype(np.float32)


def write_run(path: Path, samples: int, epochs: int, matrix_file: Path) -> float:
    """Record the run; save the trajectory matrix, probes last (the bare baseline's input)."""
    start = time.perf_counter()
    total = samples + len(SUITES) * PER_SUITE
    rng = np.random.default_rng(0)
    suite_of = np.concatenate([rng.integers(0, len(SUITES), samples), np.repeat(np.arange(len(SUITES)), PER_SUITE)])
    curves = suite_curves(epochs)
    matrix = np.lib.format.open_memmap(matrix_file, mode="w+", dtype=np.float32, shape=(total, epochs))
    labels = torch.zeros(total, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    with Recorder(path, num_classes=CLASSES, flush_rows=1 << 20, coalesce_rows=1 << 17) as rec:
        rec.register_samples(torch.arange(samples), labels[:samples])
        rec.register_samples(torch.arange(samples, total), labels[samples:],
                             probe=[SUITES[s] for s in suite_of[samples:]], probe_role="reference")
        for epoch in range(epochs):
            for first in range(0, total, BATCH):
                ids = np.arange(first, min(first + BATCH, total))
                loss = np.maximum(curves[suite_of[ids], epoch] + rng.normal(0, 0.2, len(ids)), 0).astype(np.float32)
                matrix[ids, epoch] = loss
                rec.log(torch.from_numpy(ids), torch.randn(len(ids), CLASSES, generator=generator), labels[ids],
                        loss=torch.from_numpy(loss), epoch=epoch)
            print(f"\rwriting epoch {epoch + 1}/{epochs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    matrix.flush()
    return time.perf_counter() - start


def bare_search(matrix: np.ndarray, probes: np.ndarray, probe_suite: np.ndarray, device: str) -> float:
    """FAISS exact search of every row against the probes plus the vote count; seconds."""
    start = time.perf_counter()
    index = ProbeIndex.build(probes, probe_suite, device=device)
    votes = index.vote(matrix, K)
    assert votes.shape == (len(matrix), len(SUITES))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--small", action="store_true", help="100,000 samples x 20 epochs (a quick check)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="mapd / bare pairs, interleaved")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-limit", default="3GB", help="DuckDB memory limit")
    parser.add_argument("--run", type=Path, default=None, help="reuse (or keep) the synthetic run here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mapd.json"))
    args = parser.parse_args()
    if args.small:
        args.samples, args.epochs = 100_000, 20

    scratch = None
    if args.run is None:
        scratch = Path(tempfile.mkdtemp(prefix="tdlog-mapd-"))
        args.run = scratch / "run"
    args.run.parent.mkdir(parents=True, exist_ok=True)
    matrix_file = args.run.parent / f"{args.run.name}-trajectories.npy"
    try:
        write_seconds = None
        if not (args.run / "run.json").exists():
            write_seconds = write_run(args.run, args.samples, args.epochs, matrix_file)
        mapd_times, bare_times, mapd_rss, matrix = [], [], None, None
        probe_suite = np.repeat(np.array(SUITES), PER_SUITE)
        for _ in range(args.repeats):
            start = time.perf_counter()
            with analytics.open_run(args.run, threads=args.threads, memory_limit=args.memory_limit) as run:
                assigned = run.mapd(k=K, device=args.device)
            mapd_times.append(time.perf_counter() - start)
            mapd_rss = mapd_rss or peak_rss_gib()
            assert assigned.height == args.samples + len(SUITES) * PER_SUITE, assigned.height
            del assigned
            matrix = np.load(matrix_file) if matrix is None else matrix
            bare_times.append(bare_search(matrix, matrix[args.samples:], probe_suite, args.device))
        mapd_seconds, bare_seconds = statistics.median(mapd_times), statistics.median(bare_times)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "machine": f"{platform.machine()} faiss {faiss.__version__} cores {torch.get_num_threads()}",
        "device": args.device,
        "samples": args.samples,
        "epochs": args.epochs,
        "probes": len(SUITES) * PER_SUITE,
        "k": K,
        "write_seconds": write_seconds,
        "mapd_seconds": mapd_seconds,
        "bare_faiss_seconds": bare_seconds,
        "repeats": args.repeats,
        "mapd_seconds_each": mapd_times,
        "bare_faiss_seconds_each": bare_times,
        "ratio_mapd_vs_bare": mapd_seconds / bare_seconds,
        "ratios_each": [m / b for m, b in zip(mapd_times, bare_times, strict=True)],
        "peak_rss_gib_mapd": mapd_rss,
        "memory_limit": args.memory_limit,
        "targets": {"ratio": "<= 1.5"},
    }
    print(f"{'measure':<34}{'value':>14}")
    print(f"{'trajectories x epochs':<34}{args.samples:>10,} x {args.epochs}")
    print(f"{'probes (reference), k':<34}{result['probes']:>10,}, {K}")
    print(f"{'run.mapd() end to end (s, median)':<34}{mapd_seconds:>14.2f}")
    print(f"{'bare FAISS in memory (s, median)':<34}{bare_seconds:>14.2f}")
    print(f"{'ratio of the medians':<34}{result['ratio_mapd_vs_bare']:>13.2f}x")
    each = " ".join(f"{r:.2f}" for r in result["ratios_each"])
    print(f"{'ratio of each pair':<34}{each:>14}")
    print(f"{'peak RSS of run.mapd (GiB)':<34}{mapd_rss:>14.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
