"""The interactive report's size and load time at 10,000 and 1,000,000 samples.

For each size: a synthetic run (3 epochs, 10 classes plus threshold samples: benchmarks/engine.py's generator),
the time ``write_report`` takes, the file size, and the time Debian's chromium (Playwright, ``executable_path``)
takes from navigation to BokehJS having drawn the data map, median of ``--loads``. Prints a table, writes JSON.

Usage: python benchmarks/report.py [--sizes 10000 1000000] [--loads 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time

import tdlog.analytics as analytics
from benchmarks.engine import write_run
from tdlog.analytics.report import write_report

READY = ("() => window.Bokeh && Bokeh.documents.length > 0 && "
         "Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name('data_map'))")


def load_seconds(path: Path, loads: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1200, "height": 1800})
            start = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_function(READY)
            times.append(time.perf_counter() - start)
            page.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/report.json"))
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("needs Debian's chromium (scripts/install-chromium.sh)")
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="tdlog-report-"))
    try:
        for samples in args.sizes:
            write_run(scratch / f"run-{samples}", samples, 3)
            with analytics.open_run(scratch / f"run-{samples}") as run:
                start = time.perf_counter()
                path = write_report(run, scratch / f"report-{samples}.html")
                write_seconds = time.perf_counter() - start
            loads = load_seconds(path, args.loads)
            said = re.search(r"([\d,]+) of [\d,]+ samples are drawn|All ([\d,]+) samples are drawn", path.read_text())
            drawn = int((said.group(1) or said.group(2)).replace(",", ""))
            rows.append({"samples": samples, "drawn": drawn, "write_seconds": write_seconds,
                         "bytes": path.stat().st_size, "load_seconds_each": loads,
                         "load_seconds": statistics.median(loads)})
            mib = path.stat().st_size / 2**20
            print(f"{samples:>10,} samples, {drawn:>7,} drawn  write_report {write_seconds:6.1f} s  {mib:6.1f} MiB  "
                  f"loaded in {statistics.median(loads):5.2f} s (median of {args.loads})", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "targets": {"bytes_at_1M": "< 25 MiB"}}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
