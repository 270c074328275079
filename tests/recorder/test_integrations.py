"""The Hugging Face Trainer and Lightning integrations on tiny models built from configs (nothing
downloaded): every training example once per epoch, rows equal to a recomputation from the model's own
outputs, resumed runs counted once. Two DDP ranks under torchrun: tests/test_examples.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tdlog.analytics as analytics
from tdlog.recorder import DatasetWithIndex, Recorder
from tests.recorder.test_sequence import reference as token_reference
from tests.reference import record_statistics

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

from tdlog.recorder.integrations.huggingface import add_sample_ids, attach  # noqa: E402

EXAMPLES, LENGTH, VOCABULARY = 48, 8, 30
# float32 statistics (NumPy, in the writer) against the float64 reference on the same logits: a few ulps
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def token_data(seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCABULARY, size=(EXAMPLES, LENGTH))
    return {"input_ids": tokens.tolist(), "attention_mask": np.ones_like(tokens).tolist(),
            "labels": (tokens[:, 0] % 2).tolist()}


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["labels"])

    def __getitem__(self, index: int) -> dict:
        return {name: torch.tensor(values[index]) for name, values in self.columns.items()}


def classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCABULARY, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=LENGTH, num_labels=2))


def arguments(out: Path, **changes) -> TrainingArguments:
    options = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "save_strategy": "no",
               "report_to": [], "use_cpu": True, "seed": 0, "disable_tqdm": True} | changes
    return TrainingArguments(output_dir=str(out), **options)


def capture_training_outputs(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of every training forward call, in order; the id column must never reach forward."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, args, kwargs, output):
        assert "sample_id" not in kwargs
        if module.training:
            seen.append((output.logits.detach().clone(), kwargs["labels"].clone()))

    model.register_forward_hook(hook, with_kwargs=True)
    return seen


def assert_rows_match(run_dir: Path, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The recorded rows, step by step, equal the statistics of the logits the model produced (rows of one
    step compared in the order of their margins)."""
    with analytics.open_run(run_dir) as run:
        rows = run.sql("SELECT step, loss, margin, prob, pred, target FROM raw_records")
    assert rows["step"].n_unique() == len(seen)
    expected = record_statistics(torch.cat([s[0] for s in seen]).numpy(), torch.cat([s[1] for s in seen]).numpy())
    expected["target"] = torch.cat([s[1] for s in seen]).numpy()
    expected_step = np.repeat(np.arange(len(seen)), [len(s[1]) for s in seen])
    recorded_step = rows["step"].to_numpy() - rows["step"].min()
    order = np.lexsort((rows["margin"].to_numpy(), recorded_step))
    expected_order = np.lexsort((expected["margin"].astype(np.float32), expected_step))
    for name in ("loss", "margin", "prob"):
        np.testing.assert_allclose(rows[name].to_numpy()[order], expected[name][expected_order], **CLOSE,
                                   err_msg=name)
    for name in ("pred", "target"):
        np.testing.assert_array_equal(rows[name].to_numpy()[order], expected[name][expected_order])


def assert_each_example_once_per_epoch(run_dir: Path, epochs: int, examples: int = EXAMPLES) -> None:
    with analytics.open_run(run_dir) as run:
        counts = run.sql("SELECT epoch, count(*) AS n, count(DISTINCT sample_id) AS ids FROM records "
                         "GROUP BY epoch ORDER BY epoch")
    assert counts["epoch"].to_list() == list(range(epochs))
    assert counts["n"].to_list() == counts["ids"].to_list() == [examples] * epochs


@pytest.mark.parametrize(("kind", "accumulation"), [("datasets", 1), ("datasets", 2), ("dict", 1)])
def test_trainer_records_every_example_once_per_epoch_as_the_model_saw_it(tmp_path, kind, accumulation) -> None:
    columns = token_data()
    train = datasets.Dataset.from_dict(columns) if kind == "datasets" else DictDataset(columns)
    model = classifier()
    seen = capture_training_outputs(model)
    trainer = Trainer(model=model, args=arguments(tmp_path / "out", gradient_accumulation_steps=accumulation),
                      train_dataset=add_sample_ids(train))
    assert trainer.args.remove_unused_columns  # the Trainer's default: the id column must survive it
    recorder = attach(trainer, tmp_path / "run")
    trainer.train()
    recorder.close()
    assert_each_example_once_per_epoch(tmp_path / "run", 2)
    assert_rows_match(tmp_path / "run", seen)


def test_a_trainer_subclass_with_its_own_loss_and_bf16_logits(tmp_path) -> None:
    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            outputs = model(**inputs)
            loss = F.cross_entropy(outputs.logits, inputs["labels"], weight=torch.tensor([1.0, 2.0]))
            return (loss, outputs) if return_outputs else loss

    trainer = WeightedTrainer(model=classifier(), args=arguments(tmp_path / "out", bf16=True),
                              train_dataset=add_sample_ids(datasets.Dataset.from_dict(token_data())))
    recorder = attach(trainer, tmp_path / "run")
    with pytest.warns(RuntimeWarning, match=r"WeightedTrainer.compute_loss, the trainer's own loss"):
        trainer.train()
    recorder.close()
    assert_each_example_once_per_epoch(tmp_path / "run", 2)


def test_evaluation_batches_go_to_split_eval(tmp_path) -> None:
    data = add_sample_ids(datasets.Dataset.from_dict(token_data()))
    trainer = Trainer(model=classifier(), args=arguments(tmp_path / "out", num_train_epochs=1), train_dataset=data,
                      eval_dataset=data)
    recorder = attach(trainer, tmp_path / "run", record_eval=True)
    trainer.train()
    trainer.evaluate()
    recorder.close()
    with analytics.open_run(tmp_path / "run") as run:
        splits = run.sql("SELECT split, count(DISTINCT sample_id) AS ids FROM records GROUP BY split ORDER BY split")
    assert splits.rows() == [("eval", EXAMPLES), ("train", EXAMPLES)]


def train_then_resume(tmp_path: Path, first_args: dict, checkpoint_name: str, resumed_args: dict) -> Path:
    """Train to the end with checkpoints, then resume from ``out/checkpoint_name`` in a new Trainer (a new
    process would do the same); both recorded to ``run``. Returns the checkpoint."""
    data = add_sample_ids(datasets.Dataset.from_dict(token_data()))
    first = Trainer(model=classifier(), args=arguments(tmp_path / "out", **first_args), train_dataset=data)
    attach(first, tmp_path / "run")
    first.train()
    first._tdlog_recorder.close()
    checkpoint = tmp_path / "out" / checkpoint_name
    resumed = Trainer(model=classifier(), args=arguments(tmp_path / "out", **resumed_args), train_dataset=data)
    recorder = attach(resumed, tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    recorder.close()
    return checkpoint


def test_a_resumed_trainer_counts_each_epoch_once(tmp_path) -> None:
    # 6 steps an epoch: checkpoint-6 is the end of epoch 1
    train_then_resume(tmp_path, {"save_strategy": "epoch"}, "checkpoint-6", {"num_train_epochs": 3})
    assert_each_example_once_per_epoch(tmp_path / "run", 3)
    with analytics.open_run(tmp_path / "run") as run:
        owners = run.sql("SELECT epoch, min(attempt) AS a, max(attempt) AS b FROM records GROUP BY epoch "
                         "ORDER BY epoch")
        superseded = run.sql("SELECT count(*) AS n FROM raw_records WHERE attempt = 0 AND epoch = 1")["n"][0]
    assert owners.rows() == [(0, 0, 0), (1, 1, 1), (2, 1, 1)] and superseded == EXAMPLES


def test_a_trainer_resumed_from_the_middle_of_an_epoch_counts_each_example_once(tmp_path) -> None:
    """Checkpoints every 3 steps (6 steps an epoch); the run is resumed from the one in the middle of epoch 0
    after the first training went on to the end: the rows logged after that checkpoint stop counting."""
    args = {"save_strategy": "steps", "save_steps": 3}
    checkpoint = train_then_resume(tmp_path, args, "checkpoint-3", args)
    assert (checkpoint / "tdlog_recorder-r0.json").exists()
    assert_each_example_once_per_epoch(tmp_path / "run", 2)
    with analytics.open_run(tmp_path / "run") as run:
        owners = run.sql("SELECT epoch, attempt, count(*) AS n FROM records GROUP BY epoch, attempt "
                         "ORDER BY epoch, attempt")
    assert owners.rows() == [(0, 0, 24), (0, 1, 24), (1, 1, 48)]


def test_causal_lm_rows_are_the_models_own_loss_for_each_example_alone(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCABULARY, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2))
    model.eval()
    tokens = torch.randint(0, VOCABULARY, (4, LENGTH), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(tokens)
    mask[1, 5:] = 0  # right padding, labelled -100
    labels = tokens.masked_fill(mask == 0, -100)
    labels[2, :3] = -100  # a prompt that is not scored
    with torch.no_grad():
        logits = model(input_ids=tokens, attention_mask=mask).logits
    with Recorder(tmp_path / "run", num_classes=VOCABULARY) as rec:
        rec.log(torch.arange(4), logits, labels, epoch=0, shift=True)
    with analytics.open_run(tmp_path / "run") as run:
        rows = run.sql("SELECT sample_id, loss, tokens FROM records ORDER BY sample_id")
    for example in range(4):
        with torch.no_grad():
            own = model(input_ids=tokens[example:example + 1], attention_mask=mask[example:example + 1],
                        labels=labels[example:example + 1]).loss
        assert rows["loss"][example] == pytest.approx(own.item(), rel=1e-5)  # float32 sums in two orders
    assert rows["tokens"].to_list() == [LENGTH - 1, 4, LENGTH - 3, LENGTH - 1]


def test_causal_lm_trainer_records_one_row_per_example_and_step(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCABULARY, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2))
    columns = token_data()
    columns["labels"] = columns["input_ids"]
    trainer = Trainer(model=model, args=arguments(tmp_path / "out"),
                      train_dataset=add_sample_ids(datasets.Dataset.from_dict(columns)))
    seen = capture_training_outputs(model)
    recorder = attach(trainer, tmp_path / "run")  # num_classes: the first batch's logits
    assert recorder.num_classes is None
    trainer.train()
    recorder.close()
    assert recorder.num_classes == VOCABULARY
    assert_each_example_once_per_epoch(tmp_path / "run", 2)
    with analytics.open_run(tmp_path / "run") as run:
        assert set(run.sql("SELECT DISTINCT tokens FROM records")["tokens"]) == {LENGTH - 1}
        assert run.aul().height == EXAMPLES
        rows = run.sql("SELECT step, loss, margin, correct FROM raw_records")
    # each row = the float64 mean over the example's shifted tokens of the model's own logits
    expected = [token_reference(logits, labels, shift=True) for logits, labels in seen]
    expected_step = np.repeat(np.arange(len(seen)), [len(s[1]) for s in seen])
    order = np.lexsort((rows["loss"].to_numpy(), rows["step"].to_numpy() - rows["step"].min()))
    expected_order = np.lexsort((np.concatenate([e["loss"] for e in expected]).astype(np.float32), expected_step))
    for name in ("loss", "margin", "correct"):
        np.testing.assert_allclose(rows[name].to_numpy()[order],
                                   np.concatenate([e[name] for e in expected])[expected_order], **CLOSE)


# --- Lightning ----------------------------------------------------------------------------------------
def lightning_run(tmp_path: Path, batches: str, *, checkpoints: bool = False, ckpt_path: Path | None = None):
    pl = pytest.importorskip("lightning.pytorch")
    from tdlog.recorder.integrations.lightning import RecorderCallback

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(6, 3)
            self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = (batch["x"], batch["labels"]) if isinstance(batch, dict) else batch[:2]
            logits = self(x)
            self.seen.append((logits.detach().clone(), y.clone()))
            return F.cross_entropy(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(40, 6, generator=generator), torch.randint(0, 3, (40,), generator=generator)
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    if batches == "dict":
        data = [{"x": inputs[i], "labels": targets[i], "sample_id": i} for i in range(40)]
    else:
        data = DatasetWithIndex(dataset)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=generator)
    module = Classifier()
    callbacks = [RecorderCallback(tmp_path / "run", num_classes=3)]
    if checkpoints:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1, every_n_epochs=1))
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=checkpoints, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module.seen


def test_lightning_resumed_from_a_checkpoint_counts_each_sample_once(tmp_path) -> None:
    seen = lightning_run(tmp_path, "tuple", checkpoints=True)  # 3 epochs, a checkpoint after each
    assert seen
    first_epoch = next((tmp_path / "checkpoints").glob("epoch=0*.ckpt"))
    lightning_run(tmp_path, "tuple", ckpt_path=first_epoch)  # epochs 1 and 2 again, from epoch 0's end
    assert_each_example_once_per_epoch(tmp_path / "run", 3, examples=40)
    with analytics.open_run(tmp_path / "run") as run:
        owners = run.sql("SELECT epoch, min(attempt) AS a, max(attempt) AS b FROM records GROUP BY epoch "
                         "ORDER BY epoch")
    assert owners.rows() == [(0, 0, 0), (1, 1, 1), (2, 1, 1)]


@pytest.mark.parametrize("batches", ["tuple", "dict"])
def test_lightning_callback_records_every_sample_once_per_epoch(tmp_path, batches) -> None:
    seen = lightning_run(tmp_path, batches)
    assert_each_example_once_per_epoch(tmp_path / "run", 3, examples=40)
    assert_rows_match(tmp_path / "run", seen)
