"""What a reader checks before it scores a run (FORMAT.md, "Reader rules" 8 and 9), so that nothing damaged
is ever scored; ``tdlog verify`` reports the same problems, all of them, without refusing.

- **The listing** (every time the run is read; no data read): the records of each attempt have its attempt
  file; on an object store, every ``_committed/a{K}-r{R}.json`` names an attempt ``K`` and a rank ``R``
  of it, lists files that exist, and lists every data file its writer uploaded but the last one of each
  kind (a writer killed between an upload and its manifest leaves at most that one unlisted); a writer's
  data files without its manifest mean the manifest was deleted (writers put theirs, empty, before any data).
- **The contents** of each data file, once per file identity (path, size, modification time, inode:
  a clean file is read once, and again only if it changes): every page passes its CRC checksum, every
  row is readable, the footer's min/max statistics (what readers prune by) equal the values in the
  pages, and every row of ``part-a{K}-r{R}-…`` has ``attempt = K`` and ``rank = R``. Identities of clean
  files are kept in ``$TDLOG_CACHE_DIR`` (default ``~/.cache/tdlog``), one small JSON per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tdlog.format import COMMITTED_DIR, PART_FILE, RECORDS_FILE, SAMPLES_FILE, RunFiles, attempt_name

MANIFEST_NAME = re.compile(r"^a(\d+)-r(\d+)\.json$")
CHECKED_COLUMNS = ("sample_id", "step", "attempt", "rank", "target", "pred", "other_class", "label")


class DamagedRunError(ValueError):
    """The run has a damaged file: readers refuse it (``tdlog verify`` names every problem)."""


def damaged(location: str, problems: list[tuple[str, str]]) -> DamagedRunError:
    name, problem = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return DamagedRunError(f"path: the run at {location} is damaged: {location}/{name}: {problem}{more}; nothing "
                           f"is scored from a damaged run: run `tdlog verify {location}` for every problem")


def _owner(name: str) -> tuple[int, int, int] | None:
    """``(attempt, rank, seq)`` of a data file's name."""
    match = PART_FILE.match(name.rsplit("/", 1)[-1])
    return None if match is None else (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def listing_problems(files: RunFiles, world_sizes: dict[int, int]) -> list[tuple[str, str]]:
    """The problems of a run's listing (``files``, with ``world_sizes``: ``{attempt: world_size}`` of its
    attempt files); see the module."""
    problems = []
    missing_attempts = sorted({_owner(name)[0] for name in files.records} - set(world_sizes))
    problems += [(attempt_name(attempt), "missing: records of this attempt have no attempt file, so none of "
                  "them would count") for attempt in missing_attempts]
    if not files.manifests:
        return problems
    on_store: dict[tuple[int, int, str], list[tuple[int, str]]] = defaultdict(list)
    for name in files.sizes:
        if RECORDS_FILE.match(name) or SAMPLES_FILE.match(name):
            attempt, rank, seq = _owner(name)
            on_store[(attempt, rank, name.split("/", 1)[0])].append((seq, name))
    for manifest, listed in files.manifests.items():
        match = MANIFEST_NAME.match(manifest[len(COMMITTED_DIR) + 1:])
        if match is None or int(match.group(1)) not in world_sizes \
                or int(match.group(2)) >= world_sizes[int(match.group(1))]:
            problems.append((manifest, "stray: not the manifest of a rank of an attempt of this run (names are "
                                       "a{attempt}-r{rank}.json); it would change which files count"))
        problems += [(manifest, f"lists {name}, which is not in the run") for name in listed if name not in files.sizes]
    for (attempt, rank, kind), owned in sorted(on_store.items()):
        manifest = f"{COMMITTED_DIR}/a{attempt}-r{rank}.json"
        if manifest not in files.manifests:
            problems.append((manifest, f"missing: {len(owned)} {kind} files of attempt {attempt} rank {rank} are in "
                                       f"the run but their manifest is not, so none of them would count"))
            continue
        listed = set(files.manifests[manifest])
        last_listed = max((seq for seq, name in owned if name in listed), default=-1)
        unlisted = [name for seq, name in sorted(owned) if name not in listed]
        if len(unlisted) > 1 or any(seq < last_listed for seq, name in owned if name not in listed):
            problems.append((manifest, f"does not list {len(unlisted)} {kind} files of attempt {attempt} rank "
                                       f"{rank} that are in the run (e.g. {unlisted[0]}); a writer leaves at most "
                                       f"its last file unlisted"))
    return problems


def content_problem(source: Any, name: str) -> str | None:
    """The problem with the data file ``name`` read from ``source`` (a path or a file-like object), or None:
    see the module."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source, page_checksum_verification=True)
        owner = _owner(name)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            metadata = parquet.metadata.row_group(group)
            for index in range(metadata.num_columns):
                chunk = metadata.column(index)
                column = chunk.path_in_schema
                if column not in CHECKED_COLUMNS or column not in table.column_names or table.num_rows == 0:
                    continue
                values = pc.min_max(table[column])
                low, high = values["min"].as_py(), values["max"].as_py()
                stats = chunk.statistics
                if stats is not None and stats.has_min_max and (stats.min, stats.max) != (low, high):
                    return (f"footer statistics of {column} (row group {group}) say {stats.min}..{stats.max}, "
                            f"its pages hold {low}..{high}: readers that prune by them would miss rows")
                if owner is not None and column in ("attempt", "rank") and name.startswith("records/"):
                    expected = owner[0] if column == "attempt" else owner[1]
                    if (low, high) != (expected, expected):
                        return f"rows with {column} {low}..{high} in a file named for {column} {expected}"
    except (OSError, pa.ArrowException) as error:
        return f"unreadable: {' '.join(str(error).split())}"
    return None


class CheckedFiles:
    """The identities of a run's data files that passed :func:`content_problem`, kept in a small JSON file
    per run under ``$TDLOG_CACHE_DIR`` (default ``~/.cache/tdlog``) so that a clean run is read once."""

    def __init__(self, location: str) -> None:
        root = Path(os.environ.get("TDLOG_CACHE_DIR") or Path.home() / ".cache" / "tdlog")
        self.path = root / "checked" / f"{hashlib.sha1(location.encode()).hexdigest()[:20]}.json"
        try:
            self._passed: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._passed = {}

    def check(self, identities: dict[str, list], read: Callable[[str], Any], location: str, *,
              threads: int | None = None) -> None:
        """Check every file of ``identities`` (``{name: identity}``) whose identity has not passed before,
        reading it with ``read(name)``; ``DamagedRunError`` naming the first problem."""
        todo = sorted(name for name, identity in identities.items() if self._passed.get(name) != identity)
        if not todo:
            return
        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(lambda name: content_problem(read(name), name), todo))
        problems = [(name, problem) for name, problem in zip(todo, found, strict=True) if problem]
        if problems:
            raise damaged(location, problems)
        self._passed.update({name: identities[name] for name in todo})
        self._save()

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(self._passed))
            os.replace(partial, self.path)
        except OSError:  # a read-only home: the files are checked again next time, nothing else changes
            pass


def world_sizes(attempts: Iterable[dict[str, Any]]) -> dict[int, int]:
    """``{attempt: world_size}`` of parsed attempt files."""
    return {int(a["attempt"]): int(a.get("world_size", 1)) for a in attempts}

