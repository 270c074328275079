"""Two-component Gaussian mixture on a per-sample score (the AUL paper's noise estimate)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture

DEFAULT_FIT_SAMPLE = 200_000


@dataclass(frozen=True)
class GMMResult:
    """A fitted 2-component mixture; component 1 is the higher-mean ("mislabeled") one.

    ``table`` has one row per sample: ``sample_id``, the score, ``p_mislabeled`` (posterior of the
    mislabeled component), ``flagged`` (``p_mislabeled > 0.5``) and ``weight`` (``1 - p_mislabeled``).
    """

    score: str
    noise_rate: float
    means: tuple[float, float]
    stds: tuple[float, float]
    weights: tuple[float, float]
    fitted_on: int
    table: pl.DataFrame


def fit_mixture(values: np.ndarray, *, seed: int = 0) -> tuple[GaussianMixture, int]:
    """``GaussianMixture(2, random_state=seed)`` fitted to the finite ``values``, and the index of its
    higher-mean ("mislabeled") component."""
    from sklearn.mixture import GaussianMixture

    values = np.asarray(values, dtype=np.float64)
    model = GaussianMixture(n_components=2, random_state=seed).fit(values[np.isfinite(values)].reshape(-1, 1))
    return model, int(np.argmax(model.means_.reshape(-1)))


def nothing_to_separate(values: np.ndarray, score: str) -> bool:
    """Every one of the finite ``values`` is the same: no component can be called mislabeled. Warns (a
    ``RuntimeWarning`` naming ``score``) when so."""
    if np.ptp(values) != 0:
        return False
    warnings.warn(f"score: every {score!r} is {values[0]}; no sample is called mislabeled (noise rate 0)",
                  RuntimeWarning, stacklevel=3)
    return True


def fit_gmm(
    frame: pl.DataFrame, score: str, *, seed: int = 0, fit_sample: int | None = DEFAULT_FIT_SAMPLE
) -> GMMResult:
    """Fit ``GaussianMixture(2, random_state=seed)`` to ``frame[score]`` and score every row.

    ``p_mislabeled`` = posterior of the component with the higher mean; ``noise_rate`` = mean of
    ``p_mislabeled`` over all rows. When there are more rows than ``fit_sample`` the mixture is fitted
    on a seeded uniform sample of that size (``None``: always on every row) and applied to every row.
    When every finite value is the same there is nothing to separate: ``p_mislabeled = 0`` everywhere
    (noise rate 0, one component of weight 1) and a ``RuntimeWarning``.
    """
    if score not in frame.columns:
        raise KeyError(f"score: expected one of {frame.columns}, got {score!r}")
    values = frame[score].cast(pl.Float64).to_numpy()
    finite = np.isfinite(values)
    if finite.sum() < 2:
        raise ValueError(f"score: need at least 2 finite values of {score!r} to fit a mixture, got {finite.sum()}")
    fit_values = values[finite]
    if nothing_to_separate(fit_values, score):
        p_mislabeled = np.where(finite, 0.0, np.nan)
        return GMMResult(score, 0.0, (float(fit_values[0]),) * 2, (0.0, 0.0), (1.0, 0.0), int(fit_values.size),
                         _table(frame, score, values, p_mislabeled))
    if fit_sample is not None and fit_values.size > fit_sample:
        fit_values = np.random.default_rng(seed).choice(fit_values, size=fit_sample, replace=False)
    model, noisy = fit_mixture(fit_values, seed=seed)
    means = model.means_.reshape(-1)
    p_mislabeled = np.full(values.shape, np.nan)
    p_mislabeled[finite] = model.predict_proba(values[finite].reshape(-1, 1))[:, noisy]
    order = [1 - noisy, noisy]
    stds = np.sqrt(model.covariances_.reshape(-1))
    table = _table(frame, score, values, p_mislabeled)
    return GMMResult(
        score=score,
        noise_rate=float(np.nanmean(p_mislabeled)),
        means=(float(means[order[0]]), float(means[order[1]])),
        stds=(float(stds[order[0]]), float(stds[order[1]])),
        weights=(float(model.weights_[order[0]]), float(model.weights_[order[1]])),
        fitted_on=int(fit_values.size),
        table=table,
    )


def _table(frame: pl.DataFrame, score: str, values: np.ndarray, p_mislabeled: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"sample_id": frame["sample_id"], score: values, "p_mislabeled": p_mislabeled,
                         "flagged": p_mislabeled > 0.5, "weight": 1.0 - p_mislabeled})
