"""Apache Spark engine: the same views and the same ``sql/`` files in a ``SparkSession``, for runs that
outgrow one machine. ``analytics.open_run(path, engine="spark", spark=session)`` returns a
:class:`SparkRun`; every :class:`analytics.run.Run` method works on it (results come back as Polars), and
:meth:`SparkRun.write_scores` computes and writes the score table on the executors.

Dialect switch: the ``sql/`` files mark parameters DuckDB's way, ``$name``; :func:`spark_dialect` rewrites
the markers to Spark's ``:name`` and the values stay bound (``spark.sql(query, args=...)``), never
formatted into the text. Everything else in the files is portable SQL; ``scores_one_pass.sql`` (DuckDB's
fast path) is not used here.

pyspark is optional: ``pip install 'tdlog[spark]'`` (Spark 4 needs Java 17 or newer).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from recorder.format import MANIFEST, RECORDS_DIR, SAMPLES_DIR
from recorder.manifest import check_manifest

from . import queries
from .gmm import DEFAULT_FIT_SAMPLE, fit_mixture
from .mapd import forward_fill
from .remote import RunStore
from .run import Run, _early_end
from .views import EPOCH_STATS_SELECT, attempt_ranges, raw_records_stub, records_select, samples_stub

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_PARAMETER = re.compile(r"\$([A-Za-z_]\w*)")


def spark_dialect(query: str) -> str:
    """``$name`` parameter markers (DuckDB) -> ``:name`` (Spark SQL)."""
    return _PARAMETER.sub(r":\1", query)


def spark_session(master: str = "local[2]", *, config: Mapping[str, str] | None = None) -> SparkSession:
    """A ``SparkSession`` on ``master`` (``local[2]``, ``spark://host:7077``, ``yarn``, ...) for tdlog;
    ``config``: extra Spark settings (e.g. ``{"spark.executor.memory": "8g"}``). Python workers run
    ``PYSPARK_PYTHON``; for a ``local`` master it defaults to this interpreter, on a cluster set it to one
    with tdlog and FAISS installed on every executor."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise ImportError("engine='spark' needs pyspark: pip install 'tdlog[spark]' (and Java 17+)") from error
    builder = (SparkSession.builder.master(master).appName("tdlog").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower()))
    if master.startswith("local"):  # Python workers (MAP-D's mapInArrow) run this interpreter, not PATH's python3
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def to_polars(frame: DataFrame) -> pl.DataFrame:
    """Collect a Spark DataFrame to the driver as Polars (decimals as Float64)."""
    table = frame.toArrow()
    decimals = [f.name for f in table.schema if pa.types.is_decimal(f.type)]
    result = pl.from_arrow(table)
    return result.with_columns(pl.col(decimals).cast(pl.Float64)) if decimals else result


class SparkRun(Run):
    """A run opened in a ``SparkSession``: views ``raw_records``, ``attempts``, ``records``, ``epoch_stats``,
    ``samples`` as temporary views, resolved as in :mod:`analytics.views`."""

    def __init__(self, location: str | os.PathLike, spark: SparkSession, *, filesystem: Any = None) -> None:
        self.spark = spark
        self.store = RunStore(location, filesystem)
        self.store.listing()  # FileNotFoundError when there is no run
        manifest = self.store.read_json(MANIFEST)
        check_manifest(manifest, f"{self.store.location}/{MANIFEST}")
        self._size = 0
        super().__init__(self.store.location, manifest, None)

    def _refresh_views(self) -> None:
        """(Re)register the views when committed files or attempts changed since the last query."""
        listing = self.store.listing()
        data = self.store.data_files(listing)
        records, samples = tuple(data[RECORDS_DIR]), tuple(data[SAMPLES_DIR])
        attempts = self.store.attempts(listing)
        files_seen = (records, samples, tuple((a["attempt"], a["start_epoch"]) for a in attempts))
        self._size = sum(info.size for info in listing.values())
        if files_seen == self._files_seen:
            return
        self.manifest = self.store.read_json(MANIFEST)
        sql_id = "BIGINT" if (self.manifest.get("sample_id_type") or "int64") == "int64" else "STRING"
        base = self.store.location
        if records:  # the committed files only, partitions discovered below basePath
            raw = (self.spark.read.option("basePath", f"{base}/{RECORDS_DIR}").option("mergeSchema", "true")
                   .parquet(*(f"{base}/{name}" for name in records)))
            raw = raw.withColumn("split", raw["split"].cast("string")).withColumn("epoch", raw["epoch"].cast("bigint"))
        else:
            raw = self.spark.sql(raw_records_stub(sql_id))
        raw.createOrReplaceTempView("raw_records")
        self._attempts_frame(attempts).createOrReplaceTempView("attempts")
        self.spark.sql(records_select(dict(files_seen[2]))).createOrReplaceTempView("records")
        self.spark.sql(EPOCH_STATS_SELECT).createOrReplaceTempView("epoch_stats")
        if samples:
            frame = self.spark.read.option("mergeSchema", "true").parquet(*(f"{base}/{name}" for name in samples))
        else:
            frame = self.spark.sql(samples_stub(sql_id))
        frame.createOrReplaceTempView("samples")
        self._files_seen = files_seen

    def _attempts_frame(self, attempts: list[dict]) -> DataFrame:
        by_attempt = {a["attempt"]: a for a in attempts}
        rows = [(attempt, start, 9223372036854775807 if end is None else end, by_attempt[attempt]["world_size"],
                 by_attempt[attempt]["started_at"])
                for attempt, start, end in attempt_ranges({a["attempt"]: a["start_epoch"] for a in attempts})]
        schema = "attempt INT, start_epoch BIGINT, end_epoch BIGINT, world_size INT, started_at STRING"
        return self.spark.createDataFrame(rows, schema)

    def _size_bytes(self) -> int:
        return self._size

    def view_definitions(self) -> str:
        """The view definitions as Spark SQL comments and statements (``raw_records``, ``attempts`` and
        ``samples`` are DataFrames read from the run's files)."""
        self._refresh_views()
        base = self.store.location
        return "\n".join([
            f"-- raw_records: spark.read.option('basePath', '{base}/{RECORDS_DIR}').parquet(<committed files>)",
            f"-- samples: spark.read.parquet(<committed files in {base}/{SAMPLES_DIR}>); attempts: _attempts/*.json",
            f"CREATE OR REPLACE TEMP VIEW records AS {records_select(dict(self._files_seen[2]))};",
            f"CREATE OR REPLACE TEMP VIEW epoch_stats AS {EPOCH_STATS_SELECT};",
        ])

    def frame(self, query: str, params: Mapping[str, Any] | None = None) -> DataFrame:
        """``query`` (``$name`` or ``:name`` markers, values bound) as a lazy Spark DataFrame."""
        self._refresh_views()
        return self.spark.sql(spark_dialect(query), args=dict(params or {}))

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` over the views with parameters bound; the result collected as Polars."""
        return to_polars(self.frame(query, params))

    def _score_rows(self, split: str, in_range: list[int], lower: int, upper: int, el2n_to: int) -> pl.DataFrame:
        return self.query("scores", split=split, epoch_from=lower, epoch_to=upper, el2n_to=el2n_to)

    def write_scores(
        self,
        out: str | os.PathLike,
        *,
        epochs: range | None = None,
        split: str = "train",
        el2n_epochs: range | None = None,
        percentile: float = 99,
        seed: int = 0,
        fit_sample: int | None = DEFAULT_FIT_SAMPLE,
    ) -> int:
        """The :meth:`scores` table (without MAP-D) computed by the executors and written to ``out``
        (Parquet, or CSV when ``out`` ends in ``.csv``; Spark writes a folder of part files). Only the
        threshold cutoff (one number) and the GMM fit (on a seeded sample of at most ``fit_sample`` real
        samples' AUL, ordered by ``sample_id``) happen on the driver; each row's ``p_mislabeled`` is the
        fitted posterior of the higher-mean component, computed on the executors. Returns the row count."""
        from pyspark.sql import functions as F

        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
        lower, upper = self._bounds(epochs)
        el2n_to = _early_end(self.epochs(split)) if el2n_epochs is None else self._bounds(el2n_epochs)[1]
        scores = self.frame(queries.load("scores"), {"split": split, "epoch_from": lower, "epoch_to": upper,
                                                     "el2n_to": el2n_to})
        table = scores.join(self.spark.table("samples"), "sample_id", "left").withColumn(
            "is_threshold", F.coalesce(F.col("is_threshold"), F.lit(False)))
        cutoff = table.filter("is_threshold").agg(F.percentile("aum", percentile / 100)).first()[0]
        if cutoff is not None:
            table = table.withColumn("aum_flagged", (F.col("aum") < F.lit(cutoff)) & ~F.col("is_threshold"))
        real = ~F.col("is_threshold") & F.col("probe").isNull()
        fit = self._gmm_fit_values(table.filter(real & F.col("aul").isNotNull() & ~F.isnan("aul")), seed, fit_sample)
        if len(fit) >= 2:
            model, noisy = fit_mixture(fit, seed=seed)
            table = table.withColumn("p_mislabeled", F.when(real, _posterior(F.col("aul"), model, noisy)))
            table = table.withColumn("gmm_flagged", F.col("p_mislabeled") > 0.5).withColumn(
                "weight", 1 - F.col("p_mislabeled"))
        writer = table.orderBy("sample_id").write.mode("overwrite")
        if str(out).endswith(".csv"):
            writer.option("header", "true").csv(str(out))
            return self.spark.read.option("header", "true").csv(str(out)).count()
        writer.parquet(str(out))
        return self.spark.read.parquet(str(out)).count()

    @staticmethod
    def _gmm_fit_values(real: DataFrame, seed: int, fit_sample: int | None):
        """The AUL values the mixture is fitted on, collected to the driver in ``sample_id`` order: every
        real sample's, or a seeded Bernoulli sample of about ``fit_sample`` of them."""
        count = real.count()
        if fit_sample is not None and count > fit_sample:
            real = real.sample(fraction=min(1.0, 1.1 * fit_sample / count), seed=seed).limit(fit_sample)
        return to_polars(real.select("sample_id", "aul").orderBy("sample_id"))["aul"].to_numpy()

    def _mapd(self, k: int, suites: list[str] | None, epoch_list: list[int], split: str, device: str,
              block_values: int) -> pl.DataFrame:
        return to_polars(self._mapd_frame(k, suites, epoch_list, split, device))

    def mapd_frame(self, *, k: int = 20, suites: list[str] | None = None, epochs: range | None = None,
                   upto_epoch: int | None = None, split: str = "train", device: str = "auto") -> DataFrame:
        """MAP-D as a lazy Spark DataFrame: each sample's per-epoch mean losses gathered into one row by
        the executors, the reference probes' trajectories collected to the driver and shipped with the
        task, and each partition searched with FAISS (``mapInArrow``). Same columns and values as
        :meth:`analytics.run.Run.mapd` (which, on Spark, collects this frame). On a cluster, tdlog and FAISS
        must be installed on the executors."""
        return self._mapd_frame(k, suites, self._mapd_epochs(epochs, upto_epoch, split), split, device)

    def _mapd_frame(self, k: int, suites: list[str] | None, epoch_list: list[int], split: str,
                    device: str) -> DataFrame:
        points = self.frame(
            "SELECT sample_id, collect_list(named_struct('epoch', epoch, 'loss', loss)) AS points FROM epoch_stats "
            "WHERE split = $split AND epoch >= $epoch_from AND epoch <= $epoch_last GROUP BY sample_id",
            {"split": split, "epoch_from": epoch_list[0], "epoch_last": epoch_list[-1]})
        reference = self.sql("SELECT sample_id, probe FROM samples WHERE probe IS NOT NULL AND probe_role = "
                             "'reference'")
        if suites is not None:
            reference = reference.filter(pl.col("probe").is_in(suites))
        probe_points = to_polars(points.join(self.spark.createDataFrame(reference.to_arrow()), "sample_id"))
        if probe_points.height < k:
            raise ValueError(f"k: expected at most the number of reference probes with records, "
                             f"{probe_points.height}, got {k}")
        probe_matrix = points_matrix(probe_points["points"].to_arrow(), epoch_list)
        probe_suites = probe_points["probe"].to_numpy()
        names = sorted(set(probe_suites.tolist()))
        id_type = points.schema["sample_id"].dataType.simpleString()
        schema = f"sample_id {id_type}, " + ", ".join(f"p_{name} DOUBLE" for name in names) + ", mapd_suite STRING"

        def search(batches):
            from analytics.mapd import ProbeIndex

            index = ProbeIndex.build(probe_matrix, probe_suites, device=device)
            for batch in batches:
                votes = index.vote(points_matrix(batch.column("points"), epoch_list), k)
                yield pa.RecordBatch.from_arrays(
                    [batch.column("sample_id"), *(pa.array(votes[:, j]) for j in range(len(names))),
                     pa.array(np.asarray(names)[votes.argmax(1)] if len(votes) else [], pa.string())],
                    names=["sample_id", *(f"p_{name}" for name in names), "mapd_suite"])

        return points.mapInArrow(search, schema)


    def close(self) -> None:
        """Drop this run's views (the session stays: it may be shared)."""
        for name in ("samples", "epoch_stats", "records", "attempts", "raw_records"):
            self.spark.catalog.dropTempView(name)


def _posterior(x, model, noisy: int):
    """Spark column: posterior of component ``noisy`` of a fitted 1-D 2-component ``GaussianMixture``:
    ``w_n N(x; m_n, v_n) / sum_j w_j N(x; m_j, v_j)``, as ``1 / (1 + exp(l_c - l_n))`` with
    ``l_j = log w_j - log(2 pi v_j) / 2 - (x - m_j)^2 / (2 v_j)``."""
    from pyspark.sql import functions as F

    def log_density(j: int):
        mean, variance = float(model.means_[j, 0]), float(model.covariances_.reshape(-1)[j])
        constant = math.log(float(model.weights_[j])) - 0.5 * math.log(2 * math.pi * variance)
        return F.lit(constant) - (x - F.lit(mean)) ** 2 / F.lit(2 * variance)

    return 1 / (1 + F.exp(log_density(1 - noisy) - log_density(noisy)))


def points_matrix(points: pa.Array | pa.ChunkedArray, epochs: list[int]) -> np.ndarray:
    """``list<struct<epoch, loss>>`` per sample -> ``[n, len(epochs)]`` float32 trajectories, forward-filled
    (the epochs are every recorded epoch of the range, so each point has its column)."""
    if isinstance(points, pa.ChunkedArray):
        points = points.combine_chunks()
    lengths = points.value_lengths().to_numpy(zero_copy_only=False)
    flat = points.flatten()
    column_of = np.full(epochs[-1] - epochs[0] + 1, -1, dtype=np.int64)
    column_of[np.asarray(epochs) - epochs[0]] = np.arange(len(epochs))
    columns = column_of[flat.field("epoch").to_numpy(zero_copy_only=False) - epochs[0]]
    matrix = np.full((len(lengths), len(epochs)), np.nan, dtype=np.float32)
    matrix[np.repeat(np.arange(len(lengths)), lengths), columns] = flat.field("loss").to_numpy(zero_copy_only=False)
    return forward_fill(matrix)
