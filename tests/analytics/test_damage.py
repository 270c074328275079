"""Nothing damaged is ever scored: each damage that readers used to trust (a footer statistic that no
longer matches its pages, a bad page checksum, a deleted attempt file, a deleted or stray manifest) is
named by ``tdlog verify`` and refused by the readers and ``tdlog score`` in one line; a clean run's files
are read once per identity."""

from __future__ import annotations

import json
import shutil
import struct

import pyarrow.fs as pafs
import pytest
import torch

import tdlog.analytics as analytics
import tdlog.analytics.integrity as integrity
from tdlog.analytics.integrity import DamagedRunError
from tdlog.analytics.verify import verify_run
from tdlog.cli import main
from tdlog.recorder import Recorder

from .test_engines import write_object_store_run

IDS = 1000


def write_wide_run(path, epochs: int = 3) -> None:
    """1,000 samples (ids 0..999) per epoch, one records file per epoch."""
    with Recorder(path, num_classes=3) as rec:
        rec.register_samples(torch.arange(IDS), torch.arange(IDS) % 3)
        for epoch in range(epochs):
            logits = torch.randn(IDS, 3, generator=torch.Generator().manual_seed(epoch))
            rec.log(torch.arange(IDS), logits, torch.arange(IDS) % 3, epoch=epoch)


def refused_everywhere(path, capsys, named: str) -> None:
    """verify names ``named``; open_run refuses; ``tdlog score`` exits 1 in one line naming tdlog verify."""
    assert named in verify_run(path)["file"].to_list()
    with pytest.raises(DamagedRunError, match=f"is damaged: {path}/{named}: .*run `tdlog verify"):
        analytics.open_run(path).scores()
    capsys.readouterr()
    assert main(["score", str(path), "--out", str(path.parent / "scores.parquet")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog score: error: path: the run at") and "tdlog verify" in error
    assert error.count("\n") == 1 and not (path.parent / "scores.parquet").exists()


def test_a_footer_statistic_that_disagrees_with_its_pages(tmp_path, capsys) -> None:
    path = tmp_path / "run"
    write_wide_run(path)
    target = next((path / "records" / "split=train" / "epoch=1").glob("*.parquet"))
    data = bytearray(target.read_bytes())
    footer_length = struct.unpack("<I", data[-8:-4])[0]
    footer = slice(len(data) - 8 - footer_length, len(data) - 8)
    patched = bytes(data[footer]).replace(struct.pack("<q", 999), struct.pack("<q", 487))
    assert patched != bytes(data[footer])
    data[footer] = patched
    target.write_bytes(bytes(data))
    problems = dict(verify_run(path).iter_rows())
    name = target.relative_to(path).as_posix()
    assert "footer statistics of sample_id" in problems[name] and "0..487" in problems[name]
    refused_everywhere(path, capsys, name)


def test_a_bad_page_checksum_is_refused_by_readers(tmp_path, capsys) -> None:
    path = tmp_path / "run"
    write_wide_run(path)
    target = next((path / "records" / "split=train" / "epoch=0").glob("*.parquet"))
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x40
    target.write_bytes(bytes(data))
    refused_everywhere(path, capsys, target.relative_to(path).as_posix())


def test_a_deleted_attempt_file_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "run"
    write_wide_run(path, epochs=2)
    (path / "_attempts" / "attempt-0.json").unlink()
    refused_everywhere(path, capsys, "_attempts/attempt-0.json")


def test_a_deleted_manifest_of_an_object_store_run_is_refused(tmp_path, capsys) -> None:
    store, _ = write_object_store_run(tmp_path)
    with Recorder(f"store://{store}", num_classes=3, filesystem=pafs.LocalFileSystem(),
                  local_dir=tmp_path / "mirror-2") as rec:  # a restart: attempt 1, manifest a1-r0
        rec.log(torch.arange(12), torch.randn(12, 3), torch.arange(12) % 3, epoch=3)
    (store / "_committed" / "a0-r0.json").unlink()  # epochs 0-2 would vanish
    problems = [problem for name, problem in verify_run(store).iter_rows() if name == "_committed/a0-r0.json"]
    assert any(p.startswith("missing: 3 records files of attempt 0 rank 0 are in the run but") for p in problems)
    refused_everywhere(store, capsys, "_committed/a0-r0.json")


@pytest.mark.parametrize("manifest", ["a0-r0.json", "extra.json"])
def test_a_stray_empty_manifest_is_refused(tmp_path, capsys, manifest) -> None:
    """A local run (no manifests) given one empty manifest used to read as empty and score 0 rows."""
    path = tmp_path / "run"
    write_wide_run(path)
    (path / "_committed").mkdir()
    (path / "_committed" / manifest).write_text(json.dumps({"files": []}))
    problems = dict(verify_run(path).iter_rows())
    assert ("does not list 3 records files" if manifest == "a0-r0.json" else "stray") in \
        problems[f"_committed/{manifest}"]
    refused_everywhere(path, capsys, f"_committed/{manifest}")


def test_a_writers_last_unlisted_upload_is_not_a_damage(tmp_path) -> None:
    store, _ = write_object_store_run(tmp_path)
    committed = next((store / "records" / "split=train" / "epoch=0").glob("*.parquet"))
    shutil.copy(committed, committed.parent / "part-a0-r0-s3.parquet")
    assert verify_run(store).height == 0
    shutil.copy(committed, committed.parent / "part-a0-r0-s4.parquet")  # two unlisted: not a crash's leftover
    assert verify_run(store).height == 1


def test_a_clean_run_is_read_once_per_file_identity(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run"
    write_wide_run(path)
    read: list[str] = []
    check = integrity.content_problem
    monkeypatch.setattr(integrity, "content_problem", lambda source, name: read.append(name) or check(source, name))
    with analytics.open_run(path) as run:
        run.scores()
    assert len(read) == 4  # 3 records files and the samples file
    with analytics.open_run(path) as run:  # another process would find the same identities in the cache
        run.scores()
    assert len(read) == 4
    with Recorder(path, num_classes=3) as rec:  # a new file: only it is read
        rec.log(torch.arange(IDS), torch.randn(IDS, 3), torch.arange(IDS) % 3, epoch=3)
    with analytics.open_run(path) as run:
        assert run.epochs() == [0, 1, 2, 3]
    assert len(read) == 5 and read[-1].startswith("records/split=train/epoch=3/")
