"""Forgetting statistics from per-sample epoch bitmasks (the columns of ``sql/scores_one_pass.sql``).

A sample's epochs are packed in up to ``WORDS`` non-negative int64 words of ``BITS_PER_WORD`` bits: bit ``b``
of word ``w`` stands for the epoch ``epoch_from + BITS_PER_WORD * w + b``. Arrays are word-major, ``(words,
n)`` for ``n`` samples, so that each word is contiguous; a range of ``E`` epochs needs ``words_for(E)`` words
(the query asks for no more: each word is two more aggregates per record). ``recorded`` has a bit for each
epoch with a record, ``learned`` for each epoch in which the sample was learned (``pred = target``).
Everything is word-parallel NumPy: no per-sample or per-epoch loop.
"""

from __future__ import annotations

import numpy as np

from . import queries

WORDS, BITS_PER_WORD = 4, 62
MAX_EPOCHS = WORDS * BITS_PER_WORD  # epochs one query can pack per sample
_WORD_MASK = np.int64((1 << BITS_PER_WORD) - 1)
_NONE = np.int64(-1)


def words_for(epochs: int) -> int:
    """Words that hold ``epochs`` consecutive epochs: ``ceil(epochs / BITS_PER_WORD)``, at least one."""
    return max(1, -(-epochs // BITS_PER_WORD))


def packed_query(words: int) -> str:
    """``sql/scores_one_pass.sql`` with only the first ``words`` mask words (what a range needs,
    :func:`words_for`): both engines drop the aggregates nobody selects (measured on DuckDB at 10^8 records
    of 100 epochs: four words of the eight cost a quarter of the query)."""
    masks = ", ".join(f"{name}_{w}" for w in range(words) for name in ("recorded", "learned"))
    return (f"SELECT sample_id, aum, aul, confidence, variability, correctness, el2n, observations, {masks} "
            f"FROM ({queries.load('scores_one_pass')}) AS packed")


def _word_starts(words: int) -> np.ndarray:
    """``(words, 1)``: the position of each word's bit 0."""
    return BITS_PER_WORD * np.arange(words, dtype=np.int64)[:, None]


def popcount(words: np.ndarray) -> np.ndarray:
    """Number of bits set per sample of ``(words, n)`` int64 words."""
    return np.bitwise_count(words).sum(0, dtype=np.int64)


def lowest_bit(words: np.ndarray) -> np.ndarray:
    """Position ``BITS_PER_WORD * w + b`` of the lowest set bit per sample; -1 for a sample with none."""
    lowest = np.bitwise_count((words & -words) - 1).astype(np.int64) + _word_starts(len(words))
    lowest[words == 0] = MAX_EPOCHS
    first = lowest.min(0)
    return np.where(first == MAX_EPOCHS, _NONE, first)


def highest_bit(words: np.ndarray) -> np.ndarray:
    """Position of the highest set bit per sample; -1 for a sample with none."""
    # frexp gives floor(log2(x)) + 1, exactly while x < 2**53: split each 62-bit word in two 31-bit halves
    upper, lower = words >> 31, words & ((1 << 31) - 1)
    in_word = np.where(upper > 0, np.frexp(upper)[1] + 30, np.frexp(lower)[1] - 1).astype(np.int64)
    return np.where(words > 0, in_word + _word_starts(len(words)), _NONE).max(0)


def below(positions: np.ndarray, words: int) -> np.ndarray:
    """``(words, n)`` words with every bit under ``positions`` (exclusive) set."""
    in_word = np.clip(positions - _word_starts(words), 0, BITS_PER_WORD)
    return (np.int64(1) << in_word) - 1


def forgetting_columns(recorded: np.ndarray, learned: np.ndarray, epoch_from: int) -> dict[str, np.ndarray]:
    """The forgetting columns of ``sql/forgetting.sql`` from ``(words, n)`` recorded / learned words.

    Over each sample's recorded epochs ``e_1 < ... < e_m`` with learned flags ``l_i``:
    ``forgetting_events = #{i > 1: l_{i-1} and not l_i}`` (null and ``never_learned`` when no ``l_i``),
    ``first_learned_epoch = min{e_i: l_i}``, ``learned_for_good_epoch = e_j`` with ``j`` the first index
    after the last unlearned epoch, when ``l_m`` (null otherwise). Returns float64 arrays, NaN for null,
    and the boolean ``never_learned``.

    Events without unpacking: shift every learned bit up by one and let it carry through the gap bits
    (epochs without a record, ``~recorded``); ``(gaps + (learned << 1)) & recorded`` then marks each
    recorded epoch whose previous recorded epoch was learned, and the events are those bits that are
    unlearned. Carries go from word to word.
    """
    unlearned = recorded & ~learned
    follows_learned = np.zeros_like(recorded)
    carry = shifted_in = np.int64(0)
    for w in range(len(recorded)):
        total = (~recorded[w] & _WORD_MASK) + (((learned[w] << 1) | shifted_in) & _WORD_MASK) + carry
        follows_learned[w] = total & _WORD_MASK
        carry, shifted_in = total >> BITS_PER_WORD, learned[w] >> (BITS_PER_WORD - 1)
    events = popcount(follows_learned & unlearned).astype(np.float64)
    first_learned = lowest_bit(learned)
    never = first_learned < 0
    last_unlearned = highest_bit(unlearned)
    learned_at_end = highest_bit(recorded) > last_unlearned
    good = lowest_bit(recorded & ~below(last_unlearned + 1, len(recorded)))
    return {
        "never_learned": never,
        "forgetting_events": np.where(never, np.nan, events),
        "first_learned_epoch": np.where(never, np.nan, first_learned + epoch_from),
        "learned_for_good_epoch": np.where(learned_at_end, good + epoch_from, np.nan),
    }
