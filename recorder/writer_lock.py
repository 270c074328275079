"""One writer per run and rank: ``RUN/_locks/writer-r{rank}.lock``, an ``flock`` held for the recorder's
lifetime (FORMAT.md, "Writers").

The lock file holds who holds it (process id, host, attempt, since when), so that a second writer is told
exactly who is in its way. The operating system releases an ``flock`` when its process dies, however it
dies: a lock whose holder is gone is simply free, and the file's stale contents are overwritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from tdlog.format import LOCKS_DIR

from .manifest import now_iso


class WriterLock:
    """The exclusive lock of one rank's writer on the run at ``run_dir``."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        self.path = run_dir / LOCKS_DIR / f"writer-r{rank}.lock"
        self.path.parent.mkdir(exist_ok=True)
        self._handle = open(self.path, "a+")  # noqa: SIM115 (held open for the recorder's lifetime)
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(self.path)
            self._handle.close()
            raise RuntimeError(
                f"path: rank {rank} of the run at {run_dir} is being written by another Recorder (process "
                f"{holder.get('pid')} on {holder.get('host')}, attempt {holder.get('attempt')}, since "
                f"{holder.get('since')}); close it first, or write another run"
            ) from None

    def claim(self, attempt: int) -> None:
        """Write who holds the lock into it (the lock is already held)."""
        self._handle.seek(0)
        self._handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt, "since": now_iso()},
                  self._handle)
        self._handle.flush()

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def holder_of(path: Path) -> dict:
    """What the lock file at ``path`` says of its holder (empty if unreadable)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def holder_attempt(run_dir: Path, rank: int) -> int | None:
    """The attempt of the live process holding rank ``rank``'s writer lock; None when no process holds it
    (a dead holder's lock is free)."""
    path = run_dir / LOCKS_DIR / f"writer-r{rank}.lock"
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder_of(path).get("attempt", -1)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
