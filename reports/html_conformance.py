"""The conformance matrix as HTML: one target's 13x19 grid, or several targets side by side.

Input is the JSON of ``netdicom2 conformance --json`` (``header`` and one record per cell, see
docs/conformance.md). Each cell is coloured by its verdict and shows its action; hovering names
the state, the event and the action as PS3.8 does; clicking shows the expected action and next
state, what was observed, and the script that reproduces the cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from netdicom2.reports.common import (
    ACTION_TEXT,
    EVENT_TEXT,
    EVENTS,
    STATE_TEXT,
    STATES,
    CellView,
    esc,
    grid,
    kv_list,
    page,
    write_page,
)
from netdicom2.reports.common import VERDICTS as _COMMON_VERDICTS
from netdicom2.reports.common import summary_bar as common_summary_bar

__all__ = [
    "is_conformance_report",
    "render_comparison",
    "render_conformance",
    "write_comparison_html",
    "write_conformance_html",
]

Report = Mapping[str, Any]
Record = Mapping[str, Any]

# The conformance verdicts: the shared four plus "inconclusive" (the state was not reached or
# the event not delivered), in the order the summary shows them.
VERDICTS: dict[str, tuple[str, str]] = {
    "pass": _COMMON_VERDICTS["pass"],
    "fail": _COMMON_VERDICTS["fail"],
    "inconclusive": ("?", "inconclusive"),
    "na": _COMMON_VERDICTS["na"],
    "blank": _COMMON_VERDICTS["blank"],
}
_CSS = (
    "<style>.v-inconclusive { color: #8250df; background: #fbefff; }"
    " .bar .v-inconclusive { background: #8250df; }"
    " table.grid td.v-inconclusive { box-shadow: inset 0 0 0 1px #8250df; }"
    " table.grid td.c.cmp .m.v-inconclusive { background: #8250df; }</style>"
)


def summary_bar(counts: Mapping[str, Any]) -> str:
    """The shared verdict bar with "inconclusive" among the verdicts, and its colours."""
    return _CSS + common_summary_bar(counts, VERDICTS)


_REPLAY_HEAD = """from netdicom2.items import *
from netdicom2.pdu import *
from netdicom2.conformance.script import *
from netdicom2.conformance.runner import execute
"""
_DRIVERS = {
    "local": ("from conformance.local import LocalDriver", "LocalDriver(script)"),
    "provider": ("from conformance.provider import ProviderDriver", "ProviderDriver(script)"),
}


def _replay_text(header: Mapping[str, Any]) -> str:
    """The replay snippet with the driver of the report's target."""
    kind = str(header.get("kind") or "")
    target = str(header.get("target") or "HOST:PORT")
    if kind in _DRIVERS:
        imp, driver = _DRIVERS[kind]
    elif kind == "remote-requestor":
        imp = "from conformance.peer import Listener\nfrom conformance.remote import RemoteDriver"
        driver = "RemoteDriver(script, listener=Listener())  # then start the peer"
    else:
        host, _, port = target.rpartition(":")
        imp = "from conformance.remote import RemoteDriver"
        driver = f"RemoteDriver(script, address=({host or 'HOST'!r}, {port or 'PORT'}))"
    return (
        f"{_REPLAY_HEAD}{imp}\n\nscript = eval(SCRIPT)\n"
        f'print("\\n".join(execute(script, {driver}).log))'
    )


def is_conformance_report(data: object) -> bool:
    """Whether ``data`` looks like the JSON of ``netdicom2 conformance``."""
    return isinstance(data, Mapping) and "header" in data and "cells" in data


def _cells(report: Report) -> dict[tuple[str, str], Record]:
    """The report's records by (state, event)."""
    out: dict[tuple[str, str], Record] = {}
    for record in report.get("cells") or []:
        if isinstance(record, Mapping) and record.get("state") and record.get("event"):
            out[(str(record["state"]), str(record["event"]))] = record
    return out


def _verdict(record: Record | None) -> str:
    """The record's verdict, "blank" when missing or unknown."""
    verdict = str((record or {}).get("verdict") or "blank")
    return verdict if verdict in VERDICTS else "blank"


def _expected(record: Record | None) -> Mapping[str, Any]:
    """The record's expectation (empty when absent)."""
    value = (record or {}).get("expected")
    return value if isinstance(value, Mapping) else {}


def _next_states(expected: Mapping[str, Any]) -> str:
    """ "Sta3 | Sta13" style next states."""
    value = expected.get("next_state") or []
    return " | ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _hover(state: str, event: str, record: Record | None, verdicts: str) -> str:
    """The hover text of a cell: state, event and action in the standard's words."""
    action = _expected(record).get("action")
    lines = [f"{state}: {STATE_TEXT[state]}", f"{event}: {EVENT_TEXT[event]}"]
    if action:
        nxt = _next_states(_expected(record))
        lines.append(f"{action}: {ACTION_TEXT.get(str(action), '')} → {nxt}")
    else:
        lines.append("blank cell (no action in Table 9-10)")
    lines.append(verdicts)
    return "\n".join(lines)


def _counts(report: Report) -> dict[str, int]:
    """Verdict counts from the header, or counted from the cells."""
    counts = (report.get("header") or {}).get("counts")
    if isinstance(counts, Mapping):
        return {v: int(counts.get(v, 0) or 0) for v in VERDICTS}
    out = dict.fromkeys(VERDICTS, 0)
    for record in _cells(report).values():
        out[_verdict(record)] += 1
    return out


def _header_pairs(header: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The header fields worth showing, labelled."""
    peer = header.get("peer") if isinstance(header.get("peer"), Mapping) else {}
    assert isinstance(peer, Mapping)
    artim = header.get("artim")
    if isinstance(artim, Mapping):  # several ARTIM values, by the cells they were used in
        artim = ", ".join(f"{v} s {k}" for k, v in artim.items())
    elif artim is not None:
        artim = f"{artim} s"
    return [
        ("target", header.get("target")),
        ("kind", header.get("kind")),
        ("peer implementation", peer.get("implementation_class_uid")),
        ("peer version", peer.get("implementation_version_name")),
        *[(f"peer {k}", v) for k, v in peer.items() if not str(k).startswith("implementation_")],
        ("date", header.get("date")),
        ("ARTIM", artim),
        ("Sta13 timer", header.get("sta13_timer")),
        ("longest wait", header.get("max_wait")),
        ("jobs", header.get("jobs")),
        ("idle association", header.get("idle")),
        ("PARTIAL", header.get("partial")),
        ("standard", header.get("standard")),
        ("netdicom2", header.get("netdicom2_version")),
        ("Python", header.get("python")),
        ("run time", f"{header['seconds']} s" if header.get("seconds") is not None else None),
    ]


def _effects(expected: Mapping[str, Any]) -> str:
    """What the action should show, in words."""
    parts = []
    if expected.get("sends"):
        detail = str(expected["sends"])
        if expected.get("send_source"):
            detail += f" (source {'/'.join(str(s) for s in expected['send_source'])}"
            if expected.get("send_reason"):
                detail += f", reason {'/'.join(str(r) for r in expected['send_reason'])}"
            detail += ")"
        parts.append(f"sends {detail}")
    if expected.get("indicates"):
        parts.append(f"indicates {expected['indicates']}")
    if expected.get("artim") and expected["artim"] != "keep":
        parts.append(f"ARTIM {expected['artim']}")
    if expected.get("transport") and expected["transport"] != "keep":
        parts.append(f"transport {expected['transport']}")
    return "; ".join(parts) or "nothing visible"


def _spec_pairs(state: str, event: str, expected: Mapping[str, Any]) -> list[tuple[str, object]]:
    """What the standard says about a cell: state, event, action, next state, effects."""
    action = expected.get("action")
    pairs: list[tuple[str, object]] = [
        ("state", f"{state} — {STATE_TEXT[state]}"),
        ("event", f"{event} — {EVENT_TEXT[event]}"),
    ]
    if not action:
        return [*pairs, ("expected action", "none: a blank cell of Table 9-10")]
    pairs += [
        ("expected action", f"{action} — {ACTION_TEXT.get(str(action), '')}"),
        ("next state", _next_states(expected)),
        ("expected effects", _effects(expected)),
    ]
    if expected.get("effects"):
        pairs.append(("core effects", ", ".join(str(e) for e in expected["effects"])))
    return pairs


def _outcome_pairs(rec: Mapping[str, Any]) -> list[tuple[str, object]]:
    """What happened: verdict and reason, measured times, duration."""
    verdict = _verdict(rec)
    pairs: list[tuple[str, object]] = [
        ("verdict", f"{VERDICTS[verdict][1]}: {rec.get('reason') or ''}")
    ]
    measured = rec.get("measured")
    if isinstance(measured, Mapping):
        pairs += [(f"measured {k}", v) for k, v in measured.items()]
    if rec.get("seconds") is not None:
        pairs.append(("duration", f"{rec['seconds']} s"))
    return pairs


def _evidence(rec: Mapping[str, Any]) -> str:
    """The observed steps and the reproducing script of one record."""
    parts = []
    observed = rec.get("observed")
    if observed:
        lines = observed if isinstance(observed, list) else [observed]
        parts.append(
            f'<h4>Observed</h4><pre class="observed">{esc(chr(10).join(map(str, lines)))}</pre>'
        )
    if rec.get("script"):
        parts.append(
            '<h4>Reproducing script<button class="copy" type="button">copy</button></h4>'
            f'<pre class="script">{esc(rec["script"])}</pre>'
            '<p class="muted">To run it, see <a href="#replaying">Replaying a cell</a>.</p>'
        )
    return "".join(parts)


def _detail(state: str, event: str, record: Record | None) -> str:
    """The detail block of one cell of one report (hidden until the cell is clicked)."""
    rec = record or {}
    title = (
        f"<h3>{_badge(_verdict(record))} {esc(state)} × {esc(event)} "
        f'<small class="muted mono">{esc(rec.get("id", ""))}</small></h3>'
    )
    pairs = _spec_pairs(state, event, _expected(record)) + _outcome_pairs(rec)
    return title + kv_list(pairs) + _evidence(rec)


def _compared_detail(
    state: str, event: str, names: Sequence[str], records: Sequence[Record | None]
) -> str:
    """The detail block of one cell across targets: the standard once, then each target."""
    expected = next((_expected(r) for r in records if _expected(r)), {})
    rows = []
    evidence = []
    for name, record in zip(names, records, strict=True):
        rec = record or {}
        verdict = _verdict(record)
        seconds = rec.get("seconds")
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{_badge(verdict)}</td><td>{esc(rec.get('reason'))}</td>"
            f'<td class="num">{esc("" if seconds is None else f"{seconds} s")}</td></tr>'
        )
        body = _evidence(rec)
        if body:
            is_open = " open" if verdict == "fail" else ""
            evidence.append(
                f"<details{is_open}><summary>{esc(name)}: observed and script</summary>"
                f"{body}</details>"
            )
    table = (
        '<table class="list"><thead><tr><th>target</th><th>verdict</th><th>reason</th>'
        f"<th>duration</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return (
        f"<h3>{esc(state)} × {esc(event)}</h3>"
        + kv_list(_spec_pairs(state, event, expected))
        + table
        + "".join(evidence)
    )


def _label(report: Report, index: int) -> str:
    """A short name for a report in a comparison."""
    header = report.get("header") or {}
    return str(header.get("target") or f"report {index + 1}")


def render_conformance(report: Report) -> str:
    """The page of one conformance report."""
    header = report.get("header") or {}
    cells = _cells(report)
    counts = _counts(report)

    def view(state: str, event: str) -> CellView:
        record = cells.get((state, event))
        verdict = _verdict(record)
        action = _expected(record).get("action")
        text = esc(action) if action else VERDICTS["blank"][0]
        hover = _hover(state, event, record, f"verdict: {VERDICTS[verdict][1]}")
        return CellView(f"v-{verdict}", text, hover, f"{state}-{event}")

    target = str(header.get("target") or "unknown target")
    body = [
        '<div class="cards"><div class="card"><h3>Target</h3>',
        kv_list(_header_pairs(header)),
        '</div><div class="card"><h3>Summary</h3>',
        summary_bar(counts),
        _verdict_line(counts["fail"], counts["inconclusive"], bool(header.get("partial"))),
        "</div></div>",
        "<h2>PS3.8 Table 9-10, cell by cell</h2>",
        _legend(),
        grid(view),
        '<section id="detail" class="detail" aria-live="polite"><p class="hint">Click a cell to '
        "see the expected action and next state, what was observed, and the reproducing "
        "script.</p></section>",
        _failures(cells),
        _inconclusive(cells),
        _not_applicable(cells),
        _replaying(header),
        '<div hidden id="details">',
        *(
            f'<div id="detail-{esc(s)}-{esc(e)}">{_detail(s, e, cells.get((s, e)))}</div>'
            for s in STATES
            for e in EVENTS
        ),
        "</div>",
    ]
    subtitle = f"PS3.8 §9.2 Table 9-10: 13 states × 19 events, {header.get('date') or ''}"
    return page(
        f"Conformance matrix: {target}", "\n".join(body), subtitle=subtitle, kind="conformance"
    )


def _replaying(header: Mapping[str, Any] | None = None) -> str:
    """How to run a cell's reproducing script (once per page)."""
    return (
        '<h2 id="replaying">Replaying a cell</h2><p>Each cell\'s script is a '
        "<code>conformance.script.Script</code> with an evaluable repr: paste it as "
        "<code>SCRIPT</code> (a string) below, and pick the driver of the target.</p>"
        f"<pre>{esc(_replay_text(header or {}))}</pre>"
    )


def _verdict_line(failed: int, inconclusive: int = 0, partial: bool = False) -> str:
    """One line: how many cells failed, how many could not be judged; partial or not."""
    text = f"{failed} cells failed" if failed else "no cell failed"
    if inconclusive:
        text += f", {inconclusive} inconclusive"
    if partial:
        text += " (PARTIAL: the run was interrupted)"
    return f'<p class="{"bad" if failed or partial else "ok"}">{esc(text)}</p>'


def _legend() -> str:
    """What the colours mean."""
    meanings = {
        "pass": "the action of Table 9-10 was observed",
        "fail": "delivered, and something else happened (click for expected and observed)",
        "inconclusive": "the state was not reached or the event not delivered (click: why)",
        "na": "this target cannot produce the state or the event",
        "blank": "blank cell: stays blank, or cannot occur",
    }
    return (
        '<div class="legend">'
        + "".join(
            f'<span><span class="badge v-{v}">{esc(g)}</span> {esc(meanings[v])}</span>'
            for v, (g, _) in VERDICTS.items()
        )
        + "</div>"
    )


def _failures(cells: Mapping[tuple[str, str], Record]) -> str:
    """A table of the failed cells, each linking to its detail."""
    failed = [(k, r) for k, r in cells.items() if _verdict(r) == "fail"]
    if not failed:
        return ""
    rows = "".join(
        f'<tr><td><a href="#{esc(s)}-{esc(e)}">{esc(r.get("id") or s + "-" + e)}</a></td>'
        f"<td>{esc(_expected(r).get('action'))} → {esc(_next_states(_expected(r)))}</td>"
        f"<td>{esc(r.get('reason'))}</td></tr>"
        for (s, e), r in sorted(
            failed, key=lambda kr: (STATES.index(kr[0][0]), EVENTS.index(kr[0][1]))
        )
    )
    return (
        f"<h2>Cells that failed ({len(failed)})</h2>"
        '<table class="list"><thead><tr><th>cell</th><th>expected</th><th>observed</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _inconclusive(cells: Mapping[tuple[str, str], Record]) -> str:
    """A table of the inconclusive cells: why each could not be judged."""
    rows = [
        f'<tr><td><a href="#{esc(s)}-{esc(e)}">{esc(r.get("id") or s + "-" + e)}</a></td>'
        f"<td>{esc(r.get('reason'))}</td></tr>"
        for (s, e), r in sorted(
            cells.items(), key=lambda kr: (STATES.index(kr[0][0]), EVENTS.index(kr[0][1]))
        )
        if _verdict(r) == "inconclusive"
    ]
    if not rows:
        return ""
    return (
        f"<h2>Inconclusive cells ({len(rows)})</h2>"
        '<table class="list"><thead><tr><th>cell</th><th>why</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _not_applicable(cells: Mapping[tuple[str, str], Record]) -> str:
    """Not-applicable cells grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for (state, event), record in cells.items():
        if _verdict(record) == "na":
            by_reason.setdefault(str(record.get("reason") or ""), []).append(f"{state}-{event}")
    if not by_reason:
        return ""
    rows = "".join(
        f"<tr><td>{esc(reason)}</td><td>"
        + " ".join(f'<a class="mono" href="#{esc(c)}">{esc(c)}</a>' for c in names)
        + "</td></tr>"
        for reason, names in by_reason.items()
    )
    total = sum(len(v) for v in by_reason.values())
    return (
        f"<h2>Not applicable ({total})</h2><details><summary>reasons and cells</summary>"
        '<table class="list"><thead><tr><th>reason</th><th>cells</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></details>"
    )


def render_comparison(reports: Sequence[Report], labels: Sequence[str] | None = None) -> str:
    """One page with several targets: a grid whose cells hold one mark per target."""
    names = list(labels) if labels else [_label(r, i) for i, r in enumerate(reports)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # make labels unique
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} ({seen[name]})"
    all_cells = [_cells(r) for r in reports]

    def verdicts_of(state: str, event: str) -> list[str]:
        return [_verdict(c.get((state, event))) for c in all_cells]

    def view(state: str, event: str) -> CellView:
        verdicts = verdicts_of(state, event)
        marks = "".join(f'<span class="m v-{v}"></span>' for v in verdicts)
        record = next((c[(state, event)] for c in all_cells if (state, event) in c), None)
        hover = _hover(
            state,
            event,
            record,
            "\n".join(f"{n}: {VERDICTS[v][1]}" for n, v in zip(names, verdicts, strict=True)),
        )
        differ = " differ" if len(set(verdicts) & {"pass", "fail"}) > 1 else ""
        return CellView(f"cmp{differ}", marks, hover, f"{state}-{event}")

    cards = []
    for name, report in zip(names, reports, strict=True):
        header = report.get("header") or {}
        cards.append(
            f'<div class="card"><h3>{esc(name)}</h3>'
            + kv_list(_header_pairs(header)[2:7])
            + summary_bar(_counts(report))
            + "</div>"
        )
    order = " ".join(f'<span class="badge">{i + 1}. {esc(n)}</span>' for i, n in enumerate(names))
    body = [
        f'<div class="cards">{"".join(cards)}</div>',
        "<h2>PS3.8 Table 9-10, side by side</h2>",
        f"<p>Each cell holds one mark per target, left to right: {order}. A framed cell is one "
        "where some target passes and another fails.</p>",
        _legend(),
        grid(view),
        '<section id="detail" class="detail" aria-live="polite"><p class="hint">Click a cell to '
        "compare what each target did.</p></section>",
        _disagreements(names, all_cells),
        _replaying(),
        '<div hidden id="details">',
    ]
    for state in STATES:
        for event in EVENTS:
            records = [c.get((state, event)) for c in all_cells]
            block = _compared_detail(state, event, names, records)
            body.append(f'<div id="detail-{esc(state)}-{esc(event)}">{block}</div>')
    body.append("</div>")
    return page(
        "Conformance matrices compared",
        "\n".join(body),
        subtitle=" · ".join(names),
        kind="conformance",
    )


def _disagreements(
    names: Sequence[str], all_cells: Sequence[Mapping[tuple[str, str], Record]]
) -> str:
    """A table of the cells where some target fails, with each target's verdict."""
    rows = []
    for state in STATES:
        for event in EVENTS:
            verdicts = [_verdict(c.get((state, event))) for c in all_cells]
            if "fail" not in verdicts:
                continue
            tds = "".join(f"<td>{_badge(v)}</td>" for v in verdicts)
            rows.append(
                f'<tr><td><a class="mono" href="#{esc(state)}-{esc(event)}">'
                f"{esc(state)}-{esc(event)}</a></td>{tds}</tr>"
            )
    if not rows:
        return "<h2>Cells that failed</h2><p>No target failed a cell.</p>"
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    return (
        f"<h2>Cells that failed on some target ({len(rows)})</h2>"
        f'<table class="list"><thead><tr><th>cell</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _badge(verdict: str) -> str:
    """A coloured verdict label with its glyph."""
    glyph, label = VERDICTS[verdict]
    return f'<span class="badge v-{verdict}">{esc(glyph)} {esc(label)}</span>'


def write_conformance_html(report: Report, path: Path) -> None:
    """Write the page of one conformance report to ``path``."""
    write_page(path, render_conformance(report))


def write_comparison_html(
    reports: Sequence[Report], path: Path, labels: Sequence[str] | None = None
) -> None:
    """Write the side-by-side page of several conformance reports to ``path``."""
    write_page(path, render_comparison(reports, labels))
