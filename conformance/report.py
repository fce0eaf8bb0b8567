"""The matrix as text (13 x 19 grid, legend, summary), JSON, JUnit XML and Markdown.

The grid has one row per state and one column per event of PS3.8 Table 9-10, one glyph per
cell. ``rich`` colours it when stdout is a terminal and rich is installed; the plain text
fallback needs nothing but the standard library (the runtime has no dependencies).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO

from netdicom2.conformance.matrix import CellResult, Report
from netdicom2.conformance.table import EVENTS, STATES

__all__ = [
    "GLYPHS",
    "grid_text",
    "peer_line",
    "print_report",
    "to_junit",
    "to_markdown",
    "write_json",
]

# verdict -> (glyph, plain-ASCII glyph, rich style, meaning)
GLYPHS: dict[str, tuple[str, str, str, str]] = {
    "pass": ("✓", "+", "bold green", "pass: the action of Table 9-10 observed"),
    "fail": ("✗", "X", "bold red", "fail: delivered, and the reaction differs (see the report)"),
    "inconclusive": (
        "?",
        "?",
        "bold magenta",
        "inconclusive: the state was not reached or the event not delivered (why: see below)",
    ),
    "na": ("–", "-", "yellow", "not applicable to this target (reason in the report)"),
    "blank": ("·", ".", "dim", "blank cell: shown blank, or cannot occur by the standard"),
}


def _index(report: Report) -> dict[tuple[str, str], CellResult]:
    """Results by (state, event)."""
    return {(r.state, r.event): r for r in report.results}


def summary_line(report: Report) -> str:
    """One line: counts per verdict, defined cells, time."""
    counts = report.counts()
    defined = sum(1 for r in report.results if r.action is not None)
    partial = " (PARTIAL: interrupted)" if report.header.get("partial") else ""
    return (
        f"{report.header.get('target')}: {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['inconclusive']} inconclusive, "
        f"{counts['na']} not applicable, {counts['blank']} blank "
        f"({defined} defined cells of {len(report.results)}) "
        f"in {report.header.get('seconds', 0)} s{partial}"
    )


def peer_line(report: Report) -> str:
    """Who the peer said it is on the wire (A-ASSOCIATE-AC/RQ user information), or ""."""
    peer = report.header.get("peer")
    if not isinstance(peer, dict):
        return ""
    if "error" in peer:
        return f"peer: not identified ({peer['error']})"
    return (
        f"peer: implementation class UID {peer.get('implementation_class_uid') or '(none)'}, "
        f"version name {peer.get('implementation_version_name') or '(none)'}"
    )


def grid_text(report: Report, *, ascii_only: bool = False) -> str:
    """The 13 x 19 grid in plain text, with the legend and the summary line."""
    cells = _index(report)
    slot = 2
    head = "       " + "".join(e.removeprefix("Evt").rjust(slot + 1) for e in EVENTS)
    lines = ["PS3.8 Table 9-10 (rows: states, columns: events Evt1..Evt19)", head]
    for state in STATES:
        row = [state.ljust(7)]
        for event in EVENTS:
            result = cells.get((state, event))
            glyph = " " if result is None else GLYPHS[result.verdict][1 if ascii_only else 0]
            row.append(glyph.rjust(slot + 1))
        lines.append("".join(row))
    lines.append("")
    for glyph, plain, _, meaning in GLYPHS.values():
        lines.append(f"  {plain if ascii_only else glyph}  {meaning}")
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)


def _failures_text(report: Report) -> list[str]:
    """Each failed cell (expected and seen), then each inconclusive one (why)."""
    out = []
    for r in report.results:
        if r.verdict == "fail":
            out.append(
                f"FAIL {r.test_id}: expected {r.action} -> {'|'.join(r.next_states)}; {r.reason}"
            )
    for r in report.results:
        if r.verdict == "inconclusive":
            out.append(f"INCONCLUSIVE {r.test_id}: {r.reason}")
    return out


def print_report(report: Report, stream: IO[str] | None = None, *, verbose: bool = False) -> None:
    """Print the grid (coloured with rich on a terminal), failures, summary."""
    stream = stream or sys.stdout
    use_rich = stream.isatty()
    if use_rich:
        try:
            _print_rich(report, stream)
        except ImportError:
            use_rich = False
    if not use_rich:
        ascii_only = (getattr(stream, "encoding", None) or "ascii").lower() not in (
            "utf-8",
            "utf8",
        )
        print(grid_text(report, ascii_only=ascii_only), file=stream)
    for line in filter(None, [peer_line(report), *_failures_text(report)]):
        print(line, file=stream)
    if verbose:
        for r in report.results:
            if r.verdict == "fail" and r.script:
                print(f"\n# {r.test_id}: reproducing script\n{r.script}", file=stream)


def _print_rich(report: Report, stream: IO[str]) -> None:
    """The grid as a rich table (raises ImportError without rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream)
    cells = _index(report)
    table = Table(title="PS3.8 Table 9-10", show_lines=False, pad_edge=False)
    table.add_column("", style="bold")
    for event in EVENTS:
        table.add_column(event.removeprefix("Evt"), justify="center")
    for state in STATES:
        row = [state]
        for event in EVENTS:
            result = cells.get((state, event))
            if result is None:
                row.append("")
                continue
            glyph, _, style, _ = GLYPHS[result.verdict]
            row.append(f"[{style}]{glyph}[/{style}]")
        table.add_row(*row)
    console.print(table)
    for glyph, _, style, meaning in GLYPHS.values():
        console.print(f"  [{style}]{glyph}[/{style}]  {meaning}")
    console.print(summary_line(report))


def write_json(report: Report, path: Path) -> None:
    """The JSON report: header, then one record per cell."""
    path.write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")


def to_junit(report: Report) -> str:
    """JUnit XML: one testcase per cell; na and blank are skipped with their reason."""
    counts = report.counts()
    suite = ET.Element(
        "testsuite",
        name=f"netdicom2 conformance {report.header.get('target')}",
        tests=str(len(report.results)),
        failures=str(counts["fail"]),
        skipped=str(counts["inconclusive"] + counts["na"] + counts["blank"]),
        errors="0",
        time=str(report.header.get("seconds", 0)),
        timestamp=str(report.header.get("date", "")),
    )
    for r in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{report.header.get('kind')}",
            name=r.test_id,
            time=f"{r.seconds:.3f}",
        )
        if r.verdict == "fail":
            failure = ET.SubElement(case, "failure", message=r.reason)
            failure.text = "\n".join([*r.observed, "", r.script or ""])
        elif r.verdict in ("inconclusive", "na", "blank"):
            label = {"inconclusive": "inconclusive", "na": "not applicable"}.get(
                r.verdict, "blank cell"
            )
            ET.SubElement(case, "skipped", message=f"{label}: {r.reason}")
        if r.observed and r.verdict != "fail":
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(r.observed)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode")


def to_markdown(report: Report) -> str:
    """A Markdown page: header, grid, failures with expectations, not-applicable reasons."""
    h = report.header
    lines = [f"# Conformance matrix: {h.get('target')}", ""]
    keys = ("target", "kind", "date", "netdicom2_version", "python", "artim", "sta13_timer")
    for key in (*keys, "max_wait", "jobs", "idle", "seconds", "partial"):
        if key in h:
            lines.append(f"- **{key}**: {h[key]}")
    peer = h.get("peer")
    if isinstance(peer, dict):
        for key, value in peer.items():
            lines.append(f"- **peer {key}**: {value}")
    lines += ["", f"**{summary_line(report)}**", ""]
    cells = _index(report)
    lines.append("| | " + " | ".join(e.removeprefix("Evt") for e in EVENTS) + " |")
    lines.append("|---" * (len(EVENTS) + 1) + "|")
    for state in STATES:
        row = [GLYPHS[cells[(state, e)].verdict][0] if (state, e) in cells else " " for e in EVENTS]
        lines.append(f"| {state} | " + " | ".join(row) + " |")
    lines.append("")
    lines.extend(f"- {g} {m}" for g, _, _, m in GLYPHS.values())
    failed = [r for r in report.results if r.verdict == "fail"]
    if failed:
        lines += ["", "## Cells that failed", "", "| cell | expected | observed |", "|---|---|---|"]
        for r in failed:
            expected = f"{r.action} → {'/'.join(r.next_states)}"
            lines.append(f"| {r.test_id} | {expected} | {_md(r.reason)} |")
    undecided = [r for r in report.results if r.verdict == "inconclusive"]
    if undecided:
        lines += ["", "## Inconclusive cells", "", "| cell | why |", "|---|---|"]
        lines.extend(f"| {r.test_id} | {_md(r.reason)} |" for r in undecided)
    passed = [r for r in report.results if r.verdict == "pass"]
    if passed:
        lines += ["", "## Cells that passed", ""]
        lines.append(", ".join(r.test_id for r in passed))
    na = [r for r in report.results if r.verdict == "na"]
    if na:
        lines += ["", "## Not applicable", "", "| reason | cells |", "|---|---|"]
        by_reason: dict[str, list[str]] = {}
        for r in na:
            by_reason.setdefault(r.reason, []).append(r.cell)
        for reason, names in by_reason.items():
            lines.append(f"| {_md(reason)} | {', '.join(names)} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
