"""``tdlog verify``: every committed file checked (page checksums, schema, manifests, attempt files); each
bad file named, exit status 1."""

from __future__ import annotations

import json

import pytest

from tdlog.analytics.verify import verify_run
from tdlog.cli import main
from tests.conftest import write_run


def test_a_sound_run_passes(small_run, capsys) -> None:
    path, _ = small_run
    assert verify_run(path).height == 0
    assert main(["verify", str(path)]) == 0
    assert "4 files checked" in capsys.readouterr().out  # 3 records files, 1 samples file


def test_a_flipped_byte_in_a_data_page_is_caught_and_named(small_run, capsys) -> None:
    path, _ = small_run
    target = sorted((path / "records").rglob("*.parquet"))[1]
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside a data page, far from the footer
    target.write_bytes(bytes(data))
    problems = verify_run(path)
    name = target.relative_to(path).as_posix()
    assert problems["file"].to_list() == [name] and "checksum" in problems["problem"][0].lower()
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr()
    assert name in out.err and "1 bad file" in out.err


def test_garbled_json_and_unlisted_manifest_entries_are_named(tmp_path) -> None:
    write_run(tmp_path / "run", num_samples=8, epochs=2)
    (tmp_path / "run" / "_attempts" / "attempt-0.json").write_text("{not json")
    (tmp_path / "run" / "_committed").mkdir()
    listed = {"files": ["samples/part-a0-r0-s7.parquet"]}
    (tmp_path / "run" / "_committed" / "a0-r0.json").write_text(json.dumps(listed))
    problems: dict[str, list[str]] = {}
    for name, problem in verify_run(tmp_path / "run").iter_rows():
        problems.setdefault(name, []).append(problem)
    assert "not valid JSON" in problems["_attempts/attempt-0.json"][0]
    assert any("lists samples/part-a0-r0-s7.parquet, which is not" in p for p in problems["_committed/a0-r0.json"])
    assert any("does not list 2 records files" in p for p in problems["_committed/a0-r0.json"])


def test_a_schema_that_is_not_the_formats_is_named(tmp_path) -> None:
    import pyarrow.parquet as pq

    write_run(tmp_path / "run", num_samples=8, epochs=1)
    target = next((tmp_path / "run" / "records").rglob("*.parquet"))
    pq.write_table(pq.read_table(target).drop_columns(["margin"]), target)
    problems = verify_run(tmp_path / "run")
    assert problems.height == 1 and "missing columns ['margin']" in problems["problem"][0]


def test_verify_of_nothing_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["verify", str(tmp_path / "missing")]) == 1
    assert "no tdlog run at" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["records", "samples"])
def test_a_corrupt_file_of_either_kind_is_named(small_run, kind) -> None:
    path, _ = small_run
    target = next((path / kind).rglob("*.parquet"))
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x10
    target.write_bytes(bytes(data))
    assert verify_run(path)["file"].to_list() == [target.relative_to(path).as_posix()]


def test_a_deleted_attempt_file_is_named(tmp_path) -> None:
    write_run(tmp_path / "run", num_samples=8, epochs=2)
    write_run(tmp_path / "run", num_samples=8, epochs=2)  # a second attempt
    (tmp_path / "run" / "_attempts" / "attempt-1.json").unlink()
    problems = dict(verify_run(tmp_path / "run").iter_rows())
    assert list(problems) == ["_attempts/attempt-1.json"] and problems["_attempts/attempt-1.json"].startswith("missing")
