"""Integrations' cost: attach() on a Hugging Face Trainer step, and sequence log() on token logits.

Measured in one process, interleaved and repeated, reported as medians and ratios (machines are noisy):

1. a small BERT-style classifier (4 layers, hidden 256, sequence 128, batch 16) built from a config, on
   the CPU: seconds per Trainer step (median) with ``attach`` recording and with its ``log()`` switched
   off, in blocks of ``--steps`` steps in ABBA order within one training run (``--pairs`` ABBA groups);
2. sequence statistics on ``[B, T, V]`` logits (V = 32,000): ``tdlog.recorder.sequence.sequence_statistics``
   (with the scratch buffer the Recorder keeps) against ``torch.nn.functional.cross_entropy`` on the same
   logits (the model's own loss), and the peak extra memory of each (``VmHWM`` of a fresh process, reset
   before the call).

Usage: python benchmarks/integrations.py [--pairs 3] [--steps 5] [--out benchmarks/results/integrations.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

SEQUENCE, BATCH, VOCABULARY = 128, 16, 32_000
TOKENS = (4, 256)  # the [B, T] of the sequence-statistics measurement


def trainer_steps(run_dir: Path, blocks: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds per Trainer step without and with recording, from one training run with ``attach`` in which
    ``log()`` is switched off and on by blocks of ``steps`` steps in ABBA order (one model, one Trainer:
    nothing but the recording differs between the blocks). The first step warms up and is left out."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

    rng = np.random.default_rng(0)
    total = 1 + blocks * steps
    tokens = rng.integers(0, 1000, size=(BATCH * total, SEQUENCE))
    data = add_sample_ids(Dataset.from_dict({"input_ids": tokens.tolist(), "labels": (tokens[:, 0] % 2).tolist()}))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4,
                                                     num_attention_heads=4, intermediate_size=1024,
                                                     max_position_embeddings=SEQUENCE, num_labels=2))
    schedule = [False] + [(block % 4) in (1, 2) for block in range(blocks) for _ in range(steps)]  # A B B A ...
    starts: list[float] = []

    class Switch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())
            switch["on"] = schedule[min(len(starts) - 1, len(schedule) - 1)]

        def on_train_end(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())

    switch = {"on": False}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=total, per_device_train_batch_size=BATCH,
                                 save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Switch()])
        recorder = attach(trainer, run_dir)
        log = recorder.log
        recorder.log = lambda *a, **k: log(*a, **k) if switch["on"] else None
        trainer.train()
        recorder.close()
    durations = np.diff(starts)[1:]
    modes = np.array(schedule[1:len(durations) + 1])
    return durations[~modes].tolist(), durations[modes].tolist()


def sequence_memory(kind: str) -> float:
    """Peak RSS growth (MiB) of one sequence-statistics or cross-entropy pass, in a fresh process."""
    code = (
        "import resource, torch, torch.nn.functional as F\n"
        "from tdlog.recorder.sequence import CHUNK_VALUES, sequence_statistics\n"
        f"B, T, V = {TOKENS[0]}, {TOKENS[1]}, {VOCABULARY}\n"
        "logits = torch.empty(B, T, V).normal_(); targets = torch.randint(0, V, (B, T))\n"
        "def kib(field):\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith(field)).split()[1])\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS\n"
        "before = kib('VmRSS')\n"
        + ("sequence_statistics(logits, targets, scratch=torch.empty(CHUNK_VALUES))\n" if kind == "tdlog" else
           "F.cross_entropy(logits.view(-1, V), targets.view(-1))\n")
        + "print((kib('VmHWM') - before) / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="ABBA groups of Trainer blocks")
    parser.add_argument("--steps", type=int, default=5, help="Trainer steps per block")
    parser.add_argument("--repeats", type=int, default=7, help="sequence-statistics repeats")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/integrations.json"))
    args = parser.parse_args()
    from tdlog.recorder.sequence import CHUNK_VALUES, sequence_statistics

    with tempfile.TemporaryDirectory() as runs:
        plain, recorded = trainer_steps(Path(runs) / "run", 4 * args.pairs, args.steps)
    step_plain, step_recorded = statistics.median(plain), statistics.median(recorded)

    logits = torch.randn(*TOKENS, VOCABULARY)
    targets = torch.randint(0, VOCABULARY, TOKENS)
    scratch = torch.empty(CHUNK_VALUES)  # the Recorder keeps one between calls
    ours, theirs = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sequence_statistics(logits, targets, scratch=scratch)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        F.cross_entropy(logits.view(-1, VOCABULARY), targets.view(-1))
        theirs.append(time.perf_counter() - start)
    memory = {kind: sequence_memory(kind) for kind in ("tdlog", "cross_entropy")}
    result = {
        "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
        "trainer_step_s": {"plain": step_plain, "attached": step_recorded,
                           "overhead_percent": 100 * (step_recorded / step_plain - 1), "steps": [plain, recorded]},
        "sequence": {"shape": [*TOKENS, VOCABULARY], "tdlog_s": statistics.median(ours),
                     "cross_entropy_s": statistics.median(theirs),
                     "ratio": statistics.median(ours) / statistics.median(theirs),
                     "peak_extra_mib": memory},
    }
    rows = [
        ("Trainer step, BERT 4x256, seq 128, batch 16, log() off (s, median)", f"{step_plain:.3f}"),
        ("the same, recording (s, median)", f"{step_recorded:.3f}"),
        ("attach() overhead", f"{result['trainer_step_s']['overhead_percent']:.1f} %"),
        (f"sequence_statistics on {TOKENS[0]}x{TOKENS[1]}x{VOCABULARY} (s)", f"{result['sequence']['tdlog_s']:.3f}"),
        ("F.cross_entropy on the same logits (s)", f"{result['sequence']['cross_entropy_s']:.3f}"),
        ("ratio", f"{result['sequence']['ratio']:.2f}x"),
        ("peak extra memory, tdlog / cross_entropy (MiB)", f"{memory['tdlog']:.0f} / {memory['cross_entropy']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
