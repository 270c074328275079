"""``write_report``: one self-contained HTML page for a run, interactive by default
(:mod:`tdlog.analytics.interactive`); with ``static=True`` the plots are embedded as PNG data URIs (no
network, no script).

Static sections, each shown when the run has what it needs: AUM histogram with the threshold cutoff, AUL histogram
with both GMM components, data map, forgetting events, MAP-D mean loss trajectories per probe suite and the
held-out confusion matrix, loss and accuracy per data source (samples column ``source``), and a gallery of
the most suspicious samples (images from a samples column
``image``: a flat list of ``h * h`` grey levels, or ``image_path``: an image file).
"""

from __future__ import annotations

import base64
import html
import io
import math
import mimetypes
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from .gmm import fit_gmm
from .scores import noise_rates, real_samples, suspicion_order
from .threshold import cutoff_of

if TYPE_CHECKING:
    from .run import Run
    from .window import EpochWindow

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "img{max-width:100%}table{border-collapse:collapse;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}h2{border-bottom:1px solid #ddd}"
)


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(figure: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png(figure)}">'


def html_table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in frame.iter_rows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def window_criterion(window: EpochWindow) -> Figure:
    """The epoch-window criterion: separation of the threshold samples per prefix window, the windows that end
    before the network starts to learn shaded (not candidates), the band within one standard error of the
    best shaded, the chosen window marked."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    criterion = window.criterion
    axes.plot(criterion["epoch"] + 1, criterion["separation"], marker=".", label="separation d")
    if window.floor > criterion["epoch"][0]:
        axes.axvspan(criterion["epoch"][0] + 0.5, window.floor + 0.5, color="0.85",
                     label="before the others' mean margin turns positive")
    axes.axhspan(window.best - window.standard_error, window.best, color="0.93",
                 label=f"within one standard error ({window.standard_error:.2f}) of the best")
    axes.axvline(window.epochs.stop, color="k", linestyle="--", label=f"chosen: epochs {window.epochs.start}:"
                 f"{window.epochs.stop}")
    axes.set(xlabel="window end (epochs from the first)", ylabel="d (threshold vs other AUM)",
             title="Epoch window chosen from the threshold samples")
    axes.legend()
    return figure


def aum_histogram(scores: pl.DataFrame, cutoff: float | None) -> Figure:
    """AUM of real samples (and of threshold samples) with the cutoff line."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    real = scores.filter(~pl.col("is_threshold"))["aum"].drop_nulls().to_numpy()
    bins = np.histogram_bin_edges(scores["aum"].drop_nulls().to_numpy(), bins=50)
    axes.hist(real, bins=bins, alpha=0.7, label="samples")
    if cutoff is not None:
        threshold = scores.filter(pl.col("is_threshold"))["aum"].to_numpy()
        axes.hist(threshold, bins=bins, alpha=0.6, label="threshold samples")
        axes.axvline(cutoff, color="k", linestyle="--", label=f"cutoff {cutoff:.2f}")
    axes.set(xlabel="AUM (mean margin)", ylabel="samples", title="Area under the margin")
    axes.legend()
    return figure


def aul_histogram(scores: pl.DataFrame, means, stds, weights) -> Figure:
    """AUL density of the scored samples with both fitted Gaussian components."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    values = scores.filter(pl.col("p_mislabeled").is_not_null())["aul"].to_numpy()
    axes.hist(values, bins=50, density=True, alpha=0.6, label="samples")
    grid = np.linspace(values.min(), values.max(), 400)
    for name, mean, std, weight in zip(("clean", "mislabeled"), means, stds, weights, strict=True):
        density = weight * np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        axes.plot(grid, density, label=f"{name} component (weight {weight:.2f})")
    axes.set(xlabel="AUL (sum of per-epoch mean losses)", ylabel="density", title="Area under the loss, 2-GMM")
    axes.legend()
    return figure


def data_map(scores: pl.DataFrame) -> Figure:
    """Confidence against variability, coloured by correctness (Swayamdipta et al. 2020)."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    real = real_samples(scores)
    points = axes.scatter(real["variability"], real["confidence"], c=real["correctness"], s=6, cmap="coolwarm_r")
    figure.colorbar(points, ax=axes, label="correctness")
    axes.set(xlabel="variability", ylabel="confidence", title="Data map")
    return figure


def forgetting_histogram(scores: pl.DataFrame) -> Figure:
    """Forgetting events per sample; never-learned samples as their own bar."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    events = scores["forgetting_events"].drop_nulls().to_numpy()
    counts = np.bincount(events.astype(np.int64)) if events.size else np.zeros(1, dtype=np.int64)
    labels = [str(i) for i in range(len(counts))] + ["never learned"]
    axes.bar(labels, [*counts.tolist(), int(scores["never_learned"].sum())], color="tab:blue")
    axes.set(xlabel="forgetting events", ylabel="samples", title="Forgetting")
    return figure


def mapd_trajectories(trajectories: pl.DataFrame) -> Figure:
    """Mean per-epoch loss of each probe suite."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    for (suite,), part in trajectories.group_by("suite", maintain_order=True):
        axes.plot(part["epoch"], part["mean_loss"], label=suite)
    axes.set(xlabel="epoch", ylabel="mean loss", title="MAP-D probe suites: loss trajectories")
    axes.legend()
    return figure


def source_curves(curves: pl.DataFrame) -> Figure:
    """Mean loss and accuracy per epoch of each data source (:meth:`~tdlog.analytics.run.Run.source_curves`)."""
    figure = Figure(figsize=(10, 3.5))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    groups = list(curves.group_by("source", maintain_order=True))
    for (source,), part in groups:
        loss_axes.plot(part["epoch"], part["mean_loss"], label=str(source))
        accuracy_axes.plot(part["epoch"], part["accuracy"], label=str(source))
    loss_axes.set(xlabel="epoch", ylabel="mean loss", title="Per source: mean loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="Per source: accuracy")
    if len(groups) <= 10:
        loss_axes.legend()
    return figure


def confusion_matrix(confusion: pl.DataFrame) -> Figure:
    """Held-out probes: rows = true suite, columns = MAP-D assignment, shares per row."""
    suites = confusion["probe"].to_list()
    assigned = [c for c in confusion.columns if c not in ("probe", "accuracy")]
    counts = confusion.select(assigned).to_numpy().astype(float)
    shares = counts / counts.sum(1, keepdims=True)
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.subplots()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), share in np.ndenumerate(shares):
        axes.text(column, row, f"{share:.2f}", ha="center", va="center", color="k" if share < 0.6 else "w")
    axes.set_xticks(range(len(assigned)), assigned, rotation=30, ha="right")
    axes.set_yticks(range(len(suites)), suites)
    axes.set(xlabel="assigned suite", ylabel="true suite", title="MAP-D on held-out probes")
    return figure


def gallery(rows: pl.DataFrame) -> Figure:
    """Grid of images titled with id, observed label, prediction (and true label when known)."""
    columns = 8
    figure = Figure(figsize=(columns * 1.3, math.ceil(rows.height / columns) * 1.6))
    for position, row in enumerate(rows.iter_rows(named=True)):
        axes = figure.add_subplot(math.ceil(rows.height / columns), columns, position + 1)
        pixels = np.asarray(row["image"], dtype=float)
        side = round(math.sqrt(pixels.size))
        axes.imshow(pixels.reshape(side, side), cmap="gray_r", interpolation="nearest")
        title = f"#{row['sample_id']} y={row['label']} ŷ={row['predicted']}"
        if row.get("true_label") is not None:
            title += f"\ntrue {row['true_label']}"
        axes.set_title(title, fontsize=7)
        axes.axis("off")
    return figure


def _image_files(rows: pl.DataFrame) -> str:
    cells = []
    for row in rows.iter_rows(named=True):
        path = Path(row["image_path"])
        kind = mimetypes.guess_type(path.name)[0] or "image/png"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = html.escape(f"#{row['sample_id']} y={row['label']} ŷ={row['predicted']}")
        cells.append(f'<figure style="display:inline-block;margin:4px"><img alt="{caption}" '
                     f'src="data:{kind};base64,{data}" width="96"><figcaption>{caption}</figcaption></figure>')
    return "".join(cells)


def write_report(run: Run, path: str | os.PathLike, *, split: str = "train", gallery_size: int = 32,
                 title: str | None = None, extra_sections: dict[str, str] | None = None, static: bool = False,
                 max_points: int | None = None, text_column: str | None = None) -> Path:
    """Write the run's report to ``path``, one self-contained HTML file. By default the interactive page of
    :func:`tdlog.analytics.interactive.write_interactive_report` (at most ``max_points`` samples drawn, default
    ``MAX_POINTS``); ``static=True``: plots as embedded PNG images, for e-mail and papers. ``extra_sections``
    adds ``{heading: html}`` sections at the top (the demo puts its evaluation tables there); ``text_column``:
    the interactive page's example text (see :func:`~tdlog.analytics.interactive.write_interactive_report`)."""
    if not static:
        from .interactive import MAX_POINTS, write_interactive_report

        return write_interactive_report(run, path, split=split, gallery_size=gallery_size, title=title,
                                        extra_sections=extra_sections, text_column=text_column,
                                        max_points=MAX_POINTS if max_points is None else max_points)
    scores = run.scores(split=split)
    sections = dict(extra_sections or {})
    window = run.epoch_window(split=split)
    if window is not None:
        sections["Epoch window"] = f"<p>{html.escape(window.describe())}.</p>" + _img(window_criterion(window),
                                                                                      "epoch window")
    cutoff = cutoff_of(scores)
    sections["AUM"] = _img(aum_histogram(scores, cutoff), "AUM histogram")
    if "p_mislabeled" in scores.columns:
        real = real_samples(scores)
        fitted = fit_gmm(real, "aul")  # the fit scores() made, without re-querying
        flagged_share = float(real["gmm_flagged"].mean())
        threshold_rate = noise_rates(scores).get("threshold")
        sections["AUL and the noise-rate estimates"] = (
            f"<p>GMM noise rate (mean p_mislabeled over the {real.height} real samples) {fitted.noise_rate:.3f}; "
            f"flagged share (p_mislabeled &gt; 0.5) {flagged_share:.3f}"
            + ("" if threshold_rate is None else
               f"; threshold-sample estimate (share with AUM below the cutoff) {threshold_rate:.3f}") + ".</p>"
            + _img(aul_histogram(scores, fitted.means, fitted.stds, fitted.weights), "AUL histogram")
        )
    sections["Data map"] = _img(data_map(scores), "data map")
    sections["Forgetting events"] = _img(forgetting_histogram(scores), "forgetting histogram")
    if "mapd_suite" in scores.columns:
        confusion = run.mapd_accuracy(assigned=scores.select("sample_id", "mapd_suite"))
        sections["MAP-D"] = (
            _img(mapd_trajectories(run.query("probe_trajectories", split=split)), "MAP-D loss trajectories")
            + (_img(confusion_matrix(confusion), "MAP-D confusion matrix") + html_table(confusion) if confusion.height
               else "<p>No held-out probes: no confusion matrix.</p>")
        )
    if "source" in scores.columns:
        sections["Per data source"] = _img(source_curves(run.source_curves(split=split)), "loss per source")
    sections.update(_gallery_section(run, scores, split, gallery_size))
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections.items())
    heading = html.escape(title or f"tdlog report: {run.location}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{heading}</title><style>{STYLE}</style>"
            f"</head><body><h1>{heading}</h1>{body}</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _gallery_section(run: Run, scores: pl.DataFrame, split: str, size: int) -> dict[str, str]:
    order, descending, described = suspicion_order(scores)
    real = real_samples(scores)
    last = run.query("last_epoch", split=split, epoch_from=0, epoch_to=2**62).select("sample_id", "predicted")
    suspicious = real.join(last, on="sample_id", how="left").sort([order, pl.col("sample_id")],
                                                                  descending=[descending, False]).head(size)
    heading = f"The {suspicious.height} most suspicious samples ({described})"
    columns = [c for c in ("sample_id", "label", "predicted", "true_label", "aum", "aul", "p_mislabeled")
               if c in suspicious.columns]
    listing = html_table(suspicious.select(columns))
    if "image" in suspicious.columns:
        return {heading: _img(gallery(suspicious), "gallery") + listing}
    if "image_path" in suspicious.columns:
        return {heading: _image_files(suspicious) + listing}
    return {heading: "<p>No images registered (samples column image or image_path).</p>" + listing}
