"""LLM fine-tuning as people run it, recorded through ``attach`` (and Lightning's callback): PEFT LoRA, TRL's
SFTTrainer (plain text, prompt-completion, conversational), an encoder-decoder LM, a masked LM, token
classification, a ``torch.compile``d model, string ids through a user's collator. Each model is tiny, built
from a config with dropout off, and trained at learning rate 0, so that every recorded row can be compared
with the model's own ``loss`` on that example alone (the trainer's collator on that one example). rtol 1e-5:
float32 sums of the same token losses over a padded batch and over the example alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.recorder import LossMismatchError, Recorder

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
peft = pytest.importorskip("peft")
trl = pytest.importorskip("trl")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    DataCollatorForSeq2Seq,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from tdlog.recorder.integrations.huggingface import add_sample_ids, attach, check_trainer  # noqa: E402
from tdlog.recorder.integrations.models import (  # noqa: E402
    CAUSAL_LM,
    MASKED_LM,
    SEQ2SEQ_LM,
    TOKEN_CLASSIFICATION,
    model_task,
)

WORDS = ["<pad>", "<eos>", "<unk>", "<user>", "<assistant>"] + [f"w{i}" for i in range(40)]
EXAMPLES, EPOCHS = 12, 2
RTOL = 1e-5


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``WORDS`` with a chat template that marks the assistant's turns."""
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    made = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    made.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<user> {{ m['content'] }} {% else %}<assistant> "
        "{% generation %}{{ m['content'] }} <eos> {% endgeneration %}{% endif %}{% endfor %}")
    return made


def causal_lm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
                                        max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1))


def bert(cls, **config):
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, **config))


def sentences(rng: np.random.Generator, low: int = 3, high: int = 9) -> list[str]:
    return [" ".join(f"w{j}" for j in rng.integers(0, 40, rng.integers(low, high))) for _ in range(EXAMPLES)]


def lora():
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def arguments(out: Path, cls=TrainingArguments, **changes):
    options = {"num_train_epochs": EPOCHS, "per_device_train_batch_size": 4, "learning_rate": 0.0,
               "save_strategy": "no", "report_to": [], "use_cpu": True, "seed": 0, "disable_tqdm": True} | changes
    return cls(output_dir=str(out), **options)


def own_losses(trainer, id_column: str = "sample_id") -> dict:
    """``{id: the model's own loss on that example alone}``: each example of the trainer's (prepared) dataset
    through the trainer's own collator, alone, then the model with its labels."""
    dataset = trainer._remove_unused_columns(trainer.train_dataset)  # what the Trainer's loader reads
    model = trainer.model
    model.eval()
    losses = {}
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = trainer.data_collator([dataset[index]])
            ids = batch.pop(id_column)
            losses[ids[0] if isinstance(ids, list) else int(ids[0])] = float(model(**batch).loss)
    return losses


def own_margins(trainer, id_column: str = "sample_id") -> dict:
    """``{id: the token-mean margin z_y - max_{j != y} z_j of the model's own logits on that example alone}``
    (a causal LM: token t scored against label t + 1)."""
    dataset = trainer._remove_unused_columns(trainer.train_dataset)
    margins = {}
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = trainer.data_collator([dataset[index]])
            ids = batch.pop(id_column)
            labels = batch.pop("labels")[:, 1:]
            logits = trainer.model(**batch).logits[:, :-1].float()
            mask = labels != -100
            target = logits.gather(2, labels.clamp(min=0)[..., None]).squeeze(2)
            other = logits.scatter(2, labels.clamp(min=0)[..., None], float("-inf")).amax(2)
            margins[int(ids[0])] = float(((target - other) * mask).sum() / mask.sum())
    return margins


def assert_rows_are_own_losses(run_dir: Path, own: dict, epochs: int = EPOCHS) -> None:
    """Every example once per epoch, each row's loss its own loss alone, and the run's loss check passed."""
    with analytics.open_run(run_dir) as run:
        rows = run.sql("SELECT epoch, sample_id, loss FROM records ORDER BY epoch, sample_id")
        manifest = run.manifest
    assert rows.height == epochs * len(own)
    for epoch in range(epochs):
        part = rows.filter(rows["epoch"] == epoch)
        assert sorted(part["sample_id"].to_list()) == sorted(own)
        expected = np.array([own[i] for i in part["sample_id"].to_list()])
        np.testing.assert_allclose(part["loss"].to_numpy(), expected, rtol=RTOL)
    report = manifest["loss_check"]["r0"]
    assert report["checked"] >= 1 and report["mismatched"] == 0


def run_trainer(trainer, run_dir: Path, **options) -> dict:
    recording = attach(trainer, run_dir, strict=True, **options)
    trainer.train()
    recording.close()
    return own_losses(trainer)


# --- PEFT, TRL ----------------------------------------------------------------------------------------
def test_peft_lora_causal_lm_through_trainer_with_gradient_accumulation(tmp_path) -> None:
    model = peft.get_peft_model(causal_lm(), lora())
    assert model_task(model) == CAUSAL_LM
    rng = np.random.default_rng(0)
    encoded = tokenizer()(sentences(rng))
    columns = {"input_ids": encoded["input_ids"], "labels": [list(ids) for ids in encoded["input_ids"]]}
    columns["labels"][3] = [-100] * len(columns["labels"][3])  # an example with nothing to score
    train = add_sample_ids(datasets.Dataset.from_dict(columns))
    trainer = Trainer(model=model, args=arguments(tmp_path / "out", gradient_accumulation_steps=2,
                                                  per_device_train_batch_size=2),
                      train_dataset=train, data_collator=DataCollatorForSeq2Seq(tokenizer(), padding=True))
    own = run_trainer(trainer, tmp_path / "run")
    assert np.isnan(own.pop(3))
    with analytics.open_run(tmp_path / "run") as run:
        unscored = run.sql("SELECT sample_id, tokens FROM unscored")
        info = run.info()
        aul = run.aul(epochs=None)
    assert unscored["sample_id"].to_list() == [3, 3] and unscored["tokens"].to_list() == [0, 0]
    assert info["splits"][0]["unscored_rows"] == 2 and info["nonfinite_rows"] == 0
    assert 3 not in aul["sample_id"].to_list() and aul["aul"].is_finite().all()
    assert_rows_are_own_losses(tmp_path / "run", own)


@pytest.mark.parametrize("kind", ["text", "prompt_completion", "conversational"])
def test_trl_sft_trainer_with_lora(tmp_path, kind) -> None:
    rng = np.random.default_rng(1)
    if kind == "text":
        data = {"text": sentences(rng)}
    elif kind == "prompt_completion":  # completion-only loss: TRL's default for this format
        data = {"prompt": sentences(rng, 2, 6), "completion": [" " + s for s in sentences(rng, 1, 4)]}
    else:  # assistant-only loss
        data = {"messages": [[{"role": "user", "content": u}, {"role": "assistant", "content": a}]
                             for u, a in zip(sentences(rng, 2, 5), sentences(rng, 1, 5), strict=True)]}
    config = arguments(tmp_path / "out", cls=trl.SFTConfig, max_length=64,
                       assistant_only_loss=kind == "conversational", gradient_accumulation_steps=2)
    train = add_sample_ids(datasets.Dataset.from_dict(data))
    trainer = trl.SFTTrainer(model=causal_lm(), args=config, train_dataset=train, processing_class=tokenizer(),
                             peft_config=lora())
    own = run_trainer(trainer, tmp_path / "run")
    assert_rows_are_own_losses(tmp_path / "run", own)
    margins = own_margins(trainer)
    with analytics.open_run(tmp_path / "run") as run:
        tokens = dict(run.sql("SELECT sample_id, any_value(tokens) AS t FROM records GROUP BY sample_id").rows())
        fused = run.sql("SELECT count(*) FILTER (WHERE isnan(el2n) AND isfinite(loss) AND isfinite(prob) "
                        "AND correct BETWEEN 0 AND 1) AS n FROM records")["n"][0]
        assert fused == EPOCHS * EXAMPLES and run.info()["nonfinite_rows"] == 0  # no logits: no EL2N, no alarm
        recorded = run.sql("SELECT sample_id, margin FROM records ORDER BY epoch, sample_id")
    expected = np.array([margins[i] for i in recorded["sample_id"].to_list()])
    # alone vs in a padded batch of 4 the logits differ by up to 3e-4 (measured; the loss, a log-softmax, hides
    # a shift that the margin, a difference of two logits, does not); a wrong token or shift moves it by 1e-2+
    np.testing.assert_allclose(recorded["margin"].to_numpy(), expected, rtol=0, atol=1e-3)
    assert np.abs(expected).min() > 1e-2
    prepared = trainer.train_dataset
    for row in prepared:  # the tokens each row scored: the labels TRL built, shifted
        scored = sum(label != -100 for label in row["labels"][1:])
        assert tokens[row["sample_id"]] == scored
    if kind != "text":  # only the completion / the assistant's turn is scored
        assert all(tokens[row["sample_id"]] < len(row["input_ids"]) - 1 for row in prepared)


def test_trl_refusals_are_one_line_and_name_the_setting(tmp_path) -> None:
    data = add_sample_ids(datasets.Dataset.from_dict({"text": sentences(np.random.default_rng(2))}))
    for setting, length in (("packing", 16), ("padding_free", None)):
        config = arguments(tmp_path / "out", cls=trl.SFTConfig, max_length=length, **{setting: True})
        trainer = trl.SFTTrainer(model=causal_lm(), args=config, train_dataset=data, processing_class=tokenizer())
        with pytest.raises(ValueError, match=rf"^trainer.args.{setting}: .*set {setting}=False") as error:
            attach(trainer, tmp_path / "run")
        assert "\n" not in str(error.value)
    config = arguments(tmp_path / "out", cls=trl.SFTConfig, max_length=16, loss_type="dft")
    trainer = trl.SFTTrainer(model=causal_lm(), args=config, train_dataset=data, processing_class=tokenizer())
    with pytest.raises(ValueError, match=r"^trainer.args.loss_type: .*'nll'.*'dft'"):
        attach(trainer, tmp_path / "run")
    for name in ("DPOTrainer", "RewardTrainer", "GRPOTrainer"):
        refused = object.__new__(getattr(trl, name))  # the class is what is refused, before any of its state
        with pytest.raises(ValueError, match=rf"^trainer: .*trl.SFTTrainer.*got {name}, whose loss is not$"):
            check_trainer(refused)
    assert not (tmp_path / "run").exists()


# --- other tasks ------------------------------------------------------------------------------------------
def test_encoder_decoder_lm_through_seq2seq_trainer(tmp_path) -> None:
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                num_heads=2, dropout_rate=0.0, decoder_start_token_id=0,
                                                pad_token_id=0, eos_token_id=1))
    assert model_task(model) == SEQ2SEQ_LM
    rng = np.random.default_rng(3)
    made = tokenizer()
    train = datasets.Dataset.from_dict({"input_ids": made(sentences(rng))["input_ids"],
                                        "labels": made(sentences(rng, 2, 6))["input_ids"]})
    trainer = Seq2SeqTrainer(model=model, args=arguments(tmp_path / "out", cls=Seq2SeqTrainingArguments),
                             train_dataset=add_sample_ids(train),
                             data_collator=DataCollatorForSeq2Seq(made, model=model))
    assert_rows_are_own_losses(tmp_path / "run", run_trainer(trainer, tmp_path / "run"))


def test_masked_lm_and_token_classification(tmp_path) -> None:
    rng = np.random.default_rng(4)
    tokens = rng.integers(5, len(WORDS), size=(EXAMPLES, 10))
    masked = rng.random(tokens.shape) < 0.3
    masked[:, 0] = True  # at least one scored token each
    cases = [(bert(BertForMaskedLM), MASKED_LM, np.where(masked, tokens, -100)),
             (bert(BertForTokenClassification, num_labels=3), TOKEN_CLASSIFICATION, tokens % 3)]
    for index, (model, task, labels) in enumerate(cases):
        assert model_task(model) == task
        inputs = np.where(masked, 5, tokens) if task == MASKED_LM else tokens
        train = datasets.Dataset.from_dict({"input_ids": inputs.tolist(), "labels": labels.tolist()})
        trainer = Trainer(model=model, args=arguments(tmp_path / f"out{index}"), train_dataset=add_sample_ids(train))
        assert_rows_are_own_losses(tmp_path / f"run{index}", run_trainer(trainer, tmp_path / f"run{index}"))


def test_a_compiled_model_and_string_ids_through_a_users_collator(tmp_path) -> None:
    model = torch.compile(causal_lm(), backend="eager")
    assert model_task(model) == CAUSAL_LM
    rng = np.random.default_rng(5)
    encoded = tokenizer()(sentences(rng, 8, 9))  # one length: the user's collator stacks, no padding

    def stack(examples: list[dict]) -> dict:  # builds the batch from the fields it knows, drops the rest
        ids = torch.tensor([e["input_ids"] for e in examples])
        return {"input_ids": ids, "labels": ids.clone()}

    names = [f"doc-{i:03d}" for i in range(EXAMPLES)]
    train = datasets.Dataset.from_dict({"input_ids": encoded["input_ids"], "doc": names})
    # a compiled model's forward(*args, **kwargs) names no input: the Trainer would drop every column
    trainer = Trainer(model=model, args=arguments(tmp_path / "out", remove_unused_columns=False), train_dataset=train,
                      data_collator=stack)
    recording = attach(trainer, tmp_path / "run", id_column="doc", strict=True)
    trainer.train()
    recording.close()
    own = own_losses(trainer, "doc")
    assert sorted(own) == names
    assert_rows_are_own_losses(tmp_path / "run", own)


# --- the loss check ---------------------------------------------------------------------------------------
def sft_trainer(tmp_path: Path, **changes):
    data = add_sample_ids(datasets.Dataset.from_dict({"text": sentences(np.random.default_rng(6))}))
    config = arguments(tmp_path / "out", cls=trl.SFTConfig, max_length=32, **changes)
    return trl.SFTTrainer(model=causal_lm(), args=config, train_dataset=data, processing_class=tokenizer())


def test_the_loss_check_fails_on_label_smoothing_and_on_a_wrong_shift(tmp_path) -> None:
    trainer = sft_trainer(tmp_path, label_smoothing_factor=0.1)
    attach(trainer, tmp_path / "smoothed", strict=True)
    with pytest.raises(LossMismatchError, match=r"label smoothing \(TrainingArguments.label_smoothing_factor=0.1\)"):
        trainer.train()
    with analytics.open_run(tmp_path / "smoothed") as run:
        assert run.manifest["loss_check"]["r0"]["mismatched"] == 1
    trainer._tdlog_recorder.close()

    encoded = tokenizer()(sentences(np.random.default_rng(6)))
    train = datasets.Dataset.from_dict({"input_ids": encoded["input_ids"], "labels": encoded["input_ids"]})
    trainer = Trainer(model=causal_lm(), args=arguments(tmp_path / "out"), train_dataset=add_sample_ids(train),
                      data_collator=DataCollatorForSeq2Seq(tokenizer(), padding=True))
    recording = attach(trainer, tmp_path / "unshifted")
    recording.shift = False  # a shift got wrong
    with pytest.warns(RuntimeWarning, match=r"Likely cause: the shift: with shift=True the recorded loss would be"):
        trainer.train()
    recording.close()
    with analytics.open_run(tmp_path / "unshifted") as run:
        report = run.manifest["loss_check"]["r0"]
    assert report["mismatched"] == report["checked"] >= 1 and report["first_mismatch"]["step"] == 0


def test_the_plain_loop_checks_a_given_batch_loss(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(16, 5, generator=generator), torch.randint(0, 5, (16,), generator=generator)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    smoothed = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    with Recorder(tmp_path / "run", num_classes=5, strict=True) as recorder:
        recorder.log(torch.arange(16), logits, targets, epoch=0, batch_loss=loss)
        recorder.log(torch.arange(16), logits, targets, epoch=1, batch_loss=loss * 16 / 20, num_items_in_batch=20)
        with pytest.raises(LossMismatchError, match=r"the model's loss 1\.\d+"):
            recorder.log(torch.arange(16), logits, targets, epoch=2, batch_loss=smoothed)
        with pytest.raises(ValueError, match=r"^batch_loss: expected the model's loss of the batch, a floating-point "
                                             r"scalar, got a torch.float32 tensor of shape \(16,\)"):
            recorder.log(torch.arange(16), logits, targets, epoch=3, batch_loss=torch.ones(16))
        with pytest.raises(ValueError, match=r"^num_items_in_batch: expected a positive count, got 0"):
            recorder.log(torch.arange(16), logits, targets, epoch=3, batch_loss=loss, num_items_in_batch=0)
    with analytics.open_run(tmp_path / "run") as run:
        assert run.manifest["loss_check"]["r0"] | {"first_mismatch": None} == {
            "checked": 3, "mismatched": 1, "first_mismatch": None}
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 48  # a mismatch loses no row


# --- Lightning ------------------------------------------------------------------------------------------
def test_lightning_module_wrapping_a_causal_lm(tmp_path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from tdlog.recorder.integrations.lightning import RecorderCallback

    class FineTune(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = causal_lm()

        def training_step(self, batch, batch_idx):
            batch = {k: v for k, v in batch.items() if k != "sample_id"}
            return self.model(**batch).loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    made = tokenizer()
    encoded = made(sentences(np.random.default_rng(7)))
    examples = [{"input_ids": ids, "labels": ids, "sample_id": i} for i, ids in enumerate(encoded["input_ids"])]
    collate = DataCollatorForSeq2Seq(made, padding=True)

    def collate_with_ids(batch):
        ids = torch.tensor([e["sample_id"] for e in batch])
        return {**collate([{k: v for k, v in e.items() if k != "sample_id"} for e in batch]), "sample_id": ids}

    loader = torch.utils.data.DataLoader(examples, batch_size=4, collate_fn=collate_with_ids)
    module = FineTune()
    callback = RecorderCallback(tmp_path / "run", strict=True)  # num_classes from the first batch
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader)
    module.model.eval()
    own = {}
    with torch.no_grad():
        for example in examples:
            batch = collate([{k: v for k, v in example.items() if k != "sample_id"}])
            own[example["sample_id"]] = float(module.model(**batch).loss)
    assert_rows_are_own_losses(tmp_path / "run", own)
