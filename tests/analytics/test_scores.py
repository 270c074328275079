"""Every score against a NumPy reference computed from the logged logits; GMM against scikit-learn."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from aum import AUMCalculator
from sklearn.mixture import GaussianMixture

import tdlog.analytics as analytics
from tdlog.analytics.threshold import cutoff_of

from ..reference import forgetting, per_epoch_means, record_statistics
from .conftest import NUM_SAMPLES

# float32 statistics vs float64 reference: each value carries ~1e-7 relative error; sums of 6 epochs and
# DuckDB's double aggregates keep the scores within 1e-5.
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def reference(scored_run):
    _, logged = scored_run
    stats = record_statistics(logged["logits"], logged["targets"])
    return per_epoch_means(logged["ids"], logged["epoch"], stats), stats


def _by_id(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame.sort("sample_id")[column].to_numpy()


def test_per_epoch_scores_match_numpy(scored_run, reference) -> None:
    path, _ = scored_run
    means, _ = reference
    ids = sorted(means)
    with analytics.open_run(path) as run:
        aum, aul, data_map = run.aum(), run.aul(), run.data_map()
        el2n = run.el2n(epochs=range(0, 2))
    np.testing.assert_array_equal(aum.sort("sample_id")["sample_id"].to_numpy(), ids)
    np.testing.assert_allclose(_by_id(aum, "aum"), [means[i]["margin"].mean() for i in ids], **TOL)
    assert aum["aum"].is_sorted()  # most suspicious first
    np.testing.assert_allclose(_by_id(aul, "aul"), [means[i]["loss"].sum() for i in ids], **TOL)
    np.testing.assert_allclose(_by_id(data_map, "confidence"), [means[i]["prob"].mean() for i in ids], **TOL)
    np.testing.assert_allclose(_by_id(data_map, "variability"), [means[i]["prob"].std() for i in ids], **TOL)
    np.testing.assert_allclose(_by_id(data_map, "correctness"), [means[i]["correct"].mean() for i in ids], **TOL)
    np.testing.assert_allclose(_by_id(el2n, "el2n"), [means[i]["el2n"][:2].mean() for i in ids], **TOL)


def test_epoch_range_restricts_every_score(scored_run, reference) -> None:
    path, _ = scored_run
    means, _ = reference
    ids = sorted(means)
    with analytics.open_run(path) as run:
        aum = run.aum(epochs=range(2, 5))
        with pytest.raises(ValueError, match="epochs: expected a non-empty range of consecutive"):
            run.aul(epochs=range(0, 6, 2))
    np.testing.assert_allclose(_by_id(aum, "aum"), [means[i]["margin"][2:5].mean() for i in ids], **TOL)
    assert set(aum["epochs"].to_list()) == {3}


def test_default_el2n_uses_the_first_tenth_of_epochs(scored_run, reference) -> None:
    path, _ = scored_run
    means, _ = reference
    with analytics.open_run(path) as run:
        el2n = run.el2n()
    assert set(el2n["epochs"].to_list()) == {1}  # ceil(6 / 10) = 1 epoch
    np.testing.assert_allclose(_by_id(el2n, "el2n"), [means[i]["el2n"][0] for i in sorted(means)], **TOL)


def test_forgetting_events_match_reference(scored_run, reference) -> None:
    path, _ = scored_run
    means, _ = reference
    with analytics.open_run(path) as run:
        frame = run.forgetting().sort("sample_id")
    expected = [forgetting(means[i]["correct"] > 0.5) for i in sorted(means)]
    assert frame["forgetting_events"].to_list() == [e[0] for e in expected]
    assert frame["never_learned"].to_list() == [e[0] is None for e in expected]
    assert frame["first_learned_epoch"].to_list() == [e[1] for e in expected]
    assert frame["learned_for_good_epoch"].to_list() == [e[2] for e in expected]
    assert frame["never_learned"].any() and frame["forgetting_events"].max() >= 1  # both cases exercised


def test_per_update_aum_equals_the_aum_package(scored_run, tmp_path) -> None:
    path, logged = scored_run
    import torch

    calculator = AUMCalculator(str(tmp_path))
    for epoch in range(int(logged["epoch"].max()) + 1):
        rows = logged["epoch"] == epoch
        calculator.update(torch.from_numpy(logged["logits"][rows]), torch.from_numpy(logged["targets"][rows]),
                          logged["ids"][rows].tolist())
    calculator.finalize()
    reference = pl.read_csv(tmp_path / "aum_values.csv").sort("sample_id")
    with analytics.open_run(path) as run:
        per_update = run.aum(per_update=True).sort("sample_id")
        per_epoch = run.aum().sort("sample_id")
    np.testing.assert_allclose(per_update["aum"].to_numpy(), reference["aum"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(per_update["aum"].to_numpy(), per_epoch["aum"].to_numpy())  # repeats weigh differently


def test_scores_table_joins_every_score_and_the_samples(scored_run) -> None:
    path, logged = scored_run
    with analytics.open_run(path) as run:
        scores = run.scores(el2n_epochs=range(0, 2))
        parts = {"aum": run.aum(), "aul": run.aul(), "confidence": run.data_map(),
                 "el2n": run.el2n(epochs=range(0, 2)), "forgetting_events": run.forgetting()}
        cutoff = run.threshold_cutoff()
        gmm = run.gmm()
    assert scores.height == NUM_SAMPLES and scores["sample_id"].is_sorted()
    for column, frame in parts.items():
        np.testing.assert_allclose(scores[column].to_numpy().astype(float), _by_id(frame, column).astype(float),
                                   rtol=1e-12, equal_nan=True, err_msg=column)
    np.testing.assert_array_equal(scores["label"].to_numpy(), logged["labels"])
    expected_flag = (scores["aum"].to_numpy() < cutoff) & ~scores["is_threshold"].to_numpy()
    np.testing.assert_array_equal(scores["aum_flagged"].to_numpy(), expected_flag)
    real = scores.filter(~pl.col("is_threshold"))
    assert real["p_mislabeled"].null_count() == 0
    assert scores.filter(pl.col("is_threshold"))["p_mislabeled"].is_null().all()
    np.testing.assert_allclose(real["p_mislabeled"].to_numpy(), gmm.table["p_mislabeled"].to_numpy(), rtol=1e-12)


def test_threshold_cutoff_is_the_percentile_of_threshold_aum(scored_run, reference) -> None:
    path, logged = scored_run
    means, _ = reference
    threshold_ids = np.flatnonzero(logged["targets_by_id"] == 4)
    threshold_aum = np.array([means[i]["margin"].mean() for i in threshold_ids])
    with analytics.open_run(path) as run:
        for percentile in (99, 50, 90):
            assert run.threshold_cutoff(percentile=percentile) == pytest.approx(
                np.percentile(threshold_aum, percentile), abs=1e-5)
        with pytest.raises(ValueError, match=r"percentile: expected a value in \[0, 100\], got 101"):
            run.threshold_cutoff(percentile=101)
        scores = run.scores()
        assert cutoff_of(scores, 90) == pytest.approx(run.threshold_cutoff(percentile=90), rel=1e-12)
        assert cutoff_of(scores.with_columns(is_threshold=False)) is None
        with pytest.raises(ValueError, match=r"percentile: expected a value in \[0, 100\], got -1"):
            run.scores(percentile=-1)


def test_run_without_threshold_samples_says_so(small_run) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run:
        with pytest.raises(ValueError, match="no threshold samples"):
            run.threshold_cutoff()
        assert "aum_flagged" not in run.scores().columns


def test_gmm_matches_scikit_learn_called_directly(scored_run) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as run:
        result = run.gmm(score="aul", seed=3)
        aul = run.aul().join(run.sql("SELECT sample_id FROM samples WHERE NOT is_threshold"), on="sample_id")
    values = aul.sort("sample_id")["aul"].to_numpy().reshape(-1, 1)
    model = GaussianMixture(n_components=2, random_state=3).fit(values)
    noisy = int(np.argmax(model.means_.ravel()))
    posterior = model.predict_proba(values)[:, noisy]
    np.testing.assert_allclose(result.table["p_mislabeled"].to_numpy(), posterior, rtol=1e-10, atol=1e-12)
    assert result.noise_rate == pytest.approx(posterior.mean(), rel=1e-10)
    assert result.means[1] == pytest.approx(model.means_.max()) and result.means[0] < result.means[1]
    assert sum(result.weights) == pytest.approx(1.0)
    np.testing.assert_array_equal(result.table["flagged"].to_numpy(), posterior > 0.5)
    np.testing.assert_allclose(result.table["weight"].to_numpy(), 1 - posterior, rtol=1e-10)


def test_gmm_fits_on_a_seeded_sample_and_scores_every_row() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 8000), rng.normal(6, 1, 2000)])
    frame = pl.DataFrame({"sample_id": np.arange(values.size), "aul": values})
    result = analytics.fit_gmm(frame, "aul", seed=1, fit_sample=1000)
    again = analytics.fit_gmm(frame, "aul", seed=1, fit_sample=1000)
    assert result.fitted_on == 1000 and result.table.height == values.size
    assert result.noise_rate == again.noise_rate  # seeded
    assert result.noise_rate == pytest.approx(0.2, abs=0.02)
    with pytest.raises(KeyError, match="score: expected one of"):
        analytics.fit_gmm(frame, "nope")


def test_evaluate_scores_each_method_against_the_truth(scored_run) -> None:
    path, _ = scored_run
    with analytics.open_run(path) as run:
        table = run.evaluate()
        scores = run.scores()
    assert table["method"].to_list() == ["aum_threshold", "aul_gmm", "data_map_confidence", "forgetting", "el2n"]
    real = scores.filter(~pl.col("is_threshold"))
    truth = real["label"].to_numpy() != real["true_label"].to_numpy()
    flagged = real["aum_flagged"].to_numpy()
    precision = (truth & flagged).sum() / flagged.sum()
    recall = (truth & flagged).sum() / truth.sum()
    row = table.row(0, named=True)
    assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
    assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert table["auroc"].min() > 0.6  # the synthetic noisy samples are detectable by every method


def test_evaluate_without_true_labels_is_a_clear_error(small_run) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run, pytest.raises(ValueError, match="needs a true_label column"):
        run.evaluate()
