"""Sequence models: token-level logits ``[B, T, V]`` reduced to one row per example, on the logits' device.

A sequence row holds, over the example's counted tokens (targets other than ``ignore_index``), the means of
the token statistics of :func:`tdlog.recorder.stats.batch_statistics`: ``loss`` = mean token cross-entropy
(what a Hugging Face model's ``loss`` is for a batch of that example alone), ``margin``, ``target_logit``,
``other_logit``, ``prob``, ``el2n`` the mean token values, ``correct`` = token accuracy (share of tokens
whose argmax is the target), ``tokens`` = the count; ``target``, ``pred`` and ``other_class`` are
``NO_CLASS`` (-1). With ``shift=True`` (causal language models) token ``t`` is scored against target
``t + 1``, as the models' own loss does.

Memory: the token statistics are computed ``chunk_values`` logits at a time (one float32 softmax of a slice
of the sequence), so the extra memory is bounded whatever ``B x T x V``.
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
    scratch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(floats [7, B] float32, ints [4, B] int32)`` in the order of ``FLOAT_STATS`` / ``INT_STATS`` for
    token logits ``[B, T, V]`` and targets ``[B, T]``. Per example, over its tokens ``t`` with
    ``y_t != ignore_index`` (``n`` of them): ``loss = (1/n) sum_t -log softmax(z_t)_{y_t}`` (or the given
    per-example ``loss``), ``margin = (1/n) sum_t (z_{t,y_t} - max_{j != y_t} z_{t,j})``, likewise
    ``target_logit``, ``other_logit``, ``prob``, ``el2n``; ``correct = (1/n) #{t: argmax_j z_{t,j} = y_t}``;
    ``tokens = n``. An example with no counted token gets NaN statistics and ``tokens = 0``. Targets
    outside ``[0, V)`` (other than ``ignore_index``) are clamped; the caller refuses such a batch.
    ``scratch``: a float32 tensor of at least ``min(chunk_values, B * T * V)`` elements on the logits'
    device, reused across calls (fresh host memory costs page faults on every call: 3x the softmax)."""
    targets = scored_targets(targets, shift=shift, ignore_index=ignore_index)
    batch, length, vocabulary = logits.shape
    flat_logits, flat_targets = logits.reshape(batch * length, vocabulary), targets.reshape(-1)  # views, usually
    example = torch.arange(batch, device=logits.device).repeat_interleave(length)
    sums = torch.zeros(7, batch, dtype=torch.float64, device=logits.device)
    rows = max(1, min(chunk_values, scratch.numel() if scratch is not None else chunk_values) // vocabulary)
    for start in range(0, batch * length, rows):
        y = flat_targets[start:start + rows]
        chunk = flat_logits[start:start + rows]
        out = scratch[:chunk.numel()].view(chunk.shape) if scratch is not None else None
        token_floats, correct = _token_statistics(chunk, y.clamp(0, vocabulary - 1), out)
        counted = (y != ignore_index).to(torch.float64)
        sums.index_add_(1, example[start:start + rows], torch.cat([token_floats.to(torch.float64),
                                                                   correct.to(torch.float64).unsqueeze(0)]) * counted)
    tokens = (targets != ignore_index).sum(1)
    means = torch.where(tokens > 0, sums / tokens.clamp_min(1), float("nan")).to(torch.float32)
    if loss is not None:
        means[0] = loss.detach().float().reshape(-1)
    no_class = torch.full((batch,), NO_CLASS, dtype=torch.int32, device=logits.device)
    ints = torch.stack([no_class, no_class, no_class, tokens.to(torch.int32)])
    return means, ints


def scored_targets(targets: torch.Tensor, *, shift: bool, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The target each token position is scored against: ``targets`` itself, or with ``shift`` the next
    token's (``ignore_index`` for the last position). The targets move, not the logits: a slice of the
    logits would be copied."""
    return torch.nn.functional.pad(targets[:, 1:], (0, 1), value=ignore_index) if shift else targets


def _token_statistics(logits: torch.Tensor, y: torch.Tensor,
                      out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[6, n]`` token statistics (cross-entropy, margin, target and other logit, prob, el2n) and the
    ``[n]`` correctness of logits ``[n, V]``, from one float32 softmax ``p`` (written into ``out`` when
    given) with the target's entry then zeroed: ``q = sum_{j != y} p_j`` is ``1 - p_y`` without
    cancellation, ``o`` = the largest other class. Cross-entropy is ``-log1p(-q)`` when ``p_y > 1/2`` and
    ``-(z_y - z_o) - log p_o`` otherwise (``log Z = z_o - log p_o``: exact however small ``p_y`` is),
    ``el2n = hypot(q, ||p_{j != y}||)``."""
    logits = logits.detach()
    if logits.dtype != torch.float32:
        logits_f32 = out.copy_(logits) if out is not None else logits.float()
        p = torch.softmax(logits_f32, dim=1, out=out) if out is not None else torch.softmax(logits_f32, dim=1)
    else:
        p = torch.softmax(logits, dim=1, out=out) if out is not None else torch.softmax(logits, dim=1)
    index = y.unsqueeze(1)
    prob = p.gather(1, index).squeeze(1)
    p.scatter_(1, index, 0.0)
    other_prob, other_class = p.max(1)
    others = p.sum(1)
    others_norm = torch.linalg.vector_norm(p, dim=1)
    target_logit = logits.gather(1, index).squeeze(1).float()
    other_logit = logits.gather(1, other_class.unsqueeze(1)).squeeze(1).float()
    margin = target_logit - other_logit
    cross_entropy = torch.where(prob > 0.5, -torch.log1p(-others), -margin - torch.log(other_prob))
    floats = torch.stack([cross_entropy, margin, target_logit, other_logit, prob, torch.hypot(others, others_norm)])
    correct = (margin > 0) | ((margin == 0) & (y < other_class))
    return floats, correct
