"""``OutputRecorder``: what the integrations log a model's outputs with. It opens the run's
:class:`~tdlog.recorder.Recorder` at the first batch, when the logits tell the output count, scores token
logits by the model's task (:mod:`tdlog.recorder.integrations.models`) and hands the model's own loss to
the loss cross-check (:mod:`tdlog.recorder.loss_check`)."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..recorder import Recorder
from .models import model_task, shifts_labels, unwrap


class OutputRecorder:
    """Records a model's logits against its labels, by the rules of the model's task.

    Args:
        run_dir: the run folder or URI (:class:`~tdlog.recorder.Recorder`'s ``path``).
        model: the model being trained (wrappers are seen through); decides the task and so the shift.
        num_classes: outputs per position; default: the last dimension of the first batch's logits. A given
            one is checked against them.
        strict: a loss mismatch raises (:class:`~tdlog.recorder.LossMismatchError`) instead of warning.
        **recorder_options: passed to :class:`~tdlog.recorder.Recorder`.

    ``recorder`` is None until the first batch when ``num_classes`` is not given.
    """

    def __init__(self, run_dir: str | os.PathLike, model: torch.nn.Module, *, num_classes: int | None = None,
                 strict: bool = False, **recorder_options: Any) -> None:
        self.run_dir, self.strict, self.recorder_options = run_dir, strict, recorder_options
        self.task = model_task(model)
        head = getattr(unwrap(model), "get_output_embeddings", lambda: None)()
        self.vocabulary = num_classes or (head.weight.shape[0] if head is not None else None)
        self.shift = shifts_labels(self.task)
        self.expected_classes = num_classes
        self.cause: str | None = None  # what the caller knows that could explain a loss mismatch
        self.recorder: Recorder | None = None
        self._resume: dict[str, Any] | None = None
        self._registrations: list[tuple[tuple, dict]] = []  # register_samples calls made before the run opened
        if num_classes is not None:
            self._open(num_classes)

    @property
    def num_classes(self) -> int | None:
        """The run's output count (None until the first batch when it was not given)."""
        return self.recorder.num_classes if self.recorder is not None else self.expected_classes

    def _open(self, num_classes: int) -> Recorder:
        self.recorder = Recorder(self.run_dir, num_classes=num_classes, strict=self.strict, **self.recorder_options)
        self.recorder.loss_check.cause = self.cause
        if self._resume is not None:
            self.recorder.resume_from(self._resume)
            self._resume = None
        for args, kwargs in self._registrations:
            self.recorder.register_samples(*args, **kwargs)
        self._registrations.clear()
        return self.recorder

    def register_samples(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`tdlog.recorder.Recorder.register_samples`, now or (its arguments checked then) when the run
        opens at the first batch."""
        if self.recorder is not None:
            self.recorder.register_samples(*args, **kwargs)
        else:
            self._registrations.append((args, kwargs))

    def log(self, sample_ids: Any, logits: torch.Tensor, labels: torch.Tensor, *, epoch: int, split: str = "train",
            batch_loss: torch.Tensor | None = None, num_items_in_batch: Any = None) -> None:
        """Log one batch: ``logits`` ``[B, C]`` or ``[B, T, V]`` against ``labels`` (shifted for a causal LM);
        ``batch_loss`` is the model's own loss of the batch, checked against the recorded rows."""
        if labels is None:
            raise KeyError("labels: the batch has no 'labels'; tdlog scores the logits against the labels the model's "
                           "loss uses")
        outputs = logits.shape[-1]
        if self.recorder is None:
            self._open(outputs - int(bool(self.recorder_options.get("with_threshold_class", False))))
        elif self.recorder.num_outputs != outputs:
            raise ValueError(f"num_classes: the run records {self.recorder.num_outputs} outputs per position, the "
                             f"model's logits have {outputs} (logits shape {tuple(logits.shape)})")
        if logits.dim() == 3 and labels.shape != logits.shape[:2]:
            raise ValueError(f"labels: expected shape {tuple(logits.shape[:2])} to match the logits "
                             f"{tuple(logits.shape)} of a {self.task or 'token'} model, got {tuple(labels.shape)}")
        self.recorder.log(sample_ids, logits, labels, epoch=epoch, split=split, shift=self.shift and logits.dim() == 3,
                          batch_loss=batch_loss, num_items_in_batch=num_items_in_batch)

    def log_token_log_probs(self, sample_ids: Any, log_probs: torch.Tensor, mask: torch.Tensor, *,
                            correct: torch.Tensor | None, epoch: int, split: str = "train",
                            batch_loss: torch.Tensor | None = None, num_items_in_batch: Any = None,
                            **token_logits: torch.Tensor) -> None:
        """Log a batch of target-token log-probabilities (a fused LM head computed no logits; ``token_logits``:
        ``target_logits`` and ``other_logits``, see :meth:`~tdlog.recorder.Recorder.log_token_log_probs`); the
        run opens with ``num_classes`` = the model's vocabulary (its output embeddings)."""
        if self.recorder is None:
            self._open(self.vocabulary)
        self.recorder.log_token_log_probs(sample_ids, log_probs, mask, correct=correct, epoch=epoch, split=split,
                                          batch_loss=batch_loss, num_items_in_batch=num_items_in_batch,
                                          **token_logits)

    def set_cause(self, cause: str | None) -> None:
        """Name what could explain a loss mismatch (label smoothing, a custom loss) in its report."""
        self.cause = cause
        if self.recorder is not None:
            self.recorder.loss_check.cause = cause

    def state_dict(self) -> dict[str, Any]:
        """The recorder's state (:meth:`~tdlog.recorder.Recorder.state_dict`); empty before the first batch."""
        return self.recorder.state_dict() if self.recorder is not None else {}

    def resume_from(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state, now or when the recorder opens."""
        if not state:
            return
        if self.recorder is not None:
            self.recorder.resume_from(state)
        else:
            self._resume = state

    def flush(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def __repr__(self) -> str:
        return f"OutputRecorder({str(self.run_dir)!r}, task={self.task}, num_classes={self.num_classes})"
