"""Integrations' cost: attach() on a Hugging Face Trainer step, and sequence log() on token logits.

Measured in one process, interleaved and repeated, reported as medians and ratios (machines are noisy):

1. a small BERT-style classifier (4 layers, hidden 256, sequence 128, batch 16) built from a config, on
   the CPU: seconds per Trainer step (median) with ``attach`` recording and with its ``log()`` switched
   off, in blocks of ``--steps`` steps in ABBA order within one training run (``--pairs`` ABBA groups);
2. a LoRA ``trl.SFTTrainer`` step (a Llama built from a config: 2 layers, hidden 256, vocabulary 32,000,
   sequence 128, batch 4, completion-only loss) with ``attach`` and without it (TRL's own ``compute_loss``,
   its fused LM head), switched by blocks in ABBA order within one training run; and the loss check's
   cost: ``log()`` of one such batch with the check (one host sync) against without it;
3. sequence statistics on ``[B, T, V]`` logits (V = 32,000): ``tdlog.recorder.sequence.sequence_statistics``
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
LLM_VOCABULARY, LLM_BATCH = 32_000, 4  # the LoRA SFT step


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


def sft_steps(run_dir: Path, blocks: int, steps: int) -> tuple[list[float], list[float], object]:
    """Seconds per LoRA SFTTrainer step without and with ``attach``, in ABBA blocks of one training run: the
    trainer's ``compute_loss`` is switched between TRL's own (the id column dropped) and the attached one.
    Returns the two lists and the trainer (for the loss-check measurement)."""
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(LLM_VOCABULARY - 3)]
    vocabulary = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    vocabulary.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocabulary, pad_token="<pad>", eos_token="<eos>")
    rng = np.random.default_rng(0)
    total = 1 + blocks * steps
    rows = rng.integers(0, LLM_VOCABULARY - 3, size=(LLM_BATCH * total, SEQUENCE - 1))
    data = add_sample_ids(Dataset.from_dict({
        "prompt": [" ".join(f"w{i}" for i in row[:SEQUENCE // 2]) for row in rows],
        "completion": [" " + " ".join(f"w{i}" for i in row[SEQUENCE // 2:]) for row in rows]}))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=LLM_VOCABULARY, hidden_size=256, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
                                         max_position_embeddings=SEQUENCE, pad_token_id=0, eos_token_id=1))
    schedule = [False] + [(block % 4) in (1, 2) for block in range(blocks) for _ in range(steps)]
    starts: list[float] = []
    compute = {}

    class Switch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())
            on = schedule[min(len(starts) - 1, len(schedule) - 1)]
            trainer.compute_loss = compute["attached" if on else "plain"]

        def on_train_end(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())

    out = tempfile.mkdtemp()
    config = SFTConfig(output_dir=out, max_steps=total, per_device_train_batch_size=LLM_BATCH, max_length=SEQUENCE,
                       save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-4)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), callbacks=[Switch()])
    own = trainer.compute_loss

    def plain(model, inputs, *args, **kwargs):
        inputs.pop("sample_id")
        return own(model, inputs, *args, **kwargs)

    recording = attach(trainer, run_dir)
    compute.update(plain=plain, attached=trainer.compute_loss)
    trainer.train()
    recording.close()
    durations = np.diff(starts)[1:]
    modes = np.array(schedule[1:len(durations) + 1])
    return durations[~modes].tolist(), durations[modes].tolist(), recording


def loss_check_cost(repeats: int) -> tuple[float, float]:
    """Median seconds of ``log()`` of one SFT-sized batch of token logits with the loss check (due on every
    call) and without it."""
    from tdlog.recorder import Recorder
    from tdlog.recorder import loss_check as check

    logits = torch.randn(LLM_BATCH, SEQUENCE, LLM_VOCABULARY)
    labels = torch.randint(0, LLM_VOCABULARY, (LLM_BATCH, SEQUENCE))
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, LLM_VOCABULARY), labels[:, 1:].reshape(-1))
    with_check, without = [], []
    with tempfile.TemporaryDirectory() as runs:
        recorder = Recorder(Path(runs) / "run", num_classes=LLM_VOCABULARY)
        for _ in range(repeats):
            check.FIRST_BATCHES = 10**9  # every call checked
            start = time.perf_counter()
            recorder.log(torch.arange(LLM_BATCH), logits, labels, epoch=0, shift=True, batch_loss=loss)
            with_check.append(time.perf_counter() - start)
            start = time.perf_counter()
            recorder.log(torch.arange(LLM_BATCH), logits, labels, epoch=0, shift=True)
            without.append(time.perf_counter() - start)
        assert recorder.loss_check.mismatched == 0 and recorder.loss_check.checked == repeats
        recorder.close()
    return statistics.median(with_check), statistics.median(without)


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
    with tempfile.TemporaryDirectory() as runs:
        sft_plain, sft_recorded, _ = sft_steps(Path(runs) / "run", 4 * args.pairs, args.steps)
    sft_plain_s, sft_recorded_s = statistics.median(sft_plain), statistics.median(sft_recorded)
    checked_s, unchecked_s = loss_check_cost(args.repeats)

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
        "sft_lora_step_s": {"plain": sft_plain_s, "attached": sft_recorded_s,
                            "overhead_percent": 100 * (sft_recorded_s / sft_plain_s - 1),
                            "steps": [sft_plain, sft_recorded]},
        "loss_check": {"log_checked_s": checked_s, "log_unchecked_s": unchecked_s,
                       "percent_of_sft_step": 100 * (checked_s - unchecked_s) / sft_plain_s},
        "sequence": {"shape": [*TOKENS, VOCABULARY], "tdlog_s": statistics.median(ours),
                     "cross_entropy_s": statistics.median(theirs),
                     "ratio": statistics.median(ours) / statistics.median(theirs),
                     "peak_extra_mib": memory},
    }
    rows = [
        ("Trainer step, BERT 4x256, seq 128, batch 16, log() off (s, median)", f"{step_plain:.3f}"),
        ("the same, recording (s, median)", f"{step_recorded:.3f}"),
        ("attach() overhead", f"{result['trainer_step_s']['overhead_percent']:.1f} %"),
        ("LoRA SFTTrainer step, Llama 2x256, vocab 32k, seq 128, batch 4, TRL's loss (s, median)",
         f"{sft_plain_s:.3f}"),
        ("the same, attach() recording (s, median)", f"{sft_recorded_s:.3f}"),
        ("attach() overhead on the SFT step", f"{result['sft_lora_step_s']['overhead_percent']:.1f} %"),
        ("loss check on a checked batch, % of the SFT step",
         f"{result['loss_check']['percent_of_sft_step']:.2f} %"),
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
