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

One query computes every candidate's group statistics in one pass over the records
(``sql/window_search.sql``: the sample is a broadcast join, no shuffle of the records; per group and epoch
the count, mean and population variance of ``aum_e`` and the mean margin, two rows per epoch leave the
engine), and :func:`window_from_statistics` applies the rule. A run without
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
    statistics = engine.sql(queries.load("window_search"), {"split": split, "max_samples": max_samples})
    if statistics["is_threshold"].n_unique() < 2:
        return None
    return window_from_statistics(statistics)


def window_from_statistics(statistics: pl.DataFrame) -> EpochWindow:
    """The window rule applied to ``sql/window_search.sql``'s rows (``is_threshold, epoch, samples, aum_mean,
    aum_var, margin_mean``) of both groups; an epoch that one group has no record in is no candidate."""
    groups = statistics.pivot("is_threshold", index="epoch", values=["samples", "aum_mean", "aum_var",
                                                                      "margin_mean"]).sort("epoch")
    epochs = groups["epoch"].to_numpy()

    def of(name: str, threshold: bool) -> np.ndarray:
        return groups[f"{name}_{str(threshold).lower()}"].cast(pl.Float64).fill_null(float("nan")).to_numpy()

    threshold_n, other_n = np.nan_to_num(of("samples", True)), np.nan_to_num(of("samples", False))
    threshold_mean, other_mean = of("aum_mean", True), of("aum_mean", False)
    spread = np.sqrt((of("aum_var", False) + of("aum_var", True)) / 2)
    difference = other_mean - threshold_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        separation = np.where(spread > 0, difference / spread, np.sign(difference) * np.inf)
    other_margin = of("margin_mean", False)
    learning = other_margin > 0
    floor = int(np.argmax(learning)) if learning.any() else 0
    candidates = np.where(np.isnan(separation) | (np.arange(len(epochs)) < floor), -np.inf, separation)
    peak = int(np.argmax(candidates))
    best = float(candidates[peak])
    sizes = float(threshold_n[peak]), float(other_n[peak])
    standard_error = (math.sqrt(1 / sizes[0] + 1 / sizes[1] + best**2 / (2 * sum(sizes)))
                      if math.isfinite(best) else 0.0)
    criterion = pl.DataFrame({"epoch": epochs, "separation": separation, "threshold_aum": threshold_mean,
                              "other_aum": other_mean, "other_margin": other_margin,
                              "within": candidates >= best - standard_error})  # never true below the floor
    return EpochWindow(range(int(epochs[0]), int(epochs[peak]) + 1), criterion, best, standard_error,
                       int(epochs[floor]), int(threshold_n.max()), int(other_n.max()))


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
