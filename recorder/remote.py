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
import random
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from tdlog.format import ATTEMPTS_DIR, MANIFEST, RECORDS_DIR, SAMPLES_DIR, committed_name, list_files, open_uri

from .manifest import superseded

# an attempt number on the store: its attempt file, or a writer's claim of it
ATTEMPT_OR_CLAIM = re.compile(r"^(?:attempt-(\d+)\.json|claim-(\d+)-[0-9a-f]+)$")


class RemoteMirror:
    """A local mirror of the run at ``uri``; :meth:`push` uploads what was committed there since the last
    push. Thread-safe (the writer thread and the training thread both push)."""

    def __init__(self, uri: str, *, local_dir: str | os.PathLike | None = None,
                 filesystem: pafs.FileSystem | None = None) -> None:
        self.uri = uri
        self.filesystem, self.root = open_uri(uri, filesystem)
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
        for name, info in list_files(self.filesystem, self.root).items():
            if name.startswith((MANIFEST, ATTEMPTS_DIR + "/", SAMPLES_DIR + "/")):
                target = self.local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.filesystem.open_input_stream(info.path) as source:
                    target.write_bytes(source.read())
                self._pulled.add(name)
        return self.local

    def start(self, attempt: int, rank: int) -> None:
        """This process's attempt and rank are known: upload the run's metadata (rank 0) and this process's
        manifest, empty (so that a manifest missing later is a damage, not a writer that committed nothing)."""
        self.attempt, self.rank = attempt, rank
        self.push()
        with self._lock:
            if not self._committed:
                self._put(committed_name(attempt, rank), json.dumps({"files": []}).encode())

    def _store_attempts(self) -> dict[int, list[str]]:
        """``{attempt number: [names under _attempts/ holding it]}`` on the store (attempt files and claims)."""
        held: dict[int, list[str]] = {}
        for name in list_files(self.filesystem, f"{self.root}/{ATTEMPTS_DIR}"):
            if match := ATTEMPT_OR_CLAIM.match(name):
                held.setdefault(int(match.group(1) or match.group(2)), []).append(name)
        return held

    def claim_attempt(self, candidate: int) -> int:
        """An attempt number no other writer of the store holds, at least ``candidate``. A single PUT is atomic
        but the stores have no create-if-absent that pyarrow exposes, so: PUT a claim
        ``_attempts/claim-K-{random}``, then LIST the claims of ``K``. A writer that sees only its own claim
        (and no attempt file ``K``) holds ``K``: with read-after-write consistent listing (S3, GCS, Azure),
        of two claims of one number at least one writer sees both, and a writer that sees another's claim
        withdraws its own and tries ``K + 1`` after a random pause. So no two writers ever hold one number
        (both may withdraw and retry)."""
        held = self._store_attempts()
        attempt = max(candidate, max(held, default=-1) + 1)
        while True:
            claim = f"claim-{attempt}-{uuid.uuid4().hex}"
            self._put(f"{ATTEMPTS_DIR}/{claim}", b"{}")
            holders = self._store_attempts().get(attempt, [])
            if holders == [claim]:
                return attempt
            self.filesystem.delete_file(f"{self.root}/{ATTEMPTS_DIR}/{claim}")
            attempt += 1
            time.sleep(random.uniform(0.0, 0.05))

    def check_current(self) -> None:
        """Raise :class:`~tdlog.recorder.manifest.WriterSupersededError` if a later attempt holds the store (one
        LIST of ``_attempts/`` per upload)."""
        if self.attempt is not None and max(self._store_attempts(), default=-1) > self.attempt:
            raise superseded(self.uri, self.attempt)

    def push(self, committed: Path | None = None) -> None:
        """Upload ``committed`` (a data file just committed in the mirror) or, without it, every data file of
        the mirror not uploaded yet, then this process's manifest; on rank 0 also ``run.json`` and the
        attempt files that changed."""
        with self._lock:
            if committed is not None:
                data = [committed]
            else:
                data = [p for folder in (RECORDS_DIR, SAMPLES_DIR) for p in (self.local / folder).rglob("*.parquet")]
            names = {p.relative_to(self.local).as_posix() for p in data}
            new = sorted(names - self._committed - self._pulled)
            if new:
                self.check_current()  # a superseded writer uploads nothing more
            for name in new:
                self._upload(name)
                self._committed.add(name)
            if self.rank == 0:
                for path in (self.local / MANIFEST, *sorted((self.local / ATTEMPTS_DIR).glob("*.json"))):
                    stamp = path.stat()
                    name = path.relative_to(self.local).as_posix()
                    if self._metadata_seen.get(name) != (stamp.st_size, stamp.st_mtime_ns):
                        self._upload(name)
                        self._metadata_seen[name] = (stamp.st_size, stamp.st_mtime_ns)
            if new and self.attempt is not None:
                manifest = json.dumps({"files": sorted(self._committed)}, indent=1).encode()
                self._put(committed_name(self.attempt, self.rank), manifest)

    def _upload(self, name: str) -> None:
        self._put(name, (self.local / name).read_bytes())

    def _put(self, name: str, data: bytes) -> None:
        target = f"{self.root}/{name}"
        self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(target) as stream:
            stream.write(data)
