"""The per-sample metadata table (``samples/``): labels, training targets, threshold and probe flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tdlog.format import NO_CLASS, SAMPLES_DIR

from .validate import check_target_range

CORE_COLUMNS = ("sample_id", "label", "target", "is_threshold", "probe", "probe_role", "true_label")
PROBE_ROLES = ("reference", "heldout")


def as_int_array(name: str, values: Any, length: int) -> np.ndarray:
    """A 1-D int64 numpy array of class indices from a tensor, array or list; checks length and dtype."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name}: expected shape ({length},) to match sample_ids, got {array.shape}")
    return array.astype(np.int64, copy=False)


def _strings(name: str, values: Any, length: int) -> pa.Array:
    if values is None or isinstance(values, str):
        return pa.array([values] * length, pa.string())
    array = pa.array(list(values), pa.string())
    if len(array) != length:
        raise ValueError(f"{name}: expected {length} values to match sample_ids, got {len(array)}")
    return array


def _bools(name: str, values: Any, length: int) -> np.ndarray:
    array = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    if array.shape != (length,) or array.dtype != np.bool_:
        raise ValueError(f"{name}: expected {length} booleans to match sample_ids, got {array.dtype} {array.shape}")
    return array


def build_samples_table(
    ids: pa.Array,
    labels: Any,
    *,
    targets: Any,
    true_label: Any,
    probe: Any,
    probe_role: Any,
    controls: Any = None,
    columns: dict[str, Any],
    num_classes: int,
    num_outputs: int,
    threshold_class: int | None,
) -> pa.Table:
    """Validate the arguments of ``Recorder.register_samples`` and build the table it commits."""
    count = len(ids)
    if pc.count_distinct(ids).as_py() != count:
        values, counts = np.unique(ids.to_numpy(zero_copy_only=False), return_counts=True)
        raise ValueError(f"sample_ids: expected unique ids, got duplicates such as {values[counts > 1][:5].tolist()}")
    if labels is None:  # sequence examples: no class (NO_CLASS), their targets are their tokens
        if targets is not None or true_label is not None:
            raise ValueError("labels: expected class labels with targets or true_label, got None")
        label_array = target_array = np.full(count, NO_CLASS, dtype=np.int32)
    else:
        label_array = as_int_array("labels", labels, count)
        if count:
            check_target_range("labels", int(label_array.min()), int(label_array.max()), num_classes)
        target_array = label_array if targets is None else as_int_array("targets", targets, count)
        if count:
            check_target_range("targets", int(target_array.min()), int(target_array.max()), num_outputs)
    if controls is not None:
        if threshold_class is not None:
            raise ValueError("controls: this run marks its threshold samples by targets (with_threshold_class=True); "
                             "controls are for runs without a threshold class (sequence models)")
        is_threshold = _bools("controls", controls, count)
    else:
        is_threshold = np.zeros(count, dtype=bool) if threshold_class is None else target_array == threshold_class
    probe_array = _strings("probe", probe, count)
    if probe_role is None:
        probe_role = pc.if_else(pc.is_null(probe_array), None, "reference")
    role_array = _strings("probe_role", probe_role, count)
    role_array = pc.if_else(pc.is_null(probe_array), pa.scalar(None, pa.string()), role_array)
    bad_roles = pc.and_(pc.is_valid(probe_array), pc.invert(pc.is_in(role_array, pa.array(PROBE_ROLES))))
    if pc.any(bad_roles).as_py():
        bad = role_array.filter(bad_roles)[0].as_py()
        raise ValueError(f"probe_role: expected one of {PROBE_ROLES} for probe samples, got {bad!r}")
    table = {
        "sample_id": ids,
        "label": pa.array(label_array.astype(np.int32)),
        "target": pa.array(target_array.astype(np.int32)),
        "is_threshold": pa.array(is_threshold),
        "probe": probe_array,
        "probe_role": role_array,
    }
    if true_label is not None:
        true_array = as_int_array("true_label", true_label, count)
        if count:
            check_target_range("true_label", int(true_array.min()), int(true_array.max()), num_classes)
        table["true_label"] = pa.array(true_array.astype(np.int32))
    for name, values in columns.items():
        if name in CORE_COLUMNS:
            raise ValueError(f"{name}: is a reserved column of the samples table; pass it by its keyword")
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        column = pa.array(values) if not isinstance(values, pa.Array) else values
        if len(column) != count:
            raise ValueError(f"{name}: expected {count} values to match sample_ids, got {len(column)}")
        table[name] = column
    return pa.table(table)


def read_registered(run_dir: Path) -> pa.Table | None:
    """Every committed samples file of the run as one table, or None if nothing is registered."""
    files = sorted((run_dir / SAMPLES_DIR).glob("*.parquet")) if (run_dir / SAMPLES_DIR).exists() else []
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


COMPARED = ("sample_id", "label", "target", "is_threshold", "probe", "probe_role")


def _comparable(table: pa.Table) -> pa.Table:
    """The columns a re-registration must repeat, with nulls made comparable (joins never match nulls)."""
    return pa.table({c: pc.fill_null(table[c], "") if c.startswith("probe") else table[c] for c in COMPARED})


def drop_already_registered(new: pa.Table, registered: pa.Table | None) -> pa.Table:
    """Rows of ``new`` not registered yet. A re-registration (a restarted script) of identical rows is a
    no-op; an id registered before with a different label, target or probe is an error."""
    if registered is None:
        return new
    known = pc.is_in(new["sample_id"], registered["sample_id"])
    if not pc.any(known).as_py():
        return new
    seen = _comparable(new.filter(known)).join(_comparable(registered), keys=list(COMPARED), join_type="left anti")
    if seen.num_rows:
        raise ValueError(
            f"sample_ids: id {seen['sample_id'][0].as_py()!r} is already registered in this run with a "
            "different label, target, control flag or probe; registered samples are never overwritten"
        )
    return new.filter(pc.invert(known))
