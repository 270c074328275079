"""Degenerate input gets an answer or an error, never a silent guess."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.cli import main
from tdlog.recorder import Recorder


def test_constant_aul_calls_no_sample_mislabeled(tmp_path) -> None:
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        for epoch in range(3):
            rec.log(torch.arange(30), torch.zeros(30, 3), torch.arange(30) % 3, epoch=epoch)  # every loss log(3)
    with analytics.open_run(tmp_path / "run") as run, pytest.warns(RuntimeWarning, match="no sample is called"):
        scores = run.scores()
    assert scores["p_mislabeled"].to_list() == [0.0] * 30 and not scores["gmm_flagged"].any()
    with analytics.open_run(tmp_path / "run") as run, pytest.warns(RuntimeWarning):
        assert run.gmm().noise_rate == 0.0


@pytest.mark.parametrize("epochs", [range(5, 2), range(3, 3), range(-1, 4), range(0, 6, 2)])
def test_empty_reversed_or_strided_epoch_ranges_are_errors(small_run, epochs) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run, pytest.raises(ValueError, match="epochs: expected a non-empty range"):
        run.aum(epochs=epochs)


def test_the_cli_says_so_in_one_line(small_run, tmp_path, capsys) -> None:
    path, _ = small_run
    assert main(["score", str(path), "--epochs", "5:2", "--out", str(tmp_path / "s.parquet")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog score: error: epochs: expected a non-empty range") and error.count("\n") == 1
    assert not (tmp_path / "s.parquet").exists()


def test_flagging_a_run_too_small_to_flag_is_a_one_line_error(tmp_path, capsys) -> None:
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        rec.log(torch.tensor([7]), torch.randn(1, 3), torch.tensor([1]), epoch=0)
    for option in ("--flagged", "--weights"):
        assert main(["export", str(tmp_path / "run"), option, str(tmp_path / "out.csv")]) == 1
        error = capsys.readouterr().err
        assert error.startswith(f"tdlog export: error: {option}:") and error.count("\n") == 1


def test_an_empty_batch_is_a_no_op(tmp_path) -> None:
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        rec.log([], torch.empty(0, 3), torch.empty(0, dtype=torch.long), epoch=0)
        rec.log(["a", "b"], torch.randn(2, 3), torch.tensor([0, 1]), epoch=0)  # the id type is still free
    with analytics.open_run(tmp_path / "run") as run:
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 2
        assert run.info()["sample_id_type"] == "string"


def test_ids_beyond_int64_are_errors_not_wrapped(tmp_path) -> None:
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        for ids in (np.array([1, 2**63], dtype=np.uint64), [1, 2**63]):
            with pytest.raises(ValueError, match=r"sample_ids: expected ids that fit int64 .* got 9223372036854775808"):
                rec.log(ids, torch.randn(2, 3), torch.tensor([0, 1]), epoch=0)


def test_result_types_polars_cannot_hold_are_a_one_line_error(small_run, capsys) -> None:
    path, _ = small_run
    assert main(["sql", str(path), "SELECT INTERVAL 1 DAY AS waited, 2 AS n"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tdlog sql: error: query: Polars cannot hold a column of the result (waited INTERVAL")
    assert error.count("\n") == 1 and "CAST(x AS VARCHAR)" in error


def test_garbled_run_json_and_parquet_footer_errors_name_the_file(small_run, capsys) -> None:
    path, _ = small_run
    part = next((path / "records").rglob("*.parquet"))
    part.write_bytes(part.read_bytes()[:-12] + b"garbage!PAR1")
    assert main(["info", str(path)]) == 1
    assert str(part) in capsys.readouterr().err
    (path / "run.json").write_text('{"format": ')
    assert main(["info", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"tdlog info: error: {path / 'run.json'}: not valid JSON")
