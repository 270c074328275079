"""Record a Lightning training: pass :class:`RecorderCallback` to ``lightning.Trainer(callbacks=[...])``.

>>> trainer = lightning.Trainer(max_epochs=20, callbacks=[RecorderCallback("runs/exp1", num_classes=10)])
>>> trainer.fit(module, DataLoader(DatasetWithIndex(dataset), batch_size=64, shuffle=True))

What the module must do: compute its logits by calling itself (``logits = self(x)`` in
``training_step``), so that the callback sees them through a forward hook; ``training_step`` may return
only the loss. The first call of the module in each training batch is taken as that batch's logits (a
tensor ``[B, C]``, ``[B, T, V]`` for a sequence model, or an output object with ``.logits``).

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

from ..recorder import Recorder


class RecorderCallback(pl.Callback):
    """Records every training batch of a ``LightningModule`` to the run at ``run_dir``.

    Args:
        run_dir: the run folder or URI (:class:`~tdlog.recorder.Recorder`'s ``path``).
        num_classes: outputs of the model (the vocabulary for a sequence model).
        id_key, target_key: the keys of dict batches holding the ids and the targets.
        shift: token logits of a causal language model: score token ``t`` against target ``t + 1``.
        **recorder_options: passed to :class:`~tdlog.recorder.Recorder`.
    """

    def __init__(self, run_dir: str | os.PathLike, *, num_classes: int, id_key: str = "sample_id",
                 target_key: str = "labels", shift: bool = False, **recorder_options: Any) -> None:
        super().__init__()
        self.run_dir, self.num_classes = run_dir, num_classes
        self.id_key, self.target_key, self.shift = id_key, target_key, shift
        self.recorder_options = recorder_options
        self.recorder: Recorder | None = None
        self._hook = None
        self._logits: torch.Tensor | None = None
        self._capturing = False
        self._resume: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.recorder is not None:
            return
        self.recorder = Recorder(self.run_dir, num_classes=self.num_classes, **self.recorder_options)
        self._hook = pl_module.register_forward_hook(self._capture)
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

    def _capture(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if self._capturing and self._logits is None:
            self._logits = getattr(output, "logits", output)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._logits, self._capturing = None, True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._capturing = False
        if self._logits is None:
            raise RuntimeError("RecorderCallback: the module was not called in training_step; compute the logits "
                               "with self(x) so that the callback sees them")
        ids, targets = self._ids_and_targets(batch)
        self.recorder.log(ids, self._logits, targets, epoch=trainer.current_epoch, shift=self.shift)
        self._logits = None

    def _ids_and_targets(self, batch: Any) -> tuple[Any, torch.Tensor]:
        if isinstance(batch, dict):
            missing = [key for key in (self.id_key, self.target_key) if key not in batch]
            if missing:
                raise KeyError(f"id_key, target_key: the batch has no {missing} (keys: {sorted(batch)})")
            return batch[self.id_key], batch[self.target_key]
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
