"""Writing the run manifest (``run.json``) and the attempt files, under an inter-process file lock
(FORMAT.md, "run.json" and "Attempts")."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tdlog import __version__
from tdlog.format import (
    ATTEMPT_FILE,
    ATTEMPTS_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    LOCK_FILE,
    MANIFEST,
    STAGING_DIR,
    attempt_name,
    check_manifest,
    fsync_dir,
    read_json,
    write_json_atomic,
)

STAGED_ATTEMPT = re.compile(r"part-a(\d+)-r(\d+)-s\d+\.parquet$")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock over the run's metadata, shared by every process and rank writing the run."""
    with open(run_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_or_validate(
    run_dir: Path, *, num_classes: int, threshold_class: int | None, config: dict[str, Any]
) -> dict[str, Any]:
    """Create ``run.json`` for a new run, or check that an existing run matches these arguments."""
    path = run_dir / MANIFEST
    with run_lock(run_dir):
        if path.exists():
            manifest = read_json(path)
            check_manifest(manifest, path)
            if manifest["num_classes"] != num_classes:
                raise ValueError(
                    f"num_classes: the run at {run_dir} has num_classes={manifest['num_classes']}, "
                    f"got {num_classes}"
                )
            if manifest["threshold_class"] != threshold_class:
                raise ValueError(
                    f"with_threshold_class: the run at {run_dir} has threshold_class="
                    f"{manifest['threshold_class']}, got {threshold_class}"
                )
            if manifest["format_version"] < FORMAT_VERSION or "run_id" not in manifest:
                manifest["format_version"] = max(manifest["format_version"], FORMAT_VERSION)
                manifest.setdefault("run_id", new_run_id())  # a run made before run ids: named now, once
                write_json_atomic(path, manifest)
            return manifest
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "run_id": new_run_id(),
            "tdlog_version": __version__,
            "num_classes": num_classes,
            "threshold_class": threshold_class,
            "num_outputs": num_classes + (threshold_class is not None),
            "sample_id_type": None,
            "created_at": now_iso(),
            "config": config,
            "nonfinite_rows": 0,
        }
        write_json_atomic(path, manifest)
        return manifest


def new_run_id() -> str:
    """A run's identity: 32 random hex digits, written into ``run.json`` once, when the run is created."""
    return uuid.uuid4().hex


def check_state_run(state: Any, run_dir: Path, *, where: str) -> None:
    """Raise ``ValueError`` unless the recorder state ``state`` (a ``Recorder.state_dict()``) was saved by
    the run at ``run_dir`` (named ``where``): its ``run_id`` must be the run's (a state of another run, or of
    a run that is not there, would supersede rows it never logged). Reads only."""
    if not isinstance(state, dict):
        raise ValueError(f"resume: expected a Recorder.state_dict(), got {state!r}")
    path = run_dir / MANIFEST
    state_run = f"run {state.get('run_id')} at {state.get('run')}"
    if not path.exists():
        raise ValueError(f"resume: the state is of {state_run}; there is no run at {where} to resume")
    manifest = read_json(path)
    if "run_id" in state and state["run_id"] != manifest.get("run_id"):
        raise ValueError(f"resume: the state is of {state_run}, the run at {where} is run "
                         f"{manifest.get('run_id')}; resume a run from its own state")


def update_manifest(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write ``run.json`` under the lock. ``nonfinite_rows`` is added, not replaced;
    ``loss_check`` (``{rank: report}``) is merged into the ranks already there."""
    path = run_dir / MANIFEST
    with run_lock(run_dir):
        manifest = read_json(path)
        for key, value in changes.items():
            if key == "nonfinite_rows":
                value = manifest.get(key, 0) + value
            elif key == "loss_check":
                value = {**manifest.get(key, {}), **value}
            manifest[key] = value
        write_json_atomic(path, manifest)
        return manifest


def bind_id_type(run_dir: Path, id_type: str) -> str:
    """Persist the run's sample-id type on first use; return the type the run uses."""
    path = run_dir / MANIFEST
    with run_lock(run_dir):
        manifest = read_json(path)
        if manifest["sample_id_type"] is None:
            manifest["sample_id_type"] = id_type
            write_json_atomic(path, manifest)
        return manifest["sample_id_type"]


def attempt_files(run_dir: Path) -> list[Path]:
    """The run's ``_attempts/attempt-K.json`` files."""
    directory = run_dir / ATTEMPTS_DIR
    return [p for p in directory.iterdir() if ATTEMPT_FILE.match(p.name)] if directory.exists() else []


def existing_attempts(run_dir: Path) -> list[int]:
    return sorted(int(ATTEMPT_FILE.match(p.name).group(1)) for p in attempt_files(run_dir))


def attempt_path(run_dir: Path, attempt: int) -> Path:
    return run_dir / attempt_name(attempt)


def start_attempt(run_dir: Path, *, world_size: int, start: tuple[int, int | None] | None = None,
                  starts: dict[str, tuple[int, int | None]] | None = None,
                  claim: Callable[[int], int] | None = None) -> int:
    """Register a new attempt (a start or restart of training) and return its number. ``starts``: where it
    starts owning rows of the splits it resumes (``{split: (epoch, step)}``); ``start``: where it starts in
    every split it will log (default: at the epoch of its first row of that split). FORMAT.md, "Attempts".

    The number is claimed atomically: the attempt file is linked into place, which fails when the name
    exists (a create-if-absent that does not rely on ``.lock``), and the next number is tried. ``claim``
    (an object-store run) first turns the lowest candidate into a number no other writer of the store holds
    (:meth:`tdlog.recorder.remote.RemoteMirror.claim_attempt`)."""
    with run_lock(run_dir):
        (run_dir / ATTEMPTS_DIR).mkdir(exist_ok=True)
        attempts = existing_attempts(run_dir)
        attempt = attempts[-1] + 1 if attempts else 0
        if claim is not None:
            attempt = claim(attempt)
        first = min((position[0] for position in (starts or {}).values()), default=None)
        payload = {
            "start_epoch": start[0] if start is not None else first,
            "start": None if start is None else list(start),
            "starts": {split: list(position) for split, position in (starts or {}).items()},
            "world_size": world_size,
            "started_at": now_iso(),
        }
        while not write_json_exclusive(attempt_path(run_dir, attempt), {"attempt": attempt, **payload}):
            attempt += 1
        return attempt


def write_json_exclusive(path: Path, payload: dict[str, Any]) -> bool:
    """Create ``path`` holding ``payload``, whole, unless it exists (then False): written to a temporary
    file, fsynced, then hard-linked to ``path`` (``link`` never replaces a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    write_json_atomic(tmp, payload)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return True


class WriterSupersededError(RuntimeError):
    """A later attempt of the run started while this writer was writing (another ``Recorder`` on the same
    run and rank, e.g. on another machine's mirror of an object-store run, or after its lock file was
    deleted): this writer stops at its next commit rather than write rows no reader would count."""


def check_current(run_dir: Path, attempt: int, *, where: str) -> None:
    """Raise :class:`WriterSupersededError` if the run at ``run_dir`` has an attempt after ``attempt``
    (attempt numbers are consecutive: one ``stat``)."""
    if attempt_path(run_dir, attempt + 1).exists():
        raise superseded(where, attempt)


def superseded(where: str, attempt: int) -> WriterSupersededError:
    return WriterSupersededError(
        f"path: the run at {where} has a later attempt ({attempt + 1}) than this writer's ({attempt}): another "
        f"Recorder started on it while this one was writing; this one stops here (its rows committed so far "
        f"stay, and count up to where the later attempt starts). Close one of them.")


def set_split_start(run_dir: Path, attempt: int, split: str, epoch: int) -> None:
    """The attempt logs ``split`` for the first time, at ``epoch``: unless it resumed that split, it owns
    the split's rows from its ``start`` (if given) or from ``epoch`` on."""
    path = attempt_path(run_dir, attempt)
    with run_lock(run_dir):
        payload = read_json(path)
        if split in payload["starts"]:
            return
        position = payload["start"] if payload["start"] is not None else [epoch, None]
        payload["starts"][split] = position
        if payload["start_epoch"] is None or position[0] < payload["start_epoch"]:
            payload["start_epoch"] = position[0]
        write_json_atomic(path, payload)


def set_resumed_starts(run_dir: Path, attempt: int, starts: dict[str, tuple[int, int | None]]) -> None:
    """An attempt that has logged nothing yet resumes from a recorder state: it owns ``starts``."""
    path = attempt_path(run_dir, attempt)
    with run_lock(run_dir):
        payload = read_json(path)
        payload["starts"] = {split: list(position) for split, position in starts.items()}
        if starts:
            payload["start_epoch"] = min(position[0] for position in starts.values())
        write_json_atomic(path, payload)


def clear_stale_staging(run_dir: Path, current_attempt: int,
                        holder_attempt: Callable[[int], int | None]) -> int:
    """Remove files an earlier attempt left half-written in ``_staging/``: those of attempt ``a <
    current_attempt`` and rank ``r`` whose writer is gone (``holder_attempt(r)``, the attempt holding rank
    ``r``'s writer lock, is None or not ``a``). Returns how many."""
    directory = run_dir / STAGING_DIR
    if not directory.exists():
        return 0
    removed = 0
    for path in directory.iterdir():
        match = STAGED_ATTEMPT.search(path.name)
        if not match:
            continue
        attempt, rank = int(match.group(1)), int(match.group(2))
        if attempt < current_attempt and holder_attempt(rank) != attempt:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
