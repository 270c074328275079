"""Per-sample statistics of one batch, vectorised on the device the logits live on."""

from __future__ import annotations

import torch


@torch.no_grad()
def batch_statistics(
    logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of every row of a batch, in float32, without leaving the logits' device.

    With ``z`` the raw logits of a sample, ``y`` its target and ``p = softmax(z)``:

    - ``loss``         = the given per-sample loss, else cross-entropy ``-log p_y``
    - ``margin``       = ``z_y - max_{j != y} z_j`` (ties give 0)
    - ``target_logit`` = ``z_y``; ``other_logit`` = ``max_{j != y} z_j``; ``other_class`` = its argmax
    - ``prob``         = ``p_y``
    - ``el2n``         = ``|| p - onehot(y) ||_2``
    - ``pred``         = ``argmax_j z_j``

    Returns ``(floats, ints)``: ``floats`` is ``[B, 6]`` float32 in the order of
    ``format.FLOAT_STATS``; ``ints`` is ``[B, 3]`` int32 in the order of ``format.INT_STATS``.
    Targets outside ``[0, C)`` are clamped so that a bad batch cannot trigger a device-side assert; the
    caller validates the range and refuses to write such a batch.
    """
    z = logits.detach().float()
    num_outputs = z.shape[1]
    y = targets.detach().long().clamp(0, num_outputs - 1).unsqueeze(1)
    target_logit = z.gather(1, y)
    other_logit, other_class = z.scatter(1, y, float("-inf")).max(1, keepdim=True)
    log_p = torch.log_softmax(z, dim=1)
    log_p_y = log_p.gather(1, y)
    p = log_p.exp()
    prob = log_p_y.exp()
    el2n = p.scatter(1, y, prob - 1.0).norm(dim=1, keepdim=True)
    per_sample_loss = -log_p_y if loss is None else loss.detach().float().reshape(-1, 1)
    floats = torch.cat(
        [per_sample_loss, target_logit - other_logit, target_logit, other_logit, prob, el2n], dim=1
    )
    ints = torch.cat([targets.detach().long().unsqueeze(1), other_class, z.argmax(1, keepdim=True)], dim=1)
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
