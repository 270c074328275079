"""One writer per run and rank: a second writer is refused with the holder named and never harms the first;
a dead writer's lock is free; staging files are cleared only for attempts whose writer is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import tdlog.analytics as analytics
from tdlog.recorder import Recorder
from tdlog.recorder.manifest import clear_stale_staging


def log_epoch(rec: Recorder, epoch: int, samples: int = 20) -> None:
    rec.log(torch.arange(samples), torch.randn(samples, 3), torch.arange(samples) % 3, epoch=epoch)


def test_a_second_writer_in_another_process_is_refused_and_the_first_keeps_every_row(tmp_path) -> None:
    path = tmp_path / "run"
    with Recorder(path, num_classes=3) as first:
        log_epoch(first, 0)
        first.flush()
        code = f"from tdlog.recorder import Recorder\nRecorder({str(path)!r}, num_classes=3)\n"
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        message = second.stderr.strip().splitlines()[-1]
        assert f"process {os.getpid()} on {socket.gethostname()}, attempt 0, since 20" in message
        log_epoch(first, 1)  # the first writer goes on as if nothing happened
    with analytics.open_run(path) as run:
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 40
        assert [a["attempt"] for a in run.info()["attempts"]] == [0]  # the refused writer started no attempt


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path) -> None:
    path = tmp_path / "run"
    first = Recorder(path, num_classes=3)
    with pytest.raises(RuntimeError, match=r"rank 0 of the run at .* is being written by another Recorder"):
        Recorder(path, num_classes=3)
    log_epoch(first, 0)
    first.close()
    with Recorder(path, num_classes=3) as second:  # free once the first is closed: a new attempt
        assert second.attempt == 1


def test_a_killed_writers_lock_is_free_and_its_staging_files_are_cleared(tmp_path) -> None:
    path = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, signal, torch
        from tdlog.recorder import Recorder
        rec = Recorder({str(path)!r}, num_classes=3)
        rec.log(torch.arange(5), torch.randn(5, 3), torch.arange(5) % 3, epoch=0)
        rec.flush()
        (rec.path / "_staging").mkdir(exist_ok=True)
        (rec.path / "_staging" / "records__split=train__epoch=1__part-a0-r0-s9.parquet").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert (path / "_staging" / "records__split=train__epoch=1__part-a0-r0-s9.parquet").exists()
    with Recorder(path, num_classes=3) as rec:  # the dead process's lock is free
        assert rec.attempt == 1
        assert list((path / "_staging").iterdir()) == []


def test_staging_files_of_a_live_writer_are_kept(tmp_path) -> None:
    staging = tmp_path / "_staging"
    staging.mkdir()
    names = ["records__split=train__epoch=0__part-a0-r1-s3.parquet",  # attempt 0, rank 1: still writing
             "records__split=train__epoch=0__part-a0-r2-s3.parquet",  # attempt 0, rank 2: gone
             "records__split=train__epoch=0__part-a2-r0-s0.parquet"]  # the current attempt's own
    for name in names:
        (staging / name).write_bytes(b"x")
    holders = {1: 0, 2: None, 0: 2}
    assert clear_stale_staging(tmp_path, 2, holders.get) == 1
    assert sorted(p.name for p in staging.iterdir()) == [names[0], names[2]]


def test_a_writer_whose_lock_file_was_deleted_is_fenced_by_the_later_attempt(tmp_path) -> None:
    """The lock file is not trusted to exist: with it deleted a second writer starts, as a later attempt
    whose number was claimed by a create-if-absent link; the first stops with an error at its next commit
    instead of writing rows that no longer count, and what it committed before stays."""
    from tdlog.recorder import WriterSupersededError

    path = tmp_path / "run"
    first = Recorder(path, num_classes=3)
    log_epoch(first, 0)
    first.flush()
    (path / "_locks" / "writer-r0.lock").unlink()
    with Recorder(path, num_classes=3) as second:
        assert second.attempt == 1
        log_epoch(second, 1)
        log_epoch(first, 1)
        with pytest.raises(WriterSupersededError, match=r"later attempt \(1\) than this writer's \(0\)"):
            first.flush()
    with pytest.raises(WriterSupersededError):
        first.close()
    with analytics.open_run(path) as run:
        counted = run.sql("SELECT epoch, attempt, count(*) AS n FROM records GROUP BY ALL ORDER BY ALL").rows()
        assert counted == [(0, 0, 20), (1, 1, 20)]  # nothing of the first's epoch 1 was committed
        assert run.sql("SELECT count(*) AS n FROM raw_records")["n"][0] == 40


def test_attempt_numbers_are_claimed_once_even_without_the_run_lock(tmp_path) -> None:
    from tdlog.recorder.manifest import start_attempt

    path = tmp_path / "run"
    path.mkdir()
    numbers = [start_attempt(path, world_size=1) for _ in range(3)]
    (path / ".lock").unlink()  # a deleted .lock: the link still refuses a taken number
    numbers.append(start_attempt(path, world_size=1))
    assert numbers == [0, 1, 2, 3]
    (path / "_attempts" / "attempt-4.json").write_text("{}")  # taken meanwhile by someone else
    assert start_attempt(path, world_size=1, claim=lambda candidate: 4) == 5
