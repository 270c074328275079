"""``tdlog demo --task sft``: finding the bad completions of instruction fine-tuning data, on CPU, nothing
downloaded.

1. A made-up instruction a tiny causal LM (a Llama built from a config) learns in seconds: the completion
   repeats the prompt's four words, each moved one word on (``w3 w17 w8 w30`` -> `` w4 w18 w9 w31``).
   A share of the training completions is corrupted, keeping the truth: ``random`` (random words) or
   ``off-by-one`` (a systematic slip: each word moved two on instead of one).
2. Control examples planted (:mod:`tdlog.recorder.controls`: 10 % of the examples get another example's
   completion), fine-tuned with TRL's ``SFTTrainer`` (LoRA with ``lora=True``), every step recorded by
   ``attach`` (loss, token accuracy, token-mean margin); twice by default, with disjoint controls, so that
   every example is scored (``open_runs``: each run on the window its controls choose).
3. Detection against the injected truth, over the real examples: AUM below the controls' cutoff on the
   window they choose (``epochs="auto"``), AUL with its two-component mixture, and the ranking a peer would
   use, the final-epoch loss (its ``k`` most suspicious, ``k`` the true count: generous to it); the noise-rate
   estimates.
4. Retraining without recording on the full (corrupted) data, on the cleaned data (AUM flags dropped) and on
   the truly clean data; exact-match accuracy (all four words) on 500 held-out prompts, the mean of two
   trainings with different initialisations and orders (one training varies by about ±0.1).
5. ``report.html`` with each example's text.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

CORRUPTIONS = ("random", "off-by-one")
WORDS = 32
PROMPT_WORDS = 4


@dataclass
class SFTDemoConfig:
    """Settings of ``tdlog demo --task sft`` (the defaults are the README's table)."""

    noise_rate: float = 0.1
    corruption: str = "random"
    examples: int = 400
    heldout: int = 500
    epochs: int = 8
    seed: int = 0
    control_share: float = 0.1
    control_passes: int = 2
    lora: bool = False
    retrain: bool = True
    retrain_seeds: int = 2  # each retraining's exact match is the mean over this many initialisations and orders


@dataclass
class SFTDemoResult:
    run_dirs: list[Path]  # one run per control pass: DIR/run, DIR/run-pass1
    report: Path | None
    windows: list[range | None]  # each run's epoch window (None: every epoch)
    detection: pl.DataFrame  # method, precision, recall, f1, flagged
    noise_rates: pl.DataFrame  # estimate, noise_rate (the true one first)
    retraining: pl.DataFrame  # training, examples, exact_match


def make_examples(config: SFTDemoConfig) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """``(training examples, held-out prompts, their answers)``; the training table has ``sample_id``,
    ``prompt``, ``completion``, ``true_completion`` and ``corrupted``."""
    if config.corruption not in CORRUPTIONS:
        raise ValueError(f"corruption: expected one of {CORRUPTIONS}, got {config.corruption!r}")
    rng = np.random.default_rng(config.seed)
    prompts = rng.integers(0, WORDS, size=(config.examples + config.heldout, PROMPT_WORDS))
    answers = (prompts + 1) % WORDS
    train, heldout = prompts[:config.examples], prompts[config.examples:]
    given = answers[:config.examples].copy()
    corrupted = rng.choice(config.examples, size=round(config.noise_rate * config.examples), replace=False)
    if config.corruption == "random":
        shift = rng.integers(2, WORDS, size=(len(corrupted), PROMPT_WORDS))  # never the right word
        given[corrupted] = (train[corrupted] + shift) % WORDS
    else:
        given[corrupted] = (train[corrupted] + 2) % WORDS
    flags = np.zeros(config.examples, dtype=bool)
    flags[corrupted] = True
    table = pl.DataFrame({"sample_id": np.arange(config.examples), "prompt": [_text(p) for p in train],
                          "completion": [" " + _text(a) for a in given],
                          "true_completion": [" " + _text(a) for a in answers[:config.examples]],
                          "corrupted": flags})
    return table, heldout, answers[config.examples:]


def _text(words: np.ndarray) -> str:
    return " ".join(f"w{int(w)}" for w in words)


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(WORDS)]
    vocabulary = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    vocabulary.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=vocabulary, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def fine_tune(rows: list[dict], config: SFTDemoConfig, scratch: Path, run_dir: Path | None = None):
    """Fine-tune a fresh tiny Llama on ``rows`` (prompt-completion dicts with ``sample_id``); with
    ``run_dir``, record every step there (registering the examples, controls and text). Returns the trainer."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tdlog.recorder.controls import register_examples
    from tdlog.recorder.integrations.huggingface import attach

    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=WORDS + 3, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, bos_token_id=1))
    args = SFTConfig(output_dir=str(scratch), num_train_epochs=config.epochs, per_device_train_batch_size=16,
                     learning_rate=1e-2, max_length=32, save_strategy="no", report_to=[], use_cpu=True,
                     seed=config.seed, data_seed=config.seed, disable_tqdm=True, logging_strategy="no")
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                 modules_to_save=["lm_head", "embed_tokens"])
    columns = ("sample_id", "prompt", "completion")
    train = Dataset.from_dict({c: [row[c] for row in rows] for c in columns})
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer(),
                         peft_config=peft_config)
    recording = None
    if run_dir is not None:
        recording = attach(trainer, run_dir, metadata={"demo": "sft", "corruption": config.corruption,
                                                       "noise_rate": config.noise_rate, "seed": config.seed})
        register_examples(recording, rows)
    trainer.train()
    if recording is not None:
        recording.close()
    return trainer


def exact_match(trainer, prompts: np.ndarray, answers: np.ndarray) -> float:
    """Share of ``prompts`` whose greedy completion's first four words are exactly ``answers``."""
    import torch

    model = trainer.model.eval()
    encoded = tokenizer()([_text(p) for p in prompts], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                   max_new_tokens=PROMPT_WORDS, do_sample=False, pad_token_id=0)
    words = generated[:, encoded["input_ids"].shape[1]:].numpy() - 3  # token ids of w0.. start at 3
    return float((words[:, :PROMPT_WORDS] == answers).all(1).mean())


def run_sft_demo(out_dir: str | Path, config: SFTDemoConfig, *, report: bool = True) -> SFTDemoResult:
    """The whole demo (see the module); prints its tables and returns them."""
    from tdlog.analytics import open_run, open_runs
    from tdlog.analytics.cleaning import drop_flagged
    from tdlog.analytics.evaluate import detection_metrics
    from tdlog.analytics.report import write_report
    from tdlog.analytics.scores import noise_rates
    from tdlog.recorder.controls import plant_controls

    out_dir = Path(out_dir)
    examples, heldout, heldout_answers = make_examples(config)
    rows = examples.select("sample_id", "prompt", "completion").to_dicts()
    run_dirs = [out_dir / ("run" if index == 0 else f"run-pass{index}") for index in range(config.control_passes)]
    scratch = Path(tempfile.mkdtemp(prefix="tdlog-sft-demo-"))
    try:
        for index, run_dir in enumerate(run_dirs):
            planted = plant_controls(rows, share=config.control_share, seed=config.seed, pass_index=index)
            fine_tune(planted, config, scratch / f"recorded-{index}", run_dir)
        with open_runs(run_dirs) as runs:
            windows = runs.epoch_windows()
            scores = runs.scores()  # each example over the passes where it was not a control
            final = runs.sql("SELECT r.sample_id, avg(r.loss) AS loss FROM records r JOIN samples s "
                             "ON r.run = s.run AND r.sample_id = s.sample_id WHERE NOT s.is_threshold "
                             "AND r.epoch = (SELECT max(epoch) FROM records) GROUP BY ALL")
        if report:
            with open_run(run_dirs[0]) as run:
                report_path = write_report(run, out_dir / "report.html")
        else:
            report_path = None
        table = examples.join(scores.drop("prompt", "completion", strict=False), on="sample_id", how="inner").join(
            final, on="sample_id", how="left")
        truth = table["corrupted"].to_numpy()
        k = int(truth.sum())
        loss_rank = np.zeros(len(table), dtype=bool)
        loss_rank[np.argsort(-table["loss"].to_numpy())[:k]] = True
        methods = {"AUM below the controls' cutoff": (table["aum_flagged"].to_numpy(), -table["aum"].to_numpy()),
                   "AUL, two-component mixture": (table["gmm_flagged"].to_numpy(), table["aul"].to_numpy()),
                   f"final-epoch loss, top {k}": (loss_rank, table["loss"].to_numpy())}
        detection = pl.DataFrame([
            (name, *detection_metrics(truth, flagged, suspicion)) for name, (flagged, suspicion) in methods.items()],
            schema=["method", "precision", "recall", "f1", "auroc", "flagged"], orient="row")
        estimates = noise_rates(table)
        rates = pl.DataFrame({"estimate": ["true", *[f"{name} estimate" for name in estimates]],
                              "noise_rate": [float(truth.mean()), *estimates.values()]})
        retraining = pl.DataFrame(schema={"training": pl.String, "examples": pl.Int64, "exact_match": pl.Float64})
        if config.retrain:
            original = examples.select("sample_id", "prompt", "completion").to_dicts()
            trainings = {"full data": original,
                         "cleaned (AUM flags dropped)": drop_flagged(original, scores, flag="aum_flagged"),
                "truly clean": [row for row, bad in zip(original, examples["corrupted"], strict=True) if not bad]}
            results = []
            for index, (name, data) in enumerate(trainings.items()):
                accuracies = [exact_match(fine_tune(data, replace(config, seed=config.seed + 1000 * repeat),
                                                    scratch / f"retrain-{index}-{repeat}"), heldout, heldout_answers)
                              for repeat in range(config.retrain_seeds)]
                results.append((name, len(data), float(np.mean(accuracies))))
            retraining = pl.DataFrame(results, schema=retraining.schema, orient="row")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with pl.Config(tbl_rows=20, tbl_cols=-1, tbl_width_chars=160, float_precision=3):
        print(windows.select("run", "epoch_from", "epoch_to", "chosen_by"))
        print(detection)
        print(rates)
        if config.retrain:
            print(retraining)
    chosen = [None if row["chosen_by"] != "threshold samples" else range(row["epoch_from"], row["epoch_to"])
              for row in windows.iter_rows(named=True)]
    return SFTDemoResult(run_dirs, report_path, chosen, detection, rates, retraining)
