"""Record a Hugging Face ``Trainer``: one line before ``trainer.train()``.

>>> from tdlog.recorder.integrations.huggingface import add_sample_ids, attach
>>> train = add_sample_ids(train)                   # a sample_id column 0..N-1, if the dataset has none
>>> trainer = Trainer(model=model, args=args, train_dataset=train, ...)
>>> attach(trainer, "runs/exp1")                    # then an unmodified trainer.train()

What ``attach`` does: the id column joins the columns the Trainer keeps (so ``remove_unused_columns=True``
keeps it), and the trainer's ``compute_loss`` (yours too, in a subclass) is wrapped: it takes the ids out
of the batch before the model sees it, calls the original with ``return_outputs=True`` and logs the
batch's logits with its ``labels``. Classification logits ``[B, C]`` are logged per sample; token logits
``[B, T, V]`` per example (:mod:`tdlog.recorder.sequence`), shifted for causal language models as their own
loss is. Every micro-batch of gradient accumulation is logged; under ``torchrun`` each rank logs its own
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

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..recorder import Recorder


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


def is_causal_lm(model: torch.nn.Module) -> bool:
    """The model is a causal language model (its loss shifts the labels by one token)."""
    model = getattr(model, "module", model)
    return type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def model_outputs(model: torch.nn.Module) -> int:
    """The number of logits per position: ``config.vocab_size`` of a causal LM, else ``config.num_labels``."""
    config = getattr(getattr(model, "module", model), "config", None)
    if config is None:
        raise ValueError("num_classes: the model has no config to read it from; pass num_classes=...")
    return config.vocab_size if is_causal_lm(model) else config.num_labels


def state_file(checkpoint: str | os.PathLike, rank: int) -> Path:
    """Where a checkpoint holds the recorder state of ``rank``."""
    return Path(checkpoint) / f"tdlog_recorder-r{rank}.json"


class _EpochCallback(TrainerCallback):
    """Keeps the Trainer's integer epoch (``state.epoch`` is fractional inside an epoch), saves the recorder
    state into every checkpoint and flushes the recorder when training ends."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.epoch = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch = int((state.epoch or 0) + 1e-9)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if checkpoint.is_dir():
            state_file(checkpoint, self.recorder.rank).write_text(json.dumps(self.recorder.state_dict()))

    def on_train_end(self, args, state, control, **kwargs):
        self.recorder.flush()


def attach(
    trainer: Trainer,
    run_dir: str | os.PathLike,
    *,
    id_column: str = "sample_id",
    num_classes: int | None = None,
    record_eval: bool = False,
    **recorder_options: Any,
) -> Recorder:
    """Record every training example of every step of ``trainer`` to the run at ``run_dir``.

    Args:
        trainer: a ``transformers.Trainer`` (or a subclass) whose datasets hold ``id_column``
            (see :func:`add_sample_ids`).
        run_dir: the run folder or URI (:class:`~tdlog.recorder.Recorder`'s ``path``).
        id_column: the batch key holding each example's id; never passed to the model.
        num_classes: outputs per position; default: the model config's ``vocab_size`` for a causal LM,
            ``num_labels`` otherwise.
        record_eval: also log evaluation batches (``trainer.evaluate()``), to split ``"eval"``.
        **recorder_options: passed to :class:`~tdlog.recorder.Recorder` (``metadata``, ``flush_seconds``, ...).

    Returns the :class:`~tdlog.recorder.Recorder` (closed at interpreter exit; ``close()`` it to finish earlier).
    """
    if getattr(trainer, "_tdlog_recorder", None) is not None:
        raise ValueError("trainer: a recorder is already attached to this trainer")
    causal = is_causal_lm(trainer.model)
    recorder = Recorder(run_dir, num_classes=num_classes or model_outputs(trainer.model), **recorder_options)
    epochs = _EpochCallback(recorder)
    trainer.add_callback(epochs)
    trainer._set_signature_columns_if_needed()  # the columns remove_unused_columns keeps
    trainer._signature_columns = [*trainer._signature_columns, id_column]
    original_compute_loss = trainer.compute_loss
    original_prediction_step = trainer.prediction_step
    held: dict[str, Any] = {}  # ids of the batch prediction_step is working on

    def compute_loss(model, inputs, return_outputs=False, **kwargs):
        ids = inputs.pop(id_column, None)
        if ids is None:
            ids = held.pop("ids", None)
        if ids is None:
            raise KeyError(f"id_column: the batch has no {id_column!r} key; add one with add_sample_ids(dataset)")
        labels = inputs.get("labels")  # before the Trainer may pop it (label smoothing)
        loss, outputs = original_compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training or record_eval:
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
            recorder.log(ids, logits, labels, epoch=epochs.epoch, split="train" if model.training else "eval",
                         shift=causal and logits.dim() == 3)
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
        if checkpoint and state_file(checkpoint, recorder.rank).exists():
            recorder.resume_from(json.loads(state_file(checkpoint, recorder.rank).read_text()))
        return original_train(resume_from_checkpoint, *args, **kwargs)

    trainer.compute_loss = compute_loss
    trainer.prediction_step = prediction_step
    trainer.train = train
    trainer._tdlog_recorder = recorder
    return recorder
