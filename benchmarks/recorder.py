"""Recorder speed: tdlog's Recorder.log versus aum.AUMCalculator.update, and log()'s training overhead.

Measured in one process, interleaved and repeated, reported as medians and ratios (machines are noisy):

1. throughput on the same CPU logits (batch 512, 100 classes), in sample-updates per second:
   - ``log() call``: what the training thread pays per call while the writer keeps up;
   - ``log() sustained``: calls plus ``flush()``, i.e. until every row is committed to Parquet;
   - ``aum update``: the ``aum`` package's ``AUMCalculator.update``.
2. overhead of ``log()`` on a small CPU training step (MLP 64-256-256-10 on 512x64 inputs), in percent.

Usage: python benchmarks/recorder.py [--repeats 7] [--out benchmarks/results/recorder.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from aum import AUMCalculator

from recorder import Recorder

BATCH, CLASSES = 512, 100


def time_log(run_dir: Path, logits, targets, ids, calls: int, burst: int = 32) -> tuple[float, float]:
    """Seconds per call of log() on the training thread, and per call until every row is committed.

    The first figure times bursts of ``burst`` calls (16,384 rows, well inside the writer's queue) and
    flushes between bursts outside the clock: what a training step pays while the writer keeps up, which
    it does whenever a step takes longer than the writer's work per batch. The second figure times all
    calls back to back plus the final flush: the writer thread's sustained rate.
    """
    with Recorder(run_dir, num_classes=CLASSES) as rec:
        rec.log(ids, logits, targets, epoch=0)
        rec.flush()
        in_calls = 0.0
        for first in range(0, calls, burst):
            start = time.perf_counter()
            for step in range(first, min(first + burst, calls)):
                rec.log(ids, logits, targets, epoch=1 + step // 64)
            in_calls += time.perf_counter() - start
            rec.flush()
        start = time.perf_counter()
        for step in range(calls):
            rec.log(ids, logits, targets, epoch=1000 + step // 64)
        rec.flush()
        flushed = time.perf_counter()
    return in_calls / calls, (flushed - start) / calls


def time_aum(save_dir: Path, logits, targets, ids, calls: int) -> float:
    calculator = AUMCalculator(str(save_dir))
    id_list = ids.tolist()
    start = time.perf_counter()
    for _ in range(calls):
        calculator.update(logits, targets, id_list)
    return (time.perf_counter() - start) / calls


def time_training(run_dir: Path | None, steps: int) -> float:
    """Seconds per step of a small MLP step, with log() each step when ``run_dir`` is given."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs, labels, ids = torch.randn(BATCH, 64), torch.randint(0, 10, (BATCH,)), torch.arange(BATCH)
    rec = Recorder(run_dir, num_classes=10) if run_dir is not None else None

    def step(epoch: int) -> None:
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels, reduction="none")
        if rec is not None:
            rec.log(ids, logits, labels, loss=loss, epoch=epoch)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()

    for _ in range(20):
        step(0)
    start = time.perf_counter()
    for index in range(steps):
        step(1 + index // 50)
    if rec is not None:
        rec.close()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--log-calls", type=int, default=256)
    parser.add_argument("--aum-calls", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recorder.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    logits, targets, ids = torch.randn(BATCH, CLASSES), torch.randint(0, CLASSES, (BATCH,)), torch.arange(BATCH)
    calls, sustained, aum_calls, base_steps, logged_steps = [], [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            call, total = time_log(Path(scratch) / f"log{repeat}", logits, targets, ids, args.log_calls)
            calls.append(call)
            sustained.append(total)
            aum_calls.append(time_aum(Path(scratch) / f"aum{repeat}", logits, targets, ids, args.aum_calls))
            base_steps.append(time_training(None, args.train_steps))
            logged_steps.append(time_training(Path(scratch) / f"train{repeat}", args.train_steps))

    med = statistics.median
    rate = {name: BATCH / med(values) for name, values in
            {"log_call": calls, "log_sustained": sustained, "aum_update": aum_calls}.items()}
    overheads = [100 * (logged / base - 1) for base, logged in zip(base_steps, logged_steps, strict=True)]
    result = {
        "machine": f"{platform.machine()} torch {torch.__version__} threads {torch.get_num_threads()}",
        "batch": BATCH,
        "classes": CLASSES,
        "repeats": args.repeats,
        "sample_updates_per_s": rate,
        "ratio_log_call_vs_aum": rate["log_call"] / rate["aum_update"],
        "ratio_log_sustained_vs_aum": rate["log_sustained"] / rate["aum_update"],
        "train_step_ms": {"without_log": 1e3 * med(base_steps), "with_log": 1e3 * med(logged_steps)},
        "log_overhead_percent_median": med(overheads),
        "log_overhead_percent_all": overheads,
        "targets": {"ratio_vs_aum": ">= 50", "overhead_percent": "< 3"},
    }
    print(f"{'measure':<38}{'value':>16}")
    print(f"{'aum update (sample-updates/s)':<38}{rate['aum_update']:>16,.0f}")
    print(f"{'tdlog log() call (sample-updates/s)':<38}{rate['log_call']:>16,.0f}")
    print(f"{'tdlog log() sustained, flushed':<38}{rate['log_sustained']:>16,.0f}")
    print(f"{'ratio log() call / aum':<38}{result['ratio_log_call_vs_aum']:>15.1f}x")
    print(f"{'ratio log() sustained / aum':<38}{result['ratio_log_sustained_vs_aum']:>15.1f}x")
    print(f"{'MLP step without log (ms)':<38}{result['train_step_ms']['without_log']:>16.3f}")
    print(f"{'MLP step with log (ms)':<38}{result['train_step_ms']['with_log']:>16.3f}")
    print(f"{'log() overhead, median (%)':<38}{result['log_overhead_percent_median']:>16.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
