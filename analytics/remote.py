"""Runs on object storage (``s3://``, ``gs://``, ... through ``pyarrow.fs``).

``open_run("s3://bucket/runs/exp1")`` copies the run's committed files into a local cache and opens the
copy with either engine. The copy is incremental: records and samples files have write-once names
(``part-a{attempt}-r{rank}-s{seq}.parquet``), so a file already in the cache with the same size is never
fetched again; ``run.json`` and the attempt files, which change, are fetched every time; ``_staging/`` is
never read. Each file lands in the cache under a temporary name and is renamed into place, so a copy
interrupted half-way leaves only complete files. A run written by ``Recorder("s3://...")`` lists its
committed data files in ``_committed/*.json``; only listed files are taken. Credentials and endpoints come from the URI
(``s3://bucket/run?endpoint_override=host:9000&scheme=http``), the usual environment variables, or an
explicit ``pyarrow.fs.FileSystem``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from recorder.format import ATTEMPTS_DIR, MANIFEST, RECORDS_DIR, SAMPLES_DIR, STAGING_DIR
from recorder.remote import COMMITTED_DIR

COPY_CHUNK = 1 << 22


def is_remote(path: str | os.PathLike) -> bool:
    """``path`` is a URI of a file system other than the local one (``s3://...``, not ``file://``)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def sync_run(uri: str, *, cache_dir: str | os.PathLike | None = None,
             filesystem: pafs.FileSystem | None = None) -> Path:
    """Bring the local copy of the run at ``uri`` up to date and return its folder (default: a folder per
    URI under ``tdlog-cache`` in the system temp folder). Raises ``FileNotFoundError`` if there is no run
    at ``uri``."""
    if filesystem is None:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    else:
        root = uri.split("://", 1)[1].split("?", 1)[0]
    root = root.rstrip("/")
    local = Path(cache_dir) if cache_dir is not None else (
        Path(tempfile.gettempdir()) / "tdlog-cache" / hashlib.sha1(uri.encode()).hexdigest()[:16])
    files = [f for f in filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
             if f.type == pafs.FileType.File]
    relative = {f.path[len(root) + 1:]: f for f in files}
    if MANIFEST not in relative:
        raise FileNotFoundError(f"path: no tdlog run at {uri} (no {MANIFEST})")
    committed = _committed_files(filesystem, [f for n, f in relative.items() if n.startswith(COMMITTED_DIR + "/")])
    for name, info in relative.items():
        if name.startswith((STAGING_DIR + "/", COMMITTED_DIR + "/")):
            continue
        if committed is not None and name.startswith((RECORDS_DIR + "/", SAMPLES_DIR + "/")) and name not in committed:
            continue  # uploaded, but its writer had not listed it yet: not committed
        target = local / name
        changes = name == MANIFEST or name.startswith(ATTEMPTS_DIR + "/")
        if not changes and target.exists() and target.stat().st_size == info.size:
            continue
        _copy(filesystem, info.path, target)
    return local


def _committed_files(filesystem: pafs.FileSystem, manifests: list[pafs.FileInfo]) -> set[str] | None:
    """Data files listed by the recorder's committed-files manifests; ``None`` for a run uploaded by other
    means (no manifests: every file counts)."""
    if not manifests:
        return None
    listed: set[str] = set()
    for info in manifests:
        with filesystem.open_input_stream(info.path) as stream:
            listed.update(json.loads(stream.read())["files"])
    return listed


def _copy(filesystem: pafs.FileSystem, source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with filesystem.open_input_stream(source) as reader, open(partial, "wb") as writer:
        while chunk := reader.read(COPY_CHUNK):
            writer.write(chunk)
    os.replace(partial, target)
