"""``tdlog demo``: everything tdlog is for, on scikit-learn's handwritten digits (no download), on CPU.

1. Inject label noise into the training split (``uniform`` or ``pairflip``), keeping the true labels.
2. Add threshold samples (AUM) and MAP-D probe suites, train a small CNN, record every step.
3. Score with every method and compare each with the injected truth, next to cleanlab's
   ``find_label_issues`` on out-of-sample probabilities from cross-validation (cleanlab is a demo-only
   dependency, imported here and nowhere else in the library).
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

from tdlog.analytics import open_run
from tdlog.analytics.evaluate import COLUMNS, detection_metrics, evaluate_scores
from tdlog.analytics.report import html_table, write_report
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
    progress: bool = False


@dataclass
class DemoData:
    """The digits split with the injected noise and the exact arrays that were trained on."""

    split: DigitsSplit
    noisy: np.ndarray  # observed labels of the training split
    targets: np.ndarray  # training targets: noisy labels, the threshold samples moved to class C
    probes: ProbeSuites


@dataclass
class DemoResult:
    run_dir: Path
    report: Path
    detection: pl.DataFrame  # one row per method: precision, recall, f1, auroc, flagged, flagged_share
    retraining: pl.DataFrame  # one row per training: samples, test_accuracy
    true_noise_rate: float


def default_out_dir() -> Path:
    return Path("tdlog-demo") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def prepare_data(config: DemoConfig) -> DemoData:
    """Split, noise, threshold samples (one pass, seeded) and probe suites built from the noisy train split."""
    split = load_digits_split(seed=config.seed)
    noisy = inject_noise(split.train_labels.numpy(), config.noise_rate, model=config.noise_model, seed=config.seed)
    targets = threshold_samples(noisy, NUM_CLASSES, seed=config.seed)
    probes = ProbeSuites(TensorDataset(split.train_inputs, torch.from_numpy(noisy)), NUM_CLASSES,
                         per_suite=config.probes_per_suite, seed=config.seed)
    return DemoData(split, noisy, targets, probes)


def record_training(run_dir: Path, data: DemoData, config: DemoConfig) -> None:
    """Train the CNN (``C + 1`` outputs) on samples and probes, recording every step to ``run_dir``."""
    size = len(data.noisy)
    items = [data.probes[i] for i in range(len(data.probes))]
    inputs = torch.stack([item[0] for item in items])
    targets = torch.tensor([item[1] for item in items])
    targets[:size] = torch.from_numpy(data.targets)
    metadata = {"demo": "digits", "noise_rate": config.noise_rate, "noise_model": config.noise_model,
                "epochs": config.epochs, "seed": config.seed}
    with Recorder(run_dir, num_classes=NUM_CLASSES, with_threshold_class=True, metadata=metadata) as rec:
        rec.register_samples(np.arange(size), data.noisy, targets=data.targets,
                             true_label=data.split.train_labels.numpy(),
                             image=list(data.split.train_inputs.reshape(size, -1).numpy()))
        data.probes.register(rec)
        train_classifier(inputs, targets, num_outputs=NUM_CLASSES + 1, epochs=config.epochs, seed=config.seed,
                         recorder=rec, sample_ids=torch.tensor([item[2] for item in items]),
                         progress="training (recorded)" if config.progress else None)


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


def detection_table(run_dir: Path, data: DemoData, config: DemoConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every tdlog method (``Run.evaluate``) and cleanlab against the truth, with the share of the scored
    samples each method flags (``flagged_share``); and the scores table."""
    with open_run(run_dir, progress=config.progress) as run:
        scores = run.scores()
    detection = evaluate_scores(scores)  # what run.evaluate() returns, without scoring the run again
    scored = data.targets != NUM_CLASSES  # the threshold samples have no score in a single pass
    truth = data.noisy != data.split.train_labels.numpy()
    try:
        flagged, suspicion = cleanlab_detection(data, config)
        row = pl.DataFrame([("cleanlab", *detection_metrics(truth[scored], flagged[scored], suspicion[scored]))],
                           schema=COLUMNS, orient="row")
        detection = pl.concat([detection, row])
    except ImportError:
        print("cleanlab is not installed (pip install 'tdlog[demo]'): its row is left out")
    return detection.with_columns(flagged_share=pl.col("flagged") / int(scored.sum())), scores


def retraining_table(data: DemoData, scores: pl.DataFrame, config: DemoConfig) -> pl.DataFrame:
    """Test accuracy on the clean test split after training on: every noisy sample (standard), all but the
    AUM-flagged ones (cleaned), every sample weighted by the AUL GMM clean probability (reweighted), and only
    the truly clean ones (oracle). Threshold samples are unscored in one pass: kept, weight 1."""
    size = len(data.noisy)
    real = scores.filter(pl.col("sample_id") < size).sort("sample_id")
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
    """Record, score, compare, retrain, report; print the tables; return where everything went."""
    out = out or default_out_dir()
    run_dir = out / "run"
    if run_dir.exists():
        raise FileExistsError(f"--out: {run_dir} already holds a run; choose a fresh folder")
    data = prepare_data(config)
    record_training(run_dir, data, config)
    detection, scores = detection_table(run_dir, data, config)
    retraining = retraining_table(data, scores, config) if retrain else pl.DataFrame(
        schema={"training": pl.String, "samples": pl.Int64, "test_accuracy": pl.Float64})
    true_rate = float(np.mean(data.noisy != data.split.train_labels.numpy()))
    summary = (f"<p>{html.escape(config.noise_model)} label noise, true rate {true_rate:.3f} of "
               f"{len(data.noisy)} training samples; {config.epochs} epochs; seed {config.seed}.</p>")
    sections = {"Detection against the injected noise": summary + html_table(detection)}
    if retraining.height:
        sections["Retraining: test accuracy on the clean test split"] = html_table(retraining)
    with open_run(run_dir) as run:
        report = write_report(run, out / "report.html", title="tdlog demo: noisy digits", extra_sections=sections)
    _print_tables(run_dir, report, detection, retraining, true_rate, config)
    return DemoResult(run_dir, report, detection, retraining, true_rate)


def _print_tables(run_dir: Path, report: Path, detection: pl.DataFrame, retraining: pl.DataFrame,
                  true_rate: float, config: DemoConfig) -> None:
    print(f"run recorded in {run_dir}  ({config.noise_model} label noise, true rate {true_rate:.3f}, "
          f"{config.epochs} epochs, seed {config.seed})")
    with pl.Config(tbl_rows=20, tbl_hide_dataframe_shape=True, float_precision=3, tbl_hide_column_data_types=True):
        print("detection of mislabeled training samples (threshold samples and probes left out):")
        print(detection)
        if retraining.height:
            print("test accuracy on the clean test split after retraining:")
            print(retraining)
    print(f"report written to {report}")
