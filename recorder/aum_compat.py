"""Drop-in replacement for the ``aum`` package (``from aum import AUMCalculator, AUMRecord``).

Same constructor, ``update`` return value and ``finalize`` files (byte for byte, same row order), plus a
tdlog run written alongside so the analytics engine can read it. The AUM of a sample is
``sum(margins) / count`` over every ``update`` that saw it, margins ``z_y - max_{j != y} z_j`` computed in
the logits' dtype, accumulated in float64 in call order, exactly as ``aum`` does.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .recorder import Recorder

SampleId = int | str


@dataclass
class AUMRecord:
    """One sample's AUM state after an ``update`` (the ``aum`` package's record, field for field)."""

    sample_id: SampleId
    num_measurements: int
    target_logit: int
    target_val: float
    other_logit: int
    other_val: float
    margin: float
    aum: float


def _csv_cell(value: Any) -> Any:
    """Format a cell as pandas' ``DataFrame.to_csv`` does: shortest round-trip floats, NaN as empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def _write_csv(path: str, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_csv_cell(v) for v in row] for row in rows)


def _descending_order_like_pandas(values: np.ndarray) -> np.ndarray:
    """Row order of pandas' ``sort_values(ascending=False)`` (quicksort on the reversed array, NaN last),
    so that ties come out in the same order as ``aum``'s CSV."""
    index = np.arange(len(values))
    finite = ~np.isnan(values)
    reversed_values = values[finite][::-1]
    reversed_index = index[finite][::-1]
    order = reversed_index[reversed_values.argsort(kind="quicksort")][::-1]
    return np.concatenate([order, np.nonzero(~finite)[0]])


def write_aum_values(save_dir: str | os.PathLike, sample_ids: list[SampleId], aums: np.ndarray) -> Path:
    """Write ``save_dir/aum_values.csv`` exactly as the ``aum`` package does (descending AUM)."""
    path = Path(save_dir) / "aum_values.csv"
    order = _descending_order_like_pandas(aums)
    _write_csv(str(path), ["sample_id", "aum"], [(sample_ids[k], float(aums[k])) for k in order])
    return path


class AUMCalculator:
    """Area Under the Margin, with the ``aum`` package's API, recording a tdlog run as it goes.

    Args:
        save_dir: where ``finalize`` writes ``aum_values.csv`` (and ``full_aum_records.csv``); None to give
            the folder to ``finalize(save_dir=...)`` instead, as ``aum`` allows.
        compressed: if False, keep every per-update record and write ``full_aum_records.csv``.
        run_dir: tdlog run directory (default ``save_dir/tdlog``, or a new temporary folder when
            ``save_dir`` is None). Epoch ``k`` of a sample is its ``k``-th update (an epoch-based loop sees
            each sample once per epoch).
        **recorder_options: passed to :class:`tdlog.recorder.Recorder`.
    """

    def __init__(self, save_dir: str | None, compressed: bool = True, *, run_dir: str | None = None,
                 **recorder_options: Any) -> None:
        self.save_dir = save_dir
        self.compressed = compressed
        self.counts: dict[SampleId, int] = {}
        self.sums: dict[SampleId, float] = {}
        if not compressed:
            self.records: list[AUMRecord] = []
        if run_dir is None:
            run_dir = Path(save_dir) / "tdlog" if save_dir is not None else tempfile.mkdtemp(prefix="tdlog-aum-")
        self.run_dir = Path(run_dir)
        self._recorder_options = recorder_options
        self.recorder: Recorder | None = None

    def update(self, logits: torch.Tensor, targets: torch.Tensor, sample_ids: Any) -> dict[SampleId, AUMRecord]:
        """Add one margin per sample; return each sample's :class:`AUMRecord` after this update."""
        if isinstance(sample_ids, (torch.Tensor, np.ndarray)):
            sample_ids = sample_ids.tolist()
        sample_ids = list(sample_ids)
        if self.recorder is None:
            self.recorder = Recorder(self.run_dir, num_classes=logits.shape[1], **self._recorder_options)
        self._record(logits, targets, sample_ids)
        with torch.no_grad():
            target_values = logits.gather(1, targets.view(-1, 1)).squeeze(1)
            other_values, other_index = torch.scatter(logits, 1, targets.view(-1, 1), float("-inf")).max(1)
            margins = (target_values - other_values).tolist()
        columns = zip(sample_ids, targets.tolist(), target_values.tolist(), other_index.tolist(),
                      other_values.tolist(), margins, strict=True)
        updated: dict[SampleId, AUMRecord] = {}
        for sample_id, target, target_val, other, other_val, margin in columns:
            count = self.counts.get(sample_id, 0) + 1
            total = self.sums.get(sample_id, 0.0) + margin
            self.counts[sample_id] = count
            self.sums[sample_id] = total
            record = AUMRecord(sample_id, count, target, target_val, other, other_val, margin, total / count)
            updated[sample_id] = record
            if not self.compressed:
                self.records.append(record)
        return updated

    def _record(self, logits: torch.Tensor, targets: torch.Tensor, sample_ids: list) -> None:
        """Log the batch to the tdlog run, epoch = how many times each sample was seen before."""
        seen_before = np.fromiter((self.counts.get(i, 0) for i in sample_ids), dtype=np.int64, count=len(sample_ids))
        ids = np.asarray(sample_ids)
        for epoch in np.unique(seen_before):
            rows = np.nonzero(seen_before == epoch)[0]
            selected = torch.from_numpy(rows).to(logits.device)
            self.recorder.log(ids[rows], logits.detach().index_select(0, selected),
                              targets.index_select(0, selected), epoch=int(epoch))

    def finalize(self, save_dir: str | None = None) -> None:
        """Write ``aum_values.csv`` (sample_id, aum; descending AUM) and, when not compressed,
        ``full_aum_records.csv`` (every record, by sample_id then num_measurements); commit the run."""
        save_dir = save_dir or self.save_dir
        if save_dir is None:
            raise ValueError("save_dir: expected a folder, in finalize(save_dir=...) or AUMCalculator(save_dir=...), "
                             "got None for both")
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        ids = list(self.counts)
        write_aum_values(save_dir, ids, np.array([self.sums[i] / self.counts[i] for i in ids], dtype=np.float64))
        if not self.compressed:
            record_ids = np.array([r.sample_id for r in self.records])
            measurements = np.array([r.num_measurements for r in self.records])
            order = np.lexsort((measurements, record_ids))
            _write_csv(os.path.join(save_dir, "full_aum_records.csv"), [f.name for f in fields(AUMRecord)],
                       [astuple(self.records[k]) for k in order])
        if self.recorder is not None:
            self.recorder.flush()
