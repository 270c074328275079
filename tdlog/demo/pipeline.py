"""``tdlog demo``: everything tdlog is for, on scikit-learn's handwritten digits (no download), on CPU.

1. Inject label noise into the training split (``uniform`` or ``pairflip``), keeping the true labels.
2. Add threshold samples (AUM) and MAP-D probe suites, train a small CNN, record every step; twice by
   default, with disjoint threshold samples (two passes), so that every training sample is scored.
3. Score both runs together (``open_runs``: each on the epoch window its threshold samples choose) and
   compare every method with the injected truth, next to cleanlab's ``find_label_issues`` on
   out-of-sample probabilities from cross-validation (cleanlab is a demo-only dependency, imported here
   and nowhere else in the library).
4. Retrain standard / cleaned / reweighted / oracle and measure test accuracy on the clean test split.
5. Write ``report.html``.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import TensorDataset

from tdlog.analytics import Runs, open_run, open_runs
from tdlog.analytics.evaluate import COLUMNS, detection_metrics, evaluate_scores
from tdlog.analytics.report import html_table, write_report
from tdlog.analytics.scores import noise_rates
from tdlog.recorder import ProbeSuites, Recorder, threshold_samples

from .classifier import accuracy, predict_proba, train_classifier
from .digits import NUM_CLASSES, DigitsSplit, inject_noise, load_digits_split


@dataclass
class DemoConfig:
    """Settings of ``tdlog demo`` (the defaults are the README's table)."""

    noise_rate: float = 0.2
    noise_model: str = "uniform"
    epochs: int = 40
    seed: int = 0
    probes_per_suite: int = 50
    cv_folds: int = 3
    threshold_passes: int = 2
    compare_cleanlab: bool = True
    progress: bool = False


@dataclass
class DemoData:
    """The digits split with the injected noise and the exact arrays that were trained on."""

    split: DigitsSplit
    noisy: np.ndarray  # observed labels of the training split
    targets: list[np.ndarray]  # per pass: noisy labels, that pass's threshold samples moved to class C
    probes: ProbeSuites


@dataclass
class DemoResult:
    run_dirs: list[Path]  # one run per threshold pass: DIR/run, DIR/run-pass1
    report: Path
    windows: pl.DataFrame  # each run's epoch window (Runs.epoch_windows)
    detection: pl.DataFrame  # one row per method: precision, recall, f1, auroc, flagged, flagged_share
    noise_rates: pl.DataFrame  # one row per estimate: noise_rate (the true one first)
    retraining: pl.DataFrame  # one row per training: samples, test_accuracy

    @property
    def true_noise_rate(self) -> float:
        return float(self.noise_rates["noise_rate"][0])


def default_out_dir() -> Path:
    return Path("tdlog-demo") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def prepare_data(config: DemoConfig) -> DemoData:
    """Split, noise, threshold samples (one set per pass, disjoint, seeded) and probe suites built from the
    noisy train split."""
    split = load_digits_split(seed=config.seed)
    noisy = inject_noise(split.train_labels.numpy(), config.noise_rate, model=config.noise_model, seed=config.seed)
    targets = [threshold_samples(noisy, NUM_CLASSES, seed=config.seed, pass_index=index)
               for index in range(config.threshold_passes)]
    probes = ProbeSuites(TensorDataset(split.train_inputs, torch.from_numpy(noisy)), NUM_CLASSES,
                         per_suite=config.probes_per_suite, seed=config.seed)
    return DemoData(split, noisy, targets, probes)


def run_dirs(out: Path, passes: int) -> list[Path]:
    """Where each threshold pass's run goes: ``out/run``, ``out/run-pass1``, ..."""
    return [out / ("run" if index == 0 else f"run-pass{index}") for index in range(passes)]


def record_training(run_dir: Path, data: DemoData, config: DemoConfig, *, pass_index: int = 0) -> None:
    """Train the CNN (``C + 1`` outputs) on samples and probes with pass ``pass_index``'s threshold samples,
    recording every step to ``run_dir``."""
    size = len(data.noisy)
    items = [data.probes[i] for i in range(len(data.probes))]
    inputs = torch.stack([item[0] for item in items])
    targets = torch.tensor([item[1] for item in items])
    targets[:size] = torch.from_numpy(data.targets[pass_index])
    metadata = {"demo": "digits", "noise_rate": config.noise_rate, "noise_model": config.noise_model,
                "epochs": config.epochs, "seed": config.seed, "threshold_pass": pass_index}
    with Recorder(run_dir, num_classes=NUM_CLASSES, with_threshold_class=True, metadata=metadata) as rec:
        rec.register_samples(np.arange(size), data.noisy, targets=data.targets[pass_index],
                             true_label=data.split.train_labels.numpy(),
                             image=list(data.split.train_inputs.reshape(size, -1).numpy()))
        data.probes.register(rec)
        train_classifier(inputs, targets, num_outputs=NUM_CLASSES + 1, epochs=config.epochs, seed=config.seed,
                         recorder=rec, sample_ids=torch.tensor([item[2] for item in items]),
                         progress=f"training (recorded, threshold pass {pass_index})" if config.progress else None)


def cleanlab_detection(data: DemoData, config: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's ``find_label_issues`` and ``1 - label quality`` on out-of-sample probabilities from
    ``cv_folds``-fold cross-validation of the same CNN on the same noisy labels."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    inputs, noisy = data.split.train_inputs, data.noisy
    pred_probs = np.zeros((len(noisy), NUM_CLASSES))
    folds = StratifiedKFold(config.cv_folds, shuffle=True, random_state=config.seed).split(noisy, noisy)
    for fold, (fit_rows, held_rows) in enumerate(folds):
        model = train_classifier(inputs[fit_rows], torch.from_numpy(noisy[fit_rows]), num_outputs=NUM_CLASSES,
                                 epochs=config.epochs, seed=config.seed,
                                 progress=f"cleanlab fold {fold + 1}/{config.cv_folds}" if config.progress else None)
        pred_probs[held_rows] = predict_proba(model, inputs[held_rows], NUM_CLASSES).numpy()
    flagged = find_label_issues(noisy, pred_probs)
    return flagged, 1.0 - get_label_quality_scores(noisy, pred_probs)


def detection_table(dirs: list[Path], data: DemoData,
                    config: DemoConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The runs scored together (``open_runs``): each run's epoch window; every tdlog method and cleanlab
    against the truth, with the share of the scored samples each flags (``flagged_share``); the noise-rate
    estimates next to the true rate; and the combined score table."""
    with open_runs(dirs, progress=config.progress) as runs:
        windows = runs.epoch_windows()
        scores = runs.scores().join(combined_mapd(runs), on="sample_id", how="left", maintain_order="left")
    detection = evaluate_scores(scores)
    scored = np.isin(np.arange(len(data.noisy)), scores["sample_id"].to_numpy())
    truth = data.noisy != data.split.train_labels.numpy()
    try:
        if config.compare_cleanlab:
            flagged, suspicion = cleanlab_detection(data, config)
            row = pl.DataFrame([("cleanlab", *detection_metrics(truth[scored], flagged[scored], suspicion[scored]))],
                               schema=COLUMNS, orient="row")
            detection = pl.concat([detection, row])
    except ImportError:
        print("cleanlab is not installed (pip install 'tdlog[demo]'): its row is left out")
    estimates = noise_rates(scores)
    noise = pl.DataFrame({
        "estimate": ["true (injected)", "threshold samples: share below the cutoff", "AUL GMM: mean p_mislabeled"],
        "noise_rate": [float(truth[scored].mean()), estimates.get("threshold"), estimates.get("gmm")],
    })
    return windows, detection.with_columns(flagged_share=pl.col("flagged") / int(scored.sum())), noise, scores


def combined_mapd(runs: Runs) -> pl.DataFrame:
    """MAP-D over several runs: each run's suite probabilities (``Run.mapd``) of its real samples, averaged
    per sample; ``mapd_suite`` = the suite of the largest mean, ``mapd_flagged`` = assigned to
    ``random_labels``."""
    per_run = []
    for run in runs.runs:
        real = run.query("sample_roles").filter("is_real").select("sample_id")
        per_run.append(run.mapd().join(real, on="sample_id", how="semi").drop("mapd_suite"))
    suites = [c for c in per_run[0].columns if c.startswith("p_")]
    mean = pl.concat(per_run).group_by("sample_id").agg(pl.col(suites).mean())
    suite = pl.concat_list(suites).list.arg_max().replace_strict(range(len(suites)), [s[2:] for s in suites])
    return mean.with_columns(mapd_suite=suite).with_columns(mapd_flagged=pl.col("mapd_suite") == "random_labels")


def retraining_table(data: DemoData, scores: pl.DataFrame, config: DemoConfig) -> pl.DataFrame:
    """Test accuracy on the clean test split after training on: every noisy sample (standard), all but the
    AUM-flagged ones (cleaned), every sample weighted by the AUL GMM clean probability (reweighted), and only
    the truly clean ones (oracle). Samples no run scored (with one threshold pass: its threshold samples) are
    kept with weight 1."""
    size = len(data.noisy)
    real = pl.DataFrame({"sample_id": np.arange(size)}).join(scores, on="sample_id", how="left", maintain_order="left")
    flagged = real["aum_flagged"].fill_null(False).to_numpy()
    weights = torch.from_numpy(real["weight"].fill_null(1.0).to_numpy().astype(np.float32))
    clean = data.noisy == data.split.train_labels.numpy()
    trainings = {
        "standard": (np.ones(size, dtype=bool), None),
        "cleaned (AUM + threshold)": (~flagged, None),
        "reweighted (AUL GMM)": (np.ones(size, dtype=bool), weights),
        "oracle (truly clean only)": (clean, None),
    }
    rows = []
    for name, (keep, sample_weights) in trainings.items():
        rows_kept = torch.from_numpy(np.flatnonzero(keep))
        model = train_classifier(
            data.split.train_inputs[rows_kept], torch.from_numpy(data.noisy)[rows_kept], num_outputs=NUM_CLASSES,
            epochs=config.epochs, seed=config.seed,
            weights=None if sample_weights is None else sample_weights[rows_kept],
            progress=f"retraining: {name}" if config.progress else None,
        )
        rows.append((name, int(keep.sum()), accuracy(model, data.split.test_inputs, data.split.test_labels,
                                                     NUM_CLASSES)))
    return pl.DataFrame(rows, schema=["training", "samples", "test_accuracy"], orient="row")


def run_demo(out: Path | None, config: DemoConfig, *, retrain: bool = True) -> DemoResult:
    """Record (one run per threshold pass), score, compare, retrain, report; print the tables; return where
    everything went."""
    out = out or default_out_dir()
    dirs = run_dirs(out, config.threshold_passes)
    for run_dir in dirs:
        if run_dir.exists():
            raise FileExistsError(f"--out: {run_dir} already holds a run; choose a fresh folder")
    data = prepare_data(config)
    for pass_index, run_dir in enumerate(dirs):
        record_training(run_dir, data, config, pass_index=pass_index)
    windows, detection, noise, scores = detection_table(dirs, data, config)
    retraining = retraining_table(data, scores, config) if retrain else pl.DataFrame(
        schema={"training": pl.String, "samples": pl.Int64, "test_accuracy": pl.Float64})
    result = DemoResult(dirs, out / "report.html", windows, detection, noise, retraining)
    summary = (f"<p>{html.escape(config.noise_model)} label noise, true rate {result.true_noise_rate:.3f} of "
               f"{len(data.noisy)} training samples; {config.epochs} epochs; seed {config.seed}; "
               f"{len(dirs)} threshold pass(es), {scores.height} samples scored, each run on the epoch window "
               "its threshold samples chose:</p>")
    sections = {"Detection against the injected noise": summary + html_table(windows.drop("location"))
                + html_table(detection) + "<p>Noise-rate estimates:</p>" + html_table(noise)}
    if retraining.height:
        sections["Retraining: test accuracy on the clean test split"] = html_table(retraining)
    with open_run(dirs[0]) as run:
        write_report(run, result.report, title="tdlog demo: noisy digits", extra_sections=sections)
    _print_tables(result, config)
    return result


def _print_tables(result: DemoResult, config: DemoConfig) -> None:
    print(f"runs recorded in {', '.join(str(d) for d in result.run_dirs)}  ({config.noise_model} label noise, "
          f"true rate {result.true_noise_rate:.3f}, {config.epochs} epochs, seed {config.seed})")
    for window in result.windows.iter_rows(named=True):
        print(f"run {window['run']}: epochs {window['epoch_from']}:{window['epoch_to']} ({window['chosen_by']})")
    with pl.Config(tbl_rows=20, tbl_hide_dataframe_shape=True, float_precision=3, tbl_hide_column_data_types=True,
                   fmt_str_lengths=60):
        print("detection of mislabeled training samples (threshold samples and probes left out):")
        print(result.detection)
        print("noise rate:")
        print(result.noise_rates)
        if result.retraining.height:
            print("test accuracy on the clean test split after retraining:")
            print(result.retraining)
    print(f"report written to {result.report}")
