"""Budgets split across groups, and seeded per-sample keys that order the picks inside a group.

Both engines select with these functions, so that a selection depends on the sample ids and the seed alone
(not on the order in which an engine reads the records).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_keys(ids: Any, seed: int, stream: int = 0) -> np.ndarray:
    """A uint64 pseudo-random key per sample id, a function of ``(id, seed, stream)`` alone: SplitMix64 of
    ``id + (seed * 2 + stream + 1) * golden`` for integer ids (stable across versions); Polars' seeded hash for
    text ids (stable within one Polars version). Sorting by the key is a uniform random order of the ids;
    ``stream`` gives independent orders for the same seed (0: picks, 1: the k-means training sample)."""
    values = ids.to_numpy() if isinstance(ids, pl.Series) else np.asarray(ids)
    if values.dtype.kind not in "iu":
        return pl.Series(values, dtype=pl.String).hash(seed=seed * 2 + stream + 1).to_numpy()
    z = values.astype(np.uint64)  # a copy, updated in place (two arrays in all: no temporary per step)
    shifted = np.empty_like(z)
    with np.errstate(over="ignore"):
        z += np.uint64(seed * 2 + stream + 1) * _GOLDEN
        for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
            np.right_shift(z, np.uint64(shift), out=shifted)
            z ^= shifted
            if multiplier is not None:
                z *= np.uint64(multiplier)
    return z


def balanced_counts(sizes: np.ndarray, budget: int) -> np.ndarray:
    """How many to take from each group of ``sizes`` so that the counts sum to ``budget`` and are as equal
    as the sizes allow (water filling, as S2L shares its budget): groups in ascending size each take
    ``min(size, remaining // groups_left)``. A group that is not taken whole gets ``t`` or ``t + 1`` for one
    ``t`` (balanced within one); groups smaller than ``t`` are taken whole. Ties in size go by group order."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= budget <= int(sizes.sum()):
        raise ValueError(f"budget: expected 0 to {int(sizes.sum())} samples, got {budget}")
    counts = np.zeros(len(sizes), dtype=np.int64)
    remaining = budget
    order = np.argsort(sizes, kind="stable")
    for position, group in enumerate(order):
        counts[group] = min(int(sizes[group]), remaining // (len(order) - position))
        remaining -= counts[group]
    return counts


def take_lowest(groups: np.ndarray, order_keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices of the rows to take: in each group ``g`` (``groups`` holds ``0..G-1`` per row), the ``counts[g]``
    rows with the lowest ``order_keys`` (ties: the lower row). Sorted ascending. O(n): the rows are grouped by
    a radix sort (16-bit group numbers when they fit) and each group is partitioned, not sorted."""
    narrow = groups.astype(np.int16) if len(counts) <= np.iinfo(np.int16).max else groups
    by_group = np.argsort(narrow, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=len(counts)))])
    taken = []
    for group, count in enumerate(counts):
        if count:
            rows = by_group[bounds[group]:bounds[group + 1]]
            taken.append(rows if count >= len(rows) else _lowest(rows, order_keys[rows], int(count)))
    return np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)


def _lowest(rows: np.ndarray, keys: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows with the lowest keys (ties: the lower row), in O(n) with a partition."""
    cut = np.partition(keys, count - 1)[count - 1]
    below = rows[keys < cut]
    at = rows[keys == cut]
    return np.concatenate([below, np.sort(at)[:count - len(below)]])


def budget_count(budget: int | float, candidates: int) -> int:
    """``budget`` as a number of samples: an int (at most ``candidates``) or a share in ``(0, 1]`` of the
    ``candidates`` (rounded to the nearest count)."""
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise TypeError(f"budget: expected an int count or a float share, got {type(budget).__name__}")
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget: expected a share in (0, 1], got {budget}")
        return round(budget * candidates)
    if not 0 <= budget <= candidates:
        raise ValueError(f"budget: expected 0 to {candidates} samples (the selectable ones), got {budget}")
    return budget


def allocate(group_source: np.ndarray, group_sizes: np.ndarray, budget: int) -> np.ndarray:
    """How many to take from each ``(source, cluster)`` group, groups ordered by source then cluster
    (``group_source``: each group's source, 0-based in order): the budget shared among the sources, then each
    source's share among its groups, both by :func:`~tdlog.analytics.allocation.balanced_counts`."""
    sources = int(group_source.max(initial=-1)) + 1
    shares = balanced_counts(np.bincount(group_source, weights=group_sizes, minlength=sources).astype(np.int64),
                             budget)
    counts = np.zeros(len(group_sizes), dtype=np.int64)
    for source, share in enumerate(shares):
        members = np.flatnonzero(group_source == source)
        counts[members] = balanced_counts(group_sizes[members], int(share))
    return counts


def source_codes(series: pl.Series) -> np.ndarray:
    """0-based codes of ``series``'s values in sorted order, null first."""
    codes = series.rank("dense").to_numpy()
    return np.where(np.isnan(codes), 0, codes).astype(np.int64) - (0 if series.null_count() else 1)
