"""Recording to object storage: ``Recorder("s3://bucket/runs/exp1", ...)``.

Object stores have no atomic rename, but a single PUT is atomic: an object appears whole or not at all.
The recorder therefore commits every file locally first (the usual staging, fsync and rename, in a local
mirror of the run), then uploads it under the same write-once name and, after the data file, rewrites this
process's committed-files manifest ``_committed/a{attempt}-r{rank}.json`` (the sorted list of the records
and samples files it uploaded). Readers take a data file only once a manifest lists it, so a process killed
between the two PUTs leaves nothing half-visible. ``run.json`` and the attempt files are uploaded by rank 0
whenever they change; opening a run pulls them first, so a restart continues it as a new attempt.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import pyarrow.fs as pafs

from .format import ATTEMPTS_DIR, MANIFEST, RECORDS_DIR, SAMPLES_DIR, STAGING_DIR

COMMITTED_DIR = "_committed"


def is_uri(path: str | os.PathLike) -> bool:
    """``path`` names another file system (``s3://...``), not a local folder (``file://`` counts as local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


class RemoteMirror:
    """A local mirror of the run at ``uri``; :meth:`push` uploads what was committed there since the last
    push. Thread-safe (the writer thread and the training thread both push)."""

    def __init__(self, uri: str, *, local_dir: str | os.PathLike | None = None,
                 filesystem: pafs.FileSystem | None = None) -> None:
        if filesystem is None:
            filesystem, root = pafs.FileSystem.from_uri(uri)
        else:
            root = uri.split("://", 1)[1].split("?", 1)[0]
        self.uri = uri
        self.filesystem = filesystem
        self.root = root.rstrip("/")
        self.local = Path(local_dir) if local_dir is not None else Path(tempfile.mkdtemp(prefix="tdlog-mirror-"))
        self.attempt: int | None = None
        self.rank = 0
        self._committed: set[str] = set()
        self._pulled: set[str] = set()
        self._metadata_seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def pull(self) -> Path:
        """Fetch ``run.json``, the attempt files and the samples files of an existing run into the mirror
        (what a restart needs to continue it); return the mirror."""
        self.local.mkdir(parents=True, exist_ok=True)
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            name = info.path[len(self.root) + 1:]
            if info.type == pafs.FileType.File and name.startswith((MANIFEST, ATTEMPTS_DIR + "/", SAMPLES_DIR + "/")):
                target = self.local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.filesystem.open_input_stream(info.path) as source:
                    target.write_bytes(source.read())
                self._pulled.add(name)
        return self.local

    def start(self, attempt: int, rank: int) -> None:
        """This process's attempt and rank are known: upload the run's metadata (rank 0)."""
        self.attempt, self.rank = attempt, rank
        self.push()

    def push(self) -> None:
        """Upload data files committed in the mirror since the last push (then this process's manifest),
        and, on rank 0, ``run.json`` and attempt files that changed."""
        with self._lock:
            uploaded = False
            for path in sorted(self.local.rglob("*")):
                name = path.relative_to(self.local).as_posix()
                if not path.is_file() or name.startswith((STAGING_DIR + "/", COMMITTED_DIR + "/")):
                    continue
                if name.startswith((RECORDS_DIR + "/", SAMPLES_DIR + "/")) and name.endswith(".parquet"):
                    if name not in self._committed and name not in self._pulled:
                        self._upload(path, name)
                        self._committed.add(name)
                        uploaded = True
                elif self.rank == 0 and (name == MANIFEST or name.startswith(ATTEMPTS_DIR + "/")):
                    stamp = path.stat()
                    if self._metadata_seen.get(name) != (stamp.st_size, stamp.st_mtime_ns):
                        self._upload(path, name)
                        self._metadata_seen[name] = (stamp.st_size, stamp.st_mtime_ns)
            if uploaded and self.attempt is not None:
                manifest = json.dumps({"files": sorted(self._committed)}, indent=1).encode()
                self._put(f"{COMMITTED_DIR}/a{self.attempt}-r{self.rank}.json", manifest)

    def _upload(self, path: Path, name: str) -> None:
        self._put(name, path.read_bytes())

    def _put(self, name: str, data: bytes) -> None:
        target = f"{self.root}/{name}"
        self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(target) as stream:
            stream.write(data)
