"""With CPU batches the writer thread runs no torch code: one torch op in a second live thread made every
training step of the main thread twice as slow once ``torch.set_num_threads`` had been called
(recorder/host_stats.py)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow.parquet as pq
import torch

from tdlog.recorder import Recorder


def _torch_calls_in_writer_threads(action) -> list[str]:
    """Names of torch functions (Python or C) called by ``tdlog-writer`` threads while ``action`` runs."""
    seen: list[str] = []

    def profile(frame, event, arg) -> None:
        if not threading.current_thread().name.startswith("tdlog-writer"):
            return
        if event == "call" and "/torch/" in frame.f_code.co_filename:
            seen.append(frame.f_code.co_qualname)
        elif event == "c_call":
            owner = getattr(arg, "__objclass__", None) or getattr(arg, "__self__", None)
            origin = f"{getattr(arg, '__module__', '')} {getattr(owner, '__module__', '')} {type(owner).__module__}"
            if "torch" in origin:
                seen.append(getattr(arg, "__qualname__", repr(arg)))

    threading.setprofile(profile)
    try:
        action()
    finally:
        threading.setprofile(None)
    return seen


def test_writer_thread_runs_no_torch_code(tmp_path) -> None:
    def record() -> None:
        with Recorder(tmp_path / "run", num_classes=4, logits="topk", topk=2, coalesce_rows=8) as rec:
            for epoch in range(2):
                for _ in range(3):
                    rec.log(torch.arange(8), torch.randn(8, 4), torch.randint(0, 4, (8,)), epoch=epoch)

    assert _torch_calls_in_writer_threads(record) == []
    rows = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "run" / "records").rglob("*.parquet"))
    assert rows == 2 * 3 * 8


def test_the_check_sees_torch_calls_in_a_writer_thread() -> None:
    def torch_in_a_writer_thread() -> None:
        thread = threading.Thread(target=lambda: torch.exp(torch.from_numpy(np.ones(3))), name="tdlog-writer-x")
        thread.start()
        thread.join()

    assert _torch_calls_in_writer_threads(torch_in_a_writer_thread)
