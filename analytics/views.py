"""The views of a run, in SQL both engines run: ``raw_records``, ``attempts``, ``records``, ``unscored``,
``epoch_stats``, ``samples``.

``records`` holds only the rows that count: of each split, at each position ``(epoch, step)``, the rows of
the latest attempt that started in that split at or before it (FORMAT.md, "Attempts"), and of those only
the observations: a sequence row with nothing to score (``tokens = 0``, every target ``-100``; its
statistics are NaN) is in ``unscored`` instead, so that no score ever averages it in. The rule is written
into the view as a filter on ``split``, ``attempt``, ``epoch`` and ``step`` from the attempt files as they
are when the view is made (a join with ``attempts`` would cost every query a pass over the ``attempt``
column); ``Run`` remakes the views when the committed files or the attempts change. ``epoch_stats`` averages the
observations of one sample in one epoch first (DDP padding and sampling with replacement repeat samples).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import RunSnapshot

EPOCH_STATS_COLUMNS = ("loss", "margin", "prob", "el2n", "target_logit", "other_logit")


def file_list(paths: list[str]) -> str:
    """``['a', 'b']``: a SQL list of quoted file paths."""
    return "[" + ", ".join("'" + path.replace("'", "''") + "'" for path in paths) + "]"


def attempt_ranges(attempt_starts: dict[int, int | None]) -> list[tuple[int, int, int | None]]:
    """``(attempt, start, end)`` of each started attempt, by attempt, from ``{attempt: start_epoch}``
    (None: not started): attempt ``K`` owns epochs ``start_K <= e < end_K = min(start_J for J > K)``
    (``end`` None for the last one)."""
    started = sorted((a, s) for a, s in attempt_starts.items() if s is not None)
    return [(attempt, start, min((s for _, s in started[i + 1:]), default=None))
            for i, (attempt, start) in enumerate(started)]


END_OF_TIME = 9223372036854775807  # end_epoch of the last attempt


def attempt_rows(attempts: tuple[dict, ...]) -> list[tuple[int, int, int, int, str]]:
    """The ``attempts`` view's rows ``(attempt, start_epoch, end_epoch, world_size, started_at)`` of the
    started attempts, from the attempt files as read (a view of values: the engines never open those files)."""
    by_attempt = {a["attempt"]: a for a in attempts}
    return [(int(attempt), int(start), END_OF_TIME if end is None else int(end),
             int(by_attempt[attempt]["world_size"]), str(by_attempt[attempt].get("started_at", "")))
            for attempt, start, end in attempt_ranges({a["attempt"]: a.get("start_epoch") for a in attempts})]


Position = tuple[int, int | None]  # (epoch, step): step None = from the epoch's first row


def split_starts(attempts: list[dict], splits: list[str]) -> dict[str, list[tuple[int, Position]]]:
    """``{split: [(attempt, start position), ...] by attempt}``: where each attempt starts owning rows of
    each split (FORMAT.md, "Attempts"). A version-3 attempt file names its splits (``starts``: ``{split:
    [epoch, step or null]}``); an older one has one ``start_epoch`` for every split."""
    starts: dict[str, list[tuple[int, Position]]] = {split: [] for split in splits}
    for attempt in sorted(attempts, key=lambda a: a["attempt"]):
        if "starts" in attempt:
            for split, (epoch, step) in attempt["starts"].items():
                starts.setdefault(split, []).append((attempt["attempt"], (int(epoch), step)))
        elif attempt.get("start_epoch") is not None:
            for split in splits:
                starts[split].append((attempt["attempt"], (int(attempt["start_epoch"]), None)))
    return starts


def _order(position: Position) -> tuple[int, float]:
    return position[0], float("-inf") if position[1] is None else position[1]


def _from(position: Position) -> str:
    epoch, step = position
    return f"epoch >= {epoch}" if step is None else f"(epoch > {epoch} OR (epoch = {epoch} AND step >= {int(step)}))"


def _before(position: Position) -> str:
    epoch, step = position
    return f"epoch < {epoch}" if step is None else f"(epoch < {epoch} OR (epoch = {epoch} AND step < {int(step)}))"


def records_filter(attempts: list[dict], splits: list[str]) -> str:
    """SQL condition keeping the rows that count: of split ``s``, attempt ``K`` owns the rows from its start
    in ``s`` up to (excluding) the earliest start in ``s`` of a later attempt (positions ``(epoch, step)``
    in order; see :func:`split_starts`); the first attempt to log ``s`` also owns its rows before its start
    (nothing earlier could own them). An attempt that never logged ``s`` hides nothing of it."""
    single = len(attempts) == 1
    terms = []
    for split, starts in sorted(split_starts(attempts, splits).items()):
        owned = []
        for index, (attempt, start) in enumerate(starts):
            later = [position for _, position in starts[index + 1:]]
            end = min(later, key=_order) if later else None
            conditions = ([] if single else [f"attempt = {int(attempt)}"]) \
                + ([_from(start)] if index else []) + ([] if end is None else [_before(end)])
            owned.append(" AND ".join(conditions) or "true")
        if owned:
            quoted = split.replace("'", "''")
            terms.append(f"(split = '{quoted}' AND ({' OR '.join(f'({o})' for o in owned)}))")
    return " OR ".join(terms) or "false"


# columns that records files have from format version 2 on, and their values in older files
DERIVED_COLUMNS = {"correct": "CAST(pred = target AS FLOAT)", "tokens": "CAST(1 AS INT)"}


def records_select(attempts: list[dict], splits: list[str], columns: list[str] | None = None, *,
                   scored: bool = True) -> str:
    """The ``records`` view over ``raw_records`` (portable SQL), or with ``scored=False`` the ``unscored``
    view (the rows that count with ``tokens = 0``). ``columns``: the columns of ``raw_records`` when some
    files predate format version 2 (``DERIVED_COLUMNS`` then fill in their ``correct`` and ``tokens``);
    None when every file has them."""
    select = "*"
    if columns is not None:
        select = ", ".join(f"coalesce({c}, {DERIVED_COLUMNS[c]}) AS {c}" if c in DERIVED_COLUMNS else c
                           for c in columns)
        select += "".join(f", {value} AS {c}" for c, value in DERIVED_COLUMNS.items() if c not in columns)
    tokens = "coalesce(tokens, 1)" if columns is None or "tokens" in columns else "1"
    kept = f"{tokens} > 0" if scored else f"{tokens} = 0"
    return f"SELECT {select} FROM raw_records WHERE ({records_filter(attempts, splits)}) AND {kept}"


def epoch_stats_select(keys: str = "split, epoch, sample_id") -> str:
    """One row per ``keys`` (a split, epoch and sample; of several runs: and ``run``): its observations there
    averaged first (portable SQL)."""
    return (f"SELECT {keys}, any_value(target) AS target, "
            + ", ".join(f"avg({c}) AS {c}" for c in EPOCH_STATS_COLUMNS)
            + f", avg(correct) AS correct, count(*) AS observations FROM records GROUP BY {keys}")


EPOCH_STATS_SELECT = epoch_stats_select()


def raw_records_stub(sql_id: str) -> str:
    """An empty ``raw_records`` view for a run with no committed records yet (portable SQL)."""
    return (
        f"SELECT CAST(NULL AS {sql_id}) AS sample_id, CAST(NULL AS BIGINT) AS step, CAST(NULL AS INT) AS target, "
        + ", ".join(f"CAST(NULL AS FLOAT) AS {c}" for c in ("loss", "margin", "target_logit", "other_logit"))
        + ", CAST(NULL AS INT) AS other_class, CAST(NULL AS FLOAT) AS prob, CAST(NULL AS INT) AS pred, "
        "CAST(NULL AS FLOAT) AS el2n, CAST(NULL AS FLOAT) AS correct, CAST(NULL AS INT) AS tokens, "
        "CAST(NULL AS INT) AS attempt, CAST(NULL AS INT) AS rank, "
        "CAST(NULL AS STRING) AS split, CAST(NULL AS BIGINT) AS epoch WHERE false"
    )


def samples_stub(sql_id: str) -> str:
    """An empty ``samples`` view for a run that registered none (portable SQL)."""
    return (
        f"SELECT CAST(NULL AS {sql_id}) AS sample_id, CAST(NULL AS INT) AS label, CAST(NULL AS INT) AS target, "
        "CAST(NULL AS BOOLEAN) AS is_threshold, CAST(NULL AS STRING) AS probe, "
        "CAST(NULL AS STRING) AS probe_role WHERE false"
    )


def duckdb_view_definitions(snapshot: RunSnapshot, columns: list[str] | None = None) -> dict[str, str]:
    """``{view name: SELECT ...}`` of the run in ``snapshot`` for DuckDB: the committed files listed one by
    one (absolute paths, usable from any DuckDB session); ``columns`` as in :func:`records_select`."""
    sql_id = "BIGINT" if snapshot.id_type == "int64" else "STRING"
    if snapshot.files.records:
        raw = (
            f"SELECT * FROM read_parquet({file_list(snapshot.paths(snapshot.files.records))}, "
            "hive_partitioning = true, union_by_name = true, hive_types = {'split': VARCHAR, 'epoch': BIGINT})"
        )
    else:
        raw = raw_records_stub(sql_id)
    rows = attempt_rows(snapshot.attempts)
    attempts = ("SELECT * FROM (VALUES " + ", ".join(
        f"({attempt}, {start}, {end}, {world_size}, '{str(started).replace(chr(39), chr(39) * 2)}')"
        for attempt, start, end, world_size, started in rows)
        + ") AS attempts(attempt, start_epoch, end_epoch, world_size, started_at)") if rows else (
        "SELECT CAST(NULL AS INTEGER) AS attempt, CAST(NULL AS BIGINT) AS start_epoch, "
        "CAST(NULL AS BIGINT) AS end_epoch, CAST(NULL AS INTEGER) AS world_size, "
        "CAST(NULL AS VARCHAR) AS started_at WHERE false")
    samples = (f"SELECT * FROM read_parquet({file_list(snapshot.paths(snapshot.files.samples))}, union_by_name = true)"
               if snapshot.files.samples else samples_stub(sql_id))
    return {
        "raw_records": raw,
        "attempts": attempts,
        "records": records_select(list(snapshot.attempts), snapshot.splits, columns),
        "unscored": records_select(list(snapshot.attempts), snapshot.splits, columns, scored=False),
        "epoch_stats": EPOCH_STATS_SELECT,
        "samples": samples,
    }


def union_view_definitions(per_run: list[dict[str, str]], locations: list[str]) -> dict[str, str]:
    """DuckDB views over several runs at once, from each run's :func:`duckdb_view_definitions`: ``records``,
    ``unscored``, ``attempts`` and ``samples`` with a leading ``run`` column (the run's index in ``per_run``),
    ``epoch_stats`` per run, split, epoch and sample, and ``runs`` (``run, location``)."""

    def union(body) -> str:
        return " UNION ALL BY NAME ".join(f"SELECT {index} AS run, * FROM ({body(views)})"
                                          for index, views in enumerate(per_run))

    listed = ", ".join(f"({index}, '{location.replace(chr(39), chr(39) * 2)}')"
                       for index, location in enumerate(locations))
    return {
        "records": union(lambda views: f"WITH raw_records AS ({views['raw_records']}) {views['records']}"),
        "unscored": union(lambda views: f"WITH raw_records AS ({views['raw_records']}) {views['unscored']}"),
        "attempts": union(lambda views: views["attempts"]),
        "samples": union(lambda views: views["samples"]),
        "epoch_stats": epoch_stats_select("run, split, epoch, sample_id"),
        "runs": f"SELECT * FROM (VALUES {listed}) AS listed(run, location)",
    }
