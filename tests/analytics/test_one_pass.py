"""The one-pass score query (``sql/scores_one_pass.sql`` + epoch bitmasks) against ``sql/scores.sql``."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.analytics.epoch_masks import BITS_PER_WORD, MAX_EPOCHS, WORDS, forgetting_columns, popcount
from tdlog.recorder import Recorder

from ..reference import forgetting

SAMPLES, CLASSES, EPOCHS = 40, 3, MAX_EPOCHS + 12


@pytest.fixture(scope="module")
def gappy_run(tmp_path_factory):
    """Every epoch skips a random quarter of the samples and logs a few samples twice."""
    path = tmp_path_factory.mktemp("gappy") / "run"
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    with Recorder(path, num_classes=CLASSES) as rec:
        rec.register_samples(torch.arange(SAMPLES), labels)
        for epoch in range(EPOCHS):
            ids = torch.randperm(SAMPLES, generator=generator)[: 3 * SAMPLES // 4]
            if epoch % 7 == 0:
                ids = torch.cat([ids, ids[:2]])  # seen twice: these samples need the exact query
            logits = torch.randn(len(ids), CLASSES, generator=generator)
            logits[torch.arange(len(ids)), labels[ids]] += 0.8
            rec.log(ids, logits, labels[ids], epoch=epoch)
    return path


@pytest.mark.parametrize("epochs", [range(0, 60), range(5, 5 + MAX_EPOCHS), None])
def test_scores_equal_the_exact_query(gappy_run, epochs) -> None:
    lower, upper = (0, 2**62) if epochs is None else (epochs.start, epochs.stop)
    with analytics.open_run(gappy_run) as run:
        fast = run.scores(epochs=epochs, el2n_epochs=range(0, 30))
        exact = run.query("scores", split="train", epoch_from=lower, epoch_to=upper, el2n_to=30).sort("sample_id")
    assert_frame_equal(fast.select(exact.columns), exact, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    assert fast["epochs"].min() < min(upper, EPOCHS) - lower  # gaps exercised
    assert fast["forgetting_events"].max() >= 2


def _pack(bits: np.ndarray) -> np.ndarray:
    """``(n, epochs)`` bool -> ``(WORDS, n)`` int64 words, bit b of word w = column 62 w + b."""
    padded = np.zeros((len(bits), MAX_EPOCHS), dtype=np.int64)
    padded[:, : bits.shape[1]] = bits
    weights = np.left_shift(1, np.arange(BITS_PER_WORD, dtype=np.int64))
    return (padded.reshape(len(bits), WORDS, BITS_PER_WORD) * weights).sum(2).T


def test_forgetting_from_masks_matches_the_reference() -> None:
    rng = np.random.default_rng(0)
    epochs = MAX_EPOCHS
    recorded = rng.random((500, epochs)) < 0.7
    recorded[:5] = False
    recorded[:5, [0, 100, 247]] = True  # the first and last bit of the range, across words
    learned = recorded & (rng.random((500, epochs)) < np.linspace(0.02, 0.99, 500)[:, None])
    columns = forgetting_columns(_pack(recorded), _pack(learned), 10)
    np.testing.assert_array_equal(popcount(_pack(recorded)), recorded.sum(1))
    for row in range(500):
        positions = np.flatnonzero(recorded[row])
        events, first, good = forgetting(learned[row, positions])
        expected = [np.nan if v is None else v for v in
                    (events, None if first is None else positions[first] + 10,
                     None if good is None else positions[good] + 10)]
        got = [columns[name][row] for name in ("forgetting_events", "first_learned_epoch", "learned_for_good_epoch")]
        np.testing.assert_array_equal(got, expected)
        assert columns["never_learned"][row] == (events is None)
    assert np.isnan(columns["forgetting_events"]).any() and np.nanmax(columns["forgetting_events"]) >= 3
    assert pl.Series(columns["learned_for_good_epoch"]).is_nan().sum() < 500
