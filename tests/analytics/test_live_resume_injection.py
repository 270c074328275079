"""Reading a run while another process writes it, resumed and DDP runs, and parameters that stay data."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.recorder import Recorder

WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from tdlog.recorder import Recorder
    with Recorder(sys.argv[1], num_classes=3) as rec:
        for epoch in range(6):
            for start in range(0, 90, 30):
                ids = torch.arange(start, start + 30)
                rec.log(ids, torch.randn(30, 3), ids % 3, epoch=epoch)
            rec.flush()
            time.sleep(0.4)
    """
)


def test_a_run_is_read_while_another_process_writes_it(tmp_path) -> None:
    path = tmp_path / "live"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60
        while not (path / "run.json").exists():
            assert time.monotonic() < deadline, "the writer never created the run"
            time.sleep(0.05)
        seen = []
        with analytics.open_run(path) as run:  # opened once; later epochs appear without reopening
            while writer.poll() is None and time.monotonic() < deadline:
                counts = run.sql("SELECT epoch, count(*) AS n FROM records GROUP BY epoch ORDER BY epoch")
                assert set(counts["n"].to_list()) <= {90}  # committed epochs are whole, never half-written
                seen.append(counts.height)
                time.sleep(0.1)
            assert writer.wait(timeout=60) == 0
            final = run.aum()
        assert seen == sorted(seen) and len(set(seen)) >= 3  # the reader watched the run grow
        assert final.height == 90 and set(final["epochs"].to_list()) == {6}
    finally:
        writer.kill()


def test_scores_of_a_resumed_run_count_each_epoch_once(tmp_path) -> None:
    path = tmp_path / "run"
    margins = {}
    for attempt, epochs in enumerate((range(0, 4), range(2, 5))):
        with Recorder(path, num_classes=2) as rec:
            for epoch in epochs:
                logits = torch.zeros(4, 2)
                logits[:, 0] = 10 * attempt + epoch  # target 0: margin = 10 * attempt + epoch
                rec.log(torch.arange(4), logits, torch.zeros(4, dtype=torch.long), epoch=epoch)
                margins[epoch] = 10 * attempt + epoch  # attempt 1 supersedes epochs 2 and 3
    with analytics.open_run(path) as run:
        aum = run.aum()
        info = run.info()
    assert aum["aum"].to_list() == [pytest.approx(np.mean(list(margins.values())))] * 4
    assert aum["epochs"].to_list() == [5] * 4
    assert [a["start_epoch"] for a in info["attempts"]] == [0, 2]


def test_parameters_stay_data(small_run) -> None:
    path, _ = small_run
    with analytics.open_run(path) as run:
        total = run.sql("SELECT count(*) AS n FROM records")["n"][0]
        attack = "train' OR '1'='1"
        assert run.sql("SELECT count(*) AS n FROM records WHERE split = $s", {"s": attack})["n"][0] == 0
        assert run.aum(split="x'; DROP VIEW records; --").height == 0
        assert run.aul(split=attack).height == 0
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == total  # the view is still there
        assert run.sql("SELECT $v AS v", {"v": "'); SELECT 1; --"})["v"][0] == "'); SELECT 1; --"


def test_an_open_run_sees_a_restart(tmp_path) -> None:
    """The records view is remade when an attempt starts: three attempts, read through one open Run."""
    path = tmp_path / "run"
    with Recorder(path, num_classes=2) as rec:
        rec.log(torch.arange(3), torch.tensor([[1.0, 0.0]] * 3), torch.zeros(3, dtype=torch.long), epoch=0)
    with analytics.open_run(path) as run:
        assert run.aum()["aum"].to_list() == [1.0] * 3
        for attempt, epochs in enumerate((range(0, 6), range(2, 4), range(3, 5)), start=1):
            with Recorder(path, num_classes=2) as rec:
                for epoch in epochs:
                    logits = torch.tensor([[10.0 * attempt + epoch, 0.0]] * 3)  # margin = 10 * attempt + epoch
                    rec.log(torch.arange(3), logits, torch.zeros(3, dtype=torch.long), epoch=epoch)
        # attempt 1: epochs 0-1; attempt 2: epoch 2; attempt 3: epochs 3-4; nothing counts from epoch 5 on
        expected = {0: 10, 1: 11, 2: 22, 3: 33, 4: 34}
        assert run.aum()["aum"].to_list() == [pytest.approx(np.mean(list(expected.values())))] * 3
        assert run.epochs() == [0, 1, 2, 3, 4]
