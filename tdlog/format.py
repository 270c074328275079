"""The on-disk format, version 3, as code: the contract between ``tdlog.recorder`` (which writes) and
``tdlog.analytics`` (which reads). FORMAT.md is the document; this module follows its sections.

It imports the standard library only (pyarrow where a schema or a remote file system is needed; no
torch): both sides import it, and reading a local run's listing costs no pyarrow import.

::

    RUN/
      run.json                              run manifest (FORMAT.md, "run.json")
      _attempts/attempt-K.json              one per (re)start (FORMAT.md, "Attempts")
      records/split=S/epoch=E/part-a{attempt}-r{rank}-s{seq}.parquet
      samples/part-a{attempt}-r{rank}-s{seq}.parquet
      _committed/a{attempt}-r{rank}.json    object stores: the data files committed (FORMAT.md, "Object stores")
      _staging/                             files being written; never read
      _locks/writer-r{rank}.lock            flock of each rank's live writer (FORMAT.md, "Writers")
      .lock                                 flock over run.json and the attempt files
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

FORMAT_NAME = "tdlog"
FORMAT_VERSION = 3

MANIFEST = "run.json"
ATTEMPTS_DIR = "_attempts"
RECORDS_DIR = "records"
SAMPLES_DIR = "samples"
STAGING_DIR = "_staging"
COMMITTED_DIR = "_committed"
LOCKS_DIR = "_locks"
LOCK_FILE = ".lock"

ID_TYPES = ("int64", "string")  # sample_id: Arrow int64 or string

# Per-row statistics computed by the recorder, in the order they are stacked. ``correct`` and ``tokens``
# came with version 2 (sequence rows): a classification row has correct = (pred == target) and tokens = 1.
FLOAT_STATS = ("loss", "margin", "target_logit", "other_logit", "prob", "el2n", "correct")
INT_STATS = ("target", "other_class", "pred", "tokens")
NO_CLASS = -1  # target, pred and other_class of a sequence row (its tokens have their own)

LOGITS_MODES = ("none", "topk", "full")
LOGITS_DTYPES = ("float16", "float32")

PART_FILE = re.compile(r"^part-a(\d+)-r(\d+)-s(\d+)\.parquet$")
ATTEMPT_FILE = re.compile(r"^attempt-(\d+)\.json$")
RECORDS_FILE = re.compile(r"^records/split=[^/]+/epoch=\d+/part-a\d+-r\d+-s\d+\.parquet$")
SAMPLES_FILE = re.compile(r"^samples/part-a\d+-r\d+-s\d+\.parquet$")


# --- schemas and names ------------------------------------------------------------------------------
def records_schema(
    id_type: str,
    *,
    logits: str = "none",
    num_outputs: int = 0,
    topk: int = 0,
    logits_dtype: str = "float16",
) -> pa.Schema:
    """Schema of one records file (``split`` and ``epoch`` live in the hive path, not in the file)."""
    import pyarrow as pa

    fields = [
        pa.field("sample_id", getattr(pa, id_type)(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("target", pa.int32(), nullable=False),
        pa.field("loss", pa.float32(), nullable=False),
        pa.field("margin", pa.float32(), nullable=False),
        pa.field("target_logit", pa.float32(), nullable=False),
        pa.field("other_logit", pa.float32(), nullable=False),
        pa.field("other_class", pa.int32(), nullable=False),
        pa.field("prob", pa.float32(), nullable=False),
        pa.field("pred", pa.int32(), nullable=False),
        pa.field("el2n", pa.float32(), nullable=False),
        pa.field("correct", pa.float32(), nullable=False),
        pa.field("tokens", pa.int32(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
    if logits == "full":
        fields.append(pa.field("logits", pa.list_(getattr(pa, logits_dtype)(), num_outputs)))
    elif logits == "topk":
        fields.append(pa.field("topk_logits", pa.list_(pa.float32(), topk)))
        fields.append(pa.field("topk_classes", pa.list_(pa.int32(), topk)))
    return pa.schema(fields)


def part_name(attempt: int, rank: int, seq: int) -> str:
    """Write-once name of a records or samples file: ``part-a{attempt}-r{rank}-s{seq}.parquet``."""
    return f"part-a{attempt}-r{rank}-s{seq}.parquet"


def records_partition(split: str, epoch: int) -> str:
    """Hive partition path, unpadded: ``records/split=train/epoch=3``."""
    return f"{RECORDS_DIR}/split={split}/epoch={epoch}"


def attempt_name(attempt: int) -> str:
    """``_attempts/attempt-K.json``."""
    return f"{ATTEMPTS_DIR}/attempt-{attempt}.json"


def committed_name(attempt: int, rank: int) -> str:
    """``_committed/a{attempt}-r{rank}.json``: one writer process's committed-files manifest."""
    return f"{COMMITTED_DIR}/a{attempt}-r{rank}.json"


# --- JSON files --------------------------------------------------------------------------------------
def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that a reader sees the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def parse_json(data: bytes | str, where: str) -> dict[str, Any]:
    """The JSON object in ``data``; ``ValueError`` naming ``where`` if it is not one."""
    try:
        payload = json.loads(data)
    except ValueError as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(payload).__name__}")
    return payload


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in the local file ``path`` (errors name the file)."""
    return parse_json(Path(path).read_bytes(), str(path))


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or link inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise ``ValueError`` if ``manifest`` (a ``run.json``) is not a tdlog run this code can read."""
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a tdlog run (run.json has format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: run has format version {version}, this tdlog reads up to {FORMAT_VERSION}; upgrade tdlog"
        )


# --- where a run lives: local folders and URIs ----------------------------------------------------
def is_uri(path: str | os.PathLike) -> bool:
    """``path`` names another file system (``s3://...``), not a local folder (``file://`` counts as local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def open_uri(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(file system, root path in it)`` of ``uri``. Without ``filesystem``, ``FileSystem.from_uri`` reads
    options from the query string (``?endpoint_override=host:9000&scheme=http``); ``s3a://`` (Spark's
    scheme) is read as ``s3://``."""
    if filesystem is None:
        import pyarrow.fs as pafs

        filesystem, root = pafs.FileSystem.from_uri(uri.replace("s3a://", "s3://", 1))
    else:
        root = uri.split("?", 1)[0].split("://", 1)[1]
    return filesystem, root.rstrip("/")


def list_files(filesystem: pafs.FileSystem, root: str) -> dict[str, pafs.FileInfo]:
    """``{path below root: file info}`` of every file below ``root`` (none if it does not exist)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return {f.path[len(root) + 1:]: f for f in filesystem.get_file_info(selector) if f.type == pafs.FileType.File}


def list_local(root: str | os.PathLike) -> dict[str, int]:
    """``{path below root: size}`` of every file below the local folder ``root`` (none if it does not exist)."""
    root = str(root)
    sizes: dict[str, int] = {}
    for folder, _, names in os.walk(root):
        prefix = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in names:
            entry = name if prefix == "." else f"{prefix}/{name}"
            try:
                sizes[entry] = os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed while listing (a staging file)
                continue
    return sizes


# --- what a reader sees (FORMAT.md, "Reader rules") ----------------------------------------------
@dataclass(frozen=True)
class RunFiles:
    """The files of a run that a reader takes, at one moment; names relative to the run's root."""

    records: tuple[str, ...]
    samples: tuple[str, ...]
    attempts: tuple[str, ...]
    sizes: dict[str, int]  # every file of the run, by name: its size in bytes
    manifests: dict[str, tuple[str, ...]] | None = None  # object stores: {manifest name: the files it lists}


def committed_files(sizes: dict[str, int], read: Callable[[str], bytes], *, where: str) -> RunFiles:
    """Apply the reader rules to a run's listing ``{name: size}`` (names relative to its root; ``read(name)``
    gives a file's bytes): a records or samples file counts when its name has the write-once form
    (``records/split=S/epoch=E/part-a…-r…-s….parquet``, ``samples/part-….parquet``) and, in a run that has
    ``_committed/*.json`` manifests, when one of them lists it. ``_staging/`` and anything else is never
    read. ``FileNotFoundError`` when there is no ``run.json`` (the run named ``where`` in errors)."""
    if MANIFEST not in sizes:
        raise FileNotFoundError(f"path: no tdlog run at {where} (no {MANIFEST})")
    manifests = {n: tuple(parse_json(read(n), f"{where}/{n}").get("files", [])) for n in sorted(sizes)
                 if n.startswith(COMMITTED_DIR + "/") and n.endswith(".json")}
    listed = {name for files in manifests.values() for name in files} if manifests else None

    def taken(pattern: re.Pattern) -> tuple[str, ...]:
        return tuple(sorted(n for n in sizes if pattern.match(n) and (listed is None or n in listed)))

    attempts = tuple(sorted(n for n in sizes if n.startswith(ATTEMPTS_DIR + "/")
                            and ATTEMPT_FILE.match(n[len(ATTEMPTS_DIR) + 1:])))
    return RunFiles(taken(RECORDS_FILE), taken(SAMPLES_FILE), attempts, dict(sizes), manifests or None)
