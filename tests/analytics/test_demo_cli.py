"""`tdlog demo` end to end on the bundled digits, and its error path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import analytics
from analytics.cli import main
from analytics.demo import inject_uniform_noise


def test_uniform_noise_flips_exactly_the_rate_to_other_classes() -> None:
    labels = np.arange(1000) % 10
    noisy = inject_uniform_noise(labels, 0.2, seed=1)
    assert int((noisy != labels).sum()) == 200
    np.testing.assert_array_equal(noisy, inject_uniform_noise(labels, 0.2, seed=1))


def test_demo_records_a_run_whose_lowest_aum_samples_are_mislabeled(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "12", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "10 lowest-AUM samples" in printed
    precision = float(printed.strip().splitlines()[-1].split(":")[-1])
    assert precision > 0.8  # 20 % noise: chance would give 0.2
    with analytics.open_run(tmp_path / "demo" / "run") as run:
        assert run.epochs() == list(range(12))
        counts = run.sql("SELECT count(*) AS rows, count(DISTINCT sample_id) AS ids FROM records")
        noisy = run.sql("SELECT avg(CASE WHEN label <> true_label THEN 1.0 ELSE 0.0 END) AS rate FROM samples")
    assert counts["rows"][0] == 1797 * 12 and counts["ids"][0] == 1797
    assert abs(noisy["rate"][0] - 0.2) < 1e-3


def test_cli_errors_are_one_line_without_traceback(tmp_path) -> None:
    (tmp_path / "demo" / "run").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "analytics.cli", "demo", "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("tdlog demo: error: --out:") and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "analytics.cli", "demo", "--noise-rate", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "--noise-rate: expected a value in [0, 0.9), got 2.0" in result.stderr
