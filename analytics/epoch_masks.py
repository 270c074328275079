"""Forgetting statistics from per-sample epoch bitmasks (the columns of ``sql/scores_one_pass.sql``).

A sample's epochs are packed in ``WORDS`` signed 64-bit words of ``BITS_PER_WORD`` bits: bit ``b`` of word
``w`` stands for the epoch ``epoch_from + BITS_PER_WORD * w + b``. ``recorded`` has a bit for each epoch
with a record, ``learned`` for each epoch in which the sample was learned (``pred = target``).
"""

from __future__ import annotations

import numpy as np

WORDS, BITS_PER_WORD = 4, 62
MAX_EPOCHS = WORDS * BITS_PER_WORD  # epochs one query can pack per sample
CHUNK_ROWS = 1 << 16  # rows unpacked at a time: bounds memory at ~ CHUNK_ROWS x MAX_EPOCHS x 3 bytes


def unpack(words: np.ndarray, epochs: int) -> np.ndarray:
    """``(n, WORDS)`` int64 words -> ``(n, epochs)`` bool, column ``j`` = bit ``j`` of the packed epochs."""
    as_bytes = np.ascontiguousarray(words, dtype="<i8").view(np.uint8).reshape(len(words), WORDS, 8)
    bits = np.unpackbits(as_bytes, axis=2, bitorder="little")[:, :, :BITS_PER_WORD]
    return bits.reshape(len(words), MAX_EPOCHS)[:, :epochs].astype(bool)


def popcount(words: np.ndarray) -> np.ndarray:
    """Number of bits set per row of ``(n, WORDS)`` int64 words."""
    as_bytes = np.ascontiguousarray(words, dtype="<i8").view(np.uint8).reshape(len(words), -1)
    return np.unpackbits(as_bytes, axis=1).sum(1, dtype=np.int64)


def forgetting_columns(
    recorded: np.ndarray, learned: np.ndarray, epoch_from: int, epochs: int
) -> dict[str, np.ndarray]:
    """The forgetting columns of ``sql/forgetting.sql`` from ``(n, WORDS)`` recorded / learned words.

    Over each sample's recorded epochs ``e_1 < ... < e_m`` with learned flags ``l_i``:
    ``forgetting_events = #{i > 1: l_{i-1} and not l_i}`` (null and ``never_learned`` when no ``l_i``),
    ``first_learned_epoch = min{e_i: l_i}``, ``learned_for_good_epoch = e_j`` with ``j`` the first index
    after the last unlearned epoch, when ``l_m`` (null otherwise). ``epochs`` = columns to unpack.
    Returns float64 arrays with NaN for null, and the boolean ``never_learned``.
    """
    parts = [
        _chunk(recorded[start:start + CHUNK_ROWS], learned[start:start + CHUNK_ROWS], epochs)
        for start in range(0, len(recorded), CHUNK_ROWS)
    ]
    columns = {name: np.concatenate([p[name] for p in parts]) if parts else np.empty(0) for name in _NAMES}
    for name in ("first_learned_epoch", "learned_for_good_epoch"):
        columns[name] = columns[name] + epoch_from
    columns["never_learned"] = np.isnan(columns["first_learned_epoch"])
    return columns


_NAMES = ("forgetting_events", "first_learned_epoch", "learned_for_good_epoch")


def _chunk(recorded_words: np.ndarray, learned_words: np.ndarray, epochs: int) -> dict[str, np.ndarray]:
    recorded, learned = unpack(recorded_words, epochs), unpack(learned_words, epochs)
    positions = np.arange(epochs, dtype=np.int16)
    rows = np.arange(len(recorded))
    # learned state at the latest recorded epoch before each position (forward fill over gaps)
    last_recorded = np.maximum.accumulate(np.where(recorded, positions, -1), axis=1)
    state = learned[rows[:, None], np.maximum(last_recorded, 0)] & (last_recorded >= 0)
    before = np.zeros_like(state)
    before[:, 1:] = state[:, :-1]
    events = (recorded & ~learned & before).sum(1).astype(np.float64)
    ever = learned.any(1)
    first = np.where(ever, learned.argmax(1), np.nan)
    last_unlearned = np.where(recorded & ~learned, positions, -1).max(1)
    stays = recorded & (positions > last_unlearned[:, None])
    learned_at_end = stays.any(1)
    return {
        "forgetting_events": np.where(ever, events, np.nan),
        "first_learned_epoch": first,
        "learned_for_good_epoch": np.where(learned_at_end, stays.argmax(1), np.nan),
    }
