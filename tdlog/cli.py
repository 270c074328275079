"""The ``tdlog`` command line: info, sql, score, export, mapd, report (``tdlog.analytics``), and demo
(``tdlog.demo``, imported only for that command).

Errors are one line on stderr, exit code 1."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from tdlog.parsing import OneLineParser


def _epoch_range(text: str) -> range:
    """``FROM:TO`` (TO exclusive) -> ``range(FROM, TO)``."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FROM:TO (TO exclusive), e.g. 0:50, got {text!r}") from None
    return range(start, stop)


def _score_epochs(text: str) -> range | str | None:
    """``auto`` (the window chosen from the threshold samples), ``all`` (every epoch) or ``FROM:TO``."""
    if text in ("auto", "all"):
        return "auto" if text == "auto" else None
    try:
        return _epoch_range(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, all or FROM:TO (TO exclusive), e.g. 0:50, got {text!r}") \
            from None


def _budget(text: str) -> int | float:
    """``--budget``: a count (``1000``) or a share of the samples (``0.1``)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a count such as 1000 or a share such as 0.1, got {text!r}") \
                from None


def _param(text: str) -> tuple[str, object]:
    """``name=value``; the value is read as JSON when it parses (numbers), else kept as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tdlog", description="Training-dynamics log store and analytics.")
    commands = parser.add_subparsers(dest="command", required=True)

    def run_command(name: str, help_text: str, *, many: bool = False) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        if many:
            command.add_argument("run", nargs="+", help="run directory or URI; several runs of one dataset (seeds, "
                                 "threshold passes) are scored into one table (DuckDB)")
        else:
            command.add_argument("run", help="run directory, or a URI such as s3://bucket/run (copied to a local "
                                 "cache)")
        command.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
        command.add_argument("--memory-limit", default=None, help="DuckDB memory limit, e.g. 4GB (spills beyond)")
        command.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                             help="query engine (default duckdb; spark needs pyspark and Java 17+)")
        command.add_argument("--master", default="local[2]",
                             help="Spark master URL with --engine spark (default local[2]; spark://HOST:7077, yarn)")
        return command

    run_command("info", "samples, epochs, attempts, ranks, non-finite rows, size on disk")
    run_command("verify", "check every committed file (page checksums, schemas, manifests, attempt files)")

    sql = run_command("sql", "run a query over the run's views (records, samples, epoch_stats, attempts)")
    sql.add_argument("query", nargs="?", help="SQL text (or use -f)")
    sql.add_argument("-f", "--file", type=Path, help="read the query from this .sql file")
    sql.add_argument("-p", "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                     help="bind $NAME (repeatable)")
    sql.add_argument("--print-views", action="store_true", help="print CREATE VIEW statements for the DuckDB CLI")
    sql.add_argument("--out", type=Path, help="write the result to .parquet, .csv or .json instead of printing")
    sql.add_argument("--max-rows", type=int, default=20, help="rows to print (default 20)")

    def score_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--epochs", type=_score_epochs, default="auto",
                             help="auto (default: the window chosen from the threshold samples, every epoch "
                                  "without them), all, or FROM:TO")
        command.add_argument("--split", default="train", help="split to score (default train)")
        command.add_argument("--percentile", type=float, default=99, help="threshold-sample cutoff percentile")

    score = run_command("score", "every score per sample in one table (several runs: combined over them)", many=True)
    score_options(score)
    score.add_argument("--no-mapd", action="store_true", help="leave out the MAP-D columns of a run with probes")
    score.add_argument("--conflicts", choices=("raise", "keep"), default="raise",
                       help="several runs that disagree on num_classes or a sample's label: refuse (default) or "
                            "combine them anyway")
    score.add_argument("--out", type=Path, required=True, help="scores.parquet (or .csv, .json)")

    export = run_command("export", "aum-compatible CSV, flagged index list or sample weights")
    score_options(export)
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--aum-csv", type=Path, metavar="DIR", help="write DIR/aum_values.csv as the aum package")
    target.add_argument("--flagged", type=Path, metavar="FILE",
                        help="ids flagged as mislabeled (AUM threshold if present, else AUL GMM), one per line")
    target.add_argument("--weights", type=Path, metavar="FILE", help="sample_id, weight (AUL GMM clean probability)")

    mapd = run_command("mapd", "MAP-D: per-sample suite probabilities from the k nearest probe trajectories")
    mapd.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    mapd.add_argument("--epochs", type=_epoch_range, default=None, help="FROM:TO epoch range (default: all)")
    mapd.add_argument("--upto-epoch", type=int, default=None, help="use epochs up to this one (online variant)")
    mapd.add_argument("--split", default="train", help="split (default train)")
    mapd.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="FAISS device")
    mapd.add_argument("--out", type=Path, help="suite probabilities per sample: mapd.parquet (or .csv, .json)")
    mapd.add_argument("--corrected-labels", type=Path, metavar="FILE",
                      help="soft labels p_clean*onehot(label) + p_noisy*onehot(prediction), .parquet or .json")
    mapd.add_argument("--priority", type=Path, metavar="FILE", help="training priority (p_clean + 1 - p_target)/2")

    select = run_command("select", "choose a subset of the data by its training dynamics (S2L clusters of the loss "
                         "trajectories, loss drop, learning percentage, or random)")
    select.add_argument("--budget", type=_budget, required=True,
                        help="samples to keep: a count (1000) or a share (0.1)")
    select.add_argument("--method", choices=("s2l", "random", "loss_drop", "learning_percentage"), default="s2l",
                        help="s2l (default): k-means on the loss trajectories, the budget shared equally among the "
                             "clusters; random: the baseline; loss_drop: the smallest drops from the first pass; "
                             "learning_percentage: learned latest (needs the split 'initial')")
    select.add_argument("--source", default=None, help="samples column whose values share the budget equally first")
    select.add_argument("--clusters", type=int, default=100, help="k-means clusters (default 100)")
    select.add_argument("--iterations", type=int, default=20, help="k-means iterations (default 20)")
    select.add_argument("--seed", type=int, default=0, help="seed of the k-means and the random draws (default 0)")
    select.add_argument("--epochs", type=_epoch_range, default=None, help="FROM:TO epoch range (default: all)")
    select.add_argument("--split", default="train", help="split (default train)")
    select.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="FAISS device")
    select.add_argument("--out", type=Path, required=True,
                        help="the selected samples: selected.parquet (or .csv, .json), or ids.txt (one id per line)")

    report = run_command("report", "self-contained interactive HTML report (--static: PNG plots)")
    report.add_argument("--out", type=Path, default=None,
                        help="report file (default RUN/report.html; for a URI, in its local copy)")
    report.add_argument("--split", default="train", help="split (default train)")
    report.add_argument("--gallery", type=int, default=32, help="suspicious samples shown (default 32)")
    report.add_argument("--static", action="store_true", help="plots as PNG images, no script (for e-mail, papers)")
    report.add_argument("--max-points", type=int, default=None,
                        help="samples drawn in the interactive page (default 50,000; every flagged one kept)")

    commands.add_parser("demo", add_help=False,
                        help="noisy digits end to end: record, detect, compare, retrain, report (tdlog demo --help)")
    return parser


def _open(args: argparse.Namespace):
    from tdlog.analytics import open_run

    spark = None
    if args.engine == "spark":
        from tdlog.analytics.spark_engine import spark_session

        spark = spark_session(args.master)
    return open_run(args.run, threads=args.threads, memory_limit=args.memory_limit, engine=args.engine, spark=spark)


def _info(args: argparse.Namespace) -> None:
    with _open(args) as run:
        info = run.info()
    print(f"run              {info['path']}")
    print(f"format           {info['format_version']}, {info['num_classes']} classes, ids {info['sample_id_type']}")
    print(f"samples          {info['registered_samples']} registered")
    for split in info["splits"]:
        print(f"split {split['split']:<10} {split['samples']} samples, {split['epochs']} epochs "
              f"({split['first_epoch']}..{split['last_epoch']}), {split['rows']} rows, {split['ranks']} ranks"
              + (f", {split['unscored_rows']} with nothing to score (tokens = 0)" if split["unscored_rows"] else ""))
    starts = ", ".join(f"{a['attempt']}@{a['start_epoch']}" for a in info["attempts"])
    print(f"attempts         {len(info['attempts'])} (attempt@start_epoch: {starts})")
    print(f"non-finite rows  {info['nonfinite_rows']}")
    print(f"size on disk     {info['size_bytes'] / 2**20:.2f} MiB")


def _verify(args: argparse.Namespace) -> int:
    from tdlog.analytics.store import RunStore
    from tdlog.analytics.verify import verify_run

    problems = verify_run(args.run)
    for file, problem in problems.iter_rows():
        print(f"tdlog verify: {file}: {problem}", file=sys.stderr)
    if problems.height:
        print(f"tdlog verify: {problems['file'].n_unique()} bad file(s)", file=sys.stderr)
        return 1
    files = RunStore(args.run).snapshot().files
    print(f"ok: {len(files.records) + len(files.samples)} files checked")
    return 0


def _sql(args: argparse.Namespace) -> None:
    from tdlog.analytics.export import write_frame

    with _open(args) as run:
        if args.print_views:
            print(run.view_definitions())
            if args.query is None and args.file is None:
                return
        if (args.query is None) == (args.file is None):
            raise ValueError("query: give the SQL text or -f FILE (one of them)")
        text = args.file.read_text() if args.file is not None else args.query
        frame = run.sql(text, dict(args.param))
    if args.out is not None:
        written = write_frame(frame, args.out, argument="--out")
        print(f"wrote {frame.height} rows to {written}")
        return
    with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, tbl_width_chars=200):
        print(frame)


def _score(args: argparse.Namespace) -> None:
    from tdlog.analytics.export import write_frame

    if len(args.run) > 1:
        return _score_runs(args)
    args.run = args.run[0]
    with _open(args) as run:
        if args.epochs == "auto":
            window = run.epoch_window(split=args.split)
            print(window.describe() if window is not None else "epochs: all (no threshold samples to choose a window)")
        if args.engine == "spark":  # computed and written by the executors, never collected here
            rows = run.write_scores(args.out, epochs=args.epochs, split=args.split, percentile=args.percentile)
            print(f"wrote {rows} samples to {args.out} (a folder of Spark part files)")
            return
        scores = run.scores(epochs=args.epochs, split=args.split, percentile=args.percentile,
                            mapd=False if args.no_mapd else None)
    _print_noise_rates(scores)
    written = write_frame(scores, args.out, argument="--out")
    print(f"wrote {scores.height} samples x {scores.width} columns to {written}")


def _score_runs(args: argparse.Namespace) -> None:
    """``tdlog score RUN1 RUN2 ...``: the combined table of :meth:`tdlog.analytics.Runs.scores`."""
    from tdlog.analytics import open_runs
    from tdlog.analytics.export import write_frame

    if args.engine != "duckdb":
        raise ValueError(f"--engine: several runs are scored together with duckdb, got {args.engine!r}")
    with open_runs(args.run, conflicts=args.conflicts, threads=args.threads,
                   memory_limit=args.memory_limit) as runs:
        for window in runs.epoch_windows(epochs=args.epochs, split=args.split).iter_rows(named=True):
            print(f"run {window['run']}: {window['location']}: epochs {window['epoch_from']}:{window['epoch_to']} "
                  f"({window['chosen_by']})")
        scores = runs.scores(epochs=args.epochs, split=args.split, percentile=args.percentile)
    _print_noise_rates(scores)
    written = write_frame(scores, args.out, argument="--out")
    print(f"wrote {scores.height} samples x {scores.width} columns to {written}")


def _print_noise_rates(scores: pl.DataFrame) -> None:
    from tdlog.analytics.scores import noise_rates

    estimates = noise_rates(scores)
    if estimates:
        print("noise rate: " + ", ".join(f"{value:.3f} ({name})" for name, value in estimates.items()))


def _export(args: argparse.Namespace) -> None:
    from tdlog.analytics.export import write_frame, write_index_list
    from tdlog.recorder.aum_compat import write_aum_values

    with _open(args) as run:
        if args.aum_csv is not None:
            # the aum package's AUM spans every update: "auto" (the default) means every epoch here
            aum = run.aum(epochs=None if args.epochs == "auto" else args.epochs, split=args.split, per_update=True)
            args.aum_csv.mkdir(parents=True, exist_ok=True)
            path = write_aum_values(args.aum_csv, aum["sample_id"].to_list(), aum["aum"].to_numpy())
            print(f"wrote {aum.height} samples to {path}")
            return
        scores = run.scores(epochs=args.epochs, split=args.split, percentile=args.percentile)
    if args.flagged is not None:
        column = next((c for c in ("aum_flagged", "gmm_flagged") if c in scores.columns), None)
        if column is None:
            raise ValueError(f"--flagged: nothing flags samples in this run: no threshold samples, and "
                             f"{scores.height} scored sample(s), too few for the AUL GMM (2 or more)")
        flagged = scores.filter(pl.col(column).fill_null(False))["sample_id"]
        print(f"wrote {flagged.len()} ids flagged by {column} to {write_index_list(flagged, args.flagged)}")
    else:
        if "weight" not in scores.columns:
            raise ValueError(f"--weights: the AUL GMM gives the weights and needs 2 or more real samples, "
                             f"got {scores.height}")
        weights = scores.filter(pl.col("weight").is_not_null()).select("sample_id", "weight")
        written = write_frame(weights, args.weights, argument="--weights")
        print(f"wrote {weights.height} weights to {written}")


def _mapd(args: argparse.Namespace) -> None:
    from tdlog.analytics.export import write_frame

    outputs = {"--out": args.out, "--corrected-labels": args.corrected_labels, "--priority": args.priority}
    if not any(outputs.values()):
        raise ValueError("--out, --corrected-labels, --priority: expected at least one output file, got none")
    options = {"k": args.k, "epochs": args.epochs, "split": args.split, "device": args.device}
    with _open(args) as run:
        frames = {
            "--out": lambda: run.mapd(upto_epoch=args.upto_epoch, **options),
            "--corrected-labels": lambda: run.corrected_labels(**options),
            "--priority": lambda: run.training_priority(**options),
        }
        for argument, path in outputs.items():
            if path is not None:
                frame = frames[argument]()
                print(f"wrote {frame.height} samples to {write_frame(frame, path, argument=argument)}")


def _select(args: argparse.Namespace) -> None:
    from tdlog.analytics.export import FORMATS, write_frame, write_index_list

    if args.out.suffix.lower() not in (*FORMATS, ".txt"):
        raise ValueError(f"--out: expected a file name ending in one of {(*FORMATS, '.txt')}, got {str(args.out)!r}")
    with _open(args) as run:
        chosen = run.select(args.budget, method=args.method, source=args.source, clusters=args.clusters,
                            iterations=args.iterations, seed=args.seed, epochs=args.epochs, split=args.split,
                            device=args.device)
    written = write_index_list(chosen["sample_id"], args.out) if args.out.suffix.lower() == ".txt" else \
        write_frame(chosen, args.out, argument="--out")
    print(f"wrote {chosen.height} samples selected by {args.method} to {written}")


def _report(args: argparse.Namespace) -> None:
    from tdlog.analytics.report import write_report

    with _open(args) as run:
        if args.out is None and run.path is None:
            raise ValueError(f"--out: expected a report file for {run.location} (no local folder to put it in)")
        written = write_report(run, args.out or run.path / "report.html", split=args.split, gallery_size=args.gallery,
                               static=args.static, max_points=args.max_points)
    print(f"wrote {written}")


COMMANDS = {"info": _info, "verify": _verify, "sql": _sql, "score": _score, "export": _export, "mapd": _mapd,
            "select": _select, "report": _report}


def _spark_errors(args: argparse.Namespace) -> tuple[type[Exception], ...]:
    """Spark's query errors, when the command ran on Spark."""
    if getattr(args, "engine", "duckdb") != "spark":
        return ()
    try:
        from pyspark.errors import PySparkException
    except ImportError:  # spark_session() says how to install it
        return (ImportError,)
    return (PySparkException,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from tdlog.demo.cli import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    def note(message, *_args, **_kwargs) -> None:  # a warning: one line on stderr
        print(f"tdlog {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)  # each of this command, even one an earlier call raised
            warnings.showwarning = note
            status = COMMANDS[args.command](args)
    except (OSError, ValueError, KeyError, NotImplementedError, duckdb.Error, *_spark_errors(args)) as exc:
        message = " ".join(str(exc).split())  # DuckDB messages span lines: keep the error on one line
        print(f"tdlog {args.command}: error: {message}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
