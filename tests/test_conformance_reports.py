"""Every report shows the four verdicts: inconclusive in the grid, JSON, JUnit, Markdown, HTML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from netdicom2.conformance.matrix import CellResult, Report
from netdicom2.conformance.report import grid_text, summary_line, to_junit, to_markdown
from netdicom2.reports.html_conformance import render_conformance

WHY = "could not reach Sta13 (tried release: step 5 (hold 0.3 s): closed (FIN)); explained by X"


def _report(**header: object) -> Report:
    results = [
        CellResult("Sta6", "Evt10", "DT-2", ("Sta6",), "pass"),
        CellResult("Sta6", "Evt19", "AA-8", ("Sta13",), "fail", reason="got A-ABORT(source=0)"),
        CellResult("Sta13", "Evt3", "AA-6", ("Sta13",), "inconclusive", reason=WHY),
        CellResult("Sta6", "Evt1", None, (), "blank", reason="blank"),
    ]
    base = {"target": "192.0.2.7:104", "kind": "remote", "seconds": 1.0}
    return Report({**base, **header}, results)


def test_text_and_json_count_inconclusive_apart_from_fail() -> None:
    report = _report()
    assert report.counts() == {"pass": 1, "fail": 1, "inconclusive": 1, "na": 0, "blank": 1}
    assert "1 fail, 1 inconclusive" in summary_line(report)
    row = next(line for line in grid_text(report, ascii_only=True).splitlines() if "Sta13" in line)
    assert row.split()[1:] == ["?"]
    record = report.to_json()["cells"][2]
    assert record["verdict"] == "inconclusive" and record["reason"] == WHY
    assert not report.ok and not report.strict_ok


def test_strict_fails_on_inconclusive_only_with_no_fail() -> None:
    report = _report()
    report.results = [r for r in report.results if r.verdict != "fail"]
    assert report.ok and not report.strict_ok


def test_junit_skips_inconclusive_with_its_reason() -> None:
    suite = ET.fromstring(to_junit(_report()))
    assert suite.get("failures") == "1" and suite.get("skipped") == "2"
    case = next(c for c in suite if c.get("name") == "Sta13-Evt3-AA-6")
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("message") == f"inconclusive: {WHY}"


def test_markdown_and_html_list_inconclusive_cells_and_partial_runs() -> None:
    report = _report(partial="interrupted: 4 of 247 cells run")
    markdown = to_markdown(report)
    assert "## Inconclusive cells" in markdown and "explained by X" in markdown
    assert "PARTIAL" in markdown
    page = render_conformance(report.to_json())
    assert "Inconclusive cells (1)" in page and 'class="v-inconclusive' in page
    assert "PARTIAL" in page
    # A remote report replays with RemoteDriver at its own address, not ProviderDriver.
    assert "RemoteDriver(script, address=(&#x27;192.0.2.7&#x27;, 104))" in page
