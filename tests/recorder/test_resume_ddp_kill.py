"""Resume without double counting, two DDP ranks writing one run, and a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp

import tdlog.analytics as analytics
from tdlog.recorder import Recorder

REPO = Path(__file__).resolve().parents[2]


def log_epochs(path: Path, epochs: range, offset: float, **options) -> None:
    """Every sample gets margin-shifting logits ``offset + epoch`` so each row says where it came from."""
    with Recorder(path, num_classes=2, **options) as rec:
        for epoch in epochs:
            logits = torch.zeros(6, 2)
            logits[:, 0] = offset + epoch
            rec.log(torch.arange(6), logits, torch.zeros(6, dtype=torch.long), epoch=epoch)


def test_resume_replaces_relogged_epochs(tmp_path) -> None:
    path = tmp_path / "run"
    log_epochs(path, range(0, 5), offset=0.0)  # attempt 0 reached epoch 4, then crashed
    log_epochs(path, range(3, 6), offset=100.0)  # attempt 1 restarts from the epoch-3 checkpoint
    assert sorted(p.name for p in (path / "_attempts").iterdir()) == ["attempt-0.json", "attempt-1.json"]
    with analytics.open_run(path) as run:
        per_epoch = run.sql("SELECT epoch, count(*) AS n, min(margin) AS lo, max(margin) AS hi, "
                            "min(attempt) AS a FROM records GROUP BY epoch ORDER BY epoch")
        raw_rows = run.sql("SELECT count(*) AS n FROM raw_records")["n"][0]
    assert per_epoch["n"].to_list() == [6] * 6  # no epoch counted twice
    assert per_epoch["a"].to_list() == [0, 0, 0, 1, 1, 1]
    assert per_epoch["lo"].to_list() == [0.0, 1.0, 2.0, 103.0, 104.0, 105.0]
    assert raw_rows == 6 * 8  # the superseded rows are still on disk, just not counted


def test_explicit_start_epoch_and_idle_attempt(tmp_path) -> None:
    path = tmp_path / "run"
    log_epochs(path, range(0, 4), offset=0.0)
    Recorder(path, num_classes=2).close()  # restarted and died before logging: no start epoch, ignored
    log_epochs(path, range(2, 3), offset=50.0, start_epoch=2)
    with analytics.open_run(path) as run:
        frame = run.sql("SELECT epoch, max(margin) AS m FROM records GROUP BY epoch ORDER BY epoch")
    assert frame["m"].to_list() == [0.0, 1.0, 52.0]  # epoch 3 of attempt 0 is superseded by attempt 2


def _ddp_worker(rank: int, path: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        with Recorder(path, num_classes=3, coalesce_rows=8) as rec:
            rec.register_samples(torch.arange(40), torch.arange(40) % 3)  # every rank calls it; rank 0 writes
            for epoch in range(2):
                ids = torch.arange(rank, 40, 2)  # DistributedSampler-style shard
                for chunk in ids.split(8):
                    rec.log(chunk, torch.randn(len(chunk), 3), chunk % 3, epoch=epoch)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_two_ddp_ranks_write_one_run(tmp_path) -> None:
    path = tmp_path / "run"
    port = 29500 + os.getpid() % 1000
    mp.start_processes(_ddp_worker, args=(str(path), port), nprocs=2, join=True, start_method="spawn")
    names = sorted(p.name for p in (path / "records").rglob("*.parquet"))
    assert {n.split("-")[2] for n in names} == {"r0", "r1"}
    assert len(names) == len(set(names))
    assert list((path / "_attempts").iterdir()) == [path / "_attempts" / "attempt-0.json"]
    with analytics.open_run(path) as run:
        counts = run.sql("SELECT epoch, rank, count(*) AS n, count(DISTINCT sample_id) AS d FROM records "
                         "GROUP BY ALL ORDER BY ALL")
        samples = run.sql("SELECT count(*) AS n FROM samples")["n"][0]
        scores = run.scores()
    assert counts["n"].to_list() == [20, 20, 20, 20] and counts["d"].to_list() == [20, 20, 20, 20]
    assert samples == 40
    assert scores["sample_id"].to_list() == list(range(40)) and set(scores["epochs"].to_list()) == {2}


KILLED_WRITER = textwrap.dedent(
    """
    import sys, torch
    from tdlog.recorder import Recorder
    rec = Recorder(sys.argv[1], num_classes=10, flush_rows=512, coalesce_rows=256, logits="full")
    print("ready", flush=True)
    epoch = 0
    while True:
        for _ in range(8):
            rec.log(torch.arange(256), torch.randn(256, 10), torch.randint(0, 10, (256,)), epoch=epoch)
        epoch += 1
    """
)


def test_sigkill_leaves_only_complete_readable_files(tmp_path) -> None:
    path = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, cwd=REPO)
    assert process.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 60
    while len(list((path / "records").rglob("*.parquet"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    files = list((path / "records").rglob("*.parquet"))
    assert len(files) >= 6
    for file in files:  # every committed file is whole: footer, row count and values read back
        table = pq.read_table(file)
        assert table.num_rows == 512 and not np.isnan(table["loss"].to_numpy()).any()
    # a restart cleans the dead attempt's staging area and goes on
    with Recorder(path, num_classes=10, logits="full") as rec:
        assert rec.attempt == 1
        assert not [p for p in (path / "_staging").iterdir() if "-a0-" in p.name]
    with analytics.open_run(path) as run:
        assert run.sql("SELECT count(*) AS n FROM records")["n"][0] == 512 * len(files)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_match_cpu_batches(tmp_path) -> None:
    logits = torch.randn(64, 7)
    targets = torch.randint(0, 7, (64,))
    for device in ("cpu", "cuda"):
        with Recorder(tmp_path / device, num_classes=7, logits="full") as rec:
            rec.log(torch.arange(64, device=device), logits.to(device), targets.to(device), epoch=0)
    cpu, cuda = (pq.read_table(next((tmp_path / d).rglob("records/**/*.parquet"))) for d in ("cpu", "cuda"))
    for column in ("margin", "prob", "pred", "other_class", "target"):
        np.testing.assert_allclose(cpu[column].to_numpy(), cuda[column].to_numpy(), rtol=1e-5, atol=1e-5)
    with Recorder(tmp_path / "bad", num_classes=7) as rec:
        rec.log(torch.arange(2, device="cuda"), torch.randn(2, 7, device="cuda"),
                torch.tensor([0, 9], device="cuda"), epoch=0)
        with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 7\), got 9"):
            rec.flush()
