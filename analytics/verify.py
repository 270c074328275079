"""``tdlog verify RUN``: check every file a reader would take (FORMAT.md, "Reader rules").

- ``run.json``: JSON, a tdlog run of a version this tdlog reads;
- ``_attempts/attempt-K.json``: JSON with ``attempt = K``, ``start_epoch`` (int or null), ``world_size``;
  one for every attempt that has records files (without it none of its rows count);
- ``_committed/*.json``: JSON, and the listing checks of :mod:`tdlog.analytics.integrity` (records of
  attempts without attempt file, stray, missing or incomplete manifests, listed files that are gone);
- every committed records and samples file: the content checks of :mod:`tdlog.analytics.integrity` (page
  CRC checksums, written since format version 3; every row readable; footer statistics equal to the
  pages; rows of the attempt and rank the name says), the columns of its kind with their types,
  ``sample_id`` of the run's id type.

Returns one row per problem (``file``, ``problem``); an empty table means the run is sound.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import polars as pl

from tdlog.format import (
    ATTEMPT_FILE,
    ATTEMPTS_DIR,
    COMMITTED_DIR,
    MANIFEST,
    check_manifest,
    committed_files,
    parse_json,
)

from .integrity import content_problem, listing_problems, world_sizes
from .store import RunStore

RECORDS_COLUMNS = {"sample_id": None, "step": "int64", "target": "int32", "loss": "float", "margin": "float",
                   "target_logit": "float", "other_logit": "float", "other_class": "int32", "prob": "float",
                   "pred": "int32", "el2n": "float", "attempt": "int32", "rank": "int32"}
RECORDS_COLUMNS_V2 = {"correct": "float", "tokens": "int32"}
SAMPLES_COLUMNS = {"sample_id": None, "label": "int32", "target": "int32", "is_threshold": "bool"}


def verify_run(path: str | os.PathLike, *, filesystem: Any = None, progress: bool | None = None) -> pl.DataFrame:
    """Check the run at ``path`` (a folder or a URI); ``file, problem`` for each problem found.
    ``FileNotFoundError`` when there is no run there."""
    store = RunStore(path, filesystem)
    store.require_run()
    problems: list[tuple[str, str]] = []
    sizes = store.listing()
    try:
        manifest = parse_json(store.read(MANIFEST), f"{store.location}/{MANIFEST}")
    except ValueError as error:
        manifest, problems = None, [(MANIFEST, str(error))]
    if manifest is not None:
        try:
            check_manifest(manifest, MANIFEST)
        except ValueError as error:
            problems.append((MANIFEST, str(error)))
    problems += _check_json_files(store, sizes)
    try:
        files = committed_files(sizes, store.read, where=store.location)
    except ValueError:  # a garbled manifest: already reported; check every data file instead
        files = committed_files({n: s for n, s in sizes.items() if not n.startswith(COMMITTED_DIR + "/")},
                                store.read, where=store.location)
    parsed = []
    for name in files.attempts:
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a garbled attempt file: reported above
            parsed.append(store.read_json(name))
    problems += listing_problems(files, world_sizes(parsed))
    id_type = (manifest or {}).get("sample_id_type")
    data = [(name, RECORDS_COLUMNS) for name in files.records] + [(name, SAMPLES_COLUMNS) for name in files.samples]
    show = sys.stderr.isatty() if progress is None else progress
    if show:
        from tqdm.auto import tqdm

        data = tqdm(data, desc="verifying", unit="file")
    for name, columns in data:
        problem = _check_parquet(store, name, columns, id_type)
        if problem:
            problems.append((name, problem))
    return _table(problems)


def _table(problems: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(problems, schema={"file": pl.String, "problem": pl.String}, orient="row")


def _check_json_files(store: RunStore, sizes: dict[str, int]) -> list[tuple[str, str]]:
    problems = []
    for name in sorted(sizes):
        if name.startswith(ATTEMPTS_DIR + "/") and (match := ATTEMPT_FILE.match(name[len(ATTEMPTS_DIR) + 1:])):
            try:
                payload = parse_json(store.read(name), name)
            except ValueError as error:
                problems.append((name, str(error)))
                continue
            start = payload.get("start_epoch")
            if payload.get("attempt") != int(match.group(1)) or not (start is None or isinstance(start, int)) \
                    or not isinstance(payload.get("world_size"), int):
                problems.append((name, f"expected attempt = {match.group(1)}, start_epoch an int or null and "
                                       f"world_size an int, got {payload}"))
        elif name.startswith(COMMITTED_DIR + "/") and name.endswith(".json"):
            try:
                listed = parse_json(store.read(name), name).get("files", [])
            except ValueError as error:
                problems.append((name, str(error)))
                continue
            problems += [(name, f"lists {file}, which is not in the run") for file in listed if file not in sizes]
    return problems


def _check_parquet(store: RunStore, name: str, columns: dict[str, str | None], id_type: str | None) -> str | None:
    """The problem with one data file, or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = pa.BufferReader(store.read(name))
    problem = content_problem(data, name)
    if problem:
        return problem
    schema = pq.ParquetFile(data).schema_arrow  # content_problem has decoded every page already
    expected = dict(columns)
    if columns is RECORDS_COLUMNS and "correct" in schema.names:
        expected |= RECORDS_COLUMNS_V2
    missing = [c for c in expected if c not in schema.names]
    if missing:
        return f"missing columns {missing}"
    for column, kind in expected.items():
        actual = schema.field(column).type
        want = id_type if kind is None else kind
        if want is not None and not _is_type(actual, want):
            return f"column {column}: expected {want}, got {actual}"
    return None


def _is_type(actual: Any, kind: str) -> bool:
    """``actual`` (an Arrow type) is of ``kind``: ``int64`` (any integer, for ids), ``string``, ``float``
    (any floating type), ``bool``, or that exact type's name."""
    import pyarrow as pa

    checks = {"float": pa.types.is_floating, "bool": pa.types.is_boolean, "string": pa.types.is_string}
    if kind in checks:
        return checks[kind](actual)
    return str(actual) == kind
