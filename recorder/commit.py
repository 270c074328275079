"""Atomic commit of a Parquet file: staging, fsync, link (or rename) into place, directory fsync.

A reader listing ``records/`` or ``samples/`` sees whole files only; a writer killed at any point leaves
at most an orphan under ``_staging/`` (never read, removed by the next attempt).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tdlog.format import STAGING_DIR, fsync_dir

# What a records file costs to write, measured on a 25,600-row file (50 steps of benchmarks/recorder.py):
# LZ4 and statistics on every column, 45 us per 512 rows for 32.9 bytes per row; this, 31 us for 33.7 bytes.
# Random floats compress neither by LZ4 nor by dictionaries (measured: a dictionary on them is 6x slower);
# the small-integer columns shrink more by dictionary (RLE) encoding than by LZ4. Statistics are kept where
# readers prune by them: the id range (MAP-D's dense ids, DuckDB's filters), step, attempt and rank.
PARQUET_OPTIONS = {
    "compression": "none",
    "write_page_checksum": True,  # CRC32 of every page: `tdlog verify` (and any reader that checks) finds corruption
    "use_dictionary": ["step", "attempt", "rank", "target", "other_class", "pred", "label", "probe", "probe_role"],
    "write_statistics": ["sample_id", "step", "attempt", "rank"],
}


def makedirs_durable(path: Path) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent so the entries survive a crash."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another rank made it at the same moment
            directory.mkdir()
        fsync_dir(directory.parent)


def commit_table(run_dir: Path, relative_path: str, table: pa.Table) -> Path:
    """Write ``table`` to ``run_dir/relative_path`` atomically and durably; never overwrite a file.

    Raises ``FileExistsError`` if the destination exists (a name collision is a bug, never silently
    resolved by replacing committed data).
    """
    final = run_dir / relative_path
    staging_dir = run_dir / STAGING_DIR
    staging_dir.mkdir(exist_ok=True)
    staged = staging_dir / relative_path.replace("/", "__")
    try:
        with open(staged, "wb") as handle:
            pq.write_table(table, handle, **PARQUET_OPTIONS)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)  # e.g. a full disk: leave nothing half-written behind
        raise
    makedirs_durable(final.parent)
    try:
        os.link(staged, final)  # fails if `final` exists: no clobbering
        os.unlink(staged)
    except FileExistsError:
        os.unlink(staged)
        raise
    except OSError:
        # Filesystems without hard links: rename, after checking we would not replace anything.
        if final.exists():
            os.unlink(staged)
            raise FileExistsError(f"refusing to overwrite committed file {final}") from None
        os.rename(staged, final)
    fsync_dir(final.parent)
    return final
