"""``epochs="auto"``: the epoch window chosen from the threshold samples, on runs built so that the right
window is known: wrong labels memorised from a given epoch on (late or early), or never."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.analytics.window import choose_window
from tdlog.cli import main
from tdlog.recorder import Recorder, threshold_samples

N, C, E = 400, 4, 20


def write_window_run(path, *, memorise_from: int | None, threshold: bool = True, seed: int = 0,
                     noise_rate: float = 0.2) -> np.ndarray:
    """Clean samples' true-class logit gains 1 per epoch; ``noise_rate`` noisy labels (the next class) and the
    threshold samples (class C) are memorised from epoch ``memorise_from`` on (their target logit gains 2 per
    epoch: their margin then grows as a clean sample's), never when None. Returns the logits, ``[E, N, C + 1]``
    (``[E, N, C]`` without threshold samples)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    observed = labels.copy()
    noisy = rng.random(N) < noise_rate
    observed[noisy] = (labels[noisy] + 1) % C
    targets = threshold_samples(observed, C, seed=seed) if threshold else observed
    wrong = targets != labels
    outputs = C + 1 if threshold else C
    history = np.empty((E, N, outputs), dtype=np.float32)
    with Recorder(path, num_classes=C, with_threshold_class=threshold) as rec:
        rec.register_samples(np.arange(N), observed, targets=targets, true_label=labels)
        for epoch in range(E):
            logits = rng.normal(0, 1, (N, outputs)).astype(np.float32)
            logits[np.arange(N), labels] += 1.0 * epoch
            if memorise_from is not None and epoch >= memorise_from:
                logits[wrong, targets[wrong]] += 2.0 * epoch
            history[epoch] = logits
            rec.log(torch.arange(N), torch.from_numpy(logits), torch.from_numpy(targets), epoch=epoch)
    return history


def reference_window(history: np.ndarray, targets: np.ndarray, is_threshold: np.ndarray) -> range:
    """The rule in plain NumPy: from the first epoch in which the other samples' mean margin is positive,
    the prefix with the largest ``d_e``."""
    separation = reference_separation(history, targets, is_threshold)
    floor = int(np.argmax(reference_margins(history, targets)[:, ~is_threshold].mean(1) > 0))
    separation[:floor] = -np.inf
    return range(0, int(np.argmax(separation)) + 1)


def reference_margins(history: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[E, N]`` margins ``z_y - max_{j != y} z_j`` in float64."""
    logits = history.astype(np.float64)
    target = np.take_along_axis(logits, targets[None, :, None], 2)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, targets[None, :, None], -np.inf, 2)
    return target - others.max(2)


def reference_separation(history: np.ndarray, targets: np.ndarray, is_threshold: np.ndarray) -> np.ndarray:
    """``d_e`` per prefix window in float64 NumPy, from the logits."""
    margins = reference_margins(history, targets)
    prefix = np.cumsum(margins, 0) / np.arange(1, len(margins) + 1)[:, None]
    t, o = prefix[:, is_threshold], prefix[:, ~is_threshold]
    return (o.mean(1) - t.mean(1)) / np.sqrt((o.var(1) + t.var(1)) / 2)


@pytest.fixture(scope="module")
def memorising(tmp_path_factory):
    path = tmp_path_factory.mktemp("window") / "memorising"
    return path, write_window_run(path, memorise_from=6)


def test_a_run_that_memorises_gets_an_early_window_with_the_reference_criterion(memorising) -> None:
    path, history = memorising
    with analytics.open_run(path) as run:
        window = run.epoch_window()
        roles = run.sql("SELECT sample_id, target, is_threshold FROM samples ORDER BY sample_id")
    expected = reference_separation(history, roles["target"].to_numpy(), roles["is_threshold"].to_numpy())
    # margins are stored as float32 (relative rounding 6e-8), averaged over up to 20 epochs and 400 samples
    np.testing.assert_allclose(window.criterion["separation"].to_numpy(), expected, rtol=1e-5)
    assert window.threshold_samples == N // (C + 1) and window.other_samples == N - N // (C + 1)
    assert window.epochs == reference_window(history, roles["target"].to_numpy(), roles["is_threshold"].to_numpy())
    assert window.best == pytest.approx(expected[window.epochs.stop - 1], rel=1e-5)
    assert 4 <= window.epochs.stop <= 8  # memorising starts in epoch 6: the window ends about there
    n_t, n_o = N // (C + 1), N - N // (C + 1)
    assert window.standard_error == pytest.approx(math.sqrt(1 / n_t + 1 / n_o + window.best**2 / (2 * N)))


def test_a_run_whose_separation_peaks_early_gets_a_short_window(tmp_path) -> None:
    """Memorised from epoch 2: the separation peaks within the first three epochs, shorter than a fixed
    quarter of the run would allow (5 of 20 epochs)."""
    history = write_window_run(tmp_path / "run", memorise_from=2, seed=1)
    with analytics.open_run(tmp_path / "run") as run:
        window = run.epoch_window()
        roles = run.sql("SELECT sample_id, target, is_threshold FROM samples ORDER BY sample_id")
        chosen, fifth = run.scores(), run.scores(epochs=range(0, 5))
        truth = run.sql("SELECT sample_id, label <> true_label AS wrong FROM samples WHERE NOT is_threshold")
    expected = reference_separation(history, roles["target"].to_numpy(), roles["is_threshold"].to_numpy())
    assert int(np.argmax(expected)) <= 2
    assert window.epochs == reference_window(history, roles["target"].to_numpy(), roles["is_threshold"].to_numpy())
    assert window.epochs.stop <= 4

    def caught(table):
        flagged = table.join(truth, on="sample_id")
        return (flagged["aum_flagged"] == flagged["wrong"]).mean()

    assert caught(chosen) > caught(fifth)


def test_the_window_finds_the_noise_better_than_every_epoch(memorising) -> None:
    path, _ = memorising
    with analytics.open_run(path) as run:
        chosen = run.scores()
        every = run.scores(epochs=None)
        truth = run.sql("SELECT sample_id, label <> true_label AS wrong FROM samples WHERE NOT is_threshold")
    assert chosen.select("epoch_from", "epoch_to").unique().rows() == [(0, run.epoch_window().epochs.stop)]
    assert every.select("epoch_from", "epoch_to").unique().rows() == [(0, E)]

    def caught(table):
        flagged = table.join(truth, on="sample_id")
        return (flagged["aum_flagged"] == flagged["wrong"]).mean()

    assert caught(chosen) > 0.95 > caught(every)


def test_a_run_that_never_memorises_keeps_every_epoch(tmp_path) -> None:
    """No wrong label is ever fitted and no noise among the other samples: averaging more epochs only
    sharpens the separation, to the last epoch."""
    history = write_window_run(tmp_path / "run", memorise_from=None, noise_rate=0.0)
    with analytics.open_run(tmp_path / "run") as run:
        window = run.epoch_window()
        roles = run.sql("SELECT sample_id, target, is_threshold FROM samples ORDER BY sample_id")
        assert window.epochs == range(0, E)
        assert run.scores()["epoch_to"].unique().to_list() == [E]
    expected = reference_separation(history, roles["target"].to_numpy(), roles["is_threshold"].to_numpy())
    assert np.all(np.diff(expected) > 0)


def test_explicit_epochs_always_win_and_auto_equals_the_window(memorising) -> None:
    path, _ = memorising
    with analytics.open_run(path) as run:
        window = run.epoch_window().epochs
        assert run.aum().equals(run.aum(epochs=window))
        assert run.aul().equals(run.aul(epochs=window))
        assert run.threshold_cutoff() == run.threshold_cutoff(epochs=window)
        assert run.gmm().noise_rate == run.gmm(epochs=window).noise_rate
        assert run.aum(epochs=None).equals(run.aum(epochs=range(0, E)))
        assert not run.aum(epochs=None).equals(run.aum())
        assert run.scores(epochs=range(2, 15))["epoch_from", "epoch_to"].unique().rows() == [(2, 15)]
        with pytest.raises(ValueError, match=r"epochs: expected 'auto', None \(every epoch\) or a range.*'last'"):
            run.aum(epochs="last")


def test_the_criterion_on_a_sample_of_each_group_is_deterministic(memorising) -> None:
    path, _ = memorising
    with analytics.open_run(path) as run:
        first = choose_window(run.engine, max_samples=50)
        second = choose_window(run.engine, max_samples=50)
    assert first.threshold_samples == first.other_samples == 50
    # the same samples: equal up to the order DuckDB's threads sum in
    assert_frame_equal(first.criterion, second.criterion, check_exact=False, rel_tol=1e-12)
    assert first.epochs == second.epochs
    # fewer samples, a wider standard error: sqrt(1/50 + 1/50 + d^2/200)
    assert first.standard_error == pytest.approx(math.sqrt(0.04 + first.best**2 / 200))


def test_without_threshold_samples_every_epoch_and_a_memorisation_warning(tmp_path) -> None:
    write_window_run(tmp_path / "fits", memorise_from=6, threshold=False)
    with analytics.open_run(tmp_path / "fits") as run:
        assert run.epoch_window() is None
        accuracy = run.query("epoch_accuracy", split="train")
        reached = int(accuracy.filter(accuracy["accuracy"] >= 0.95)["epoch"][0])
        assert reached < E - 1
        with pytest.warns(UserWarning, match=rf"training accuracy reached .* at epoch {reached} .*"
                                             rf"epochs=range\(0, {reached + 1}\)"):
            aum = run.aum()
        assert aum.equals(run.aum(epochs=None))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run.aum(epochs=None)
            run.aum()  # said once per state of the run


def test_no_warning_while_the_accuracy_stays_low(tmp_path) -> None:
    write_window_run(tmp_path / "run", memorise_from=None, threshold=False)
    with analytics.open_run(tmp_path / "run") as run, warnings.catch_warnings():
        warnings.simplefilter("error")
        run.scores()


def test_cli_prints_the_window_and_takes_auto_all_or_a_range(memorising, tmp_path, capsys) -> None:
    path, _ = memorising
    with analytics.open_run(path) as run:
        window = run.epoch_window()
    assert main(["score", str(path), "--out", str(tmp_path / "auto.parquet")]) == 0
    printed = capsys.readouterr().out
    assert f"epochs 0:{window.epochs.stop} chosen from {N // (C + 1)} threshold samples" in printed
    assert "noise rate: " in printed and "(threshold)" in printed and "(gmm)" in printed
    assert main(["score", str(path), "--epochs", "all", "--out", str(tmp_path / "all.parquet")]) == 0
    assert main(["score", str(path), "--epochs", "3:9", "--out", str(tmp_path / "range.parquet")]) == 0
    import polars as pl

    spans = [pl.read_parquet(tmp_path / f"{name}.parquet")["epoch_to"].unique().to_list()
             for name in ("auto", "all", "range")]
    assert spans == [[window.epochs.stop], [E], [9]]
    with pytest.raises(SystemExit, match="1"):
        main(["score", str(path), "--epochs", "last", "--out", str(tmp_path / "x.parquet")])
    assert "expected auto, all or FROM:TO" in capsys.readouterr().err


def test_the_window_search_equals_a_per_row_computation(tmp_path) -> None:
    """The criterion from ``sql/window_search.sql``'s rows (one pass, vectorised prefix statistics) equals the
    same numbers from the sampled samples' raw records, sample by sample, on a run where every epoch skips a
    fifth of the samples and logs some twice (per-epoch means first; a sample counts in the epochs it has
    records in)."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, C, N)
    targets = threshold_samples(labels, C, seed=4)
    with Recorder(tmp_path / "run", num_classes=C, with_threshold_class=True) as rec:
        rec.register_samples(np.arange(N), labels, targets=targets)
        for epoch in range(12):
            ids = rng.permutation(N)[: 4 * N // 5]
            ids = np.concatenate([ids, ids[:7]])
            logits = rng.normal(0, 1, (len(ids), C + 1)).astype(np.float32)
            logits[np.arange(len(ids)), labels[ids]] += 0.3 * epoch
            rec.log(torch.from_numpy(ids), torch.from_numpy(logits), torch.from_numpy(targets[ids]), epoch=epoch)
    with analytics.open_run(tmp_path / "run") as run:
        window = choose_window(run.engine, max_samples=30)
        chosen = run.sql("SELECT sample_id, is_threshold FROM (SELECT sample_id, is_threshold, row_number() OVER "
                         "(PARTITION BY is_threshold ORDER BY hash(sample_id), sample_id) AS pick FROM samples) "
                         "WHERE pick <= 30")
        rows = run.sql("SELECT sample_id, epoch, margin FROM records WHERE sample_id IN (SELECT unnest($ids))",
                       {"ids": chosen["sample_id"].to_list()})
    flags = dict(zip(chosen["sample_id"], chosen["is_threshold"], strict=True))
    samples, epochs = np.unique(rows["sample_id"].to_numpy()), np.unique(rows["epoch"].to_numpy())
    sums, counts = np.zeros((len(samples), len(epochs))), np.zeros((len(samples), len(epochs)))
    np.add.at(sums, (np.searchsorted(samples, rows["sample_id"]), np.searchsorted(epochs, rows["epoch"])),
              rows["margin"].to_numpy().astype(np.float64))
    np.add.at(counts, (np.searchsorted(samples, rows["sample_id"]), np.searchsorted(epochs, rows["epoch"])), 1)
    present = counts > 0
    means = np.where(present, sums / np.maximum(counts, 1), 0.0)
    prefix = np.where(present, np.cumsum(means, 1) / np.maximum(np.cumsum(present, 1), 1), np.nan)
    is_threshold = np.array([flags[s] for s in samples])
    expected = {}
    for name, group in (("threshold", is_threshold), ("other", ~is_threshold)):
        expected[f"{name}_aum"] = np.nanmean(prefix[group], 0)
        expected[f"{name}_var"] = np.nanvar(prefix[group], 0)
    expected["other_margin"] = np.nanmean(np.where(present, means, np.nan)[~is_threshold], 0)
    separation = (expected["other_aum"] - expected["threshold_aum"]) / np.sqrt(
        (expected["other_var"] + expected["threshold_var"]) / 2)
    assert (~present).any() and (counts > 1).any()  # gaps and repeats exercised
    criterion = window.criterion
    for name in ("threshold_aum", "other_aum", "other_margin"):
        np.testing.assert_allclose(criterion[name].to_numpy(), expected[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(criterion["separation"].to_numpy(), separation, rtol=1e-9)
    assert window.threshold_samples == present[is_threshold].sum(0).max() <= 30  # at most 30 of each
    assert window.other_samples == present[~is_threshold].sum(0).max() <= 30
    assert len(samples) == 60
