"""On-disk format, version 1: paths, the records/samples schemas and the manifest.

This module is the contract between ``recorder`` (which writes) and ``analytics`` (which reads).
See the README section "On-disk format" for the prose version.

::

    RUN/
      run.json                  manifest
      _attempts/attempt-K.json  one per (re)start: {attempt, start_epoch, world_size, started_at}
      records/split=S/epoch=E/part-a{attempt}-r{rank}-s{seq}.parquet
      samples/part-a{attempt}-r{rank}-s{seq}.parquet
      _staging/                 files being written; never read
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

FORMAT_NAME = "tdlog"
FORMAT_VERSION = 1

MANIFEST = "run.json"
ATTEMPTS_DIR = "_attempts"
RECORDS_DIR = "records"
SAMPLES_DIR = "samples"
STAGING_DIR = "_staging"
LOCK_FILE = ".lock"

ID_TYPES = {"int64": pa.int64(), "string": pa.string()}

# Per-row statistics computed by the recorder, in the order they are stacked on the device.
FLOAT_STATS = ("loss", "margin", "target_logit", "other_logit", "prob", "el2n")
INT_STATS = ("target", "other_class", "pred")

LOGITS_MODES = ("none", "topk", "full")
LOGITS_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def records_schema(
    id_type: str,
    *,
    logits: str = "none",
    num_outputs: int = 0,
    topk: int = 0,
    logits_dtype: str = "float16",
) -> pa.Schema:
    """Schema of one records file (``split`` and ``epoch`` live in the hive path, not in the file)."""
    fields = [
        pa.field("sample_id", ID_TYPES[id_type], nullable=False),
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
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
    if logits == "full":
        fields.append(pa.field("logits", pa.list_(LOGITS_DTYPES[logits_dtype], num_outputs)))
    elif logits == "topk":
        fields.append(pa.field("topk_logits", pa.list_(pa.float32(), topk)))
        fields.append(pa.field("topk_classes", pa.list_(pa.int32(), topk)))
    return pa.schema(fields)


def part_name(attempt: int, rank: int, seq: int) -> str:
    return f"part-a{attempt}-r{rank}-s{seq}.parquet"


def records_partition(split: str, epoch: int) -> str:
    """Hive partition path, unpadded: ``records/split=train/epoch=3``."""
    return f"{RECORDS_DIR}/split={split}/epoch={epoch}"


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


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or link inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
