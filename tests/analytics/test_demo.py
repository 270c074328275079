"""`tdlog demo` end to end on the bundled digits (default settings), `tdlog report` (interactive and
`--static`), noise models, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape

import numpy as np
import polars as pl
import pytest

import tdlog.analytics as analytics
from tdlog.analytics.evaluate import evaluate_scores
from tdlog.analytics.scores import noise_rates
from tdlog.cli import main
from tdlog.demo import DemoConfig, run_demo
from tdlog.demo.digits import inject_noise
from tdlog.demo.pipeline import combined_mapd

PLOTS = ("epoch window", "AUM histogram", "AUL histogram", "data map", "forgetting histogram",
         "MAP-D loss trajectories", "MAP-D confusion matrix", "gallery")


def embedded_images(page: str) -> list[str]:
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo: default settings (20 % uniform noise, 40 epochs, seed 0)."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def printed_table(text: str) -> dict[str, list[float]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("┆")]
        if len(cells) == 7 and cells[0] and cells[0] != "method":
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_uniform_and_pairflip_noise() -> None:
    labels = np.arange(1000) % 10
    uniform = inject_noise(labels, 0.2, model="uniform", seed=1)
    flipped = uniform != labels
    assert int(flipped.sum()) == 200
    assert len(np.unique((uniform[flipped] - labels[flipped]) % 10)) == 9  # every other class drawn
    np.testing.assert_array_equal(uniform, inject_noise(labels, 0.2, model="uniform", seed=1))
    pairflip = inject_noise(labels, 0.3, model="pairflip", seed=1)
    moved = pairflip != labels
    assert int(moved.sum()) == 300 and ((pairflip[moved] - labels[moved]) % 10 == 1).all()
    with pytest.raises(ValueError, match="noise_model: expected one of"):
        inject_noise(labels, 0.2, model="symmetric")
    with pytest.raises(ValueError, match=r"noise_rate: expected a value in \[0, 1\), got 1.5"):
        inject_noise(labels, 1.5)


def combined_detection(demo) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The demo's two runs scored again: windows, evaluation, combined table."""
    with analytics.open_runs([demo / "run", demo / "run-pass1"]) as runs:
        windows = runs.epoch_windows()
        table = runs.scores().join(combined_mapd(runs), on="sample_id", how="left", maintain_order="left")
    return windows, evaluate_scores(table), table


def test_two_passes_score_every_sample_with_f1_08_and_the_noise_rate(demo) -> None:
    windows, detection, table = combined_detection(demo)
    f1 = dict(zip(detection["method"], detection["f1"], strict=True))
    assert f1["aum_threshold"] >= 0.8 and f1["aul_gmm"] >= 0.8
    assert set(f1) == {"aum_threshold", "aul_gmm", "data_map_confidence", "forgetting", "el2n", "mapd"}
    truth = table.select((pl.col("label") != pl.col("true_label")).mean()).item()
    assert table.height == 1437 and truth == pytest.approx(0.2, abs=1e-3)  # every training sample scored
    assert table["runs"].to_list().count(2) == 1437 - 2 * (1437 // 11)  # twice unless a threshold sample once
    assert noise_rates(table)["threshold"] == pytest.approx(truth, abs=0.05)
    assert windows["chosen_by"].to_list() == ["threshold samples"] * 2
    assert all(1 <= end < 40 for end in windows["epoch_to"])  # memorisation starts before the last epoch


def test_report_holds_every_method_cleanlab_the_windows_and_retraining(demo) -> None:
    windows, expected, table = combined_detection(demo)
    html = unescape((demo / "report.html").read_text())  # the interactive page holds its sections as JSON text
    for window in windows.iter_rows(named=True):
        assert f"<tr><td>{window['run']}</td><td>{window['epoch_from']}</td><td>{window['epoch_to']}</td>" in html
    for name, value in noise_rates(table).items():
        assert f"<td>{value:.3f}</td>" in html, name
    for method in (*expected["method"], "cleanlab"):
        assert f"<td>{method}</td>" in html
    for row in expected.iter_rows():
        assert "<td>" + "</td><td>".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) in html
    accuracies = dict(re.findall(r"<tr><td>([a-z]+)[^<]*</td><td>\d+</td><td>([0-9.]+)</td></tr>", html))
    assert set(accuracies) == {"standard", "cleaned", "reweighted", "oracle"}
    standard = float(accuracies["standard"])
    assert float(accuracies["cleaned"]) > standard and float(accuracies["reweighted"]) > standard
    assert float(accuracies["oracle"]) > standard


def test_the_demo_report_is_interactive_and_the_static_one_embeds_every_plot(demo, tmp_path) -> None:
    page = (demo / "report.html").read_text()
    for name in ("data_map", "aum_histogram", "aul_histogram", "forgetting", "epoch_window", "mapd_trajectories",
                 "mapd_confusion", "selection_table", "suspicious"):
        assert f'"name":"{name}"' in page, name
    # BokehJS inlined: no script or stylesheet from a network (the browser tests watch the requests too)
    assert "<script" in page and not re.search(r"<(script|link)[^>]+(src|href)=", page)
    static_args = ["--static", "--out", str(tmp_path / "static.html"), "--gallery", "8"]
    assert main(["report", str(demo / "run"), *static_args]) == 0
    static = (tmp_path / "static.html").read_text()
    assert embedded_images(static) == list(PLOTS)
    assert "http://" not in static and "https://" not in static and "<script" not in static
    assert static.count("<tr><td>") - static.count("<tr><td>random_") > 8  # the 8-row listing and the tables


def test_mapd_on_the_digits_run_is_far_above_chance(demo) -> None:
    with analytics.open_run(demo / "run") as run:
        confusion = run.mapd_accuracy()
    counts = confusion.select(pl.exclude("probe", "accuracy")).to_numpy()
    overall = np.trace(counts) / counts.sum()
    assert confusion["probe"].to_list() == ["clean", "corrupted", "random_inputs", "random_labels"]
    assert overall > 0.5  # chance: 0.25 with four suites
    by_suite = dict(zip(confusion["probe"], confusion["accuracy"], strict=True))
    assert by_suite["random_labels"] >= 0.8 and by_suite["random_inputs"] >= 0.8


def test_same_seed_same_numbers(tmp_path, capsys) -> None:
    config = DemoConfig(epochs=3, probes_per_suite=20, cv_folds=2, seed=5)
    first = run_demo(tmp_path / "a", config, retrain=False)
    second = run_demo(tmp_path / "b", config, retrain=False)
    assert first.detection.equals(second.detection)
    printed = printed_table(capsys.readouterr().out)
    for method, *values in first.detection.iter_rows():
        assert printed[method][:3] == pytest.approx(values[:3], abs=5.01e-4)  # printed with 3 decimals (ties)


def test_library_never_imports_cleanlab(demo) -> None:
    code = ("import sys, tdlog.analytics as analytics, tdlog.cli, tdlog.analytics.report, tdlog.recorder\n"
            f"run = analytics.open_run({str(demo / 'run')!r})\nrun.scores()\n"
            "assert 'cleanlab' not in sys.modules, 'cleanlab imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cli_errors_are_one_line_without_traceback(tmp_path) -> None:
    (tmp_path / "demo" / "run").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "tdlog", "demo", "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("tdlog demo: error: --out:") and "Traceback" not in result.stderr
    for options, message in ((["--noise-rate", "2"], "--noise-rate: expected a value in [0, 0.9), got 2.0"),
                             (["--cv-folds", "1"], "--cv-folds: expected at least 2, got 1"),
                             (["--epochs", "0"], "--epochs: expected a positive number, got 0")):
        result = subprocess.run([sys.executable, "-m", "tdlog", "demo", *options],
                                capture_output=True, text=True)
        assert result.returncode == 1 and message in result.stderr


def test_report_of_a_run_without_threshold_samples_probes_or_images(small_run, tmp_path) -> None:
    path, _ = small_run
    assert main(["report", str(path), "--static"]) == 0
    page = (path / "report.html").read_text()
    assert embedded_images(page) == ["AUM histogram", "AUL histogram", "data map", "forgetting histogram"]
    assert "No images registered" in page and "MAP-D" not in page
    assert main(["report", str(path)]) == 0  # interactive: no epoch window, no MAP-D, no thumbnails
    page = (path / "report.html").read_text()
    assert '"name":"data_map"' in page and '"name":"epoch_window"' not in page and "mapd" not in page
    assert "thumbnail" not in page
    assert main(["report", str(tmp_path / "missing")]) == 1
