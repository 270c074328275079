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
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from aum import AUMCalculator

from tdlog.recorder import Recorder

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


class TrainingStep:
    """A small CPU training step (MLP 64-256-256-10 on 512x64 inputs), optionally logging its batch."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.inputs, self.labels = torch.randn(BATCH, 64), torch.randint(0, 10, (BATCH,))
        self.ids = torch.arange(BATCH)

    def __call__(self, rec: Recorder | None, epoch: int) -> None:
        logits = self.model(self.inputs)
        loss = F.cross_entropy(logits, self.labels, reduction="none")
        if rec is not None:
            rec.log(self.ids, logits, self.labels, loss=loss, epoch=epoch)
        self.optimizer.zero_grad()
        loss.mean().backward()
        self.optimizer.step()


def time_overhead(run_dir: Path, threads: int, pairs: int, steps: int) -> list[tuple[float, float]]:
    """Per pair of blocks, seconds per step without ``log()`` and with it (the block's time including the
    ``flush()`` that commits its rows), with torch using ``threads`` threads.

    Blocks alternate (ABBA) so that drift of the machine's speed cancels; one model and one recorder serve
    every block, so only the per-step cost is measured, not opening a run.
    """
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    step = TrainingStep()
    pair_seconds = []
    with Recorder(run_dir, num_classes=10) as rec:
        for _ in range(20):
            step(rec, 0)
        rec.flush()
        epoch = 1

        def block(logged: bool) -> float:
            nonlocal epoch
            start = time.perf_counter()
            for index in range(steps):
                step(rec if logged else None, epoch + index // 50)
            if logged:
                rec.flush()
                epoch += steps // 50 + 1
            return (time.perf_counter() - start) / steps

        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            seconds = dict(zip(order, (block(logged) for logged in order), strict=True))
            pair_seconds.append((seconds[False], seconds[True]))
    torch.set_num_threads(default_threads)
    return pair_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--log-calls", type=int, default=256)
    parser.add_argument("--aum-calls", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=16, help="pairs of training blocks per configuration")
    parser.add_argument("--train-steps", type=int, default=200, help="steps per training block")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recorder.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    logits, targets, ids = torch.randn(BATCH, CLASSES), torch.randint(0, CLASSES, (BATCH,)), torch.arange(BATCH)
    calls, sustained, aum_calls = [], [], []
    cores = os.cpu_count() or 1
    configurations = {"all cores to torch": torch.get_num_threads()}
    if cores > 1:
        configurations["one core left to the writer"] = cores - 1
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            call, total = time_log(Path(scratch) / f"log{repeat}", logits, targets, ids, args.log_calls)
            calls.append(call)
            sustained.append(total)
            aum_calls.append(time_aum(Path(scratch) / f"aum{repeat}", logits, targets, ids, args.aum_calls))
        training = {
            name: time_overhead(Path(scratch) / f"train{threads}", threads, args.pairs, args.train_steps)
            for name, threads in configurations.items()
        }

    med = statistics.median
    rate = {name: BATCH / med(values) for name, values in
            {"log_call": calls, "log_sustained": sustained, "aum_update": aum_calls}.items()}
    overhead = {}
    for name, pairs in training.items():
        percents = [100 * (logged / base - 1) for base, logged in pairs]
        overhead[name] = {
            "torch_threads": configurations[name],
            "step_ms_without_log": 1e3 * med(base for base, _ in pairs),
            "step_ms_with_log": 1e3 * med(logged for _, logged in pairs),
            "overhead_percent_median": med(percents),
            "overhead_percent_all": percents,
        }
    result = {
        "machine": f"{platform.machine()} {cores} cores, torch {torch.__version__}",
        "batch": BATCH,
        "classes": CLASSES,
        "repeats": args.repeats,
        "sample_updates_per_s": rate,
        "ratio_log_call_vs_aum": rate["log_call"] / rate["aum_update"],
        "ratio_log_sustained_vs_aum": rate["log_sustained"] / rate["aum_update"],
        "training_step_overhead": overhead,
        "targets": {"ratio_vs_aum": ">= 50", "overhead_percent": "< 3"},
    }
    print(f"{'measure':<58}{'value':>16}")
    print(f"{'aum update (sample-updates/s)':<58}{rate['aum_update']:>16,.0f}")
    print(f"{'tdlog log() call (sample-updates/s)':<58}{rate['log_call']:>16,.0f}")
    print(f"{'tdlog log() sustained, flushed':<58}{rate['log_sustained']:>16,.0f}")
    print(f"{'ratio log() call / aum':<58}{result['ratio_log_call_vs_aum']:>15.1f}x")
    print(f"{'ratio log() sustained / aum':<58}{result['ratio_log_sustained_vs_aum']:>15.1f}x")
    for name, row in overhead.items():
        label = f"MLP step, {name} ({row['torch_threads']} threads)"
        steps_ms = f"{row['step_ms_without_log']:.3f} / {row['step_ms_with_log']:.3f}"
        print(f"{label + ': ms without / with log':<58}{steps_ms:>16}")
        print(f"{label + ': overhead, median (%)':<58}{row['overhead_percent_median']:>16.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
