"""Score each detection method against known true labels (experiments with injected noise)."""

from __future__ import annotations

import numpy as np
import polars as pl

from .scores import real_samples

# method -> (suspicion score, higher = more likely mislabeled; the method's own flag column or None)
METHODS: dict[str, tuple[pl.Expr, str | None]] = {
    "aum_threshold": (-pl.col("aum"), "aum_flagged"),
    "aul_gmm": (pl.col("aul"), "gmm_flagged"),
    "data_map_confidence": (-pl.col("confidence"), None),
    "forgetting": (pl.col("forgetting_events").fill_null(np.iinfo(np.int32).max), None),
    "el2n": (pl.col("el2n"), None),
    "mapd": (pl.col("p_random_labels"), "mapd_flagged"),
}


def evaluate_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Precision, recall, F1 and AUROC of "mislabeled" (``label != true_label``) per method.

    Only real samples count (not threshold samples, not probes, ``true_label`` known); ``scores`` is one
    run's score table or the combined table of several runs (:meth:`tdlog.analytics.Runs.scores`). A method with its
    own decision (AUM below the threshold cutoff, GMM posterior > 0.5, MAP-D assignment to
    ``random_labels``) is scored on it; a ranking-only
    method flags its ``n`` most suspicious samples, ``n`` = the AUL-GMM noise estimate times the number of
    samples (the share of rows with ``gmm_flagged``). AUROC uses the suspicion score (never-learned
    samples count as the most forgotten). Methods whose columns are missing are left out.
    """
    if "true_label" not in scores.columns or scores["true_label"].is_null().all():
        raise ValueError("samples: evaluate() needs a true_label column (register_samples(..., true_label=...))")
    real = (real_samples(scores) if "is_threshold" in scores.columns else scores).filter(
        pl.col("true_label").is_not_null())
    truth = (real["label"] != real["true_label"]).to_numpy()
    estimated = int(real["gmm_flagged"].sum()) if "gmm_flagged" in real.columns else int(truth.sum())
    rows = []
    for method, (suspicion, flag_column) in METHODS.items():
        needed = suspicion.meta.root_names() + ([flag_column] if flag_column else [])
        if not all(name in real.columns for name in needed):
            continue
        score = real.select(suspicion.cast(pl.Float64).fill_null(-np.inf)).to_series().to_numpy()
        if flag_column:
            flagged = real[flag_column].fill_null(False).to_numpy()
        else:
            flagged = np.zeros(len(score), dtype=bool)
            flagged[np.argsort(-score, kind="stable")[:estimated]] = True
        rows.append((method, *detection_metrics(truth, flagged, score)))
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


COLUMNS = ["method", "precision", "recall", "f1", "auroc", "flagged"]


def detection_metrics(truth: np.ndarray, flagged: np.ndarray, suspicion: np.ndarray) -> tuple[float, float, float,
                                                                                               float, int]:
    """``(precision, recall, F1, AUROC, flagged count)`` of boolean ``flagged`` against boolean ``truth``;
    AUROC ranks by ``suspicion`` (NaN when ``truth`` holds a single class)."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    precision, recall, f1, _ = precision_recall_fscore_support(truth, flagged, average="binary", zero_division=0.0)
    auroc = roc_auc_score(truth, suspicion) if 0 < truth.sum() < len(truth) else float("nan")
    return float(precision), float(recall), float(f1), float(auroc), int(flagged.sum())
