"""The HTML reports in a real browser: headless Chromium opens each page from disk (file://).

Driven over the DevTools protocol on ``--remote-debugging-pipe`` (tests/cdp.py, standard
library only: no port, no websocket package). Each page must render its 13x19 grid (or its
ladders and charts) with the right classes, react to a real mouse click, raise no JavaScript
error, and ask the network for nothing but its own file. Chromium is required under CI and
skipped elsewhere when missing. ``NETDICOM2_UPDATE_SCREENSHOTS=1`` rewrites docs/screenshots/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser
from peers import require
from test_reports_html import DATA, ROOT, load, replay_fixture

from netdicom2.reports.common import ACTION_TEXT
from netdicom2.reports.html_conformance import write_comparison_html, write_conformance_html
from netdicom2.reports.html_fuzz import write_fuzz_html
from netdicom2.reports.html_replay import write_replay_html

REPORTS = ROOT / "conformance" / "reports"
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE = bool(os.environ.get("NETDICOM2_UPDATE_SCREENSHOTS"))
PEERS = ["dcmtk-3.6.7-storescp", "pynetdicom-3.0.4-scp", "orthanc-1.10.1"]
LABELS = ["DCMTK storescp", "pynetdicom SCP", "Orthanc"]

GRID_STATE = """(() => {
  const cells = [...document.querySelectorAll('table.grid td.c')];
  return cells.map(c => [c.dataset.cell || '', c.className,
                         c.querySelectorAll('.m').length, c.getBoundingClientRect().width]);
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (a new empty profile)."""
    with Browser(require("chromium")) as b:
        yield b


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four kinds of page, written from committed reports and real runs."""
    out = tmp_path_factory.mktemp("html")
    paths = {name: out / f"{name}.html" for name in ("conformance", "compare", "replay", "fuzz")}
    write_conformance_html(load(REPORTS / "dcmtk-3.6.7-storescp.json"), paths["conformance"])
    write_comparison_html(
        [load(REPORTS / f"{name}.json") for name in PEERS], paths["compare"], LABELS
    )
    write_replay_html(replay_fixture(), paths["replay"], base=ROOT)
    write_fuzz_html(load(DATA / "fuzz-pynetdicom.json"), paths["fuzz"])
    return paths


def open_clean(browser: Browser, path: Path) -> None:
    """Open a page and check it raised no error and fetched nothing but itself."""
    browser.open(path)
    assert browser.errors() == []
    assert browser.requests() == [path.resolve().as_uri()]


def shoot(browser: Browser, name: str, **kw: Any) -> None:
    """Keep a screenshot for the user guide when asked to."""
    if UPDATE:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(SCREENSHOTS / f"{name}.png", **kw)


def test_conformance_grid_renders_247_cells_and_a_click_shows_the_detail(
    browser: Browser, pages: dict[str, Path]
) -> None:
    report = load(REPORTS / "dcmtk-3.6.7-storescp.json")
    open_clean(browser, pages["conformance"])
    cells = browser.evaluate(GRID_STATE)
    assert len(cells) == 247
    assert all(width > 20 for *_, width in cells)  # laid out, not collapsed
    rendered = {cell: cls.split() for cell, cls, _, _ in cells}
    for record in report["cells"]:
        assert f"v-{record['verdict']}" in rendered[f"{record['state']}-{record['event']}"]
    assert "Click a cell" in browser.evaluate("document.getElementById('detail').textContent")
    failed = next(r for r in report["cells"] if r["verdict"] == "fail" and r["script"])
    name = f"{failed['state']}-{failed['event']}"
    browser.click(f'td[data-cell="{name}"]')
    detail = browser.evaluate("document.getElementById('detail').innerText")
    action = failed["expected"]["action"]
    assert failed["id"] in detail
    assert f"{action} — {ACTION_TEXT[action]}" in detail
    assert "next state\n" + " | ".join(failed["expected"]["next_state"]) in detail
    assert "Observed" in detail and failed["observed"][-1][:60] in detail
    assert "Reproducing script" in detail and failed["script"].splitlines()[0] in detail
    assert browser.evaluate("document.querySelector('td.selected').dataset.cell") == name
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1400
    assert browser.requests() == [pages["conformance"].resolve().as_uri()]
    shoot(browser, "conformance", max_height=1500)


def test_a_cell_named_in_the_address_opens_on_load(
    browser: Browser, pages: dict[str, Path]
) -> None:
    record = next(
        r
        for r in load(REPORTS / "dcmtk-3.6.7-storescp.json")["cells"]
        if r["id"].startswith("Sta13-Evt18")
    )
    browser.open(pages["conformance"], fragment="Sta13-Evt18")
    detail = browser.evaluate("document.getElementById('detail').innerText")
    assert "Sta13 × Evt18" in detail and record["reason"][:60] in detail


def test_comparison_puts_targets_side_by_side(browser: Browser, pages: dict[str, Path]) -> None:
    open_clean(browser, pages["compare"])
    cells = browser.evaluate(GRID_STATE)
    assert len(cells) == 247 and all(marks == 3 for _, _, marks, _ in cells)
    reports = [load(REPORTS / f"{peer}.json") for peer in PEERS]
    verdicts = {
        name: [
            f"m v-{record['verdict']}"
            for report in reports
            for record in report["cells"]
            if f"{record['state']}-{record['event']}" == name
        ]
        for name in ("Sta6-Evt19", "Sta13-Evt6", "Sta2-Evt6")
    }
    for name, expected in verdicts.items():
        marks = browser.evaluate(
            f"[...document.querySelectorAll('td[data-cell=\"{name}\"] .m')].map(m => m.className)"
        )
        assert marks == expected
    browser.click('td[data-cell="Sta6-Evt19"]')
    rows = browser.evaluate(
        "[...document.querySelectorAll('#detail table.list tbody tr')].map(r => r.innerText)"
    )
    assert [r.split("\t")[0] for r in rows] == LABELS
    shoot(browser, "compare", max_height=1700)


def test_replay_ladders_render_with_differences_highlighted(
    browser: Browser, pages: dict[str, Path]
) -> None:
    open_clean(browser, pages["replay"])
    report = replay_fixture()
    ladders = browser.evaluate(
        "[...document.querySelectorAll('svg.ladder')].map(s => "
        "[s.querySelectorAll('g.step').length, s.getBoundingClientRect().height])"
    )
    assert len(ladders) == len(report["captures"])
    assert all(steps >= 4 and height > 200 for steps, height in ladders)
    differs = browser.evaluate("document.querySelectorAll('g.st-differs line').length")
    assert differs >= 3
    colour = browser.evaluate(
        "getComputedStyle(document.querySelector('g.st-differs line')).stroke"
    )
    assert colour == "rgb(207, 34, 46)"
    shoot(browser, "replay", max_height=1900)


def test_fuzz_page_renders_charts_and_the_cells_reached(
    browser: Browser, pages: dict[str, Path]
) -> None:
    summary = json.loads((DATA / "fuzz-pynetdicom.json").read_text())
    open_clean(browser, pages["fuzz"])
    charts = browser.evaluate(
        "[...document.querySelectorAll('svg.chart polyline')].map(p => p.points.length)"
    )
    assert len(charts) == 4 and all(n == len(summary["timeline"]) for n in charts)
    cells = browser.evaluate(GRID_STATE)
    assert len(cells) == 247
    assert sum("reached" in cls.split() for _, cls, _, _ in cells) == summary["cells_reached"]
    browser.click(".finding button.copy")
    assert browser.evaluate("document.querySelector('.finding button.copy').textContent") == (
        "copied"
    )
    shoot(browser, "fuzz", max_height=1900)
