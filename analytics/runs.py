"""``open_runs`` and ``Runs``: several recorded runs of one dataset (seeds, models, the two threshold passes)
read together in one DuckDB connection and scored into one table.

The views ``records``, ``attempts``, ``samples`` and ``epoch_stats`` hold every run's rows with a ``run``
column (the run's index in the list), ``runs`` lists ``run, location``. :meth:`Runs.scores` computes every
run's scores in one query over all of them (``sql/run_scores.sql``), fits each run's AUL mixture, and
combines per sample over the runs where it was a real sample.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from . import queries
from .duckdb_engine import DuckDBEngine
from .epochs import early_end, recorded_span
from .gmm import fit_gmm
from .run import Run, open_run
from .window import AUTO, Epochs

COMBINED_SCORES = ("aum", "aul", "confidence", "variability", "correctness", "forgetting_events", "el2n",
                   "p_mislabeled")
ROLE_COLUMNS = ("run", "target", "is_threshold", "probe", "probe_role")


class Runs:
    """Several runs of one dataset, read-only, in one DuckDB connection. Use :func:`open_runs`."""

    def __init__(self, runs: list[Run], engine: DuckDBEngine) -> None:
        self.runs = runs
        self.engine = engine
        self._registered: tuple | None = None

    @property
    def locations(self) -> list[str]:
        """Where each run is read from, by ``run`` index."""
        return [run.location for run in self.runs]

    def _refresh(self) -> None:
        """(Re)create the union views when any run's committed files or attempts changed."""
        for run in self.runs:
            run._refresh()
        key = tuple(run.snapshot.key() for run in self.runs)
        if key != self._registered:
            self.engine.register_union([run.engine.definitions for run in self.runs], self.locations,
                                       [path for run in self.runs for path in run.engine.readable_paths])
            self._registered = key

    def sql(self, query: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` over the union views (``records``, ``samples``, ``epoch_stats``, ``attempts``, each
        with a ``run`` column, and ``runs``) with ``$name`` parameters bound."""
        self._refresh()
        return self.engine.user_sql(query, params)

    def epoch_windows(self, *, epochs: Epochs = AUTO, split: str = "train") -> pl.DataFrame:
        """Each run's epoch window: ``run, location, epoch_from, epoch_to`` (the recorded epochs scored) and
        ``chosen_by``: ``"threshold samples"`` (``"auto"`` on a run with them, see
        :meth:`tdlog.analytics.run.Run.epoch_window`), ``"every epoch"`` or ``"given"``; ``el2n_to``: the
        end of EL2N's early epochs (the first 10 % of the recorded ones)."""
        rows = []
        for index, run in enumerate(self.runs):
            window = run._epochs(epochs, split)
            chosen_by = "given" if isinstance(epochs, range) else (
                "every epoch" if window is None else "threshold samples")
            recorded = run.epochs(split)
            rows.append((index, run.location, *recorded_span(recorded, window), chosen_by, early_end(recorded)))
        return pl.DataFrame(rows, schema={"run": pl.Int64, "location": pl.String, "epoch_from": pl.Int64,
                                          "epoch_to": pl.Int64, "chosen_by": pl.String, "el2n_to": pl.Int64},
                            orient="row")

    def run_scores(self, *, epochs: Epochs = AUTO, split: str = "train", percentile: float = 99,
                   seed: int = 0) -> pl.DataFrame:
        """One row per run and sample with records in the run's window (``sql/run_scores.sql``: ``aum, aul,
        confidence, variability, correctness, forgetting_events, el2n, epochs, is_threshold, probe,
        cutoff``) and ``p_mislabeled``:
        the posterior of the run's own AUL mixture over its real samples (see
        :func:`tdlog.analytics.gmm.fit_gmm`; null for threshold samples and probes)."""
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
        windows = self.epoch_windows(epochs=epochs, split=split).drop_nulls("epoch_from")
        self._refresh()
        table = self.engine.sql(queries.load("run_scores"), {
            "split": split, "runs": windows["run"].to_list(), "epoch_from": windows["epoch_from"].to_list(),
            "epoch_to": windows["epoch_to"].to_list(), "el2n_to": windows["el2n_to"].to_list(),
            "percentile": percentile / 100})
        real = pl.col("is_threshold").not_() & pl.col("probe").is_null()
        posteriors = []
        for index in windows["run"]:
            part = table.filter(real & (pl.col("run") == index))
            if part["aul"].is_finite().sum() >= 2:
                fitted = fit_gmm(part, "aul", seed=seed).table
                posteriors.append(fitted.select(pl.lit(index, pl.Int32).alias("run"), "sample_id", "p_mislabeled"))
        if not posteriors:
            return table.with_columns(p_mislabeled=pl.lit(None, pl.Float64))
        return table.join(pl.concat(posteriors), on=["run", "sample_id"], how="left", maintain_order="left")

    def scores(self, *, epochs: Epochs = AUTO, split: str = "train", percentile: float = 99,
               seed: int = 0) -> pl.DataFrame:
        """One row per sample that was a real sample (neither a threshold sample nor a probe) in at least
        one run, over the runs ``R_i`` where it was, ``n_i = |R_i|`` (column ``runs``):

        - for each score ``s`` in ``aum, aul, confidence, variability, correctness, forgetting_events, el2n,
          p_mislabeled`` (see :meth:`run_scores`; a never-learned sample's null forgetting count is left out):
          ``s = mean_{r in R_i} s_r`` and the 95 % interval of that mean ``s_low, s_high = s -/+
          t_{0.975, n_i - 1} * sd_r(s_r) / sqrt(n_i)`` (Student's t; null when ``n_i = 1``);
        - ``aum_runs_flagged``: runs where ``aum_r < cutoff_r`` (its run's threshold cutoff);
          ``gmm_runs_flagged``: runs where ``p_mislabeled_r > 0.5``;
        - combined flags: ``aum_flagged = mean_r (aum_r - cutoff_r) < 0`` (over the runs with threshold
          samples), ``gmm_flagged = p_mislabeled > 0.5``, ``flagged`` = ``aum_flagged`` where any run has
          threshold samples, else ``gmm_flagged``; ``weight = 1 - p_mislabeled``;

        then the sample's columns of the samples table (``label``, ``true_label``, ...), by ``sample_id``.
        Each run's scores span its own window (``epochs`` as in :meth:`tdlog.analytics.run.Run.aum`; see
        :meth:`epoch_windows`)."""
        per_run = self.run_scores(epochs=epochs, split=split, percentile=percentile, seed=seed).filter(
            pl.col("is_threshold").not_() & pl.col("probe").is_null())
        combined = per_run.group_by("sample_id").agg(
            pl.len().cast(pl.Int64).alias("runs"),
            *(pl.col(score).mean() for score in COMBINED_SCORES),
            *(pl.col(score).std().alias(f"{score}_sd") for score in COMBINED_SCORES),
            aum_runs_flagged=(pl.col("aum") < pl.col("cutoff")).sum(),
            gmm_runs_flagged=(pl.col("p_mislabeled") > 0.5).sum(),
            aum_below_cutoff=(pl.col("aum") - pl.col("cutoff")).mean(),
        )
        counts = combined["runs"].to_numpy()
        half = pl.Series("half", _t_quantile(counts) / np.sqrt(counts), nan_to_null=True)
        combined = combined.with_columns(half).with_columns(
            *(expr for score in COMBINED_SCORES for expr in (
                (pl.col(score) - pl.col(f"{score}_sd") * pl.col("half")).alias(f"{score}_low"),
                (pl.col(score) + pl.col(f"{score}_sd") * pl.col("half")).alias(f"{score}_high"))),
            aum_flagged=pl.col("aum_below_cutoff") < 0,
            gmm_flagged=pl.col("p_mislabeled") > 0.5,
            weight=1 - pl.col("p_mislabeled"),
        )
        has_cutoff = per_run["cutoff"].is_not_null().any()
        combined = combined.with_columns(flagged=pl.col("aum_flagged" if has_cutoff else "gmm_flagged"))
        ordered = ["sample_id", "runs"] + [f"{score}{part}" for score in COMBINED_SCORES
                                           for part in ("", "_low", "_high")]
        ordered += ["aum_runs_flagged", "gmm_runs_flagged", "aum_flagged", "gmm_flagged", "flagged", "weight"]
        samples = self.engine.sql(
            "SELECT * FROM samples QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY run) = 1")
        samples = samples.drop(*(c for c in ROLE_COLUMNS if c in samples.columns))
        return combined.select(ordered).sort("sample_id").join(samples, on="sample_id", how="left",
                                                                maintain_order="left")

    def close(self) -> None:
        """Close every run and the union connection."""
        for run in self.runs:
            run.close()
        self.engine.close()

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Runs({self.locations!r})"


def _t_quantile(counts: np.ndarray) -> np.ndarray:
    """``t_{0.975, n - 1}`` per count ``n`` (NaN for ``n = 1``)."""
    from scipy.stats import t

    with np.errstate(invalid="ignore"):
        return np.where(counts > 1, t.ppf(0.975, np.maximum(counts - 1, 1)), np.nan)


CONFLICTS = ("raise", "keep")


def open_runs(paths: Sequence[str | os.PathLike], *, conflicts: str = "raise", threads: int | None = None,
              memory_limit: str | None = None, temp_directory: str | os.PathLike | None = None,
              progress: bool | None = None) -> Runs:
    """Open several runs of one dataset read-only with DuckDB (each as :func:`tdlog.analytics.open_run`,
    plus one connection holding the union views; ``threads``, ``memory_limit``, ``temp_directory`` and
    ``progress`` as there). ``paths``: a list of runs (a single path is an error, not a list of its
    characters). Runs of one dataset agree on ``num_classes`` and on each sample's ``label``:
    ``conflicts="raise"`` (default) refuses runs that do not, naming the first difference;
    ``conflicts="keep"`` combines them anyway (each run is scored on its own labels; the samples columns
    come from the first run that has the sample). Raises ``ValueError`` for an empty list or a run given
    twice."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"paths: expected a list of runs, got one {type(paths).__name__} {os.fspath(paths)!r}; "
                        f"use open_runs([path]) or open_run(path)")
    if conflicts not in CONFLICTS:
        raise ValueError(f"conflicts: expected one of {CONFLICTS}, got {conflicts!r}")
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("paths: expected at least one run, got none")
    runs: list[Run] = []
    try:
        for path in paths:
            runs.append(open_run(path, threads=threads, memory_limit=memory_limit, temp_directory=temp_directory,
                                 progress=progress))
        locations = [run.location for run in runs]
        if len(set(locations)) < len(locations):
            repeated = sorted({location for location in locations if locations.count(location) > 1})
            raise ValueError(f"paths: expected distinct runs, got {repeated[0]!r} more than once")
        engine = DuckDBEngine(threads=threads, memory_limit=memory_limit, temp_directory=temp_directory,
                              progress=progress)
        combined = Runs(runs, engine)
        if conflicts == "raise":
            _check_agreement(combined)
    except BaseException:
        for run in runs:
            run.close()
        raise
    return combined


def _check_agreement(runs: Runs) -> None:
    """``ValueError`` naming the first run whose ``num_classes`` differs from the first run's, or the first
    sample registered with two labels."""
    first = runs.runs[0]
    for run in runs.runs[1:]:
        if run.num_classes != first.num_classes:
            raise ValueError(f"paths: {run.location} has num_classes={run.num_classes}, {first.location} has "
                             f"{first.num_classes}; open runs of one dataset, or pass conflicts='keep'")
    clash = runs.sql("SELECT sample_id, list(DISTINCT label ORDER BY label) AS labels, count(DISTINCT label) AS n, "
                     "count(*) OVER () AS ids FROM samples GROUP BY sample_id HAVING n > 1 ORDER BY sample_id LIMIT 1")
    if clash.height:
        row = clash.row(0, named=True)
        raise ValueError(f"paths: sample {row['sample_id']!r} has labels {row['labels']} in different runs "
                         f"({row['ids']} samples disagree); open runs of one dataset, or pass conflicts='keep'")
