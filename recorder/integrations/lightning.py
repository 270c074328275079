"""Record a Lightning training: pass :class:`RecorderCallback` to ``lightning.Trainer(callbacks=[...])``.

>>> trainer = lightning.Trainer(max_epochs=20, callbacks=[RecorderCallback("runs/exp1", num_classes=10)])
>>> trainer.fit(module, DataLoader(DatasetWithIndex(dataset), batch_size=64, shuffle=True))

What the module must do: compute its logits by calling itself (``logits = self(x)`` in
``training_step``), so that the callback sees them through a forward hook; ``training_step`` may return
only the loss. The first call of the module in each training batch is taken as that batch's logits (a
tensor ``[B, C]``, ``[B, T, V]`` for a sequence model, or an output object with ``.logits``).

A module that wraps a Hugging Face model (``self.model(**batch)`` returning a ``ModelOutput``) is recorded
by the rules of ``attach`` (:mod:`tdlog.recorder.integrations.models`): the hook sits on that model, the
targets are the ``labels`` it was called with, causal LMs are shifted, the output count comes from the
first batch's logits, and the model's own ``loss`` is checked against the recorded rows
(:mod:`tdlog.recorder.loss_check`).

Batches: tuples whose last element is the ids (``DatasetWithIndex`` yields ``(x, y, i)``; the targets are
the second element), or dicts holding ``id_key`` and ``target_key``. Under DDP each process records its
own batches (rank and world size come from ``torch.distributed``, set up by Lightning before ``setup``).
The epoch is ``trainer.current_epoch``. The recorder's state is saved in every Lightning checkpoint (the
callback's ``state_dict``) and ``trainer.fit(..., ckpt_path=...)`` resumes the recorder from it: rows
logged after that checkpoint stop counting (FORMAT.md, "Attempts").
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from .models import is_hugging_face_model
from .outputs import OutputRecorder


class RecorderCallback(pl.Callback):
    """Records every training batch of a ``LightningModule`` to the run at ``run_dir``.

    Args:
        run_dir: the run folder or URI (:class:`~tdlog.recorder.Recorder`'s ``path``).
        num_classes: outputs of the model (the vocabulary for a sequence model); default: the last dimension
            of the first batch's logits.
        id_key, target_key: the keys of dict batches holding the ids and the targets.
        shift: token logits of a causal language model: score token ``t`` against target ``t + 1``; default:
            by the model's task (a Hugging Face causal LM is shifted, a plain module is not).
        strict: a batch whose recorded losses are not the model's own ``loss`` raises instead of warning.
        **recorder_options: passed to :class:`~tdlog.recorder.Recorder`.
    """

    def __init__(self, run_dir: str | os.PathLike, *, num_classes: int | None = None, id_key: str = "sample_id",
                 target_key: str = "labels", shift: bool | None = None, strict: bool = False,
                 **recorder_options: Any) -> None:
        super().__init__()
        self.run_dir, self.num_classes, self.strict = run_dir, num_classes, strict
        self.id_key, self.target_key, self.shift = id_key, target_key, shift
        self.recorder_options = recorder_options
        self.recorder: OutputRecorder | None = None
        self._hook = None
        self._seen: tuple[Any, Any, Any] | None = None  # (logits, labels, loss) of the batch's first call
        self._capturing = False
        self._resume: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.recorder is not None:
            return
        target = next((m for m in pl_module.modules() if is_hugging_face_model(m)), pl_module)
        self.recorder = OutputRecorder(self.run_dir, target, num_classes=self.num_classes, strict=self.strict,
                                       **self.recorder_options)
        if self.shift is not None:
            self.recorder.shift = self.shift
        self._hook = target.register_forward_hook(self._capture, with_kwargs=True)
        if self._resume:
            self.recorder.resume_from(self._resume)

    def state_dict(self) -> dict[str, Any]:
        """The recorder's state (:meth:`~tdlog.recorder.Recorder.state_dict`), saved with each checkpoint."""
        return self.recorder.state_dict() if self.recorder is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the recorder from a checkpoint's state (before the first training batch)."""
        if not state_dict:
            return
        if self.recorder is not None:
            self.recorder.resume_from(state_dict)
        else:
            self._resume = state_dict

    def _capture(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if self._capturing and self._seen is None:
            self._seen = (getattr(output, "logits", output), kwargs.get("labels"), getattr(output, "loss", None))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._seen, self._capturing = None, True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._capturing = False
        if self._seen is None:
            raise RuntimeError("RecorderCallback: the module was not called in training_step; compute the logits "
                               "with self(x) so that the callback sees them")
        logits, labels, loss = self._seen
        ids, targets = self._ids_and_targets(batch, labels is not None)
        self.recorder.log(ids, logits, labels if labels is not None else targets, epoch=trainer.current_epoch,
                          batch_loss=loss)
        self._seen = None

    def _ids_and_targets(self, batch: Any, labelled: bool) -> tuple[Any, torch.Tensor | None]:
        """The batch's ids, and its targets unless the model was called with its labels."""
        if isinstance(batch, dict):
            needed = (self.id_key,) if labelled else (self.id_key, self.target_key)
            missing = [key for key in needed if key not in batch]
            if missing:
                raise KeyError(f"id_key, target_key: the batch has no {missing} (keys: {sorted(batch)})")
            return batch[self.id_key], batch.get(self.target_key)
        if isinstance(batch, list | tuple) and len(batch) >= 3:
            return batch[-1], batch[1]
        raise TypeError("batch: expected a dict or a tuple (inputs, targets, ..., ids) as DatasetWithIndex "
                        f"yields, got {type(batch).__name__}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.recorder is not None:
            self._hook.remove()
            self.recorder.close()
            self.recorder = None
