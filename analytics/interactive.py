"""The interactive report: one self-contained HTML page (Bokeh, its JavaScript inlined: no network) to explore
a run. Hover a point for the sample; select a region of the data map (box or lasso) or a range of a histogram
and the table lists those samples, a button saves their ids as CSV; filter by class and by flag.

Plots: the data map (confidence x variability, coloured by flag or by correctness), the AUM histogram with
the threshold cutoff, the AUL histogram with both GMM components, forgetting events, the epoch-window
criterion, MAP-D trajectories and held-out confusion, the loss and accuracy per data source (samples column
``source``), and the most suspicious samples. At most
``max_points`` samples are drawn: every flagged sample and a seeded uniform sample of the others (the page
says so); the histograms count every sample.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .gmm import fit_gmm
from .scores import noise_rates, real_samples, suspicion_order
from .threshold import cutoff_of

if TYPE_CHECKING:
    from .run import Run

MAX_POINTS = 50_000  # samples drawn; the page stays responsive and under 25 MB at a million samples
FLAG_COLOURS = {True: "#d62728", False: "#1f77b4"}
TABLE_COLUMNS = ("sample_id", "label", "predicted", "aum", "aul", "p_mislabeled")
FLOAT_COLUMNS = ("aum", "aul", "p_mislabeled", "confidence", "variability", "correctness")
TEXT_SHOWN = 240  # characters of an example's text in a tooltip or a table cell


def example_text(frame: pl.DataFrame, text_column: str | None = None) -> pl.Series | None:
    """Each example's text for people to read, shortened to ``TEXT_SHOWN`` characters: ``text_column``, or
    ``prompt`` and ``completion`` (``prompt → completion``), or ``text``; None when the samples have none."""
    if text_column is not None:
        if text_column not in frame.columns:
            raise ValueError(f"text_column: the samples table has no {text_column!r} column "
                             f"(columns: {frame.columns})")
        text = pl.col(text_column).cast(pl.String)
    elif {"prompt", "completion"} <= set(frame.columns):
        text = pl.concat_str(pl.col("prompt").cast(pl.String), pl.lit(" → "), pl.col("completion").cast(pl.String))
    elif "text" in frame.columns:
        text = pl.col("text").cast(pl.String)
    else:
        return None
    text = text.fill_null("")
    shortened = pl.when(text.str.len_chars() <= TEXT_SHOWN).then(text).otherwise(
        pl.concat_str(text.str.slice(0, TEXT_SHOWN - 1), pl.lit("…")))
    return frame.select(shortened.alias("text"))["text"]


def table_column(name: str, **options):
    """A Bokeh table column: scores to three decimals, text wrapped."""
    from bokeh.models import NumberFormatter, StringFormatter, TableColumn

    if name in FLOAT_COLUMNS:
        return TableColumn(field=name, title=name, formatter=NumberFormatter(format="0.000"), **options)
    if name in ("text", "prompt", "completion"):
        return TableColumn(field=name, title=name, formatter=StringFormatter(), width=420, **options)
    return TableColumn(field=name, title=name, **options)

SELECT_RANGE = """
const {x0, x1} = cb_obj.geometry;
const [low, high] = [Math.min(x0, x1), Math.max(x0, x1)];
const values = source.data[column];
const shown = view.filter.booleans;
const picked = [];
for (let i = 0; i < values.length; i++) {
    if (values[i] >= low && values[i] <= high && (shown == null || shown[i])) picked.push(i);
}
source.selected.indices = picked;
"""

SHOW_SELECTION = """
const picked = source.selected.indices;
const data = {};
for (const name of Object.keys(table.data)) data[name] = picked.map((i) => source.data[name][i]);
table.data = data;
widget.visible = picked.length > 0;
count.text = `${picked.length} selected sample(s)`;
"""

DOWNLOAD_CSV = """
const names = "text" in source.data ? ["sample_id", "text"] : ["sample_id"];
const quote = (v) => { const s = String(v); return /[",\\n]/.test(s) ? '"' + s.replaceAll('"', '""') + '"' : s; };
const lines = source.selected.indices.map((i) => names.map((n) => quote(source.data[n][i])).join(","));
const blob = new Blob([names.join(",") + "\\n" + lines.join("\\n") + (lines.length ? "\\n" : "")],
                      {type: "text/csv"});
const link = document.createElement("a");
link.href = URL.createObjectURL(blob);
link.download = "selected_sample_ids.csv";
document.body.appendChild(link);
link.click();
link.remove();
"""

FILTER = """
const classes = Array.from(source.data["label"]), flags = source.data["flag_value"];
const wanted = label.value, flag = flagged.value;
view.filter.booleans = classes.map((c, i) => (wanted === "all" || String(c) === wanted)
    && (flag === "all" || (flag === "flagged") === (flags[i] === 1)));
source.selected.indices = source.selected.indices.filter((i) => view.filter.booleans[i]);
source.change.emit();
"""

COLOUR_BY = """
const colour = choice.active === 0 ? {field: "flag_value", transform: by_flag}
                                    : {field: "correctness", transform: by_correctness};
renderer.glyph.fill_color = colour;
renderer.glyph.line_color = colour;
"""


def displayed(real: pl.DataFrame, max_points: int, seed: int = 0) -> tuple[pl.DataFrame, str]:
    """The samples drawn: all when there are at most ``max_points``, else every flagged sample and a seeded
    uniform sample of the others up to ``max_points`` in all; and the sentence the page shows about it."""
    if real.height <= max_points:
        return real, f"All {real.height:,} samples are drawn."
    flagged = real.filter(pl.col("flagged"))
    others = real.filter(~pl.col("flagged"))
    room = max(max_points - flagged.height, 0)
    kept = pl.concat([flagged, others.sample(n=min(room, others.height), seed=seed)]).sort("sample_id")
    return kept, (f"{kept.height:,} of {real.height:,} samples are drawn: every one of the {flagged.height:,} "
                  f"flagged samples and a uniform sample of the others (seed {seed}). The histograms count all.")


def _thumbnail(pixels) -> str:
    """A grey-level image (flat list of h*h values) as a PNG data URI."""
    from PIL import Image

    values = np.asarray(pixels, dtype=float)
    side = round(np.sqrt(values.size))
    span = np.ptp(values) or 1.0
    image = Image.fromarray((255 - 255 * (values - values.min()) / span).reshape(side, side).astype(np.uint8))
    buffer = io.BytesIO()
    image.resize((side * 6, side * 6), Image.NEAREST).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_interactive_report(run: Run, path: str | os.PathLike, *, split: str = "train", max_points: int = MAX_POINTS,
                             gallery_size: int = 32, title: str | None = None,
                             extra_sections: dict[str, str] | None = None, text_column: str | None = None) -> Path:
    """Write the run's interactive report to ``path`` (see the module docstring); ``extra_sections`` adds
    ``{heading: html}`` at the top; ``text_column``: the samples column holding each example's text (default:
    ``prompt`` and ``completion``, or ``text``, when the samples table has them), shown on hover, in the
    selection table (and its CSV) and in the gallery. Returns the path."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (
        BooleanFilter,
        BoxSelectTool,
        Button,
        CDSView,
        ColumnDataSource,
        CustomJS,
        DataTable,
        Div,
        HoverTool,
        LassoSelectTool,
        LinearColorMapper,
        RadioButtonGroup,
        Select,
        Span,
    )
    from bokeh.palettes import RdYlBu11
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    scores = run.scores(split=split)
    cutoff = cutoff_of(scores)
    last = run.query("last_epoch", split=split, epoch_from=0, epoch_to=2**62).select("sample_id", "predicted")
    real = real_samples(scores).join(last, on="sample_id", how="left", maintain_order="left")
    flag_column = next((c for c in ("aum_flagged", "gmm_flagged") if c in real.columns), None)
    real = real.with_columns(flagged=pl.col(flag_column).fill_null(False) if flag_column else pl.lit(False))
    for name in ("p_mislabeled", "aum"):
        if name not in real.columns:
            real = real.with_columns(pl.lit(None, pl.Float64).alias(name))
    shown, drawn_note = displayed(real, max_points)
    # float32 and small integers: about 40 bytes a point in the page (colours are mapped in the browser)
    data = {name: shown[name].cast(pl.Float32).to_numpy() for name in ("confidence", "variability", "aum", "aul",
                                                                        "p_mislabeled", "correctness")}
    data["sample_id"] = shown["sample_id"].to_numpy()
    data["label"] = shown["label"].cast(pl.Int32).to_numpy()
    data["predicted"] = shown["predicted"].fill_null(-1).cast(pl.Int32).to_numpy()
    data["flag_value"] = shown["flagged"].cast(pl.Int8).to_numpy()
    tooltip = ("<div><b>sample @sample_id</b><br>label @label, predicted @predicted<br>AUM @aum{0.000}, "
               "AUL @aul{0.00}<br>p(mislabeled) @p_mislabeled{0.000}</div>")
    if "image" in shown.columns:
        data["thumbnail"] = np.array([_thumbnail(pixels) for pixels in shown["image"].to_list()])
        tooltip = '<div style="display:flex;gap:6px"><img src="@thumbnail" width="48" height="48">' + tooltip + "</div>"
    text = example_text(shown, text_column)
    if text is not None:
        data["text"] = np.array(text.to_list(), dtype=object)
        tooltip = tooltip.replace("</div>", '<div style="max-width:380px;white-space:pre-wrap">@text</div></div>', 1)
    source = ColumnDataSource(data, name="samples")
    view = CDSView(filter=BooleanFilter(booleans=[True] * shown.height))

    data_map = figure(title="Data map (box or lasso: select; hover: the sample)", width=620, height=460,
                      x_axis_label="variability", y_axis_label="confidence", tools="pan,wheel_zoom,reset",
                      name="data_map")
    by_flag = LinearColorMapper(palette=[FLAG_COLOURS[False], FLAG_COLOURS[True]], low=0, high=1)
    by_correctness = LinearColorMapper(palette=RdYlBu11[::-1], low=0, high=1)  # red: never right, blue: always
    flag_colour = {"field": "flag_value", "transform": by_flag}
    points = data_map.scatter("variability", "confidence", source=source, view=view, size=6, alpha=0.7,
                              fill_color=flag_colour, line_color=flag_colour, name="points")
    box = BoxSelectTool(renderers=[points])
    data_map.add_tools(box, LassoSelectTool(renderers=[points]), HoverTool(renderers=[points], tooltips=tooltip))
    data_map.toolbar.active_drag = box

    def histogram(column_name: str, label: str, fig_name: str):
        values = real[column_name].drop_nulls().to_numpy()
        counts, edges = np.histogram(values, bins=60)
        fig = figure(title=f"{label} (drag: select a range)", width=460, height=300, x_axis_label=label,
                     y_axis_label="samples", tools="pan,wheel_zoom,reset", name=fig_name)
        fig.quad(top=counts, bottom=0, left=edges[:-1], right=edges[1:], alpha=0.6, legend_label="samples")
        select = BoxSelectTool(dimensions="width")
        fig.add_tools(select)
        fig.toolbar.active_drag = select
        fig.js_on_event("selectiongeometry", CustomJS(args={"source": source, "view": view, "column": column_name},
                                                      code=SELECT_RANGE))
        return fig, edges

    aum_hist, aum_edges = histogram("aum", "AUM", "aum_histogram")
    if cutoff is not None:
        threshold = scores.filter(pl.col("is_threshold"))["aum"].drop_nulls().to_numpy()
        counts, _ = np.histogram(threshold, bins=aum_edges)
        aum_hist.quad(top=counts, bottom=0, left=aum_edges[:-1], right=aum_edges[1:], alpha=0.5, color="orange",
                      legend_label="threshold samples")
        aum_hist.add_layout(Span(location=cutoff, dimension="height", line_dash="dashed", line_color="black"))
    aul_hist, aul_edges = histogram("aul", "AUL", "aul_histogram")
    estimates = noise_rates(scores)
    if "p_mislabeled" in scores.columns and real["aul"].drop_nulls().len() >= 2:
        fitted = fit_gmm(real, "aul")
        grid = np.linspace(aul_edges[0], aul_edges[-1], 300)
        width = aul_edges[1] - aul_edges[0]
        for name, mean, std, weight, colour in zip(("clean", "mislabeled"), fitted.means, fitted.stds, fitted.weights,
                                                   ("green", "red"), strict=True):
            density = weight * np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
            aul_hist.line(grid, density * real.height * width, color=colour, line_width=2,
                          legend_label=f"{name} component ({weight:.2f})")

    forgetting = real["forgetting_events"].drop_nulls().to_numpy().astype(np.int64)
    counts = np.bincount(forgetting) if forgetting.size else np.zeros(1, dtype=np.int64)
    factors = [str(i) for i in range(len(counts))] + ["never learned"]
    forgetting_bars = figure(x_range=factors, title="Forgetting events", width=460, height=300,
                             y_axis_label="samples", tools="reset", name="forgetting")
    forgetting_bars.vbar(x=factors, top=[*counts.tolist(), int(real["never_learned"].sum())], width=0.8)

    plots = [forgetting_bars]
    window = run.epoch_window(split=split)
    if window is not None:
        criterion = figure(title=f"Epoch window: {window.epochs.start}:{window.epochs.stop}", width=460, height=300,
                           x_axis_label="window end (epochs)", y_axis_label="separation d", tools="reset",
                           name="epoch_window")
        criterion.line(window.criterion["epoch"].to_numpy() + 1, window.criterion["separation"].to_numpy())
        criterion.add_layout(Span(location=window.epochs.stop, dimension="height", line_dash="dashed"))
        plots.append(criterion)
    if "mapd_suite" in scores.columns:
        plots.extend(_mapd_plots(run, scores, split, figure))
    if "source" in scores.columns:
        plots.extend(_source_plots(run, split, figure))

    listed = (*TABLE_COLUMNS, "text") if text is not None else TABLE_COLUMNS
    table_source = ColumnDataSource({name: [] for name in listed}, name="selection")
    count = Div(text="0 selected sample(s)", name="selection_count")
    table = DataTable(source=table_source, columns=[table_column(c) for c in listed], width=1100, height=260,
                      name="selection_table", visible=False)  # shown once something is selected
    source.selected.js_on_change("indices", CustomJS(args={"source": source, "table": table_source, "count": count,
                                                           "widget": table}, code=SHOW_SELECTION))
    download = Button(label="Save the selected ids as CSV", name="download")
    download.js_on_click(CustomJS(args={"source": source}, code=DOWNLOAD_CSV))
    classes = ["all", *map(str, sorted(real["label"].drop_nulls().unique().to_list()))]
    by_class = Select(title="class", value="all", options=classes, name="class_filter")
    by_flag = Select(title="flag", value="all", options=["all", "flagged", "not flagged"], name="flag_filter")
    refilter = CustomJS(args={"source": source, "view": view, "label": by_class, "flagged": by_flag}, code=FILTER)
    by_class.js_on_change("value", refilter)
    by_flag.js_on_change("value", refilter)
    colour = RadioButtonGroup(labels=["colour: flag", "colour: correctness"], active=0)
    colour.js_on_change("active", CustomJS(args={"renderer": points, "choice": colour, "by_flag": by_flag,
                                                 "by_correctness": by_correctness}, code=COLOUR_BY))

    order, descending, _ = suspicion_order(scores)
    suspicious = real.sort([order, pl.col("sample_id")], descending=[descending, False]).head(gallery_size)
    top = _suspicious_table(suspicious, text_column)
    heading = html.escape(title or f"tdlog report: {run.location}")
    rates = ", ".join(f"{name} {value:.3f}" for name, value in estimates.items())
    intro = (f"<h1>{heading}</h1><p>{html.escape(drawn_note)} Flag: {flag_column or 'none'}; noise-rate estimates: "
             f"{html.escape(rates) or 'none'}.</p>"
             + "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in (extra_sections or {}).items()))
    layout = column(
        Div(text=intro, width=1100),
        row(data_map, column(by_class, by_flag, colour)),
        row(aum_hist, aul_hist),
        *(row(*plots[i:i + 2]) for i in range(0, len(plots), 2)),
        Div(text="<h2>Selection</h2>"), count, table, download,
        Div(text=f"<h2>The {suspicious.height} most suspicious samples</h2>"), top,
    )
    page = file_html(layout, INLINE, title=title or f"tdlog report: {run.location}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _source_plots(run: Run, split: str, figure) -> list:
    """Per data source (samples column ``source``, :meth:`~tdlog.analytics.run.Run.source_curves`): the mean
    loss and the accuracy per epoch, a line per source (a legend up to ten sources; hover names the line)."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category10

    curves = run.source_curves(split=split)
    groups = list(curves.group_by("source", maintain_order=True))
    plots = []
    for column, label, name in (("mean_loss", "mean loss", "source_loss"), ("accuracy", "accuracy", "source_accuracy")):
        plot = figure(title=f"Per source: {label}", width=460, height=300, x_axis_label="epoch", y_axis_label=label,
                      tools="pan,wheel_zoom,reset", name=name)
        for index, ((source,), part) in enumerate(groups):
            line = ColumnDataSource({"epoch": part["epoch"].to_numpy(), "value": part[column].to_numpy(),
                                     "samples": part["samples"].to_numpy(), "source": [str(source)] * part.height},
                                    name=f"{name}:{source}")
            legend = {"legend_label": str(source)} if len(groups) <= 10 else {}
            plot.line("epoch", "value", source=line, color=Category10[10][index % 10], line_width=2, **legend)
        plot.add_tools(HoverTool(tooltips="@source: epoch @epoch, @value{0.000} (@samples samples)"))
        plots.append(plot)
    return plots


def _mapd_plots(run: Run, scores: pl.DataFrame, split: str, figure) -> list:
    """MAP-D: the probe suites' mean loss per epoch, and the held-out confusion matrix."""
    from bokeh.palettes import Category10

    trajectories = run.query("probe_trajectories", split=split)
    lines = figure(title="MAP-D probe suites: mean loss", width=460, height=300, x_axis_label="epoch",
                   y_axis_label="mean loss", tools="pan,wheel_zoom,reset", name="mapd_trajectories")
    for index, ((suite,), part) in enumerate(trajectories.group_by("suite", maintain_order=True)):
        lines.line(part["epoch"].to_numpy(), part["mean_loss"].to_numpy(), legend_label=suite,
                   color=Category10[10][index % 10], line_width=2)
    confusion = run.mapd_accuracy(assigned=scores.select("sample_id", "mapd_suite"))
    if not confusion.height:
        return [lines]
    suites = confusion["probe"].to_list()
    assigned = [c for c in confusion.columns if c not in ("probe", "accuracy")]
    counts = confusion.select(assigned).to_numpy().astype(float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    heat = figure(title="MAP-D on held-out probes", x_range=assigned, y_range=list(reversed(suites)), width=460,
                  height=300, tools="reset", name="mapd_confusion")
    cells = {"assigned": [a for _ in suites for a in assigned], "probe": [s for s in suites for _ in assigned],
             "share": shares.ravel(), "text": [f"{v:.2f}" for v in shares.ravel()],
             "colour": [f"#{int(255 - 200 * v):02x}{int(255 - 120 * v):02x}ff" for v in shares.ravel()]}
    heat.rect("assigned", "probe", 1, 1, source=cells, fill_color="colour", line_color="white")
    heat.text("assigned", "probe", text="text", source=cells, text_align="center", text_baseline="middle")
    return [lines, heat]


def _suspicious_table(rows: pl.DataFrame, text_column: str | None = None):
    """The most suspicious samples, with their images or their text (the flagged completion beside its
    prompt) when the samples table has them."""
    from bokeh.models import ColumnDataSource, DataTable, HTMLTemplateFormatter, TableColumn

    columns = [c for c in ("sample_id", "label", "predicted", "true_label", "aum", "aul", "p_mislabeled")
               if c in rows.columns]
    data = {c: rows[c].to_numpy() for c in columns}
    table_columns = [table_column(c) for c in columns]
    text = example_text(rows, text_column)
    if text is not None:
        for name in (("prompt", "completion") if text_column is None and "completion" in rows.columns else ()):
            data[name] = example_text(rows, name).to_list()
            table_columns.append(table_column(name))
        if text_column is not None or "completion" not in rows.columns:
            data["text"] = text.to_list()
            table_columns.append(table_column("text"))
    if "image" in rows.columns:
        data["thumbnail"] = [_thumbnail(pixels) for pixels in rows["image"].to_list()]
        table_columns.insert(0, TableColumn(field="thumbnail", title="image", width=60, formatter=HTMLTemplateFormatter(
            template='<img src="<%= value %>" width="40" height="40">')))
    return DataTable(source=ColumnDataSource(data), columns=table_columns, width=900,
                     height=min(40 + 44 * len(rows), 600), row_height=44, name="suspicious")
