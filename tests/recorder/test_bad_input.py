"""Each bad input gets a clear error naming the argument; committed data stays intact."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tdlog.recorder import FORMAT_VERSION, Recorder


@pytest.fixture
def rec(tmp_path):
    recorder = Recorder(tmp_path / "run", num_classes=3)
    recorder.log(torch.arange(4), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), epoch=0)
    recorder.flush()
    yield recorder
    recorder.close()


def committed_rows(rec: Recorder) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (rec.path / "records").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"logits": torch.randn(4)}, ValueError, r"logits: expected a 2-D tensor.*got shape \(4,\)"),
        ({"logits": torch.randn(4, 5)}, ValueError, r"logits: expected 3 columns.*\(4, 5\)"),
        ({"logits": torch.ones(4, 3, dtype=torch.long)}, TypeError, r"logits: expected a floating-point.*int64"),
        ({"logits": np.zeros((4, 3))}, TypeError, r"logits: expected a torch.Tensor, got ndarray"),
        ({"targets": torch.tensor([0, 1, 2])}, ValueError, r"targets: expected shape \(4,\).*\(3,\)"),
        ({"targets": torch.tensor([0.0, 1.0, 2.0, 0.0])}, TypeError, r"targets: expected an integer.*float32"),
        ({"targets": torch.tensor([0, 1, 3, 0])}, ValueError, r"targets: expected class indices in \[0, 3\), got 3"),
        ({"targets": torch.tensor([0, -1, 2, 0])}, ValueError, r"targets: expected class indices in \[0, 3\), got -1"),
        ({"sample_ids": torch.arange(3)}, ValueError, r"sample_ids: expected shape \(4,\).*\(3,\)"),
        ({"sample_ids": torch.rand(4)}, TypeError, r"sample_ids: expected an integer tensor, got dtype torch.float32"),
        ({"sample_ids": ["a", "b", "c", "d"]}, TypeError, r"sample_ids: this run uses int64 ids, got string ids"),
        ({"sample_ids": [1, "b", 2, 3]}, TypeError, r"sample_ids: expected all ids of one type"),
        ({"loss": torch.rand(3)}, ValueError, r"loss: expected per-sample losses of shape \(4,\).*\(3,\)"),
        ({"loss": torch.rand(())}, ValueError, r"loss: expected per-sample losses.*reduction='none'"),
        ({"epoch": -1}, ValueError, r"epoch: expected a non-negative int, got -1"),
        ({"epoch": 1.5}, TypeError, r"epoch: expected a non-negative int, got float"),
        ({"split": "train/../x"}, ValueError, r"split: expected a name of letters"),
    ],
)
def test_log_rejects_bad_input_and_keeps_committed_rows(rec, kwargs, error, message) -> None:
    arguments = {"sample_ids": torch.arange(4), "logits": torch.randn(4, 3), "targets": torch.tensor([0, 1, 2, 0]),
                 "epoch": 1}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        rec.log(arguments.pop("sample_ids"), arguments.pop("logits"), arguments.pop("targets"), **arguments)
    rec.flush()
    assert committed_rows(rec) == 4
    rec.log(torch.arange(4), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), epoch=1)  # still usable
    rec.flush()
    assert committed_rows(rec) == 8


def test_num_classes_mismatch_on_resume(tmp_path) -> None:
    Recorder(tmp_path / "run", num_classes=3).close()
    with pytest.raises(ValueError, match=r"num_classes: the run at .* has num_classes=3, got 5"):
        Recorder(tmp_path / "run", num_classes=5)
    with pytest.raises(ValueError, match=r"with_threshold_class: .* threshold_class=None, got 3"):
        Recorder(tmp_path / "run", num_classes=3, with_threshold_class=True)


def test_not_a_run_and_newer_format(tmp_path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(ValueError, match="not a tdlog run"):
        Recorder(tmp_path / "other", num_classes=3)
    (tmp_path / "other" / "run.json").write_text(json.dumps({"format": "tdlog", "format_version": 99}))
    with pytest.raises(ValueError, match=f"format version 99, this tdlog reads up to {FORMAT_VERSION}"):
        Recorder(tmp_path / "other", num_classes=3)


def test_constructor_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_classes: expected an int >= 2, got 1"):
        Recorder(tmp_path / "a", num_classes=1)
    with pytest.raises(ValueError, match="logits: expected one of"):
        Recorder(tmp_path / "a", num_classes=3, logits="all")
    with pytest.raises(ValueError, match=r"topk: expected 1 <= topk <= 3, got 4"):
        Recorder(tmp_path / "a", num_classes=3, logits="topk", topk=4)


def test_nonfinite_rows_are_recorded_counted_and_warned(tmp_path) -> None:
    rec = Recorder(tmp_path / "run", num_classes=3)
    logits = torch.randn(5, 3)
    logits[1, 0] = float("nan")
    logits[3, 2] = float("inf")
    loss = torch.rand(5)
    loss[4] = float("nan")
    rec.log(torch.arange(5), logits, torch.zeros(5, dtype=torch.long), loss=loss, epoch=0)
    with pytest.warns(RuntimeWarning, match="3 rows with NaN/Inf"):
        rec.flush()
    rec.close()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["nonfinite_rows"] == 3
    table = pq.read_table(next((tmp_path / "run" / "records" / "split=train" / "epoch=0").glob("*.parquet")))
    assert np.isnan(table["margin"].to_numpy()[1]) and np.isnan(table["loss"].to_numpy()[4])
    assert table.num_rows == 5


def test_register_samples_errors(tmp_path) -> None:
    with Recorder(tmp_path / "run", num_classes=3, with_threshold_class=True) as rec:
        with pytest.raises(ValueError, match=r"sample_ids: expected unique ids, got duplicates such as \[2\]"):
            rec.register_samples([1, 2, 2], [0, 1, 2])
        with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 3\), got 3"):
            rec.register_samples([1, 2, 3], [0, 1, 3])
        with pytest.raises(TypeError, match="labels: expected integer class indices, got dtype float64"):
            rec.register_samples([1, 2, 3], [0.0, 1.0, 2.0])
        with pytest.raises(ValueError, match=r"probe_role: expected one of \('reference', 'heldout'\)"):
            rec.register_samples([1, 2], [0, 1], probe="clean", probe_role="neighbour")
        with pytest.raises(ValueError, match="label: is a reserved column"):
            rec.register_samples([1, 2], [0, 1], label=[0, 1])
        assert rec.register_samples([1, 2, 3], [0, 1, 2], targets=[0, 3, 2]) == 3
        assert rec.register_samples([1, 2, 3], [0, 1, 2], targets=[0, 3, 2]) == 0  # restarted script: no-op
        with pytest.raises(ValueError, match="id 2 is already registered in this run with a different label"):
            rec.register_samples([2, 4], [2, 0])
    samples = pq.read_table(tmp_path / "run" / "samples").sort_by("sample_id")
    assert samples["is_threshold"].to_pylist() == [False, True, False]


def test_writer_failure_is_raised_from_next_call_and_committed_files_survive(tmp_path) -> None:
    rec = Recorder(tmp_path / "run", num_classes=3, coalesce_rows=1)
    rec.log(torch.arange(4), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), epoch=0)
    rec.flush()
    (tmp_path / "run" / "records" / "split=train" / "epoch=1").write_text("")  # a file where a folder goes
    rec.log(torch.arange(4), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), epoch=1)
    with pytest.raises(RuntimeError, match=r"writer thread failed; rows not yet committed are lost.*Not a directory"):
        rec.flush()
    with pytest.raises(RuntimeError, match="tdlog writer thread failed"):
        rec.log(torch.arange(4), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), epoch=2)
    with pytest.raises(RuntimeError):
        rec.close()
    files = list((tmp_path / "run" / "records").rglob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 4
