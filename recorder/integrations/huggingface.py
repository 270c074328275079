"""Record a Hugging Face ``Trainer``: one line before ``trainer.train()``.

>>> from tdlog.recorder.integrations.huggingface import add_sample_ids, attach
>>> train = add_sample_ids(train)                   # a sample_id column 0..N-1, if the dataset has none
>>> trainer = Trainer(model=model, args=args, train_dataset=train, ...)
>>> attach(trainer, "runs/exp1")                    # then an unmodified trainer.train()

What ``attach`` does: the id column joins the columns the Trainer keeps (so ``remove_unused_columns=True``
keeps it) and is carried around the data collator (:class:`~.collate.CarryIds`: any collator, int or str
ids); the trainer's ``compute_loss`` (yours too, in a subclass) is wrapped: it takes the ids out of the
batch before the model sees it, calls the original with ``return_outputs=True`` and logs the batch's
logits with its ``labels`` by the model's task (:mod:`~.models`: wrappers seen through; causal LMs shifted,
encoder-decoder, masked LMs and token classifiers not; classification logits ``[B, C]`` per sample, token
logits ``[B, T, V]`` per example, :mod:`tdlog.recorder.sequence`). The run opens at the first batch, whose
logits give the output count. The loss the trainer returned is checked against the recorded rows
(:mod:`tdlog.recorder.loss_check`, with the Trainer's ``num_items_in_batch`` under gradient accumulation).

``trl.SFTTrainer``: plain text, prompt-completion (completion-only loss) and conversational (assistant-only
loss) data are recorded per example, over the tokens its labels score. Its loss comes from a fused LM head
that computes each target token's log-probability and never the logits; ``attach`` records those (a forward
hook keeps the head's outputs): per example the loss, the target probability, the token accuracy and the
token count, :meth:`~tdlog.recorder.Recorder.log_token_log_probs`; and (``margins=True``, the default) the
token-mean margin, from the counted tokens' hidden states projected through the LM head without gradient
(:mod:`~.lm_head`). A trainer subclass with its own ``compute_loss`` is recorded from its logits.
Refused, in one line each (:func:`check_trainer`): other TRL trainers, ``loss_type`` other than ``"nll"``,
``packing`` and ``padding_free``.

Every micro-batch of gradient accumulation is logged; under ``torchrun`` each rank logs its own
batches. The epoch is the Trainer's integer epoch. Every checkpoint the Trainer saves holds the recorder's
state (``tdlog_recorder-r{rank}.json``, :meth:`~tdlog.recorder.Recorder.state_dict`), and
``trainer.train(resume_from_checkpoint=...)`` resumes the recorder from it: the rows logged after that
checkpoint stop counting, the resumed rows replace them, even from the middle of an epoch (FORMAT.md,
"Attempts"), so every example counts once per epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .collate import CarryIds
from .lm_head import target_and_other_logits
from .models import unwrap
from .outputs import OutputRecorder


def add_sample_ids(dataset: Any, column: str = "sample_id") -> Any:
    """``dataset`` with a ``column`` holding ``0..N-1``: a ``datasets.Dataset`` gets a new column; a torch
    dataset of dicts is wrapped so that item ``i`` also holds ``column: i``."""
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names"):
        if column in dataset.column_names:
            raise ValueError(f"column: the dataset already has a {column!r} column")
        return dataset.add_column(column, list(range(len(dataset))))
    return _DictWithIndex(dataset, column)


class _DictWithIndex(Dataset):
    """A torch dataset of dicts whose item ``i`` also holds ``{column: i}``."""

    def __init__(self, dataset: Any, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if not isinstance(item, dict):
            raise TypeError(f"dataset: expected items that are dicts, got {type(item).__name__}")
        return {**item, self.column: index}


def state_file(checkpoint: str | os.PathLike, rank: int) -> Path:
    """Where a checkpoint holds the recorder state of ``rank``."""
    return Path(checkpoint) / f"tdlog_recorder-r{rank}.json"


class _EpochCallback(TrainerCallback):
    """Keeps the Trainer's integer epoch (``state.epoch`` is fractional inside an epoch), saves the recorder
    state into every checkpoint and flushes the recorder when training ends."""

    def __init__(self, recording: OutputRecorder) -> None:
        self.recording = recording
        self.epoch = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch = int((state.epoch or 0) + 1e-9)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if checkpoint.is_dir() and self.recording.recorder is not None:
            state_file(checkpoint, args.process_index).write_text(json.dumps(self.recording.state_dict()))

    def on_train_end(self, args, state, control, **kwargs):
        self.recording.flush()


SUPPORTED_TRAINERS = "transformers.Trainer, transformers.Seq2SeqTrainer and trl.SFTTrainer (and subclasses)"


def _is_trl_class(cls: type, name: str | None = None) -> bool:
    return cls.__module__.split(".")[0] == "trl" and (name is None or cls.__name__ == name)


def check_trainer(trainer: Trainer) -> None:
    """Refuse, in one line each, the trainers and settings whose recorded rows could not be the model's own
    per-example loss: TRL trainers other than ``SFTTrainer`` (DPO, reward modelling, GRPO, ...: their loss
    is not a token cross-entropy), SFT's reweighted ``loss_type``, and packed or padding-free batches
    (several examples in one row)."""
    classes = type(trainer).__mro__
    sft = any(_is_trl_class(cls, "SFTTrainer") for cls in classes)
    if any(_is_trl_class(cls) for cls in classes) and not sft:
        raise ValueError(f"trainer: tdlog records trainers whose loss is a token or class cross-entropy "
                         f"({SUPPORTED_TRAINERS}); got {type(trainer).__name__}, whose loss is not")
    args = trainer.args
    for setting in ("packing", "eval_packing", "padding_free"):
        if getattr(args, setting, None):
            raise ValueError(f"trainer.args.{setting}: tdlog records one row per example and a packed or "
                             f"padding-free row holds several; set {setting}=False in the SFTConfig")
    loss_type = getattr(args, "loss_type", None)
    if sft and loss_type not in (None, "nll"):
        raise ValueError(f"trainer.args.loss_type: tdlog records the token cross-entropy (loss_type='nll'), got "
                         f"{loss_type!r}")


def _mismatch_cause(trainer: Trainer) -> str | None:
    """What in the trainer would make its loss other than the cross-entropy tdlog records."""
    if getattr(trainer, "label_smoother", None) is not None:
        return (f"label smoothing (TrainingArguments.label_smoothing_factor={trainer.args.label_smoothing_factor}): "
                "the model optimises the smoothed loss")
    if getattr(trainer, "compute_loss_func", None) is not None:
        return "the trainer's compute_loss_func"
    if type(trainer).compute_loss is not Trainer.compute_loss and not _uses_sft_loss(trainer):
        return f"{type(trainer).__name__}.compute_loss, the trainer's own loss"
    return None


def _uses_sft_loss(trainer: Trainer) -> bool:
    """The trainer's loss is TRL SFTTrainer's own, which scores through a fused LM head that returns no logits."""
    own = type(trainer).compute_loss
    return any(_is_trl_class(cls, "SFTTrainer") and own is cls.compute_loss for cls in type(trainer).__mro__)


def _keep_column(trainer: Trainer, column: str) -> None:
    """Add ``column`` to the columns ``remove_unused_columns`` keeps. Private API of transformers (pinned in
    constraints.txt and tested): ``Trainer._set_signature_columns_if_needed`` and ``_signature_columns``,
    which TRL's SFTTrainer overrides the same way."""
    trainer._set_signature_columns_if_needed()
    if column not in trainer._signature_columns:
        trainer._signature_columns = [*trainer._signature_columns, column]


def _loss_normaliser(trainer: Trainer, num_items_in_batch: Any) -> Any:
    """The count the batch loss was divided by (the Trainer multiplies it back by the number of processes
    when it averages tokens across devices)."""
    if num_items_in_batch is None:
        return None
    processes = getattr(getattr(trainer, "accelerator", None), "num_processes", 1)
    if getattr(trainer.args, "average_tokens_across_devices", False) and processes > 1:
        return num_items_in_batch / processes
    return num_items_in_batch


def attach(
    trainer: Trainer,
    run_dir: str | os.PathLike,
    *,
    id_column: str = "sample_id",
    num_classes: int | None = None,
    record_eval: bool = False,
    strict: bool = False,
    margins: bool = True,
    **recorder_options: Any,
) -> OutputRecorder:
    """Record every training example of every step of ``trainer`` to the run at ``run_dir``.

    Args:
        trainer: a ``transformers.Trainer``, ``Seq2SeqTrainer`` or ``trl.SFTTrainer`` (or a subclass) whose
            datasets hold ``id_column`` (see :func:`add_sample_ids`); its model may be wrapped (PEFT, DDP,
            ``torch.compile``).
        run_dir: the run folder or URI (:class:`~tdlog.recorder.Recorder`'s ``path``).
        id_column: the example key holding each example's id (int or str); carried around the data collator
            and never passed to the model.
        num_classes: outputs per position; default: the last dimension of the first batch's logits (the
            vocabulary of a language model, the labels of a classifier). A given one is checked against them.
        record_eval: also log evaluation batches (``trainer.evaluate()``), to split ``"eval"``.
        strict: a batch whose recorded losses are not the trainer's own loss raises instead of warning.
        margins: ``trl.SFTTrainer`` only (its fused LM head computes no logits): also project the counted
            tokens' hidden states through the LM head, without gradient, for each example's token-mean margin
            (:mod:`~.lm_head`; what AUM and control examples need); ``False`` records loss, probability and
            accuracy only and skips that projection.
        **recorder_options: passed to :class:`~tdlog.recorder.Recorder` (``metadata``, ``flush_seconds``, ...).

    Returns the :class:`~tdlog.recorder.integrations.outputs.OutputRecorder` (its run closed at interpreter exit;
    ``close()`` it to finish earlier).
    """
    if getattr(trainer, "_tdlog_recorder", None) is not None:
        raise ValueError("trainer: a recorder is already attached to this trainer")
    check_trainer(trainer)
    recording = OutputRecorder(run_dir, trainer.model, num_classes=num_classes, strict=strict, **recorder_options)
    recording.set_cause(_mismatch_cause(trainer))
    epochs = _EpochCallback(recording)
    trainer.add_callback(epochs)
    _keep_column(trainer, id_column)
    trainer.data_collator = CarryIds(trainer.data_collator, id_column)
    original_compute_loss = trainer.compute_loss
    sft_loss = _uses_sft_loss(trainer)
    fused: dict[str, Any] = {}  # the fused LM head's outputs (and hidden states) of the batch in compute_loss
    if sft_loss:
        def keep_fused_outputs(module, args, kwargs, output):
            if kwargs.get("fused_lm_head"):
                fused["outputs"] = output

        trainer.model.register_forward_hook(keep_fused_outputs, with_kwargs=True)
        if margins:
            def keep_hidden_states(module, args, output):
                fused["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

            unwrap(trainer.model).base_model.register_forward_hook(keep_hidden_states)
    original_prediction_step = trainer.prediction_step
    held: dict[str, Any] = {}  # ids of the batch prediction_step is working on

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        ids = inputs.pop(id_column, None)
        if ids is None:
            ids = held.pop("ids", None)
        if ids is None:
            raise KeyError(f"id_column: the batch has no {id_column!r} key; add one with add_sample_ids(dataset)")
        labels = inputs.get("labels")  # before the Trainer may pop it (label smoothing)
        if sft_loss:  # TRL's fused LM head: per-token log-probabilities, no logits
            fused.clear()
            loss = original_compute_loss(model, inputs, num_items_in_batch=num_items_in_batch, **kwargs)
            if model.training or record_eval:
                outputs = fused.pop("outputs")
                logits = {}
                if margins:
                    head = unwrap(model).get_output_embeddings()
                    target, other = target_and_other_logits(
                        fused.pop("hidden")[:, :-1], head.weight, head.bias, labels[:, 1:], outputs.label_mask)
                    logits = {"target_logits": target, "other_logits": other}
                recording.log_token_log_probs(
                    ids, outputs.log_probs, outputs.label_mask, correct=outputs.is_top1, epoch=epochs.epoch,
                    split="train" if model.training else "eval", batch_loss=loss,
                    num_items_in_batch=_loss_normaliser(trainer, num_items_in_batch), **logits)
            return loss
        else:
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            loss, outputs = original_compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training or record_eval:
            logits = outputs.get("logits") if isinstance(outputs, dict) else outputs[1]
            if logits is None:
                raise ValueError(f"trainer: {type(trainer).__name__}.compute_loss returned outputs without logits; "
                                 "tdlog records the logits the loss is computed from")
            recording.log(ids, logits, labels, epoch=epochs.epoch, split="train" if model.training else "eval",
                          batch_loss=loss, num_items_in_batch=_loss_normaliser(trainer, num_items_in_batch))
        return (loss, outputs) if return_outputs else loss
    def prediction_step(model, inputs, prediction_loss_only, ignore_keys=None, **kwargs):
        if id_column in inputs:
            held["ids"] = inputs.pop(id_column)
        try:
            return original_prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **kwargs)
        finally:
            held.pop("ids", None)

    original_train = trainer.train

    def train(resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = get_last_checkpoint(trainer.args.output_dir) if resume_from_checkpoint is True \
            else resume_from_checkpoint
        if checkpoint and state_file(checkpoint, trainer.args.process_index).exists():
            recording.resume_from(json.loads(state_file(checkpoint, trainer.args.process_index).read_text()))
        return original_train(resume_from_checkpoint, *args, **kwargs)

    trainer.compute_loss = compute_loss
    trainer.prediction_step = prediction_step
    trainer.train = train
    trainer._tdlog_recorder = recording
    return recording
