"""Sequence models: token-level logits ``[B, T, V]`` reduced to one row per example, on the logits' device.

A sequence row holds, over the example's counted tokens (targets other than ``ignore_index``), the means of
the token statistics of :func:`tdlog.recorder.stats.batch_statistics`: ``loss`` = mean token cross-entropy
(what a Hugging Face model's ``loss`` is for a batch of that example alone), ``margin``, ``target_logit``,
``other_logit``, ``prob``, ``el2n`` the mean token values, ``correct`` = token accuracy (share of tokens
whose argmax is the target), ``tokens`` = the count; ``target``, ``pred`` and ``other_class`` are
``NO_CLASS`` (-1). With ``shift=True`` (causal language models) token ``t`` is scored against target
``t + 1``, as the models' own loss does.

Memory: the token statistics are computed ``chunk_values`` logits at a time (one float32 scratch copy of a
slice of the sequence), so the extra memory is bounded whatever ``B x T x V``.
"""

from __future__ import annotations

import torch

from tdlog.format import NO_CLASS

IGNORE_INDEX = -100  # the Hugging Face convention: targets that are not scored
CHUNK_VALUES = 1 << 24  # logits (float32) processed at a time: 64 MiB of scratch


@torch.no_grad()
def sequence_statistics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: torch.Tensor | None = None,
    *,
    shift: bool = False,
    ignore_index: int = IGNORE_INDEX,
    chunk_values: int = CHUNK_VALUES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(floats [7, B] float32, ints [4, B] int32)`` in the order of ``FLOAT_STATS`` / ``INT_STATS`` for
    token logits ``[B, T, V]`` and targets ``[B, T]``. Per example, over its tokens ``t`` with
    ``y_t != ignore_index`` (``n`` of them): ``loss = (1/n) sum_t -log softmax(z_t)_{y_t}`` (or the given
    per-example ``loss``), ``margin = (1/n) sum_t (z_{t,y_t} - max_{j != y_t} z_{t,j})``, likewise
    ``target_logit``, ``other_logit``, ``prob``, ``el2n``; ``correct = (1/n) #{t: argmax_j z_{t,j} = y_t}``;
    ``tokens = n``. An example with no counted token gets NaN statistics and ``tokens = 0``. Targets
    outside ``[0, V)`` (other than ``ignore_index``) are clamped; the caller refuses such a batch."""
    if shift:
        logits, targets = logits[:, :-1], targets[:, 1:]
    batch, length, vocabulary = logits.shape
    sums = torch.zeros(7, batch, dtype=torch.float64, device=logits.device)
    step = max(1, chunk_values // max(1, batch * vocabulary))
    for start in range(0, length, step):
        y = targets[:, start:start + step]
        counted = (y != ignore_index)
        token_floats, correct = _token_statistics(logits[:, start:start + step], y.clamp(0, vocabulary - 1))
        weights = counted.to(torch.float64)
        sums[:6] += (token_floats.to(torch.float64) * weights).sum(2)
        sums[6] += (correct.to(torch.float64) * weights).sum(1)
    tokens = (targets != ignore_index).sum(1)
    means = torch.where(tokens > 0, sums / tokens.clamp_min(1), float("nan")).to(torch.float32)
    if loss is not None:
        means[0] = loss.detach().float().reshape(-1)
    no_class = torch.full((batch,), NO_CLASS, dtype=torch.int32, device=logits.device)
    ints = torch.stack([no_class, no_class, no_class, tokens.to(torch.int32)])
    return means, ints


def _token_statistics(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[6, B, t]`` token statistics (cross-entropy, margin, target and other logit, prob, el2n) and the
    ``[B, t]`` correctness of logits ``[B, t, V]``, from one float32 copy with the target set to ``-inf``
    (the formulas of :func:`tdlog.recorder.stats.batch_statistics`)."""
    masked = logits.detach().to(torch.float32, copy=True)
    index = y.unsqueeze(2)
    target_logit = masked.gather(2, index).squeeze(2)
    masked.scatter_(2, index, float("-inf"))
    other_logit, other_class = masked.max(2)
    top = torch.maximum(target_logit, other_logit)
    others_exp = masked.sub_(top.unsqueeze(2)).exp_()
    others_sum = others_exp.sum(2)
    others_norm = torch.linalg.vector_norm(others_exp, dim=2)
    target_exp = torch.exp(target_logit - top)
    total = others_sum + target_exp
    target_is_top = target_logit >= other_logit
    cross_entropy = torch.where(target_is_top, torch.log1p(others_sum), (top - target_logit) + torch.log(total))
    floats = torch.stack([cross_entropy, target_logit - other_logit, target_logit, other_logit, target_exp / total,
                          torch.hypot(others_sum, others_norm) / total])
    correct = target_is_top & ((target_logit > other_logit) | (y < other_class))
    return floats, correct
