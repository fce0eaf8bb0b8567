"""The HTML reports without a browser: structure, escaping, self-containment, tolerance.

Fixtures: the committed peer matrices (conformance/reports/), the pcap corpus, and two real
runs kept in tests/reports_data/: a replay of four corpus captures against pynetdicom 3.0.4's
SCP and a 30 s fuzzing campaign against it (with the timeline ``netdicom2 fuzz --html`` samples).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from netdicom2.reports.common import esc
from netdicom2.reports.html_conformance import render_comparison, render_conformance
from netdicom2.reports.html_fuzz import Timeline, render_fuzz
from netdicom2.reports.html_replay import render_replay

ROOT = Path(__file__).resolve().parents[1]
PEERS = sorted((ROOT / "conformance" / "reports").glob("*.json"))
DATA = ROOT / "tests" / "reports_data"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the document's text."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        """Attributes of the elements with this tag (and class)."""
        return [
            a
            for t, a in self.tags
            if t == tag and (cls is None or cls in a.get("class", "").split())
        ]


def load(path: Path) -> dict[str, Any]:
    """A JSON file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def replay_fixture() -> dict[str, Any]:
    """The committed replay report (capture paths relative to the repository)."""
    return load(DATA / "replay-pynetdicom.json")


def assert_self_contained(document: str) -> None:
    """No URL the browser could fetch: no src/href to a scheme, a CSP that forbids fetching."""
    assert "Content-Security-Policy" in document
    assert "default-src 'none'" in document
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", document, re.I)
    assert "@import" not in document and "url(" not in document.replace("url(#arrow-", "")


def test_peer_reports_are_committed() -> None:
    assert len(PEERS) >= 3


@pytest.mark.parametrize("path", PEERS, ids=lambda p: p.stem)
def test_conformance_grid_has_247_cells_coloured_by_verdict(path: Path) -> None:
    report = load(path)
    page = Elements(render_conformance(report))
    cells = page.find("td", "c")
    assert len(cells) == 247
    verdicts = Counter(
        next(c.removeprefix("v-") for c in a["class"].split() if c.startswith("v-")) for a in cells
    )
    assert dict(verdicts) == {k: v for k, v in report["header"]["counts"].items() if v}
    by_id = {a["data-cell"]: a for a in cells}
    for record in report["cells"]:
        cell = by_id[f"{record['state']}-{record['event']}"]
        assert f"v-{record['verdict']}" in cell["class"].split()
    ids = {a.get("id") for _, a in page.tags}
    assert all(f"detail-{name}" in ids for name in by_id)


def test_conformance_hover_names_state_event_and_action() -> None:
    page = Elements(render_conformance(load(PEERS[0])))
    cell = next(a for a in page.find("td", "c") if a["data-cell"] == "Sta6-Evt19")
    assert "Sta6: Association established and ready for data transfer" in cell["title"]
    assert "Evt19: Unrecognized or invalid PDU received" in cell["title"]
    assert "AA-8: Send A-ABORT PDU" in cell["title"]
    header = [a["title"] for a in page.find("th") if a.get("title", "").startswith("Evt18")]
    assert header == ["Evt18: ARTIM timer expired (Association reject/release timer)"]


def test_conformance_header_shows_the_peer_identity() -> None:
    report = load(ROOT / "conformance" / "reports" / "dcmtk-3.6.7-storescp.json")
    text = "".join(Elements(render_conformance(report)).text)
    assert "OFFIS_DCMTK_367" in text and "1.2.276.0.7230010.3.0.3.6.7" in text
    assert f"{report['header']['counts']['fail']} cells failed" in text


def test_every_value_is_escaped() -> None:
    report = load(PEERS[0])
    evil = '<script>alert("x")</script>&"\''
    report["header"]["target"] = evil
    report["header"]["peer"] = {"implementation_version_name": evil}
    report["cells"][0].update(reason=evil, observed=[evil], script=evil)
    document = render_conformance(report)
    assert evil not in document
    assert esc(evil) in document
    assert document.count("<script>") == 1  # the page's own script only
    compared = render_comparison([report, report])
    assert evil not in compared and compared.count("<script>") == 1


@pytest.mark.parametrize("n", [2, 5])
def test_comparison_has_one_mark_per_target_in_each_cell(n: int) -> None:
    reports = [load(p) for p in (PEERS * 3)[:n]]
    document = render_comparison(reports)
    page = Elements(document)
    assert len(page.find("td", "c")) == 247
    assert len(page.find("span", "m")) == 247 * n
    assert_self_contained(document)


def test_comparison_frames_cells_where_targets_disagree() -> None:
    dcmtk = load(ROOT / "conformance" / "reports" / "dcmtk-3.6.7-storescp.json")
    pynetdicom = load(ROOT / "conformance" / "reports" / "pynetdicom-3.0.4-scp.json")
    page = Elements(render_comparison([dcmtk, pynetdicom], ["DCMTK", "pynetdicom"]))
    differ = {a["data-cell"] for a in page.find("td", "differ")}
    verdicts: dict[str, set[str]] = {}
    for record in dcmtk["cells"] + pynetdicom["cells"]:
        verdicts.setdefault(f"{record['state']}-{record['event']}", set()).add(record["verdict"])
    assert differ == {name for name, v in verdicts.items() if {"pass", "fail"} <= v}
    assert differ  # e.g. Sta6-Evt19: DCMTK aborts with source 0, pynetdicom passes
    assert "DCMTK" in "".join(page.text)


def test_replay_draws_a_ladder_per_connection_and_marks_differences() -> None:
    report = replay_fixture()
    document = render_replay(report, base=ROOT)
    assert_self_contained(document)
    page = Elements(document)
    ladders = page.find("svg", "ladder")
    assert len(ladders) == len(report["captures"])
    steps = page.find("g", "step")
    assert len(steps) >= 6 * len(report["captures"])
    differs = page.find("g", "st-differs")
    unexcused = {
        (entry["file"], d["step"])
        for entry in report["captures"]
        for r in entry["replays"]
        for d in r["differences"]
        if d["step"] is not None and not d["excused_by"]
    }
    assert len(differs) == len(unexcused)
    text = "".join(page.text)
    assert "A-ASSOCIATE-RJ" in text and "Sta3 → Sta13" in text  # Orthanc rejects (AE-8)
    assert "recording left PS3.8" in text


def test_replay_without_the_capture_still_renders() -> None:
    report = replay_fixture()
    report["captures"][0]["file"] = "/nonexistent/missing.pcap"
    text = "".join(Elements(render_replay(report, base=ROOT)).text)
    assert "No ladder: cannot read the capture" in text


def test_fuzz_summary_renders_charts_outcomes_cells_and_findings() -> None:
    summary = load(DATA / "fuzz-pynetdicom.json")
    document = render_fuzz(summary)
    assert_self_contained(document)
    page = Elements(document)
    assert len(page.find("svg", "chart")) == 4
    assert len(page.find("td", "c")) == 247
    assert len(page.find("td", "reached")) == summary["cells_reached"]
    assert len(page.find("tr", "finding")) == len(summary["findings"])
    assert len(page.find("pre", "repro")) == sum(1 for f in summary["findings"] if f["repro"])
    outcomes = page.find("table", "outcomes")
    assert len(outcomes) == 1


def test_fuzz_page_tolerates_missing_keys() -> None:
    document = render_fuzz({"target": "x", "examples": 1, "verdicts": {}})
    assert "no timeline" in document
    assert len(Elements(document).find("td", "c")) == 247


class FakeStats:
    """What Timeline reads from a campaign."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.examples = 0
        self.cells: set[str] = set()
        self.findings: dict[str, object] = {}

    def distinct_outcomes(self) -> int:
        return self.examples // 10


def test_timeline_keeps_a_bounded_evenly_spread_sample() -> None:
    timeline = Timeline(limit=50)
    stats = FakeStats()
    seen = []
    callback = timeline.wrap(lambda s: seen.append(s.examples))
    for i in range(10_000):
        stats.elapsed = i * 0.01
        stats.examples = i + 1
        callback(stats)
    assert len(seen) == 10_000
    assert 20 <= len(timeline.samples) <= 50
    times = [s["seconds"] for s in timeline.samples]
    assert times == sorted(times) and times[-1] > 90
    final = timeline.finish({"seconds": 100.0, "examples": 10_000, "findings": [{}]})
    assert final[-1]["examples"] == 10_000 and final[-1]["findings"] == 1
