"""``open_run``: a read-only view of a tdlog run as DuckDB views, results as Polars DataFrames."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from recorder.format import MANIFEST, RECORDS_DIR, SAMPLES_DIR, read_json
from recorder.manifest import attempt_files, check_manifest
from recorder.remote import is_uri

from . import correction, queries
from .epoch_masks import MAX_EPOCHS, WORDS, forgetting_columns, popcount
from .evaluate import evaluate_scores
from .gmm import DEFAULT_FIT_SAMPLE, GMMResult, fit_gmm
from .mapd import BLOCK_VALUES, ProbeIndex, dense_id_range, trajectory_blocks
from .remote import sync_run
from .threshold import cutoff_of
from .views import records_files, view_definitions

ALL_EPOCHS = 2**62  # upper bound of the default epoch range


class Run:
    """A recorded run, opened read-only. Use :func:`open_run` to create one."""

    def __init__(self, path: Path, manifest: dict[str, Any], connection: duckdb.DuckDBPyConnection | None) -> None:
        self.path = path
        self.manifest = manifest
        self.connection = connection
        self._files_seen: tuple | None = None
        self._definitions: dict[str, str] = {}
        self._refresh_views()

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    def _refresh_views(self) -> None:
        """(Re)create the views when records, samples or attempts appeared since the last query (a live run)."""
        files_seen = (
            any((self.path / RECORDS_DIR).glob("*/*/*.parquet")),
            any((self.path / SAMPLES_DIR).glob("*.parquet")),
            tuple(sorted((p["attempt"], p["start_epoch"]) for p in map(read_json, attempt_files(self.path)))),
        )
        if files_seen == self._files_seen:
            return
        self.manifest = read_json(self.path / MANIFEST)
        self._register_views(has_records=files_seen[0], has_samples=files_seen[1], attempt_starts=dict(files_seen[2]))
        self._files_seen = files_seen

    def _register_views(self, *, has_records: bool, has_samples: bool, attempt_starts: dict[int, int | None]) -> None:
        self._definitions = view_definitions(
            self.path.resolve(),
            has_records=has_records,
            has_samples=has_samples,
            id_type=self.manifest.get("sample_id_type") or "int64",
            attempt_starts=attempt_starts,
        )
        for name, select in self._definitions.items():
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")

    def view_definitions(self) -> str:
        """``CREATE VIEW`` statements that reproduce this run's views in any DuckDB session."""
        self._refresh_views()
        return "\n".join(f"CREATE OR REPLACE VIEW {n} AS {s};" for n, s in self._definitions.items())

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` over the views with ``$name`` parameters bound (never formatted into the text)."""
        self._refresh_views()
        return self.connection.sql(query, params=dict(params or {})).pl()

    def query(self, name: str, **params: Any) -> pl.DataFrame:
        """Run the shipped query ``sql/NAME.sql`` with its parameters bound."""
        return self.sql(queries.load(name), params)

    def epochs(self, split: str = "train") -> list[int]:
        """Epochs of ``split`` that have committed rows, ascending."""
        frame = self.sql("SELECT DISTINCT epoch FROM records WHERE split = $split ORDER BY epoch", {"split": split})
        return frame["epoch"].to_list()

    @staticmethod
    def _bounds(epochs: range | None) -> tuple[int, int]:
        """``[epoch_from, epoch_to)`` of ``epochs`` (default: every epoch, recorded or to come)."""
        if epochs is None:
            return 0, ALL_EPOCHS
        if not isinstance(epochs, range) or epochs.step != 1:
            raise ValueError(f"epochs: expected a range of consecutive epochs such as range(0, 50), got {epochs!r}")
        return epochs.start, epochs.stop

    def aum(self, *, epochs: range | None = None, split: str = "train", per_update: bool = False) -> pl.DataFrame:
        """AUM per sample: ``aum = mean_e margin_e`` over epochs ``e`` in ``epochs`` (default: all recorded
        epochs of ``split``), ``margin_e`` the sample's mean margin ``z_y - max_{j != y} z_j`` in epoch ``e``.
        ``per_update=True`` averages every observation instead (equal to the ``aum`` package).
        Columns ``sample_id, aum, epochs`` (or ``updates``), ascending AUM (most suspicious first)."""
        lower, upper = self._bounds(epochs)
        frame = self.query("aum_per_update" if per_update else "aum", split=split, epoch_from=lower, epoch_to=upper)
        return frame.sort(["aum", "sample_id"])

    def aul(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """AUL per sample: ``aul = sum_e loss_e``, ``loss_e`` the sample's mean loss in epoch ``e``.
        Columns ``sample_id, aul, epochs``, by ``sample_id``."""
        lower, upper = self._bounds(epochs)
        return self.query("aul", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def data_map(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Data map per sample: ``confidence = mean_e p_e``, ``variability = sqrt(mean_e (p_e -
        confidence)^2)``, ``correctness = mean_e c_e`` (``p_e`` target probability, ``c_e`` share of
        correct predictions in epoch ``e``). Columns ``sample_id, confidence, variability, correctness,
        epochs``."""
        lower, upper = self._bounds(epochs)
        return self.query("data_map", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def forgetting(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """Forgetting events per sample: learned -> not learned transitions between consecutive recorded
        epochs (learned = more than half of the epoch's predictions correct); null and ``never_learned``
        for a sample never learned; ``first_learned_epoch``; ``learned_for_good_epoch`` (first epoch from
        which it stays learned)."""
        lower, upper = self._bounds(epochs)
        return self.query("forgetting", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def el2n(self, *, epochs: range | None = None, split: str = "train") -> pl.DataFrame:
        """EL2N per sample: ``el2n = mean_e ||softmax(z) - onehot(y)||_2`` over ``epochs`` (default: the
        first 10 % of recorded epochs, at least one, as the data-diet paper scores early)."""
        lower, upper = self._bounds(epochs) if epochs is not None else (0, self._early_epochs_end(split))
        return self.query("el2n", split=split, epoch_from=lower, epoch_to=upper).sort("sample_id")

    def _early_epochs_end(self, split: str) -> int:
        return _early_end(self.epochs(split))

    def threshold_cutoff(self, *, percentile: float = 99, epochs: range | None = None, split: str = "train") -> float:
        """AUM cutoff: the ``percentile``-th percentile (linear interpolation) of the threshold samples' AUM.
        Real samples with AUM below it are flagged. Raises ``ValueError`` if the run has no threshold
        samples (register them with ``recorder.threshold_samples``)."""
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
        lower, upper = self._bounds(epochs)
        row = self.query(
            "threshold_cutoff", split=split, epoch_from=lower, epoch_to=upper, percentile=percentile / 100
        ).row(0, named=True)
        if not row["threshold_samples"]:
            raise ValueError(f"{self.path}: no threshold samples with records in split {split!r}; "
                             "register them with recorder.threshold_samples(...)")
        return float(row["cutoff"])

    def gmm(
        self,
        *,
        score: str = "aul",
        epochs: range | None = None,
        split: str = "train",
        seed: int = 0,
        fit_sample: int | None = DEFAULT_FIT_SAMPLE,
    ) -> GMMResult:
        """Two-component GMM on ``score`` over the real samples (threshold and probe samples left out):
        ``p_mislabeled`` = posterior of the higher-mean component, ``noise_rate`` = its mean, ``flagged`` =
        ``p_mislabeled > 0.5``, ``weight`` = ``1 - p_mislabeled``. See :func:`analytics.gmm.fit_gmm`."""
        frame = self._real_samples(self._score_table(epochs, split))
        return fit_gmm(frame, score, seed=seed, fit_sample=fit_sample)

    def scores(
        self,
        *,
        epochs: range | None = None,
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
        ``p_<suite>, mapd_suite`` (``k = mapd_k``) and ``mapd_flagged`` (assigned to ``random_labels``).
        Definitions as in :meth:`aum`, :meth:`aul`, :meth:`data_map`, :meth:`el2n`, :meth:`forgetting`,
        :meth:`threshold_cutoff` and :meth:`gmm`."""
        table = self._score_table(epochs, split, el2n_epochs)
        cutoff = cutoff_of(table, percentile)  # on the AUM just computed: no second pass over the records
        if cutoff is not None:
            table = table.with_columns(aum_flagged=(pl.col("aum") < cutoff) & ~pl.col("is_threshold"))
        real = self._real_samples(table)
        if real["aul"].is_not_null().sum() >= 2:
            fitted = fit_gmm(real, "aul", seed=seed).table.select(
                "sample_id", "p_mislabeled", pl.col("flagged").alias("gmm_flagged"), "weight"
            )
            table = table.join(fitted, on="sample_id", how="left", maintain_order="left")
        if mapd or (mapd is None and self._probe_suites()):
            table = table.join(self.mapd(k=mapd_k, epochs=epochs, split=split), on="sample_id", how="left",
                               maintain_order="left")
            if "p_random_labels" in table.columns:
                table = table.with_columns(mapd_flagged=pl.col("mapd_suite") == "random_labels")
        return table

    def _score_table(self, epochs: range | None, split: str, el2n_epochs: range | None = None) -> pl.DataFrame:
        lower, upper = self._bounds(epochs)
        recorded = self.epochs(split)
        el2n_to = _early_end(recorded) if el2n_epochs is None else self._bounds(el2n_epochs)[1]
        frame = self._score_rows(split, [e for e in recorded if lower <= e < upper], lower, upper, el2n_to)
        samples = self.sql("SELECT * FROM samples")
        return frame.sort("sample_id").join(samples, on="sample_id", how="left", maintain_order="left").with_columns(
            pl.col("is_threshold").fill_null(False)
        )

    def _score_rows(self, split: str, in_range: list[int], lower: int, upper: int, el2n_to: int) -> pl.DataFrame:
        """The rows of ``sql/scores.sql``, computed by ``sql/scores_one_pass.sql`` (one ``GROUP BY sample_id``,
        several times faster) for every sample it gets exactly, and by ``scores.sql`` for the others (samples
        observed more than once in an epoch, ranges longer than ``MAX_EPOCHS`` epochs)."""
        params = {"split": split, "epoch_from": lower, "epoch_to": upper, "el2n_to": el2n_to}
        if not in_range or in_range[-1] - in_range[0] >= MAX_EPOCHS:
            return self.query("scores", **params)
        packed = self.query("scores_one_pass", **params | {"epoch_from": in_range[0]})
        recorded, learned = (np.ascontiguousarray(packed.select(f"{name}_{w}" for w in range(WORDS)).fill_null(0)
                                                  .to_numpy().T) for name in ("recorded", "learned"))
        exact = popcount(recorded) == packed["observations"].to_numpy()
        inexact = None if exact.all() else packed.filter(~exact).select("sample_id")
        if inexact is not None:
            packed, recorded, learned = packed.filter(exact), recorded[:, exact], learned[:, exact]
        forgetting = forgetting_columns(recorded, learned, in_range[0])
        rows = packed.select(
            "sample_id", "aum", "aul", "confidence", "variability", "correctness", "el2n",
            never_learned=pl.Series(forgetting["never_learned"]),
            **{name: pl.Series(forgetting[name], nan_to_null=True).cast(pl.Int64)
               for name in ("forgetting_events", "first_learned_epoch", "learned_for_good_epoch")},
            epochs=pl.col("observations"),
        )
        if inexact is None:
            return rows
        self.connection.register("tdlog_recheck", inexact.to_arrow())
        try:
            rechecked = self.sql(f"SELECT * FROM ({queries.load('scores')}) "
                                 "WHERE sample_id IN (SELECT sample_id FROM tdlog_recheck)", params)
        finally:
            self.connection.unregister("tdlog_recheck")
        return pl.concat([rows, rechecked.select(rows.columns)], how="vertical_relaxed")

    @staticmethod
    def _real_samples(table: pl.DataFrame) -> pl.DataFrame:
        return table.filter(~pl.col("is_threshold") & pl.col("probe").is_null())

    def evaluate(self, *, epochs: range | None = None, split: str = "train", percentile: float = 99) -> pl.DataFrame:
        """Each method against the truth (``true_label`` registered with the samples): one row per method
        with ``precision, recall, f1, auroc, flagged``. See :func:`analytics.evaluate.evaluate_scores`."""
        return evaluate_scores(self.scores(epochs=epochs, split=split, percentile=percentile))

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
        recorded epochs in ``epochs`` up to ``upto_epoch`` (the online variant); see :mod:`analytics.mapd`.
        ``device``: ``"auto"`` (GPU when FAISS can use one), ``"cpu"`` or ``"cuda"``. ``block_values``:
        trajectory values (samples x epochs) held at a time, about 4 bytes each."""
        return self._mapd(k, suites, self._mapd_epochs(epochs, upto_epoch, split), split, device, block_values)

    def _mapd(self, k: int, suites: list[str] | None, epoch_list: list[int], split: str, device: str,
              block_values: int) -> pl.DataFrame:
        """:meth:`mapd` over the recorded epochs ``epoch_list``: trajectories streamed from DuckDB."""
        id_range = None
        if self.manifest.get("sample_id_type") == "int64":
            id_range = dense_id_range(self.connection, records_files(self.path.resolve()))
        blocks = trajectory_blocks(self.connection, split=split, epochs=epoch_list, block_values=block_values,
                                   id_range=id_range)
        if id_range is not None and (id_range[1] - id_range[0]) * len(epoch_list) <= block_values:
            blocks = list(blocks)  # one block, every sample: the probes' trajectories are in it
            index = self._probe_index(k, suites, split, epoch_list, device, blocks[:1])
        else:  # read the probes first: a query cannot start while the blocks stream
            index = self._probe_index(k, suites, split, epoch_list, device, None)
        parts = []
        for ids, trajectories in blocks:
            votes = index.vote(trajectories, k)
            columns = {f"p_{suite}": votes[:, j] for j, suite in enumerate(index.suites)}
            parts.append(pl.DataFrame({"sample_id": ids, **columns,
                                       "mapd_suite": pl.Series(index.suites)[votes.argmax(1)]}))
        return pl.concat(parts)

    def _mapd_epochs(self, epochs: range | None, upto_epoch: int | None, split: str) -> list[int]:
        """The recorded epochs a MAP-D trajectory spans."""
        lower, upper = self._bounds(epochs)
        epoch_list = [e for e in self.epochs(split) if lower <= e < upper and (upto_epoch is None or e <= upto_epoch)]
        if not epoch_list:
            raise ValueError(f"epochs: no recorded epochs of split {split!r} in the range asked for")
        return epoch_list

    def _probe_index(self, k, suites, split, epoch_list, device, blocks) -> ProbeIndex:
        """FAISS index over the reference probes' trajectories, taken from ``blocks`` (holding every sample)
        or, when ``None``, read on their own."""
        reference = self.sql("SELECT sample_id, probe FROM samples WHERE probe IS NOT NULL AND probe_role = "
                             "'reference' ORDER BY sample_id")
        if suites is not None:
            reference = reference.filter(pl.col("probe").is_in(suites))
        if blocks is None:
            blocks = list(trajectory_blocks(self.connection, split=split, epochs=epoch_list, reference_only=True))
        ids = pl.concat([b[0] for b in blocks]) if blocks else pl.Series("sample_id", [], reference["sample_id"].dtype)
        keep = np.isin(ids.to_numpy(), reference["sample_id"].to_numpy())  # the suites asked for
        if keep.sum() < k:
            raise ValueError(f"k: expected at most the number of reference probes with records, {keep.sum()}, got {k} "
                             "(register probes with register_samples(..., probe=..., probe_role='reference'))")
        trajectories = np.concatenate([b[1] for b in blocks])[keep]
        probe_of = dict(reference.iter_rows())
        labels = np.array([probe_of[i] for i in ids.filter(keep).to_list()])
        return ProbeIndex.build(trajectories, labels, device=device)

    def mapd_accuracy(self, *, k: int = 20, epochs: range | None = None, split: str = "train",
                      device: str = "auto", assigned: pl.DataFrame | None = None) -> pl.DataFrame:
        """Confusion matrix of MAP-D on the held-out probes: one row per (true) ``probe`` suite, one count
        column per assigned suite, and ``accuracy`` = share assigned to their own suite. ``assigned``: a
        table with ``sample_id, mapd_suite`` already computed (e.g. :meth:`scores`), instead of running
        :meth:`mapd` with ``k``, ``epochs``, ``split`` and ``device``."""
        if assigned is None:
            assigned = self.mapd(k=k, epochs=epochs, split=split, device=device)
        heldout = self.sql("SELECT sample_id, probe FROM samples WHERE probe IS NOT NULL AND probe_role = 'heldout'")
        joined = heldout.join(assigned.select("sample_id", "mapd_suite"), on="sample_id", how="inner")
        table = joined.pivot(on="mapd_suite", index="probe", values="sample_id", aggregate_function="len")
        counts = [c for c in table.columns if c != "probe"]
        counts = sorted(counts)
        table = table.select("probe", *counts).with_columns(pl.col(counts).fill_null(0))
        own = pl.sum_horizontal([pl.when(pl.col("probe") == c).then(pl.col(c)).otherwise(0) for c in counts])
        return table.with_columns(accuracy=own / pl.sum_horizontal(counts)).sort("probe")

    def corrected_labels(self, *, k: int = 20, clean_suite: str = "clean", noisy_suite: str = "random_labels",
                         epochs: range | None = None, split: str = "train", device: str = "auto") -> pl.DataFrame:
        """MAP-D label correction (eq. 8): ``soft_label = p_clean * onehot(label) + p_noisy * onehot(predicted)``
        per sample, where ``p_clean`` = share of ``clean_suite`` among the ``k`` nearest probes of the two
        suites ``clean_suite`` and ``noisy_suite`` (``p_noisy = 1 - p_clean``) and ``predicted`` = the most
        frequent prediction in the sample's last recorded epoch. Columns ``sample_id, label, predicted,
        p_clean, p_noisy, soft_label, corrected_label``; see :func:`analytics.correction.soft_labels`."""
        votes = self._clean_votes(k, clean_suite, noisy_suite, epochs, split, device)
        return correction.soft_labels(votes, self.num_classes).select(
            "sample_id", "label", "predicted", "p_clean", "p_noisy", "soft_label", "corrected_label")

    def training_priority(self, *, k: int = 20, clean_suite: str = "clean", noisy_suite: str = "random_labels",
                          epochs: range | None = None, split: str = "train", device: str = "auto") -> pl.DataFrame:
        """MAP-D training priority (eq. 9): ``priority = (p_clean + (1 - p_target)) / 2``, ``p_clean`` as in
        :meth:`corrected_labels`, ``p_target`` the mean target probability in the sample's last recorded
        epoch. Columns ``sample_id, p_clean, p_target, priority``, highest priority first."""
        votes = self._clean_votes(k, clean_suite, noisy_suite, epochs, split, device)
        return correction.training_priority(votes.select("sample_id", "p_clean", "p_target"))

    def _clean_votes(self, k, clean_suite, noisy_suite, epochs, split, device) -> pl.DataFrame:
        """``sample_id, label, predicted, p_target, p_clean`` of every real sample (not threshold, not probe)."""
        votes = self.mapd(k=k, suites=[clean_suite, noisy_suite], epochs=epochs, split=split, device=device)
        for suite in (clean_suite, noisy_suite):
            if f"p_{suite}" not in votes.columns:
                raise ValueError(f"{'clean_suite' if suite == clean_suite else 'noisy_suite'}: no reference probes "
                                 f"of suite {suite!r} with records; suites with probes: {self._probe_suites()}")
        lower, upper = self._bounds(epochs)
        last = self.query("last_epoch", split=split, epoch_from=lower, epoch_to=upper)
        real = self.sql("SELECT sample_id, label FROM samples WHERE NOT is_threshold AND probe IS NULL")
        return (real.join(last.select("sample_id", "predicted", "p_target"), on="sample_id")
                .join(votes.select("sample_id", pl.col(f"p_{clean_suite}").alias("p_clean")), on="sample_id")
                .sort("sample_id"))

    def _probe_suites(self) -> list[str]:
        frame = self.sql("SELECT DISTINCT probe FROM samples WHERE probe IS NOT NULL AND probe_role = 'reference' "
                         "ORDER BY probe")
        return frame["probe"].to_list()

    def info(self) -> dict[str, Any]:
        """Summary of the run: samples, epochs per split, attempts, ranks, non-finite rows, size on disk."""
        records = self.sql(
            "SELECT split, count(DISTINCT epoch) AS epochs, min(epoch) AS first_epoch, max(epoch) AS last_epoch, "
            "count(*) AS rows, count(DISTINCT sample_id) AS samples, count(DISTINCT rank) AS ranks "
            "FROM records GROUP BY split ORDER BY split"
        )
        attempts = self.sql("SELECT attempt, start_epoch, world_size FROM attempts ORDER BY attempt")
        return {
            "path": str(self.path),
            "format_version": self.manifest.get("format_version"),
            "num_classes": self.num_classes,
            "sample_id_type": self.manifest.get("sample_id_type"),
            "registered_samples": self.sql("SELECT count(*) AS n FROM samples")["n"][0],
            "splits": records.to_dicts(),
            "attempts": attempts.to_dicts(),
            "nonfinite_rows": self.manifest.get("nonfinite_rows", 0),
            "size_bytes": self._size_bytes(),
        }

    def _size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, num_classes={self.num_classes})"


def _early_end(recorded: list[int]) -> int:
    """End (exclusive) of the first 10 % of the ``recorded`` epochs, at least one: EL2N's default range."""
    return recorded[max(1, math.ceil(len(recorded) / 10)) - 1] + 1 if recorded else 0


def open_run(
    path: str | os.PathLike,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | os.PathLike | None = None,
    progress: bool | None = None,
    engine: str = "duckdb",
    spark: Any = None,
    filesystem: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> Run:
    """Open the tdlog run at ``path`` read-only, as DuckDB views (see :meth:`Run.view_definitions`).

    ``threads`` and ``memory_limit`` (e.g. ``"4GB"``) bound DuckDB; work that does not fit spills to
    ``temp_directory`` (default: ``tdlog-duckdb`` in the system temp folder). ``progress`` shows DuckDB's
    progress bar on long queries (default: when stderr is a terminal). ``engine="spark"`` opens it in the
    ``SparkSession`` ``spark`` instead (default: a ``local[2]`` one), see :mod:`analytics.spark`. A URI
    (``s3://bucket/run``) is brought into the local ``cache_dir`` first and the copy is opened by DuckDB
    (see :mod:`analytics.remote`); Spark reads it where it is, through its own connectors (``s3a://``).
    ``filesystem``: a ``pyarrow.fs.FileSystem`` to read the run's files with. Raises
    ``FileNotFoundError`` if there is no run at ``path`` and ``ValueError`` if it is not a tdlog run or has
    a newer format.
    """
    if engine not in ("duckdb", "spark"):
        raise ValueError(f"engine: expected 'duckdb' or 'spark', got {engine!r}")
    if engine == "spark":  # Spark reads local paths and URIs (its own connectors) where they are
        from .spark import SparkRun, spark_session

        return SparkRun(path, spark if spark is not None else spark_session(), filesystem=filesystem)
    run_dir = sync_run(str(path), cache_dir=cache_dir, filesystem=filesystem) if is_uri(path) else Path(path)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"path: no tdlog run at {run_dir} (no {MANIFEST})")
    manifest = read_json(manifest_path)
    check_manifest(manifest, manifest_path)
    config: dict[str, Any] = {
        "temp_directory": str(temp_directory or Path(tempfile.gettempdir()) / "tdlog-duckdb"),
    }
    if threads is not None:
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    connection = duckdb.connect(":memory:", config=config)
    connection.execute("SET enable_progress_bar = " + ("true" if (sys.stderr.isatty() if progress is None else progress)
                                                        else "false"))
    return Run(run_dir, manifest, connection)
