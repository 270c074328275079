"""Input checks of the read side: open_runs takes a list and refuses runs of different datasets unless told
how to combine them; a folder without run.json is answered at once, never walked; an empty answer that
comes from the caller's filter says so."""

from __future__ import annotations

import os

import pytest

import tdlog.analytics as analytics
from tdlog.cli import main
from tests.conftest import write_run


def test_open_runs_takes_a_list_not_a_path(small_run) -> None:
    path, _ = small_run
    for given in (str(path), path):
        with pytest.raises(TypeError, match=r"paths: expected a list of runs, got one .* use open_runs\(\[path\]\)"):
            analytics.open_runs(given)
    with analytics.open_runs([path]) as runs:
        assert runs.locations == [str(path)]


def test_runs_that_disagree_on_classes_or_labels_are_refused_unless_kept(tmp_path, capsys) -> None:
    write_run(tmp_path / "a", seed=0)
    write_run(tmp_path / "other-classes", seed=0, num_classes=5)
    write_run(tmp_path / "other-labels", seed=1)
    with pytest.raises(ValueError, match=r"other-classes has num_classes=5, .* has 4; .*conflicts='keep'"):
        analytics.open_runs([tmp_path / "a", tmp_path / "other-classes"])
    with pytest.raises(ValueError, match=r"paths: sample 0 has labels \[\d, \d\] in different runs \(\d+ samples "):
        analytics.open_runs([tmp_path / "a", tmp_path / "other-labels"])
    with analytics.open_runs([tmp_path / "a", tmp_path / "other-labels"], conflicts="keep") as runs:
        assert runs.scores(epochs=None).height == 40
    out = tmp_path / "scores.parquet"
    assert main(["score", str(tmp_path / "a"), str(tmp_path / "other-labels"), "--out", str(out)]) == 1
    assert "conflicts='keep'" in capsys.readouterr().err and not out.exists()
    assert main(["score", str(tmp_path / "a"), str(tmp_path / "other-labels"), "--conflicts", "keep",
                 "--out", str(out)]) == 0


def test_a_folder_without_run_json_is_never_walked(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "big" / "deep" / "er").mkdir(parents=True)

    def no_walk(*args, **kwargs):
        raise AssertionError("walked a folder that is not a run")

    monkeypatch.setattr(os, "walk", no_walk)
    for command in ("info", "verify", "score"):
        extra = ["--out", str(tmp_path / "s.parquet")] if command == "score" else []
        assert main([command, str(tmp_path / "big"), *extra]) == 1
        assert f"error: path: no tdlog run at {tmp_path / 'big'} (no run.json)" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no tdlog run"):
        analytics.open_run(tmp_path / "big")


def test_an_empty_answer_from_the_callers_filter_says_so(small_run, capsys) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run:
        with pytest.warns(UserWarning, match=r"no records of split 'valid' \(its splits: train\)"):
            assert run.aum(split="valid").height == 0
        with pytest.warns(UserWarning, match=r"epochs: 50:60 holds none of the recorded epochs of split 'train' "
                                             r"\(0\.\.2\)"):
            assert run.aum(epochs=range(50, 60)).height == 0
    out = path.parent / "scores.parquet"
    assert main(["score", str(path), "--epochs", "50:60", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "tdlog score: warning: epochs: 50:60 holds none of the recorded epochs" in err
