"""Where a run's files are, and what a reader sees of them at one moment.

:class:`RunStore` reads a run folder: a local path (with the standard library) or a URI (``s3://``,
``gs://``, ``hdfs://``, through ``pyarrow.fs``; ``s3a://`` is read as ``s3://``). :meth:`RunStore.snapshot`
applies the reader rules of the format (:func:`tdlog.format.committed_files`: write-once names,
``_committed/`` manifests honoured) and both engines register their views from it, so DuckDB and Spark
read exactly the same files.

:func:`sync_run` brings a run on object storage into a local cache for DuckDB. The copy is incremental:
records and samples files have write-once names, so a file already in the cache with the same size is
fetched again while the remote file keeps its size and modification time, and cached files the remote no
longer has are removed. Each file lands under a temporary name and is renamed into place, so an
interrupted copy leaves complete files only.
Credentials and endpoints come from the URI (``s3://bucket/run?endpoint_override=host:9000&scheme=http``),
the usual environment variables, or an explicit ``pyarrow.fs.FileSystem``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdlog.format import (
    MANIFEST,
    RunFiles,
    check_manifest,
    committed_files,
    is_uri,
    list_files,
    list_local,
    open_uri,
    parse_json,
)

from .integrity import damaged, listing_problems, world_sizes

if TYPE_CHECKING:
    import pyarrow.fs as pafs

COPY_CHUNK = 1 << 22
CACHE_INDEX = ".tdlog-cache.json"  # {name: [size, mtime_ns]} of the remote files the cache holds


@dataclass(frozen=True)
class RunSnapshot:
    """The run as a reader sees it at one moment: its ``run.json``, its attempt files and its committed
    data files (names relative to ``location``)."""

    location: str
    manifest: dict[str, Any]
    attempts: tuple[dict[str, Any], ...]
    files: RunFiles

    @property
    def id_type(self) -> str:
        """``int64`` or ``string`` (``int64`` before the first batch bound it)."""
        return self.manifest.get("sample_id_type") or "int64"

    @property
    def splits(self) -> list[str]:
        """The splits that have committed records files."""
        return sorted({name.split("/", 2)[1].removeprefix("split=") for name in self.files.records})

    def paths(self, names: tuple[str, ...]) -> list[str]:
        """Full paths (or URIs) of ``names``."""
        return [f"{self.location}/{name}" for name in names]

    def key(self) -> tuple:
        """What the views depend on: equal keys, equal views."""
        starts = tuple((a["attempt"], a.get("start_epoch"), json.dumps(a.get("starts"), sort_keys=True))
                       for a in self.attempts)
        return self.files.records, self.files.samples, starts


class RunStore:
    """A run folder: local (read with the standard library) or behind a URI (read through ``pyarrow.fs``,
    or the given ``filesystem``). ``location`` is what engines read (an absolute local path, or the URI
    without its query string); ``local_path`` is the folder on this machine, if any."""

    def __init__(self, location: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> None:
        text = str(location)
        self.filesystem = filesystem
        if is_uri(text) or filesystem is not None:
            self.filesystem, self.root = open_uri(text if is_uri(text) else f"file://{text}", filesystem)
            self.location = text.split("?", 1)[0].rstrip("/")
            self.local_path: Path | None = None
        else:
            self.local_path = Path(text.removeprefix("file://")).resolve()
            self.root = self.location = str(self.local_path)

    def identities(self) -> dict[str, tuple[int, int | None]]:
        """``{name: (size, modification time in ns)}`` of every file of the run: what identifies a file's
        content when it is cached (object stores report the time of the PUT)."""
        if self.filesystem is None:
            return {name: (size, None) for name, size in list_local(self.root).items()}
        return {name: (info.size, info.mtime_ns) for name, info in list_files(self.filesystem, self.root).items()}

    def listing(self) -> dict[str, int]:
        """``{name in the run: size}`` of every file of the run."""
        return {name: size for name, (size, _) in self.identities().items()}

    def read(self, name: str) -> bytes:
        """The bytes of the run's file ``name``."""
        if self.filesystem is None:
            return Path(self.root, name).read_bytes()
        with self.filesystem.open_input_stream(f"{self.root}/{name}") as stream:
            return stream.read()

    def require_run(self) -> None:
        """``FileNotFoundError`` at once when there is no ``run.json`` (before listing: a folder that is not a
        run, ``/usr`` say, is never walked)."""
        if self.filesystem is None:
            found = Path(self.root, MANIFEST).is_file()
        else:
            import pyarrow.fs as pafs

            found = self.filesystem.get_file_info(f"{self.root}/{MANIFEST}").type == pafs.FileType.File
        if not found:
            raise FileNotFoundError(f"path: no tdlog run at {self.location} (no {MANIFEST})")

    def identities_of(self, names: list[str] | tuple[str, ...]) -> dict[str, list]:
        """``{name: identity}`` of the run's files ``names``: ``[size, mtime_ns, inode]`` on this machine,
        ``[size, mtime_ns]`` on an object store (the time of the PUT)."""
        if self.filesystem is None:
            stats = {name: os.stat(Path(self.root, name)) for name in names}
            return {name: [st.st_size, st.st_mtime_ns, st.st_ino] for name, st in stats.items()}
        infos = self.filesystem.get_file_info([f"{self.root}/{name}" for name in names])
        return {name: [info.size, info.mtime_ns] for name, info in zip(names, infos, strict=True)}

    def source(self, name: str) -> Any:
        """What a Parquet reader opens for the run's file ``name``: a local path, or a random-access file."""
        if self.filesystem is None:
            return str(Path(self.root, name))
        return self.filesystem.open_input_file(f"{self.root}/{name}")

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in the run's file ``name`` (errors name the file)."""
        return parse_json(self.read(name), f"{self.location}/{name}")

    def snapshot(self) -> RunSnapshot:
        """List the run and read its metadata. ``FileNotFoundError`` when there is no run, ``ValueError``
        when ``run.json`` is not a tdlog run this version reads, ``DamagedRunError`` when the listing is
        damaged (:func:`tdlog.analytics.integrity.listing_problems`)."""
        self.require_run()
        files = committed_files(self.listing(), self.read, where=self.location)
        manifest = self.read_json(MANIFEST)
        check_manifest(manifest, f"{self.location}/{MANIFEST}")
        attempts = tuple(sorted((self.read_json(name) for name in files.attempts), key=lambda a: a["attempt"]))
        problems = listing_problems(files, world_sizes(attempts))
        if problems:
            raise damaged(self.location, problems)
        return RunSnapshot(self.location, manifest, attempts, files)


def sync_run(uri: str, *, cache_dir: str | os.PathLike | None = None,
             filesystem: pafs.FileSystem | None = None) -> Path:
    """Bring the local copy of the run at ``uri`` up to date and return its folder (default: a folder per
    URI under ``tdlog-cache`` in the system temp folder). A cached file is used again only while the
    remote file has the same size and modification time (``CACHE_INDEX`` keeps them); cached files the
    remote no longer has are removed, so a run deleted and recorded again at the same URI reads fresh.
    Raises ``FileNotFoundError`` if there is no run at ``uri``."""
    store = RunStore(uri, filesystem)
    store.require_run()
    local = Path(cache_dir) if cache_dir is not None else (
        Path(tempfile.gettempdir()) / "tdlog-cache" / hashlib.sha1(uri.encode()).hexdigest()[:16])
    identities = store.identities()
    files = committed_files({name: size for name, (size, _) in identities.items()}, store.read,
                            where=store.location)
    problems = listing_problems(files, world_sizes(store.read_json(name) for name in files.attempts))
    if problems:  # the local copy has no manifests: the store's listing is checked here
        raise damaged(store.location, problems)
    index_path = local / CACHE_INDEX
    cached = json.loads(index_path.read_text()) if index_path.exists() else {}
    wanted = (MANIFEST, *files.attempts, *files.records, *files.samples)
    for name in wanted:
        target = local / name
        if not target.exists() or cached.get(name) != list(identities[name]):
            _copy(store, name, target)
    for stale in set(cached) - set(wanted):
        (local / stale).unlink(missing_ok=True)
    local.mkdir(parents=True, exist_ok=True)
    partial = index_path.with_name(index_path.name + ".partial")
    partial.write_text(json.dumps({name: list(identities[name]) for name in wanted}))
    os.replace(partial, index_path)
    return local


def _copy(store: RunStore, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with store.filesystem.open_input_stream(f"{store.root}/{name}") as reader, open(partial, "wb") as writer:
        while chunk := reader.read(COPY_CHUNK):
            writer.write(chunk)
    os.replace(partial, target)
