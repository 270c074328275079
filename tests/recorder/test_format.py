"""On-disk format v1: paths, partition keys, column names and types, manifest and attempt files."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from tdlog.recorder import FORMAT_VERSION, Recorder, batch_statistics
from tests.conftest import write_run


def test_layout_paths_and_partition_keys(small_run) -> None:
    path, _ = small_run
    files = sorted(p.relative_to(path).as_posix() for p in (path / "records").rglob("*.parquet"))
    assert files == [f"records/split=train/epoch={e}/part-a0-r0-s{e}.parquet" for e in range(3)]
    assert [p.name for p in (path / "samples").iterdir()] == ["part-a0-r0-s0.parquet"]
    assert list((path / "_staging").iterdir()) == []


def test_records_columns_and_types(small_run) -> None:
    path, _ = small_run
    schema = pq.read_schema(next((path / "records").rglob("*.parquet")))
    expected = {
        "sample_id": pa.int64(), "step": pa.int64(), "target": pa.int32(), "loss": pa.float32(),
        "margin": pa.float32(), "target_logit": pa.float32(), "other_logit": pa.float32(),
        "other_class": pa.int32(), "prob": pa.float32(), "pred": pa.int32(), "el2n": pa.float32(),
        "correct": pa.float32(), "tokens": pa.int32(), "attempt": pa.int32(), "rank": pa.int32(),
    }
    assert {f.name: f.type for f in schema} == expected
    assert "split" not in schema.names and "epoch" not in schema.names  # hive keys live in the path


def test_rows_hold_what_was_logged(small_run) -> None:
    path, logged = small_run
    table = ds.dataset(path / "records", format="parquet", partitioning="hive").to_table()
    frame = {name: table[name].to_numpy() for name in table.column_names}
    order = np.lexsort((frame["sample_id"], frame["epoch"]))
    expected_order = np.lexsort((logged["ids"], logged["epoch"]))
    logits = torch.from_numpy(logged["logits"][expected_order])
    targets = torch.from_numpy(logged["labels"][logged["ids"][expected_order]])
    floats, ints = batch_statistics(logits, targets, None)
    np.testing.assert_array_equal(frame["sample_id"][order], logged["ids"][expected_order])
    np.testing.assert_array_equal(frame["epoch"][order], logged["epoch"][expected_order])
    np.testing.assert_array_equal(frame["margin"][order], floats[1].numpy())  # a float32 difference: exact
    # CPU rows come from the writer's NumPy statistics, whose float32 exp/log may differ from torch's in the
    # last bit (measured: at most 1.6e-7 relative): 2 ulps.
    np.testing.assert_allclose(frame["loss"][order], floats[0].numpy(), rtol=2.4e-7, atol=0)
    np.testing.assert_array_equal(frame["pred"][order], ints[2].numpy())
    np.testing.assert_array_equal(frame["correct"][order], (ints[2] == targets).float().numpy())
    assert set(frame["tokens"]) == {1}
    assert set(frame["step"]) == set(range(9)) and set(frame["attempt"]) == {0} and set(frame["rank"]) == {0}


def test_manifest_and_attempt_file(small_run) -> None:
    path, _ = small_run
    manifest = json.loads((path / "run.json").read_text())
    assert manifest["format"] == "tdlog" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["num_classes"] == 4 and manifest["num_outputs"] == 4 and manifest["threshold_class"] is None
    assert manifest["sample_id_type"] == "int64" and manifest["nonfinite_rows"] == 0
    attempt = json.loads((path / "_attempts" / "attempt-0.json").read_text())
    assert attempt["attempt"] == 0 and attempt["start_epoch"] == 0 and attempt["world_size"] == 1


def test_samples_table(small_run) -> None:
    path, logged = small_run
    samples = pq.read_table(path / "samples").sort_by("sample_id")
    assert samples.schema.field("label").type == pa.int32()
    np.testing.assert_array_equal(samples["label"].to_numpy(), logged["labels"])
    np.testing.assert_array_equal(samples["target"].to_numpy(), logged["labels"])
    assert not any(samples["is_threshold"].to_pylist())
    assert samples["probe"].null_count == len(samples)


def test_full_and_topk_logits(tmp_path) -> None:
    logits = torch.randn(6, 5)
    for mode, dtype in [("full", "float16"), ("full", "float32"), ("topk", "float16")]:
        path = tmp_path / f"{mode}-{dtype}"
        with Recorder(path, num_classes=5, logits=mode, logits_dtype=dtype, topk=2) as rec:
            rec.log(torch.arange(6), logits, torch.zeros(6, dtype=torch.long), epoch=0)
        table = pq.read_table(next(path.rglob("records/**/*.parquet")))
        if mode == "full":
            stored = np.array(table["logits"].to_pylist(), dtype=np.float32)
            np.testing.assert_array_equal(stored, logits.to(getattr(torch, dtype)).float().numpy())
        else:
            values, classes = logits.topk(2, dim=1)
            np.testing.assert_array_equal(np.array(table["topk_logits"].to_pylist()), values.numpy())
            np.testing.assert_array_equal(np.array(table["topk_classes"].to_pylist()), classes.numpy())


def test_string_ids_and_eval_split(tmp_path) -> None:
    path = tmp_path / "run"
    with Recorder(path, num_classes=3) as rec:
        rec.log(["a", "b"], torch.randn(2, 3), torch.tensor([0, 1]), epoch=0)
        rec.log(["a", "b"], torch.randn(2, 3), torch.tensor([0, 1]), epoch=0, split="eval")
    assert json.loads((path / "run.json").read_text())["sample_id_type"] == "string"
    assert (path / "records" / "split=eval" / "epoch=0").is_dir()
    table = pq.read_table(next((path / "records" / "split=eval").rglob("*.parquet")))
    assert table.schema.field("sample_id").type == pa.string()
    assert table["sample_id"].to_pylist() == ["a", "b"]


def test_flush_rows_splits_files_without_losing_rows(tmp_path) -> None:
    logged = write_run(tmp_path / "run", num_samples=50, epochs=2, batch_size=10, flush_rows=20, coalesce_rows=10)
    files = list((tmp_path / "run" / "records").rglob("*.parquet"))
    assert len(files) >= 4
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert rows == len(logged["ids"]) == 100


def test_rows_are_committed_flush_seconds_after_logging_without_flush(tmp_path) -> None:
    path = tmp_path / "run"
    rec = Recorder(path, num_classes=3, flush_seconds=0.4)  # coalesce_rows and flush_rows far away
    rec.log(torch.arange(4), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), epoch=0)
    time.sleep(0.25)  # past flush_seconds / 2: the next log() hands the batches to the writer
    rec.log(torch.arange(4, 8), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), epoch=0)
    deadline = time.monotonic() + 10
    while not list((path / "records").rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    files = list((path / "records").rglob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0])["sample_id"].to_pylist() == list(range(8))
    rec.close()
