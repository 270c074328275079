"""The epoch window of the label-noise scores, chosen from the threshold samples (``epochs="auto"``).

AUM and AUL integrate a run's epochs; once a network memorises the wrong labels, later epochs wash the
signal out (both papers score before the first learning-rate drop). The threshold samples are *known*
mislabeled samples inside the run, so tdlog picks the window in which they stand apart best from the other
samples:

- candidates: the prefix windows ``[e_0, e + 1)`` over the recorded epochs ``e_0 <= e`` of the split;
- for each, ``aum_e(i)`` = sample ``i``'s AUM over the window, and the separation
  ``d_e = (mean_other aum_e - mean_threshold aum_e) / sqrt((var_other aum_e + var_threshold aum_e) / 2)``
  (the standardised mean difference, Cohen's d, between the threshold samples and the other registered
  non-probe samples; at most ``MAX_SAMPLES`` of each, chosen by hash of ``sample_id``);
- candidates end at or after the first epoch ``e_learn`` in which the other samples' mean margin is
  positive (the network predicts their labels on average; before that, ``d`` measures the initialisation,
  whose margins are all near zero and whose tiny spread makes any small difference look large; no such
  epoch: every window is a candidate). This floor is the run's own learning curve, not a share of its
  epochs;
- the chosen window is the candidate with the largest separation ``d*``. A run whose separation peaks
  early gets a short window; a run that never memorises (separation still rising at its last epoch) keeps
  every epoch. Reported with it: the standard error of ``d*`` from the groups' sizes ``n_t``, ``n_o`` (the
  large-sample variance of Cohen's d, Hedges & Olkin 1985),
  ``se = sqrt(1 / n_t + 1 / n_o + d*^2 / (2 (n_t + n_o)))``, and which windows are within it of the best
  (as good as the chosen one, given the sampling error). The shortest of those was tried as the rule and
  lost F1 on the digits grid (README, "The epoch window").

One pass over the records gathers the sampled samples' rows (``sql/window_search.sql``, no shuffle: the
sample is a broadcast join), and NumPy computes every candidate at once (:func:`prefix_statistics`). A run without
threshold samples keeps every epoch; when its training accuracy reaches ``MEMORISATION_ACCURACY`` before
its last epoch, a warning says that later epochs may hold memorised labels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from . import queries

if TYPE_CHECKING:
    from .engine import Engine

AUTO = "auto"
Epochs = range | Literal["auto"] | None  # the ``epochs=`` argument of the label-noise scores
MAX_SAMPLES = 10_000  # threshold samples, and other samples, the criterion looks at (each): se of d about 0.02
MEMORISATION_ACCURACY = 0.95  # training accuracy above which wrong labels (5 % or more) are being fitted


@dataclass(frozen=True)
class EpochWindow:
    """The epoch window chosen from the threshold samples.

    ``epochs``: the chosen window. ``criterion``: one row per recorded epoch ``epoch`` (the candidate window
    ``[first, epoch + 1)``) with ``separation`` (``d_e``), ``threshold_aum`` and ``other_aum`` (the groups'
    mean AUM over the window), ``other_margin`` (the other samples' mean margin in that epoch: their learning
    curve, which sets the floor) and ``within`` (a candidate with ``d_e >= d* - se``: as good as the chosen
    one, within its standard error). ``best``: ``d*``; ``standard_error``: ``se``; ``floor``: ``e_learn``
    (the earliest epoch a chosen window may end in). ``threshold_samples``, ``other_samples``: how many
    of each the criterion used."""

    epochs: range
    criterion: pl.DataFrame
    best: float
    standard_error: float
    floor: int
    threshold_samples: int
    other_samples: int

    @property
    def separation(self) -> float:
        """``d_e`` of the chosen window."""
        return float(self.criterion.filter(pl.col("epoch") == self.epochs.stop - 1)["separation"][0])

    def describe(self) -> str:
        """One line: the chosen window and its separation against every epoch's."""
        last = self.criterion["epoch"][-1]
        every = self.criterion.filter(pl.col("epoch") == last)["separation"][0]
        return (f"epochs {self.epochs.start}:{self.epochs.stop} chosen from {self.threshold_samples} threshold "
                f"samples (separation {self.separation:.2f} ± {self.standard_error:.2f}; all "
                f"{self.criterion.height} recorded epochs: {every:.2f})")


def choose_window(engine: Engine, *, split: str = "train", max_samples: int = MAX_SAMPLES) -> EpochWindow | None:
    """The prefix window with the largest separation ``d_e`` among those that end once the network has started
    to learn (see the module docstring); ``None`` when ``split`` has no threshold samples or no other
    registered samples with records."""
    rows = engine.sql(queries.load("window_search"), {"split": split, "max_samples": max_samples})
    flags = rows["is_threshold"].to_numpy()
    if flags.all() or not flags.any():
        return None
    return window_from_rows(rows)


def window_from_rows(rows: pl.DataFrame) -> EpochWindow:
    """The window rule applied to ``sample_id, is_threshold, epoch, margin`` rows of both groups."""
    epochs, statistics, other_margin = prefix_statistics(rows)
    (threshold_mean, threshold_var, threshold_n), (other_mean, other_var, other_n) = statistics
    spread = np.sqrt((other_var + threshold_var) / 2)
    difference = other_mean - threshold_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        separation = np.where(spread > 0, difference / spread, np.sign(difference) * np.inf)
    learning = other_margin > 0
    floor = int(np.argmax(learning)) if learning.any() else 0
    candidates = np.where(np.isnan(separation) | (np.arange(len(epochs)) < floor), -np.inf, separation)
    peak = int(np.argmax(candidates))
    best = float(candidates[peak])
    groups = float(threshold_n[peak]), float(other_n[peak])
    standard_error = (math.sqrt(1 / groups[0] + 1 / groups[1] + best**2 / (2 * sum(groups)))
                      if math.isfinite(best) else 0.0)
    within = candidates >= best - standard_error  # never true below the floor
    criterion = pl.DataFrame({"epoch": epochs, "separation": separation, "threshold_aum": threshold_mean,
                              "other_aum": other_mean, "other_margin": other_margin,
                              "within": within})
    return EpochWindow(range(int(epochs[0]), int(epochs[peak]) + 1), criterion, best, standard_error,
                       int(epochs[floor]), int(threshold_n.max()), int(other_n.max()))


def prefix_statistics(rows: pl.DataFrame) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                                                     np.ndarray]:
    """From ``sample_id, is_threshold, epoch, margin`` rows: the recorded epochs ``e`` (ascending); for the
    threshold samples and then the others, per ``e`` the mean, population variance and count of ``aum_e(i)``
    (the mean of sample ``i``'s per-epoch mean margins up to ``e``) over the samples with a record in ``e``;
    and per ``e`` the other samples' mean margin in that epoch (their learning curve).
    Vectorised: one ``samples x epochs`` matrix of per-epoch means, cumulated along the epochs."""
    sample_of = rows["sample_id"].rank("dense").to_numpy().astype(np.int64) - 1
    epoch_of = rows["epoch"].rank("dense").to_numpy().astype(np.int64) - 1
    epochs = rows["epoch"].unique().sort().to_numpy()
    samples = int(sample_of.max()) + 1
    cells = sample_of * len(epochs) + epoch_of
    size = samples * len(epochs)
    sums = np.bincount(cells, weights=rows["margin"].to_numpy().astype(np.float64), minlength=size)
    counts = np.bincount(cells, minlength=size)
    present = (counts > 0).reshape(samples, len(epochs))
    means = np.divide(sums, counts, out=np.zeros(size), where=counts > 0).reshape(present.shape)
    prefix = np.cumsum(means, axis=1) / np.maximum(np.cumsum(present, axis=1), 1)
    prefix[~present] = np.nan
    is_threshold = np.zeros(samples, dtype=bool)
    is_threshold[sample_of] = rows["is_threshold"].to_numpy()
    statistics = []
    for group in (is_threshold, ~is_threshold):
        values = prefix[group]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an epoch no sample of the group has
            statistics.append((np.nanmean(values, axis=0), np.nanvar(values, axis=0),
                               (~np.isnan(values)).sum(0)))
    others = present[~is_threshold]
    with np.errstate(divide="ignore", invalid="ignore"):
        other_margin = (means[~is_threshold] * others).sum(0) / others.sum(0)
    return epochs, statistics, other_margin


def check_epochs_argument(epochs: Epochs) -> None:
    """Raise ``ValueError`` unless ``epochs`` is a range, ``"auto"`` or None."""
    if epochs is not None and epochs != AUTO and not isinstance(epochs, range):
        raise ValueError(f"epochs: expected 'auto', None (every epoch) or a range such as range(0, 50), "
                         f"got {epochs!r}")


def warn_if_memorised(accuracy: pl.DataFrame) -> None:
    """Warn when the training accuracy (``epoch, accuracy`` rows of ``sql/epoch_accuracy.sql``) reaches
    ``MEMORISATION_ACCURACY`` before the last recorded epoch: scores over every epoch may then hold
    memorised wrong labels, and without threshold samples no window can be chosen."""
    reached = accuracy.filter(pl.col("accuracy") >= MEMORISATION_ACCURACY)
    if not reached.height or reached["epoch"][0] == accuracy["epoch"][-1]:
        return
    epoch, value = reached["epoch"][0], reached["accuracy"][0]
    warnings.warn(
        f"epochs: the training accuracy reached {value:.3f} at epoch {epoch} of {accuracy['epoch'][0]}.."
        f"{accuracy['epoch'][-1]}; if more than {1 - MEMORISATION_ACCURACY:.0%} of the labels are wrong, "
        f"later epochs fit them and the scores over every epoch blur them: pass epochs=range(0, {epoch + 1}) "
        "or record threshold samples (tdlog.recorder.threshold_samples) so that epochs='auto' chooses the window",
        UserWarning, stacklevel=4)
