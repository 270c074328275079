"""The loss cross-check: the losses a run records must add up to the loss the model optimised.

Given the model's own batch loss ``L`` (``Recorder.log(..., batch_loss=L)``; the integrations pass it), the
recorder compares it on the first ``FIRST_BATCHES`` batches and then on one batch in ``EVERY`` with the
rows it records for that batch: per example ``i`` its recorded loss ``l_i`` over ``n_i`` counted tokens
(``n_i = 1`` for a classification row), ``S = sum_i n_i l_i`` and ``N = sum_i n_i``. The batch passes when
``L`` equals ``S / N`` (the token-weighted mean: a model's mean loss) or ``S / num_items_in_batch`` (the
Hugging Face Trainer's normalisation under gradient accumulation, when given), within
``|L - x| <= RTOL |L| + ATOL``. Float32 sums of the same per-token values in another order differ by a few
ulps per token; ``RTOL = 1e-4`` leaves room for that and still catches label smoothing, a weighted loss or
a wrong shift (each moves the loss by far more).

A checked batch costs one host sync of two scalars; the other batches cost nothing. A mismatch is reported
once per recorder, loudly (a ``RuntimeWarning`` naming both numbers and the likely cause) and kept in
``run.json`` under ``loss_check`` (FORMAT.md); with ``strict=True`` it raises :class:`LossMismatchError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

FIRST_BATCHES = 8  # every batch is checked until this many have been
EVERY = 16  # then one batch in this many
RTOL, ATOL = 1e-4, 1e-6


class LossMismatchError(RuntimeError):
    """The recorded losses of a batch do not add up to the model's own loss (``strict=True``)."""


@dataclass
class LossCheck:
    """Which batches are checked, and what was found. ``cause``: what the caller knows that could explain a
    mismatch (an integration names label smoothing or a custom ``compute_loss``)."""

    strict: bool = False
    on_report: Callable[[dict[str, Any]], None] | None = None
    cause: str | None = None
    batches: int = 0
    checked: int = 0
    mismatched: int = 0
    first_mismatch: dict[str, Any] | None = field(default=None)

    def due(self) -> bool:
        """Count a batch; whether it is one of those checked."""
        self.batches += 1
        return self.batches <= FIRST_BATCHES or self.batches % EVERY == 0

    def compare(self, losses: torch.Tensor, tokens: torch.Tensor, batch_loss: Any, num_items_in_batch: Any, *,
                step: int, alternative: Callable[[], str | None] | None = None) -> None:
        """Check ``batch_loss`` against the recorded per-example ``losses`` ``[B]`` over ``tokens`` ``[B]``
        counted tokens each (rows with none are left out); ``alternative`` names a likely cause, computed
        only on a mismatch."""
        candidates = recorded_losses(losses, tokens, num_items_in_batch)
        if not candidates:
            return
        model_loss = scalar(batch_loss)
        self.checked += 1
        if agrees(model_loss, candidates):
            return
        if not math.isfinite(model_loss) or not all(math.isfinite(v) for v in candidates.values()):
            return  # NaN/Inf batches are counted by the writer (nonfinite_rows), not here
        self.mismatched += 1
        if self.first_mismatch is not None:
            return  # counted; close() writes the totals
        causes = [c for c in (alternative() if alternative is not None else None, self.cause) if c]
        causes.append("label smoothing, a weighted or custom loss, or targets other than the model's labels")
        recorded = ", ".join(f"{name} {value:.6g}" for name, value in candidates.items())
        self.first_mismatch = {"step": step, "model_loss": model_loss, "recorded": candidates,
                               "likely_cause": causes[0]}
        message = (f"tdlog: the recorded losses are not the model's own loss at step {step}: recorded {recorded}; "
                   f"the model's loss {model_loss:.6g}. Likely cause: {'; or '.join(causes)}. The rows hold the "
                   "plain cross-entropy of the logits (run.json 'loss_check'; strict=True makes this an error)")
        if self.on_report is not None:
            self.on_report(self.report())
        if self.strict:
            raise LossMismatchError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def report(self) -> dict[str, Any]:
        """What ``run.json`` keeps under ``loss_check`` for this recorder's rank."""
        return {"checked": self.checked, "mismatched": self.mismatched, "first_mismatch": self.first_mismatch}


def recorded_losses(losses: torch.Tensor, tokens: torch.Tensor, num_items_in_batch: Any) -> dict[str, float]:
    """The batch loss the recorded rows imply, by each normalisation a model uses: ``S / N`` and, when given,
    ``S / num_items_in_batch`` (``S = sum_i n_i l_i`` over rows with ``n_i > 0``); empty when no token counts."""
    counted = tokens > 0
    weights = tokens.to(torch.float64)
    total = float(torch.where(counted, losses.to(torch.float64) * weights, 0.0).sum())
    count = float(weights.sum())
    if count == 0:
        return {}
    candidates = {"token-weighted mean": total / count}
    if num_items_in_batch is not None and float(num_items_in_batch) > 0:
        candidates["sum / num_items_in_batch"] = total / float(num_items_in_batch)
    return candidates


def scalar(batch_loss: Any) -> float:
    """The model's batch loss as a float (one host sync for a device tensor)."""
    return float(torch.as_tensor(batch_loss).detach().float().reshape(()))


def agrees(model_loss: float, candidates: dict[str, float]) -> bool:
    """``model_loss`` equals one of the ``candidates`` within ``RTOL``/``ATOL``."""
    return any(math.isclose(model_loss, value, rel_tol=RTOL, abs_tol=ATOL) for value in candidates.values())
