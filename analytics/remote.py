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

from recorder.format import ATTEMPTS_DIR, MANIFEST, RECORDS_DIR, SAMPLES_DIR
from recorder.remote import COMMITTED_DIR, is_uri, list_files, open_uri

COPY_CHUNK = 1 << 22


class RunStore:
    """A run folder read through ``pyarrow.fs``: a local path or a URI (``s3a://`` is read as ``s3://``
    here; Spark keeps its own scheme). ``listing()`` gives every file by its name in the run; the data
    files are the committed ones (:meth:`data_files`)."""

    def __init__(self, location: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> None:
        text = str(location)
        if not is_uri(text):
            self.filesystem: pafs.FileSystem = filesystem or pafs.LocalFileSystem()
            self.root = str(Path(text.removeprefix("file://")).resolve())
            self.location = self.root
        else:
            self.filesystem, self.root = open_uri(text, filesystem)
            self.location = text.split("?", 1)[0].rstrip("/")

    def listing(self) -> dict[str, pafs.FileInfo]:
        """``{name in the run: file info}`` of every file; ``FileNotFoundError`` if there is no run."""
        files = list_files(self.filesystem, self.root)
        if MANIFEST not in files:
            raise FileNotFoundError(f"path: no tdlog run at {self.location} (no {MANIFEST})")
        return files

    def read_json(self, name: str) -> dict:
        with self.filesystem.open_input_stream(f"{self.root}/{name}") as stream:
            return json.loads(stream.read())

    def data_files(self, listing: dict[str, pafs.FileInfo]) -> dict[str, list[str]]:
        """``{"records": names, "samples": names}`` of the committed ``.parquet`` files: those the recorder's
        ``_committed/*.json`` manifests list, or every one in a run that has no manifest."""
        manifests = [n for n in listing if n.startswith(COMMITTED_DIR + "/")]
        listed = set().union(*(self.read_json(n)["files"] for n in manifests)) if manifests else None
        return {folder: sorted(n for n in listing if n.startswith(folder + "/") and n.endswith(".parquet")
                               and (listed is None or n in listed))
                for folder in (RECORDS_DIR, SAMPLES_DIR)}

    def attempts(self, listing: dict[str, pafs.FileInfo]) -> list[dict]:
        """The attempt files' contents, by attempt."""
        names = [n for n in listing if n.startswith(ATTEMPTS_DIR + "/attempt-") and n.endswith(".json")]
        return sorted((self.read_json(n) for n in names), key=lambda a: a["attempt"])


def sync_run(uri: str, *, cache_dir: str | os.PathLike | None = None,
             filesystem: pafs.FileSystem | None = None) -> Path:
    """Bring the local copy of the run at ``uri`` up to date and return its folder (default: a folder per
    URI under ``tdlog-cache`` in the system temp folder). Raises ``FileNotFoundError`` if there is no run
    at ``uri``."""
    store = RunStore(uri, filesystem)
    local = Path(cache_dir) if cache_dir is not None else (
        Path(tempfile.gettempdir()) / "tdlog-cache" / hashlib.sha1(uri.encode()).hexdigest()[:16])
    listing = store.listing()
    data = store.data_files(listing)
    wanted = [MANIFEST, *(n for n in listing if n.startswith(ATTEMPTS_DIR + "/")), *data[RECORDS_DIR],
              *data[SAMPLES_DIR]]
    for name in wanted:
        target = local / name
        changes = name == MANIFEST or name.startswith(ATTEMPTS_DIR + "/")
        if not changes and target.exists() and target.stat().st_size == listing[name].size:
            continue
        _copy(store.filesystem, listing[name].path, target)
    return local


def _copy(filesystem: pafs.FileSystem, source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with filesystem.open_input_stream(source) as reader, open(partial, "wb") as writer:
        while chunk := reader.read(COPY_CHUNK):
            writer.write(chunk)
    os.replace(partial, target)
