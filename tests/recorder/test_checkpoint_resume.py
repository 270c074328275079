"""Checkpoint-consistent resume: a state saved with the model checkpoint; the resumed attempt supersedes,
per split, exactly the rows logged after it; an attempt never hides a split it does not log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.recorder import Recorder

SAMPLES, BATCH, EPOCHS = 40, 8, 3

TRAINING = textwrap.dedent("""
    import json, os, signal, sys, torch
    from tdlog.recorder import Recorder
    path, state_file, mode = sys.argv[1:4]
    def batches(epoch):
        order = torch.randperm(40, generator=torch.Generator().manual_seed(epoch))
        return list(order.split(8))
    def log(rec, epoch, ids, seed):
        logits = torch.randn(len(ids), 3, generator=torch.Generator().manual_seed(seed))
        rec.log(ids, logits, ids % 3, epoch=epoch)
    if mode == "first":
        rec = Recorder(path, num_classes=3)
        for ids in batches(0):
            log(rec, 0, ids, 1)
        for index, ids in enumerate(batches(1)):
            log(rec, 1, ids, 2)
            if index == 2:  # a checkpoint in the middle of epoch 1
                json.dump(rec.state_dict(), open(state_file, "w"))
        log(rec, 2, batches(2)[0], 3)  # then more training, lost with the process
        rec.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    state = json.load(open(state_file))
    rec = Recorder(path, num_classes=3, resume=state)
    for ids in batches(1)[3:]:  # the data loader resumes after the checkpointed batches
        log(rec, 1, ids, 4)
    for ids in batches(2):
        log(rec, 2, ids, 5)
    rec.close()
""")


def test_killed_right_after_a_checkpoint_and_resumed_every_sample_counts_once_per_epoch(tmp_path) -> None:
    path, state = tmp_path / "run", tmp_path / "state.json"
    script = tmp_path / "train.py"
    script.write_text(TRAINING)
    first = subprocess.run([sys.executable, str(script), str(path), str(state), "first"], capture_output=True,
                           timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr.decode()[-2000:]
    saved = json.loads(state.read_text())
    assert saved["splits"] == {"train": {"epoch": 1, "step": 7}} and saved["step"] == 8
    resumed = subprocess.run([sys.executable, str(script), str(path), str(state), "resume"], capture_output=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    with analytics.open_run(path) as run:
        counts = run.sql("SELECT epoch, count(*) AS n, count(DISTINCT sample_id) AS ids FROM records "
                         "GROUP BY epoch ORDER BY epoch")
        owners = run.sql("SELECT epoch, attempt, min(step) AS first, max(step) AS last, count(*) AS n FROM records "
                         "GROUP BY epoch, attempt ORDER BY epoch, attempt")
        lost = run.sql("SELECT count(*) AS n FROM raw_records WHERE attempt = 0 AND epoch = 2")["n"][0]
    assert counts.rows() == [(epoch, SAMPLES, SAMPLES) for epoch in range(EPOCHS)]
    # epoch 1: three batches of the first attempt (steps 5-7), two of the resumed one (steps 8-9)
    assert owners.rows() == [(0, 0, 0, 4, 40), (1, 0, 5, 7, 24), (1, 1, 8, 9, 16), (2, 1, 10, 14, 40)]
    assert lost == BATCH  # logged after the checkpoint: on disk, never counted


def log_epochs(path, epochs, split="train", seed=0, **options) -> None:
    with Recorder(path, num_classes=3, split=split, **options) as rec:
        for epoch in epochs:
            logits = torch.randn(SAMPLES, 3, generator=torch.Generator().manual_seed(seed + epoch))
            rec.log(torch.arange(SAMPLES), logits, torch.arange(SAMPLES) % 3, epoch=epoch)


def test_an_eval_only_attempt_leaves_the_train_scores_unchanged(tmp_path) -> None:
    log_epochs(tmp_path / "run", range(3))
    with analytics.open_run(tmp_path / "run") as run:
        before = run.scores()
    log_epochs(tmp_path / "run", [2], split="eval", seed=7)  # scoring a saved checkpoint afterwards
    with analytics.open_run(tmp_path / "run") as run:
        assert_frame_equal(run.scores(), before)
        assert run.scores(split="eval").height == SAMPLES


def test_a_fresh_run_logging_a_later_epoch_first_keeps_its_earlier_epochs(tmp_path) -> None:
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        for epoch in (1, 0):  # out of order within one attempt
            rec.log(torch.arange(SAMPLES), torch.randn(SAMPLES, 3), torch.arange(SAMPLES) % 3, epoch=epoch)
    with analytics.open_run(tmp_path / "run") as run:
        assert run.epochs() == [0, 1]


def test_an_explicit_start_supersedes_from_that_epoch_and_step(tmp_path) -> None:
    log_epochs(tmp_path / "run", range(3))  # steps 0, 1, 2 (one batch per epoch)
    with Recorder(tmp_path / "run", num_classes=3, start_epoch=1, start_step=2) as rec:
        rec.log(torch.arange(SAMPLES), torch.randn(SAMPLES, 3), torch.arange(SAMPLES) % 3, epoch=2, step=2)
    with analytics.open_run(tmp_path / "run") as run:
        owners = run.sql("SELECT epoch, max(attempt) AS attempt FROM records GROUP BY epoch ORDER BY epoch")
    assert owners.rows() == [(0, 0), (1, 0), (2, 1)]


def test_bad_resume_arguments_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"resume: expected a Recorder\.state_dict"):
        Recorder(tmp_path / "run", num_classes=3, resume={"splits": "train"})
    with pytest.raises(ValueError, match="start_step: expected it with a start_epoch"):
        Recorder(tmp_path / "run", num_classes=3, start_step=4)
    with pytest.raises(ValueError, match="resume, start_epoch: expected one of them"):
        Recorder(tmp_path / "run", num_classes=3, start_epoch=1, resume={"splits": {}, "step": 0})
    with Recorder(tmp_path / "run", num_classes=3) as rec:
        rec.log(torch.arange(4), torch.randn(4, 3), torch.arange(4) % 3, epoch=0)
        with pytest.raises(ValueError, match="resume_from\\(\\) must come before"):
            rec.resume_from({"splits": {}, "step": 0})


def test_attempt_files_of_version_2_read_as_before(tmp_path) -> None:
    """Attempt files without ``starts``: one start epoch for every split."""
    log_epochs(tmp_path / "run", range(4))
    log_epochs(tmp_path / "run", range(2, 5), seed=9)
    for attempt in (tmp_path / "run" / "_attempts").glob("*.json"):
        payload = json.loads(attempt.read_text())
        attempt.write_text(json.dumps({k: payload[k] for k in ("attempt", "start_epoch", "world_size", "started_at")}))
    with analytics.open_run(tmp_path / "run") as run:
        owners = run.sql("SELECT epoch, min(attempt) AS a, max(attempt) AS b FROM records GROUP BY epoch "
                         "ORDER BY epoch")
    assert owners.rows() == [(0, 0, 0), (1, 0, 0), (2, 1, 1), (3, 1, 1), (4, 1, 1)]


def test_a_state_of_another_run_is_refused_and_the_run_is_unchanged(tmp_path) -> None:
    """A state names its run by the id written into run.json at creation (not by its path: a copied or
    moved run keeps its id); another run's state is refused before anything is written."""
    log_epochs(tmp_path / "a", range(3))
    with Recorder(tmp_path / "a", num_classes=3) as rec:
        state_of_a = rec.state_dict()
    log_epochs(tmp_path / "b", range(3))
    before = {p: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    with analytics.open_run(tmp_path / "b") as run:
        counted = run.sql("SELECT count(*) AS n FROM records")["n"][0]
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())["run_id"]
    assert state_of_a["run_id"] == run_a != json.loads((tmp_path / "b" / "run.json").read_text())["run_id"]
    with pytest.raises(ValueError, match=f"resume: the state is of run {run_a} at .*resume a run from its own"):
        Recorder(tmp_path / "b", num_classes=3, resume=state_of_a)
    with pytest.raises(ValueError, match="there is no run at"):
        Recorder(tmp_path / "nothing", num_classes=3, resume=state_of_a)
    assert not (tmp_path / "nothing").exists()
    with Recorder(tmp_path / "b", num_classes=3) as rec, pytest.raises(ValueError, match="resume: the state is of"):
        rec.resume_from(state_of_a)
    after = {p: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert {p: v for p, v in after.items() if "_attempts" not in p.parts and "_locks" not in p.parts} == \
        {p: v for p, v in before.items() if "_attempts" not in p.parts and "_locks" not in p.parts}
    with analytics.open_run(tmp_path / "b") as run:
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == counted
    moved = tmp_path / "a-moved"
    (tmp_path / "a").rename(moved)  # the id travels with the run: its own state still resumes it
    with Recorder(moved, num_classes=3, resume=state_of_a) as rec:
        assert rec.state_dict()["run_id"] == run_a
