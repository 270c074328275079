"""The interactive report in a real browser: Debian's chromium driven by Playwright (``executable_path``), on the
demo's run and on a synthetic run of 1,000,000 samples. Skipped where chromium or Playwright is missing
(``scripts/install-chromium.sh``, run by ``make test``, installs chromium where it can). Screenshots go to
``build/test-artifacts/``."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.analytics.interactive import MAX_POINTS
from tdlog.analytics.report import write_report
from tdlog.demo import DemoConfig, run_demo
from tdlog.recorder import Recorder, threshold_samples

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (scripts/install-chromium.sh)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
MILLION = 1_000_000

FRAME_BOX = """(name) => {
  const view = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name(name));
  view.canvas_view.el.scrollIntoView({block: "center"});
  const rect = view.canvas_view.el.getBoundingClientRect(), frame = view.frame.bbox;
  return {left: rect.left + frame.left, top: rect.top + frame.top, width: frame.width, height: frame.height};
}"""
POINT = """(fraction) => {
  const s = Bokeh.documents[0].get_model_by_name("samples");
  const view = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name("data_map"));
  view.canvas_view.el.scrollIntoView({block: "center"});
  const rect = view.canvas_view.el.getBoundingClientRect();
  const i = Math.floor(s.data.sample_id.length * fraction);
  return {id: String(s.data.sample_id[i]), x: rect.left + view.frame.x_scale.compute(s.data.variability[i]),
          y: rect.top + view.frame.y_scale.compute(s.data.confidence[i])};
}"""  # where the drawn point at ``fraction`` of the samples is on the page, and its id
SELECTED = """() => {
  const s = Bokeh.documents[0].get_model_by_name("samples");
  return s.selected.indices.map((i) => String(s.data.sample_id[i]));
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except sync_api.Error as error:  # a machine where the installed chromium cannot start headless
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


class Page:
    """A report opened in chromium, with every console error and network request recorded."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 1800}, accept_downloads=True)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        start = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                                    "Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name('data_map'))")
        self.load_seconds = time.perf_counter() - start

    def box(self, name: str) -> dict:
        return self.page.evaluate(FRAME_BOX, name)

    def drag(self, name: str, start: tuple[float, float], end: tuple[float, float]) -> None:
        box = self.box(name)
        mouse = self.page.mouse
        mouse.move(box["left"] + start[0] * box["width"], box["top"] + start[1] * box["height"])
        mouse.down()
        mouse.move(box["left"] + end[0] * box["width"], box["top"] + end[1] * box["height"], steps=8)
        mouse.up()
        self.page.wait_for_timeout(300)


def non_blank_canvases(page) -> int:
    """Canvases whose pixels are not all one colour (Playwright's locators see through Bokeh's shadow DOM)."""
    from PIL import Image

    drawn = 0
    for canvas in page.locator("canvas").all():
        if canvas.bounding_box() and canvas.bounding_box()["width"] > 50:
            pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"))
            drawn += int(pixels.std() > 1)
    return drawn


def check_page(report: Page, expected_plots: int, shot: str) -> None:
    page = report.page
    page.wait_for_timeout(500)
    assert report.errors == []
    assert report.requests == [report.page.url]  # the file itself, nothing from the network
    assert non_blank_canvases(page) >= expected_plots
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)

    # hover a drawn point: its sample id shows
    point = page.evaluate(POINT, 0.5)
    page.mouse.move(point["x"], point["y"])
    # the tooltip (inside Bokeh's shadow DOM, which Playwright's text locators see into) names the sample
    page.get_by_text(re.compile(rf"^sample {point['id']}$")).first.wait_for(state="visible", timeout=5000)
    page.mouse.move(5, 5)

    # a box on the data map selects points: the table lists them, the CSV holds exactly their ids
    report.drag("data_map", (0.1, 0.1), (0.9, 0.9))
    selected = page.evaluate(SELECTED)
    assert len(selected) > 0
    listed = page.evaluate("() => Bokeh.documents[0].get_model_by_name('selection').data.sample_id.map(String)")
    assert listed == selected
    assert page.get_by_text(f"{len(selected)} selected sample(s)").count() == 1
    with page.expect_download() as download:
        page.get_by_role("button", name="Save the selected ids as CSV").click()
    lines = Path(download.value.path()).read_text().split()
    assert lines[0] == "sample_id" and lines[1:] == selected

    # a range of the AUM histogram selects the drawn samples whose AUM lies in it
    report.drag("aum_histogram", (0.0, 0.5), (0.5, 0.5))
    in_range = page.evaluate("""() => {
      const s = Bokeh.documents[0].get_model_by_name("samples");
      const view = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name("aum_histogram"));
      const f = view.frame.bbox, scale = view.frame.x_scale;
      const [a, b] = [scale.invert(f.left), scale.invert(f.left + f.width / 2)];
      return Array.from(s.data.aum).map((v, i) => [v, i]).filter(([v]) => v >= Math.min(a, b) && v <= Math.max(a, b))
        .map(([, i]) => String(s.data.sample_id[i]));
    }""")
    assert page.evaluate(SELECTED) == in_range and len(in_range) > 0


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, DemoConfig(epochs=12, probes_per_suite=20, cv_folds=2, compare_cleanlab=False), retrain=False)
    return out / "report.html"


def test_demo_report_in_chromium(browser, demo_report) -> None:
    report = Page(browser, demo_report)
    # data map, AUM and AUL histograms, forgetting, epoch window, MAP-D trajectories and confusion
    check_page(report, expected_plots=7, shot="report-demo.png")
    page = report.page
    assert page.get_by_text("most suspicious samples").count() >= 1
    assert page.locator("img[src^='data:image/png']").count() >= 10  # thumbnails in the suspicious table
    # filtering by class leaves only that class selectable
    page.locator("select").first.select_option("3")
    report.drag("data_map", (0.0, 0.0), (1.0, 1.0))
    labels = page.evaluate("""() => { const s = Bokeh.documents[0].get_model_by_name("samples");
                                     return s.selected.indices.map((i) => s.data.label[i]); }""")
    assert labels and set(labels) == {3}
    # and the flag filter leaves only flagged samples; colouring by correctness draws without an error
    page.locator("select").first.select_option("all")
    page.locator("select").nth(1).select_option("flagged")
    report.drag("data_map", (0.0, 0.0), (1.0, 1.0))
    flags = page.evaluate("""() => { const s = Bokeh.documents[0].get_model_by_name("samples");
                                    return s.selected.indices.map((i) => s.data.flag_value[i]); }""")
    assert flags and set(flags) == {1}
    page.get_by_role("button", name="colour: correctness").click()
    page.wait_for_timeout(300)
    assert report.errors == []


def write_million_run(path: Path) -> None:
    """1,000,000 samples x 3 epochs of random logits (10 classes, threshold samples), written by the recorder."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (MILLION,), generator=generator)
    targets = threshold_samples(labels, 10, seed=0)
    with Recorder(path, num_classes=10, with_threshold_class=True, flush_rows=1 << 20) as rec:
        rec.register_samples(torch.arange(MILLION), labels, targets=targets)
        for epoch in range(3):
            for first in range(0, MILLION, 1 << 16):
                ids = torch.arange(first, min(first + (1 << 16), MILLION))
                logits = torch.randn(len(ids), 11, generator=generator)
                logits[torch.arange(len(ids)), labels[ids]] += 1.5 * (epoch + 1)
                rec.log(ids, logits, targets[ids], epoch=epoch)


def test_million_sample_report_stays_small_and_responsive(browser, tmp_path) -> None:
    write_million_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run:
        path = write_report(run, tmp_path / "report.html")
        flagged = int(run.scores().filter(pl.col("aum_flagged").fill_null(False)).height)
    size_mb = path.stat().st_size / 2**20
    assert size_mb < 25
    report = Page(browser, path)
    drawn = report.page.evaluate("() => Bokeh.documents[0].get_model_by_name('samples').data.sample_id.length")
    assert drawn == max(MAX_POINTS, flagged)  # every flagged sample, the rest sampled
    assert report.page.get_by_text(f"{drawn:,} of {MILLION - MILLION // 11:,} samples are drawn").count() == 1
    check_page(report, expected_plots=5, shot="report-million.png")
    print(f"1M-sample report: {size_mb:.1f} MiB, loaded in {report.load_seconds:.1f} s")


@pytest.fixture(scope="module")
def text_report(tmp_path_factory) -> Path:
    """A sequence run (token statistics, control examples) whose samples carry prompt and completion."""
    path = tmp_path_factory.mktemp("text") / "run"
    rng = np.random.default_rng(0)
    count, tokens = 200, 6
    controls = np.arange(count) % 10 == 0
    wrong = np.arange(count) % 10 == 5
    with Recorder(path, num_classes=40) as rec:
        rec.register_samples(np.arange(count), controls=controls, source=[f"set{i % 3}" for i in range(count)],
                             prompt=[f"what follows w{i}?" for i in range(count)],
                             completion=[f" w{i + (7 if bad else 1)}, \"quoted\"" for i, bad in enumerate(wrong)])
        for epoch in range(6):
            margins = rng.normal(0.8 * epoch - 1.0, 1.0, size=(count, tokens))
            margins[controls | wrong] = rng.normal(-2.0, 1.0, size=(int((controls | wrong).sum()), tokens))
            mask = torch.ones(count, tokens, dtype=torch.bool)
            log_probs = torch.as_tensor(-np.logaddexp(0, -margins), dtype=torch.float32)
            rec.log_token_log_probs(torch.arange(count), log_probs, mask, epoch=epoch,
                                    target_logits=torch.as_tensor(margins + 1.0, dtype=torch.float32),
                                    other_logits=torch.ones(count, tokens))
    with analytics.open_run(path) as run:
        return write_report(run, path.parent / "report.html")


def test_text_report_shows_and_exports_each_examples_text(browser, text_report) -> None:
    report = Page(browser, text_report)
    page = report.page
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('selection_table').visible") is False
    point = page.evaluate(POINT, 1 / 3)
    page.mouse.move(point["x"], point["y"])
    hovered = re.compile(rf"^what follows w{point['id']}\? → +w\d+")
    page.get_by_text(hovered).first.wait_for(state="visible", timeout=5000)
    page.mouse.move(5, 5)
    # the gallery: the flagged completions beside their prompts, scores to three decimals
    gallery = page.evaluate("() => Bokeh.documents[0].get_model_by_name('suspicious').source.data")
    flagged_wrong = [c for i, c in zip(gallery["sample_id"], gallery["completion"], strict=True) if i % 10 == 5]
    assert flagged_wrong and all(re.fullmatch(r' w\d+, "quoted"', c) for c in flagged_wrong)
    page.get_by_text(flagged_wrong[0]).first.wait_for(state="visible", timeout=5000)
    assert page.get_by_text(re.compile(r"^-?\d+\.\d{3}$")).count() > 10
    assert page.get_by_text(re.compile(r"\d\.\d{6,}")).count() == 0
    # select: the table appears with the text; the CSV holds ids and text, quoted
    report.drag("data_map", (0.0, 0.0), (1.0, 1.0))
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('selection_table').visible") is True
    with page.expect_download() as download:
        page.get_by_role("button", name="Save the selected ids as CSV").click()
    exported = pl.read_csv(download.value.path())
    assert exported.columns == ["sample_id", "text"] and exported.height == len(page.evaluate(SELECTED))
    first = exported.row(0, named=True)
    assert first["text"].startswith(f"what follows w{first['sample_id']}? → ") and first["text"].endswith('"quoted"')
    # the per-source plots: one line per source, the values of run.source_curves()
    with analytics.open_run(text_report.parent / "run") as run:
        curves = run.source_curves()
    for name in ("set0", "set1", "set2"):
        drawn = page.evaluate(f"() => Array.from(Bokeh.documents[0].get_model_by_name('source_loss:{name}')"
                              ".data.value)")
        expected = curves.filter(pl.col("source") == name).sort("epoch")["mean_loss"].to_list()
        np.testing.assert_allclose(drawn, expected, rtol=1e-12)
    assert non_blank_canvases(page) >= 7  # data map, AUM, AUL, forgetting, window, loss and accuracy per source
    assert report.errors == []
