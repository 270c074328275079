"""The statistics of :func:`tdlog.recorder.stats.batch_statistics`, in NumPy, for the writer thread (CPU batches).

The writer thread must not run torch ops: measured on a 2-core machine, one torch op in a second live thread
(even ``exp`` of 100 values) made every later training step of the main thread twice as slow (1.8 ms →
4.3 ms; benchmarks/recorder.py's MLP with ``torch.set_num_threads(2)``), while NumPy in that thread left it
unchanged. NumPy's ``exp`` is also about 4.7x faster than torch's here. Same formulas, same float32
arithmetic, same tie and NaN rules as the torch version (tests check them against each other and against a
float64 NumPy reference).
"""

from __future__ import annotations

import numpy as np

# Up to this many classes the rows are transposed to [classes, rows], so that every reduction over classes
# runs along the long axis (measured at 10 classes: 28 us per 512 rows, against 75 us over short rows).
TRANSPOSE_MAX_CLASSES = 32


def host_statistics(
    logits: np.ndarray, targets: np.ndarray, loss: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(floats [6, B] float32, ints [3, B] int32)`` of ``float32 logits [B, C]`` (used as scratch space)
    and ``int64 targets [B]`` in ``[0, C)``: the rows of :func:`tdlog.recorder.stats.batch_statistics`.

    With ``z`` a sample's logits, ``y`` its target, ``o = max_{j != y} z_j``, ``m = max(z_y, o)`` and
    ``e_j = exp(z_j - m)``: loss ``= -log p_y`` (or the given one), margin ``= z_y - o``, ``z_y``, ``o``,
    prob ``= e_y / sum_j e_j``, el2n ``= sqrt((sum_{j != y} e_j)^2 + sum_{j != y} e_j^2) / sum_j e_j``;
    target, other class ``argmax_{j != y} z_j`` and prediction ``argmax_j z_j`` (first index on ties).
    """
    rows, classes = logits.shape
    transposed = classes <= TRANSPOSE_MAX_CLASSES
    z = np.ascontiguousarray(logits.T) if transposed else logits
    axis = 0 if transposed else 1
    flat = z.reshape(-1)
    positions = targets * rows + np.arange(rows) if transposed else np.arange(rows) * classes + targets
    target_logit = flat[positions]
    flat[positions] = -np.inf
    other_logit, other_class = _max_and_first_argmax(z, axis)
    top = np.maximum(target_logit, other_logit)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # NaN/Inf logits are recorded as they are
        z -= np.expand_dims(top, axis)
        np.exp(z, out=z)  # exp(z_j - m), 0 at the target
        others_sum = z.sum(axis)
        z *= z
        others_squares = z.sum(axis)
        target_exp = np.exp(target_logit - top)
        total = others_sum + target_exp
        target_is_top = target_logit >= other_logit
        floats = np.empty((6, rows), np.float32)
        if loss is None:
            floats[0] = np.where(target_is_top, np.log1p(others_sum), (top - target_logit) + np.log(total))
        else:
            floats[0] = loss
        np.subtract(target_logit, other_logit, out=floats[1])
        floats[2] = target_logit
        floats[3] = other_logit
        np.divide(target_exp, total, out=floats[4])
        np.divide(np.hypot(others_sum, np.sqrt(others_squares)), total, out=floats[5])
    ints = np.empty((3, rows), np.int32)
    ints[0] = targets
    ints[1] = other_class
    first_max_is_target = target_is_top & ((target_logit > other_logit) | (targets < other_class))
    ints[2] = np.where(first_max_is_target, targets, other_class)
    return floats, ints


def _max_and_first_argmax(z: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum over ``axis`` and the first index reaching it; a NaN counts as the maximum (as in torch)."""
    if axis == 1:
        first = z.argmax(1)  # then read the maximum there: one pass over the row instead of two
        return z[np.arange(z.shape[0]), first], first
    top = z.max(0)  # NumPy's argmax over a short leading axis is slow: mark the maxima class by class
    first = np.zeros(z.shape[1], np.int64)
    for index in range(z.shape[0] - 1, -1, -1):
        first[z[index] == top] = index
    nan_columns = np.flatnonzero(np.isnan(top))
    if nan_columns.size:
        first[nan_columns] = np.isnan(z[:, nan_columns]).argmax(0)
    return top, first


def host_kept_logits(logits: np.ndarray, mode: str, topk: int, dtype: str) -> list[np.ndarray]:
    """The logits a run keeps besides the statistics: ``[]`` for ``none``, ``[logits]`` in ``dtype`` for
    ``full``, ``[values, classes]`` of the ``topk`` largest logits, largest first (float32, int32)."""
    if mode == "full":
        return [logits.astype(dtype)]
    if mode == "topk":
        candidates = np.argpartition(logits, logits.shape[1] - topk, axis=1)[:, -topk:]
        values = np.take_along_axis(logits, candidates, 1)
        order = np.argsort(-values, axis=1, kind="stable")
        return [np.take_along_axis(values, order, 1), np.take_along_axis(candidates, order, 1).astype(np.int32)]
    return []
