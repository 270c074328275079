"""Sequence runs with control examples score like classifier runs with threshold samples: sequence AUM is
the epoch mean of each example's token-mean margin (checked against NumPy over the per-token margins), the
controls set the cutoff and choose the epoch window, and the flags find the examples whose completions are
wrong."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.recorder import Recorder

N, EPOCHS, T, VOCAB = 300, 10, 12, 64
CONTROLS = np.arange(0, N, 10)  # 30 controls
WRONG = np.arange(5, N, 10)  # 30 real examples with a wrong completion


def token_margins(rng: np.random.Generator, epoch: int) -> np.ndarray:
    """[N, T] per-token margins: clean examples learned, controls and wrong ones both memorised from epoch 6."""
    margins = rng.normal(min(0.8 * epoch - 0.5, 3.0), 1.0, size=(N, T))
    for wrong in (CONTROLS, WRONG):
        margins[wrong] = rng.normal(-2.0 if epoch < 6 else 4.0, 1.0, size=(len(wrong), T))
    return margins


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("seq") / "run"
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, T + 1, size=N)  # counted tokens per example
    mask = np.arange(T)[None, :] < lengths[:, None]
    logged = []
    with Recorder(path, num_classes=VOCAB) as rec:
        controls = np.zeros(N, dtype=bool)
        controls[CONTROLS] = True
        rec.register_samples(np.arange(N), controls=controls, completion=[f"answer {i}" for i in range(N)])
        for epoch in range(EPOCHS):
            margins = token_margins(rng, epoch)
            other = rng.normal(1.0, 0.5, size=(N, T))
            target = other + margins
            log_probs = -np.logaddexp(0, -margins)  # any per-token log-probability: AUL's input
            for ids in np.array_split(rng.permutation(N), 5):
                rec.log_token_log_probs(
                    torch.as_tensor(ids), torch.as_tensor(log_probs[ids] * mask[ids], dtype=torch.float32),
                    torch.as_tensor(mask[ids]), epoch=epoch,
                    target_logits=torch.as_tensor(target[ids], dtype=torch.float32),
                    other_logits=torch.as_tensor(other[ids], dtype=torch.float32))
            logged.append((margins * mask).sum(1) / mask.sum(1))
    return path, np.stack(logged)  # [E, N] token-mean margins


def test_sequence_aum_is_the_epoch_mean_of_token_mean_margins(sequence_run) -> None:
    path, per_epoch = sequence_run
    with analytics.open_run(path) as run:
        aum = run.aum(epochs=None).sort("sample_id")
        early = run.aum(epochs=range(0, 4)).sort("sample_id")
    np.testing.assert_allclose(aum["aum"].to_numpy(), per_epoch.mean(0), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(early["aum"].to_numpy(), per_epoch[:4].mean(0), rtol=2e-5, atol=2e-6)


def test_the_controls_choose_the_window_and_set_the_cutoff(sequence_run) -> None:
    path, per_epoch = sequence_run
    with analytics.open_run(path) as run:
        window = run.epoch_window()
        assert window is not None and window.threshold_samples == len(CONTROLS)
        assert window.epochs.stop <= 7  # before the wrong completions are memorised
        cutoff = run.threshold_cutoff(epochs=window.epochs)
        controls_aum = per_epoch[window.epochs.start:window.epochs.stop].mean(0)[CONTROLS]
        assert cutoff == pytest.approx(np.percentile(controls_aum, 99), rel=1e-4)
        scores = run.scores()
    real = scores.filter(~scores["sample_id"].is_in(CONTROLS.tolist()))
    flagged = set(real.filter(real["aum_flagged"])["sample_id"].to_list())
    truth = set(WRONG.tolist())
    precision, recall = len(flagged & truth) / max(len(flagged), 1), len(flagged & truth) / len(truth)
    assert precision >= 0.9 and recall >= 0.9
    assert "completion" in scores.columns
    every_epoch = window.criterion["separation"][-1]  # memorised completions wash the controls' signal out
    assert window.separation > every_epoch


def test_dropping_the_flagged_examples_in_one_line() -> None:
    from tdlog.analytics.cleaning import drop_flagged

    from ..recorder.test_controls import N, prompt_completion, tokens

    scores = pl.DataFrame({"sample_id": list(range(N)), "flagged": [i % 7 == 0 for i in range(N)]})
    cleaned = drop_flagged(prompt_completion(), scores)
    assert cleaned["sample_id"] == [i for i in range(N) if i % 7] and cleaned.column_names == ["sample_id", "prompt",
                                                                                                "completion"]
    assert [row["sample_id"] for row in drop_flagged(tokens(), [0, 1, 2])] == list(range(3, N))
    with pytest.raises(ValueError, match="id_column: the dataset has no 'id' column"):
        drop_flagged(prompt_completion(), [1], id_column="id")
