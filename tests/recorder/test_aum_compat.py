"""aum drop-in parity: the same inputs through the real `aum` package and through recorder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import aum
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.recorder import AUMCalculator


def batches(num_samples: int, num_classes: int, epochs: int, string_ids: bool, ties: bool):
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    for _ in range(epochs):
        order = torch.randperm(num_samples, generator=generator)
        for start in range(0, num_samples, 8):
            index = order[start : start + 8]
            logits = torch.randn(len(index), num_classes, generator=generator)
            if ties:  # coarse logits make equal margins (sorting ties) and equal logits (margin 0) common
                logits = logits.round()
            ids = [f"s{i}" for i in index.tolist()] if string_ids else index.tolist()
            yield logits, labels[index], ids


@pytest.mark.parametrize(("string_ids", "ties", "compressed"), [(False, False, True), (True, False, False),
                                                                 (False, True, False), (True, True, True)])
def test_same_records_and_byte_identical_csv(tmp_path, string_ids, ties, compressed) -> None:
    reference = aum.AUMCalculator(str(tmp_path / "ref"), compressed=compressed)
    ours = AUMCalculator(str(tmp_path / "ours"), compressed=compressed)
    for logits, targets, ids in batches(30, 5, 4, string_ids, ties):
        expected = reference.update(logits, targets, ids)
        got = ours.update(logits, targets, ids)
        assert list(got) == list(expected)
        assert [asdict(r) for r in got.values()] == [asdict(r) for r in expected.values()]
    reference.finalize()
    ours.finalize()
    names = ["aum_values.csv"] + ([] if compressed else ["full_aum_records.csv"])
    for name in names:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_writes_a_run_the_engine_reads(tmp_path) -> None:
    reference = aum.AUMCalculator(str(tmp_path / "ref"))
    ours = AUMCalculator(str(tmp_path / "ours"))
    for logits, targets, ids in batches(24, 4, 3, False, False):
        reference.update(logits, targets, ids)
        ours.update(logits, targets, ids)
    ours.finalize()
    with analytics.open_run(tmp_path / "ours" / "tdlog") as run:
        assert run.epochs() == [0, 1, 2]
        frame = run.aum()
    expected = {i: reference.sums[i] / reference.counts[i] for i in reference.counts}
    got = dict(zip(frame["sample_id"].to_list(), frame["aum"].to_list(), strict=True))
    assert got.keys() == expected.keys()
    for sample_id, value in expected.items():  # one observation per epoch: same mean, float32 storage
        assert got[sample_id] == pytest.approx(value, rel=1e-6, abs=1e-6)


def test_the_aum_packages_own_test_suite_passes_against_the_drop_in(tmp_path) -> None:
    """asappresearch/aum's test/test_aum.py, unchanged, with ``aum`` resolving to tdlog's drop-in."""
    upstream = Path(__file__).parent / "aum_upstream" / "test_aum.py"
    shim = tmp_path / "shim"
    (shim / "aum").mkdir(parents=True)
    (shim / "aum" / "__init__.py").write_text("from tdlog.recorder import AUMCalculator, AUMRecord  # noqa: F401\n")
    shutil.copy(upstream, tmp_path / "test_aum.py")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                             str(tmp_path), str(tmp_path / "test_aum.py")], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(shim)}, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout


def test_finalize_needs_a_folder_from_somewhere(tmp_path) -> None:
    calculator = AUMCalculator(save_dir=None)
    calculator.update(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), [0])
    with pytest.raises(ValueError, match="save_dir: expected a folder"):
        calculator.finalize()
    calculator.finalize(save_dir=str(tmp_path / "late"))
    assert (tmp_path / "late" / "aum_values.csv").read_text() == "sample_id,aum\n0,-1.0\n"
