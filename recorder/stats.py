"""Per-sample statistics of a batch, vectorised on the device the logits live on."""

from __future__ import annotations

import torch


@torch.no_grad()
def batch_statistics(
    logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of every row of a batch, in float32, without leaving the logits' device.

    With ``z`` the raw logits of a sample, ``y`` its target, ``o = max_{j != y} z_j`` and
    ``p = softmax(z)``:

    - ``loss``         = the given per-sample loss, else cross-entropy
      ``-log p_y = log(1 + sum_{j != y} exp(z_j - z_y))``
    - ``margin``       = ``z_y - o`` (ties give 0); ``target_logit`` = ``z_y``; ``other_logit`` = ``o``
    - ``other_class``  = ``argmax_{j != y} z_j`` (first index on ties)
    - ``prob``         = ``p_y``
    - ``el2n``         = ``|| p - onehot(y) ||_2 = sqrt((1 - p_y)^2 + sum_{j != y} p_j^2)``
    - ``pred``         = ``argmax_j z_j`` (first index on ties)

    Everything is computed from one masked copy of the logits (the target entry set to ``-inf``), so
    ``1 - p_y`` and the off-target sums never suffer cancellation. Returns ``(floats, ints)``, one row
    per statistic (each row contiguous, ready to become an Arrow column): ``[6, B]`` float32 in the
    order of ``format.FLOAT_STATS`` and ``[3, B]`` int32 in the order of ``format.INT_STATS``.
    Targets outside ``[0, C)`` are clamped so that a bad batch cannot trigger a
    device-side assert; the caller refuses to write such a batch.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    y = targets.detach().long().clamp(0, logits.shape[1] - 1)
    masked = logits.detach().to(torch.float32, copy=True)
    target_logit = masked[rows, y]
    masked[rows, y] = float("-inf")
    other_logit, other_class = masked.max(1)
    top = torch.maximum(target_logit, other_logit)
    others_exp = masked.sub_(top.unsqueeze(1)).exp_()  # exp(z_j - max z), 0 at the target
    others_sum = others_exp.sum(1)
    others_norm = torch.linalg.vector_norm(others_exp, dim=1)
    target_exp = torch.exp(target_logit - top)
    total = others_sum + target_exp
    target_is_top = target_logit >= other_logit
    if loss is None:
        per_sample_loss = torch.where(target_is_top, torch.log1p(others_sum), (top - target_logit) + torch.log(total))
    else:
        per_sample_loss = loss.detach().float().reshape(-1)
    floats = torch.stack(
        [
            per_sample_loss,
            target_logit - other_logit,
            target_logit,
            other_logit,
            target_exp / total,
            torch.hypot(others_sum, others_norm) / total,
        ]
    )
    first_max_is_target = target_is_top & ((target_logit > other_logit) | (y < other_class))
    pred = torch.where(first_max_is_target, y, other_class)
    ints = torch.stack([targets.detach().long(), other_class, pred])
    return floats, ints.to(torch.int32)


@torch.no_grad()
def kept_logits(logits: torch.Tensor, mode: str, topk: int, dtype: str) -> tuple[torch.Tensor, ...]:
    """The logits a run keeps besides the statistics: ``()`` for ``none``, ``(logits,)`` in ``dtype``
    for ``full``, ``(values, classes)`` of the ``topk`` largest logits (float32, int32) for ``topk``."""
    if mode == "full":
        return (logits.detach().to(getattr(torch, dtype), copy=True),)
    if mode == "topk":
        values, classes = logits.detach().float().topk(topk, dim=1)
        return values, classes.to(torch.int32)
    return ()
