"""The report in a real browser: headless Chromium loads it offline, draws its plots, logs no error, requests nothing.

Skips, saying so, when no Chromium is on PATH (CI installs the Debian ``chromium`` package). A positive control
first proves that the error and request detection works on the installed browser, so that "no errors" on the report
is evidence and not the silence of a broken probe.
"""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dpsynth.report import build_report
from dpsynth.report.build import SECTION_IDS
from tests.report.browser import browser_version, find_browser, load_page, page_url
from tests.report.fixtures import XSS_SAMPLE, complete_metrics, make_run, partial_metrics, privacy_json

pytestmark = pytest.mark.browser

CHECKS = """(() => {
  const box = (e) => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  return {
    sections: [...document.querySelectorAll('section')].map((s) => s.id),
    sectionHeights: [...document.querySelectorAll('section')].map((s) => box(s)[1]),
    svgSizes: [...document.querySelectorAll('figure svg')].map(box),
    svgShapes: [...document.querySelectorAll('figure svg')].map((s) => s.querySelectorAll('path, rect, use').length),
    images: document.images.length,
    scripts: document.scripts.length,
    samples: [...document.querySelectorAll('#samples pre')].map((p) => p.textContent),
    missing: [...document.querySelectorAll('.missing')].map((p) => p.textContent.trim()),
    title: document.title,
  };
})()"""

DP_BLUE = (0x1F, 0x63, 0xB4)


@pytest.fixture(scope="module")
def browser() -> str:
    binary = find_browser()
    if binary is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH (apt-get install chromium)")
    return binary


def test_positive_control_detects_errors_and_requests(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='http://127.0.0.1:9/pixel.png'>"
        "<script>console.error('control error'); throw new Error('control uncaught');</script></body></html>",
        encoding="utf-8",
    )
    result = load_page(browser, page_url(page), "document.querySelectorAll('p').length")
    assert result.evaluated == 1
    assert any("control error" in e for e in result.errors), result
    assert any("control uncaught" in e for e in result.errors), result
    assert "http://127.0.0.1:9/pixel.png" in result.requests


def _check_png(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 800 and image.height >= 900
    pixels = np.asarray(image.reduce(4)).reshape(-1, 3).astype(np.int64)  # a 4x smaller copy is plenty to judge
    non_white = (pixels.min(axis=1) < 235).mean()
    assert non_white > 0.02, "the screenshot is (nearly) blank"
    colours = np.unique(pixels @ np.array([1 << 16, 1 << 8, 1]))
    assert len(colours) > 50, "the screenshot has almost no distinct colours"
    return image


def test_complete_report_renders_with_plots_and_no_errors(browser: str, tmp_path: Path) -> None:
    report = build_report(make_run(tmp_path / "run", complete_metrics(), privacy_json()))
    result = load_page(browser, page_url(report), CHECKS)
    version = browser_version(browser)
    assert result.errors == [], f"{version}: {result.errors}"
    assert result.requests == [page_url(report)], f"the report made requests: {result.requests}"
    dom = result.evaluated
    assert dom["sections"] == list(SECTION_IDS)
    assert all(h > 50 for h in dom["sectionHeights"]), dom["sectionHeights"]
    assert len(dom["svgSizes"]) == 6
    for (w, h), shapes in zip(dom["svgSizes"], dom["svgShapes"], strict=True):
        assert w >= 400 and h >= 150, "a plot is not laid out at a readable size"
        assert shapes >= 10, "a plot has almost nothing drawn in it"
    assert dom["images"] == 0 and dom["scripts"] == 0
    assert dom["samples"][0] == XSS_SAMPLE  # markup in synthetic text shows as text
    assert dom["missing"] == []
    image = _check_png(result.screenshot_png)
    # The DP arm's colour appears: the plots were painted, not just present in the DOM.
    blue = (np.abs(np.asarray(image).astype(int) - DP_BLUE).max(axis=2) < 30).sum()
    assert blue > 2000


def test_partial_report_renders_with_notes_and_no_errors(browser: str, tmp_path: Path) -> None:
    report = build_report(make_run(tmp_path / "run", partial_metrics(), None))
    result = load_page(browser, page_url(report), CHECKS)
    assert result.errors == [], result.errors
    assert result.requests == [page_url(report)]
    dom = result.evaluated
    assert dom["sections"] == list(SECTION_IDS)
    assert len(dom["svgSizes"]) == 5
    assert dom["missing"] and not any("category" in m for m in dom["missing"])  # a code it lacks is no gap
    _check_png(result.screenshot_png)


TICKS = """(() => {
  const out = {};
  for (const svg of document.querySelectorAll('figure svg')) {
    const first = svg.querySelector('g[id]');
    const ticks = [...svg.querySelectorAll('g[id*="-xtick_"]')].map((g) => {
      const rs = [...g.querySelectorAll('text')].map((t) => t.getBoundingClientRect()).filter((r) => r.width > 0);
      if (!rs.length) return null;
      return [Math.min(...rs.map((r) => r.left)), Math.max(...rs.map((r) => r.right))];
    }).filter(Boolean);
    out[first ? first.id : ''] = ticks;
  }
  return out;
})()"""


def test_code_labels_on_the_x_axis_do_not_overlap(browser: str, tmp_path: Path) -> None:
    """Long category names (the demo's, as a real run has them) are wrapped so that neighbours never overlap."""
    doc = complete_metrics()
    names = ["Cell_Phones_and_Accessories", "Electronics", "Home_and_Kitchen", "Sports_and_Outdoors", "Toys_and_Games"]
    doc["distributions"]["category"] = {
        "domain": names,
        "real": [0.3, 0.2, 0.2, 0.2, 0.1],
        "dp": [0.2, 0.2, 0.2, 0.2, 0.2],
        "no_dp": [0.3, 0.3, 0.2, 0.1, 0.1],
    }
    report = build_report(make_run(tmp_path / "run", doc, privacy_json()))
    result = load_page(browser, page_url(report), TICKS)
    assert result.errors == [], result.errors
    figures = {k: v for k, v in result.evaluated.items() if k.startswith("fig-code-")}
    assert set(figures) == {"fig-code-rating-figure_1", "fig-code-category-figure_1"}, list(result.evaluated)
    for key, ticks in figures.items():
        assert len(ticks) == 5
        ticks = sorted(ticks)
        overlaps = [(a, b) for a, b in pairwise(ticks) if a[1] > b[0]]
        assert overlaps == [], f"{key}: tick labels overlap: {overlaps}"
