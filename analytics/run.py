"""``open_run`` and ``Run``: a recorded run, opened read-only on an engine; results as Polars DataFrames.

``Run`` is the public API. It keeps the engine's views in step with the run's committed files (a live run
gains files while it is queried) and delegates every computation to the algorithm modules of
``tdlog.analytics`` (``scores``, ``threshold``, ``gmm``, ``mapd``, ``correction``, ``evaluate``), which take
the engine.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from tdlog.format import is_uri

from . import correction, queries
from .engine import Engine
from .epochs import early_end, epoch_bounds, recorded_epochs
from .evaluate import evaluate_scores
from .gmm import DEFAULT_FIT_SAMPLE, GMMResult, fit_gmm
from .integrity import CheckedFiles
from .mapd import BLOCK_VALUES, mapd, mapd_accuracy, mapd_epochs
from .probes import probe_suites
from .scores import add_flags, real_samples, score_table
from .selection import check_selection_arguments, select
from .signals import learning_percentage, loss_drop, signal_columns, source_curves
from .store import RunSnapshot, RunStore, sync_run
from .threshold import threshold_cutoff
from .window import AUTO, Epochs, EpochWindow, check_epochs_argument, choose_window, warn_if_memorised

ENGINES = ("duckdb", "spark")


class Run:
    """A recorded run, opened read-only on an :class:`~tdlog.analytics.engine.Engine`. Use :func:`open_run`."""

    def __init__(self, store: RunStore, engine: Engine, snapshot: RunSnapshot | None = None) -> None:
        self.store = store
        self.engine = engine
        self.snapshot: RunSnapshot = snapshot or store.snapshot()
        self._registered: tuple | None = None
        self._windows: dict[tuple, EpochWindow | None] = {}
        self._checked_memorisation: set[tuple] = set()
        self._checked_files = CheckedFiles(store.location)
        self._register()

    @property
    def location(self) -> str:
        """Where the run is read from: an absolute local path or a URI."""
        return self.store.location

    @property
    def path(self) -> Path | None:
        """The run's folder on this machine (for a URI opened with DuckDB: its local copy); None for a URI
        that Spark reads where it is."""
        return self.store.local_path

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's ``run.json``."""
        return self.snapshot.manifest

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    def _refresh(self) -> None:
        """(Re)register the views when committed files or attempts changed since the last query."""
        self.snapshot = self.store.snapshot()
        self._register()

    def _register(self) -> None:
        """Register the views when the run changed, after checking its new data files (each once per
        identity, :class:`~tdlog.analytics.integrity.CheckedFiles`: a damaged file raises ``DamagedRunError``)."""
        key = self.snapshot.key()
        if key != self._registered:
            data = self.snapshot.files.records + self.snapshot.files.samples
            self._checked_files.check(self.store.identities_of(data), self.store.source, self.location)
            self.engine.register(self.snapshot)
            self._registered = key

    # --- SQL ----------------------------------------------------------------------------------------
    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` over the views (``records``, ``samples``, ``epoch_stats``, ``attempts``,
        ``raw_records``) with ``$name`` parameters bound (never formatted into the text)."""
        self._refresh()
        return self.engine.user_sql(query, params)

    def frame(self, query: str, params: Mapping[str, Any] | None = None) -> Any:
        """``query`` as a lazy result: a ``duckdb.DuckDBPyRelation`` or a Spark ``DataFrame``."""
        self._refresh()
        return self.engine.frame(query, params)

    def query(self, name: str, **params: Any) -> pl.DataFrame:
        """Run the shipped query ``sql/NAME.sql`` with its parameters bound (not capped by
        ``max_result_bytes``: the shipped queries answer per sample at most)."""
        self._refresh()
        return self.engine.sql(queries.load(name), params)

    def view_definitions(self) -> str:
        """Statements that reproduce this run's views in another session of the engine."""
        self._refresh()
        return self.engine.view_definitions()

    def epochs(self, split: str = "train") -> list[int]:
        """Epochs of ``split`` that have committed rows, ascending."""
        self._refresh()
        return recorded_epochs(self.engine, split)

    # --- the epoch window ---------------------------------------------------------------------------
    def epoch_window(self, *, split: str = "train") -> EpochWindow | None:
        """The epoch window ``epochs="auto"`` chooses from the threshold samples (None without them): the
        prefix window of the recorded epochs in which the threshold samples' AUM stands apart best from the
        other samples', among those that end once the others' mean margin is positive; with the criterion
        per epoch. See :mod:`tdlog.analytics.window`. Computed once per state of the run."""
        self._refresh()
        key = (self.snapshot.key(), split)
        if key not in self._windows:
            self._windows[key] = choose_window(self.engine, split=split)
        return self._windows[key]

    def _epochs(self, epochs: Epochs, split: str) -> range | None:
        """``epochs`` as a range or None (every epoch): ``"auto"`` is the :meth:`epoch_window` when the run
        has threshold samples, else every epoch (with a warning when the training accuracy suggests that
        later epochs fit wrong labels)."""
        check_epochs_argument(epochs)
        self._warn_if_filtered_out(epochs, split)
        if epochs != AUTO:
            return epochs
        window = self.epoch_window(split=split)
        key = (self.snapshot.key(), split)
        if window is None and key not in self._checked_memorisation:
            self._checked_memorisation.add(key)
            warn_if_memorised(self.engine.sql(queries.load("epoch_accuracy"), {"split": split}))
        return None if window is None else window.epochs

    def _warn_if_filtered_out(self, epochs: Epochs, split: str) -> None:
        """A ``UserWarning`` (stderr) when the caller's filter, not the run, makes the answer empty: a split
        the run has no records of, or an epoch range that holds none of its recorded epochs."""
        splits = self.snapshot.splits
        if splits and split not in splits:
            warnings.warn(f"split: the run at {self.location} has no records of split {split!r} (its splits: "
                          f"{', '.join(splits)}): the answer is empty", UserWarning, stacklevel=4)
        elif isinstance(epochs, range) and len(epochs):
            recorded = recorded_epochs(self.engine, split)  # the caller refreshed the run: no second listing
            if recorded and not any(epoch in epochs for epoch in recorded):
                warnings.warn(f"epochs: {epochs.start}:{epochs.stop} holds none of the recorded epochs of split "
                              f"{split!r} ({recorded[0]}..{recorded[-1]}): the answer is empty", UserWarning,
                              stacklevel=4)

    # --- scores -------------------------------------------------------------------------------------
    def aum(self, *, epochs: Epochs = AUTO, split: str = "train", per_update: bool = False) -> pl.DataFrame:
        """AUM per sample: ``aum = mean_e margin_e`` over epochs ``e`` in ``epochs``, ``margin_e`` the
        sample's mean margin ``z_y - max_{j != y} z_j`` in epoch ``e``. ``epochs``: ``"auto"`` (default:
        the :meth:`epoch_window` when the run has threshold samples, else every epoch), None (every
        recorded epoch of ``split``) or a range. ``per_update=True`` averages every observation instead
        (equal to the ``aum`` package). Columns ``sample_id, aum, epochs`` (or ``updates``), ascending AUM
        (most suspicious first)."""
        lower, upper = epoch_bounds(self._epochs(epochs, split))
        frame = self.query("aum_per_update" if per_update else "aum", split=split, epoch_from=lower, epoch_to=upper)
        return frame.sort(["aum", "sample_id"])

    def aul(self, *, epochs: Epochs = AUTO, split: str = "train") -> pl.DataFrame:
        """AUL per sample: ``aul = sum_e loss_e``, ``loss_e`` the sample's mean loss in epoch ``e``;
        ``epochs`` as in :meth:`aum`. Columns ``sample_id, aul, epochs``, by ``sample_id``."""
        lower, upper = epoch_bounds(self._epochs(epochs, split))
        return self.query("aul", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def data_map(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Data map per sample: ``confidence = mean_e p_e``, ``variability = sqrt(mean_e (p_e -
        confidence)^2)``, ``correctness = mean_e c_e`` (``p_e`` target probability, ``c_e`` share of
        correct predictions in epoch ``e``). Columns ``sample_id, confidence, variability, correctness,
        epochs``."""
        lower, upper = epoch_bounds(epochs)
        return self.query("data_map", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def forgetting(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Forgetting events per sample: learned -> not learned transitions between consecutive recorded
        epochs (learned = more than half of the epoch's predictions correct); null and ``never_learned``
        for a sample never learned; ``first_learned_epoch``; ``learned_for_good_epoch`` (first epoch from
        which it stays learned)."""
        lower, upper = epoch_bounds(epochs)
        return self.query("forgetting", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def el2n(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """EL2N per sample: ``el2n = mean_e ||softmax(z) - onehot(y)||_2`` over ``epochs`` (default: the
        first 10 % of recorded epochs, at least one, as the data-diet paper scores early)."""
        lower, upper = epoch_bounds(epochs) if epochs is not None else (0, early_end(self.epochs(split)))
        return self.query("el2n", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def threshold_cutoff(self, *, percentile: float = 99, epochs: Epochs = AUTO, split: str = "train") -> float:
        """AUM cutoff: the ``percentile``-th percentile (linear interpolation) of the threshold samples' AUM
        (``epochs`` as in :meth:`aum`). Real samples with AUM below it are flagged. Raises ``ValueError``
        if the run has no threshold samples (register them with ``tdlog.recorder.threshold_samples``)."""
        self._refresh()
        return threshold_cutoff(self.engine, percentile=percentile, epochs=self._epochs(epochs, split), split=split)

    def gmm(self, *, score: str = "aul", epochs: Epochs = AUTO, split: str = "train", seed: int = 0,
            fit_sample: int | None = DEFAULT_FIT_SAMPLE) -> GMMResult:
        """Two-component GMM on ``score`` over the real samples (threshold and probe samples left out):
        ``p_mislabeled`` = posterior of the higher-mean component, ``noise_rate`` = its mean, ``flagged`` =
        ``p_mislabeled > 0.5``, ``weight`` = ``1 - p_mislabeled``; ``epochs`` as in :meth:`aum`. See
        :func:`tdlog.analytics.gmm.fit_gmm`."""
        self._refresh()
        table = real_samples(score_table(self.engine, epochs=self._epochs(epochs, split), split=split))
        return fit_gmm(table, score, seed=seed, fit_sample=fit_sample)

    def scores(
        self,
        *,
        epochs: Epochs = AUTO,
        split: str = "train",
        el2n_epochs: range | None = None,
        percentile: float = 99,
        seed: int = 0,
        mapd: bool | None = None,
        mapd_k: int = 20,
    ) -> pl.DataFrame:
        """Every score per sample in one table, joined with the samples table, by ``sample_id``:
        ``aum, aul, confidence, variability, correctness, el2n, never_learned, forgetting_events,
        first_learned_epoch, learned_for_good_epoch, epochs``; ``aum_flagged`` (AUM below the threshold
        cutoff, when the run has threshold samples); ``p_mislabeled, gmm_flagged, weight`` (AUL GMM over the
        real samples); with ``mapd`` (default: when the run has reference probes) the :meth:`mapd` columns
        ``p_<suite>, mapd_suite`` (``k = mapd_k``) and ``mapd_flagged`` (assigned to ``random_labels``); when
        the run recorded the pre-training pass (split ``"initial"``), ``loss_drop`` and ``learning_percentage``
        over every recorded epoch (:meth:`loss_drop`, :meth:`learning_percentage`).
        Definitions as in :meth:`aum`, :meth:`aul`, :meth:`data_map`, :meth:`el2n`, :meth:`forgetting`,
        :meth:`threshold_cutoff` and :meth:`gmm`; see :mod:`tdlog.analytics.scores`. Every column but EL2N and
        MAP-D spans ``epochs`` (as in :meth:`aum`: by default the :meth:`epoch_window` when the run has
        threshold samples); ``epoch_from, epoch_to`` say which recorded epochs that was."""
        self._refresh()
        epochs = self._epochs(epochs, split)
        table = score_table(self.engine, epochs=epochs, split=split, el2n_epochs=el2n_epochs)
        table = add_flags(table, percentile=percentile, seed=seed)
        if mapd or (mapd is None and probe_suites(self.engine)):
            table = table.join(self.mapd(k=mapd_k, epochs=epochs, split=split), on="sample_id", how="left",
                               maintain_order="left")
            if "p_random_labels" in table.columns:
                table = table.with_columns(mapd_flagged=pl.col("mapd_suite") == "random_labels")
        signals = signal_columns(self.engine, split=split)
        if signals is not None:
            table = table.join(signals, on="sample_id", how="left", maintain_order="left")
        return table

    def write_scores(self, out: str | os.PathLike, *, epochs: Epochs = AUTO, split: str = "train",
                     el2n_epochs: range | None = None, percentile: float = 99, seed: int = 0) -> int:
        """Write the :meth:`scores` table without MAP-D to ``out`` (``.parquet``, ``.csv`` or ``.json``;
        on Spark, computed and written by the executors as a folder of part files, see
        :func:`tdlog.analytics.spark_scores.write_scores`). Returns the number of rows written."""
        self._refresh()
        epochs = self._epochs(epochs, split)
        if self.engine.dialect == "spark":
            from .spark_scores import write_scores

            return write_scores(self.engine, out, epochs=epochs, split=split, el2n_epochs=el2n_epochs,
                                percentile=percentile, seed=seed)
        from .export import write_frame

        table = self.scores(epochs=epochs, split=split, el2n_epochs=el2n_epochs, percentile=percentile, seed=seed,
                            mapd=False)
        write_frame(table, out, argument="out")
        return table.height

    def evaluate(self, *, epochs: Epochs = AUTO, split: str = "train", percentile: float = 99) -> pl.DataFrame:
        """Each method against the truth (``true_label`` registered with the samples): one row per method
        with ``precision, recall, f1, auroc, flagged``. See :func:`tdlog.analytics.evaluate.evaluate_scores`."""
        return evaluate_scores(self.scores(epochs=epochs, split=split, percentile=percentile))

    # --- MAP-D ---------------------------------------------------------------------------------------
    def mapd(
        self,
        *,
        k: int = 20,
        suites: list[str] | None = None,
        epochs: range | None = None,
        upto_epoch: int | None = None,
        split: str = "train",
        device: str = "auto",
        block_values: int = BLOCK_VALUES,
    ) -> pl.DataFrame:
        """MAP-D per sample: ``p_<suite>`` = share of the ``k`` nearest reference-probe loss trajectories
        (exact L2, FAISS) that belong to ``suite``, and ``mapd_suite`` = the argmax. Trajectories use the
        recorded epochs in ``epochs`` up to ``upto_epoch`` (the online variant); see :mod:`tdlog.analytics.mapd`.
        ``device``: ``"auto"`` (GPU when FAISS can use one), ``"cpu"`` or ``"cuda"``. ``block_values``:
        trajectory values (samples x epochs) held at a time, about 4 bytes each."""
        self._refresh()
        epoch_list = mapd_epochs(self.engine, epochs=epochs, upto_epoch=upto_epoch, split=split)
        return mapd(self.engine, k=k, suites=suites, epoch_list=epoch_list, split=split, device=device,
                    block_values=block_values)

    def mapd_accuracy(self, *, k: int = 20, epochs: range | None = None, split: str = "train",
                      device: str = "auto", assigned: pl.DataFrame | None = None) -> pl.DataFrame:
        """Confusion matrix of MAP-D on the held-out probes: one row per (true) ``probe`` suite, one count
        column per assigned suite, and ``accuracy`` = share assigned to their own suite. ``assigned``: a
        table with ``sample_id, mapd_suite`` already computed (e.g. :meth:`scores`), instead of running
        :meth:`mapd` with ``k``, ``epochs``, ``split`` and ``device``."""
        if assigned is None:
            assigned = self.mapd(k=k, epochs=epochs, split=split, device=device)
        self._refresh()
        return mapd_accuracy(self.engine, assigned)

    def corrected_labels(self, *, k: int = 20, clean_suite: str = "clean", noisy_suite: str = "random_labels",
                         epochs: range | None = None, split: str = "train", device: str = "auto") -> pl.DataFrame:
        """MAP-D label correction (eq. 8): ``soft_label = p_clean * onehot(label) + p_noisy * onehot(predicted)``
        per sample, where ``p_clean`` = share of ``clean_suite`` among the ``k`` nearest probes of the two
        suites ``clean_suite`` and ``noisy_suite`` (``p_noisy = 1 - p_clean``) and ``predicted`` = the most
        frequent prediction in the sample's last recorded epoch. Columns ``sample_id, label, predicted,
        p_clean, p_noisy, soft_label, corrected_label``; see :func:`tdlog.analytics.correction.soft_labels`."""
        self._refresh()
        votes = correction.clean_votes(self.engine, k=k, clean_suite=clean_suite, noisy_suite=noisy_suite,
                                       epochs=epochs, split=split, device=device)
        return correction.soft_labels(votes, self.num_classes).select(
            "sample_id", "label", "predicted", "p_clean", "p_noisy", "soft_label", "corrected_label")

    def training_priority(self, *, k: int = 20, clean_suite: str = "clean", noisy_suite: str = "random_labels",
                          epochs: range | None = None, split: str = "train", device: str = "auto") -> pl.DataFrame:
        """MAP-D training priority (eq. 9): ``priority = (p_clean + (1 - p_target)) / 2``, ``p_clean`` as in
        :meth:`corrected_labels`, ``p_target`` the mean target probability in the sample's last recorded
        epoch. Columns ``sample_id, p_clean, p_target, priority``, highest priority first."""
        self._refresh()
        votes = correction.clean_votes(self.engine, k=k, clean_suite=clean_suite, noisy_suite=noisy_suite,
                                       epochs=epochs, split=split, device=device)
        return correction.training_priority(votes.select("sample_id", "p_clean", "p_target"))

    # --- selecting data -----------------------------------------------------------------------------
    def loss_drop(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Loss drop per sample: ``loss_drop = initial_loss - final_loss``, ``initial_loss`` its mean loss in
        the first recorded pass (the pre-training pass, split ``"initial"``, when recorded; else the first
        recorded epoch of ``split``), ``final_loss`` in its last recorded epoch of ``split`` in ``epochs``.
        Columns ``sample_id, initial_loss, final_loss, loss_drop, final_epoch``. See ``sql/loss_drop.sql``."""
        self._refresh()
        return loss_drop(self.engine, epochs=epochs, split=split)

    def learning_percentage(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Learning percentage per sample: ``(P_initial - P_first) / (P_initial - P_last)`` with ``P = exp(mean
        loss)`` in the pre-training pass (split ``"initial"``, required), after the first epoch (the second
        recorded epoch of ``split``) and in its last recorded epoch; low = learned late. Columns ``sample_id,
        p_initial, p_first, p_last, learning_percentage``. See ``sql/learning_percentage.sql``."""
        self._refresh()
        return learning_percentage(self.engine, epochs=epochs, split=split)

    def source_curves(self, *, column: str = "source", split: str = "train") -> pl.DataFrame:
        """Loss and accuracy per data source per epoch: for each value of the samples column ``column`` and
        each recorded epoch of ``split``, ``samples``, ``mean_loss`` and ``accuracy`` (means over the source's
        real samples of their per-epoch means). See ``sql/source_curves.sql``."""
        self._refresh()
        return source_curves(self.engine, column=column, split=split)

    def select(
        self,
        budget: int | float,
        *,
        method: str = "s2l",
        source: str | None = None,
        clusters: int = 100,
        iterations: int = 20,
        seed: int = 0,
        epochs: range | None = None,
        split: str = "train",
        device: str = "auto",
        block_values: int = BLOCK_VALUES,
    ) -> pl.DataFrame:
        """Choose ``budget`` samples (a count, or a float share of the selectable samples) of ``split`` by
        their training dynamics. ``method``: ``"s2l"`` (FAISS k-means with ``clusters`` clusters and
        ``iterations`` iterations over the loss trajectories, the budget shared equally among the clusters),
        ``"random"`` (the baseline), ``"loss_drop"`` (the smallest loss drops) or ``"learning_percentage"``
        (the lowest learning percentages). ``source``: a samples column whose values share the budget equally
        first. Threshold and probe samples are never selected. ``epochs``: the recorded epochs used (default
        all). ``seed`` fixes the k-means and the random draws: both engines select the same samples. Returns
        ``sample_id`` (with ``source``, ``cluster`` or the score) of the selected samples, by ``sample_id``,
        also readable by :meth:`sql` as the view ``selection``. See :mod:`tdlog.analytics.selection`."""
        check_selection_arguments(method, clusters, iterations)
        self._refresh()
        epoch_list = mapd_epochs(self.engine, epochs=epochs, upto_epoch=None, split=split)
        chosen = select(self.engine, budget=budget, method=method, source=source, clusters=clusters,
                        iterations=iterations, seed=seed, epoch_list=epoch_list, split=split, epochs=epochs,
                        device=device, block_values=block_values)
        self.engine.show_result("selection", chosen)
        return chosen

    # --- the run itself ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Summary of the run: samples, epochs per split, attempts, ranks, non-finite rows, size on disk."""
        self._refresh()
        registered = self.engine.rows("SELECT count(*) AS n FROM samples")[0]["n"]
        return {
            "path": self.location,
            "format_version": self.manifest.get("format_version"),
            "num_classes": self.num_classes,
            "sample_id_type": self.manifest.get("sample_id_type"),
            "registered_samples": registered,
            "splits": self.engine.rows(queries.load("info")),
            "attempts": [{k: a[k] for k in ("attempt", "start_epoch", "world_size")}
                         for a in self.engine.rows(queries.load("attempts"))],
            "nonfinite_rows": self.manifest.get("nonfinite_rows", 0),
            "size_bytes": sum(self.snapshot.files.sizes.values()),
        }

    def close(self) -> None:
        """Drop the views and close what the engine opened."""
        self.engine.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({self.location!r}, engine={self.engine.dialect!r}, num_classes={self.num_classes})"


def open_run(
    path: str | os.PathLike,
    *,
    engine: str = "duckdb",
    connection: Any = None,
    spark: Any = None,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | os.PathLike | None = None,
    progress: bool | None = None,
    max_result_bytes: str | int | None = None,
    filesystem: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> Run:
    """Open the tdlog run at ``path`` read-only.

    ``engine="duckdb"`` (default): the run's views in a DuckDB connection of their own, or in a cursor of
    ``connection`` (a ``duckdb.DuckDBPyConnection`` of yours). ``threads`` and ``memory_limit`` (e.g.
    ``"4GB"``) bound a connection tdlog opens; work that does not fit spills to ``temp_directory``
    (default: a folder created for the run, private, removed at close); ``max_result_bytes`` (default:
    ``memory_limit``) caps a result brought into Python (see
    :class:`~tdlog.analytics.duckdb_engine.DuckDBEngine` for what each bounds). ``progress`` shows DuckDB's
    progress bar on long queries (default: when stderr is a terminal). A URI (``s3://bucket/run``) is
    brought into the local ``cache_dir`` first and the copy is opened (see :mod:`tdlog.analytics.store`).

    ``engine="spark"``: the views in a new session of the ``SparkSession`` ``spark`` (default: a
    ``local[2]`` one, see :func:`tdlog.analytics.spark_engine.spark_session`); Spark reads local paths and URIs
    (its own connectors, ``s3a://``) where they are.

    ``filesystem``: a ``pyarrow.fs.FileSystem`` to read the run's files with. Raises ``FileNotFoundError``
    if there is no run at ``path`` and ``ValueError`` if it is not a tdlog run or has a newer format.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine: expected 'duckdb' or 'spark', got {engine!r}")
    if engine == "spark":
        from .spark_engine import SparkEngine, spark_session

        store = RunStore(path, filesystem)
        snapshot = store.snapshot()  # FileNotFoundError / ValueError before a Spark session is started
        return Run(store, SparkEngine(spark if spark is not None else spark_session()), snapshot)
    from .duckdb_engine import DuckDBEngine

    local = sync_run(str(path), cache_dir=cache_dir, filesystem=filesystem) if is_uri(path) else path
    store = RunStore(local)
    snapshot = store.snapshot()  # FileNotFoundError / ValueError before a connection is opened
    engine = DuckDBEngine(connection, threads=threads, memory_limit=memory_limit, temp_directory=temp_directory,
                          progress=progress, max_result_bytes=max_result_bytes)
    return Run(store, engine, snapshot)
