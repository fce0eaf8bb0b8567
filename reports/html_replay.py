"""Replays and codec checks of captures as HTML: one SVG ladder diagram per DICOM connection.

Input is the JSON of ``netdicom2 replay --json`` plus the captures it names (read again with
``pcaps``, which needs scapy): the JSON holds the verdicts and differences, the capture holds
each PDU's time, type, length and fields. Each connection is drawn with a requestor lane and an
acceptor lane, one arrow per PDU (or close), the state of each recorded side before and after
as judged by ``pcaps.model`` against PS3.8 Table 9-10, and the steps where a replay differed
from the recording, where the recording left PS3.8, or where the codec refused a PDU, marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdicom2.conformance.table import ACTIONS, PDU_NAMES
from netdicom2.reports.common import esc, kv_list, page, write_page

__all__ = [
    "Row",
    "is_replay_report",
    "ladder_rows",
    "ladder_svg",
    "render_replay",
    "write_replay_html",
]

Report = Mapping[str, Any]

_ROW = 50  # vertical space per step (px)
_WIDTH = 1200
_LEFT, _RIGHT = 330, 900  # requestor and acceptor lane x
_TOP = 78
_MAX_ROWS = 400  # longer ladders are cut (the tables below still list every difference)
_COLOURS = {
    "requestor": "#0969da",
    "acceptor": "#8250df",
    "finding": "#bc4c00",
    "differs": "#cf222e",
    "invalid": "#cf222e",
}


def is_replay_report(data: object) -> bool:
    """Whether ``data`` looks like the JSON of ``netdicom2 replay``."""
    return isinstance(data, Mapping) and "captures" in data


@dataclass
class Row:
    """One step of a ladder: an arrow (a PDU) or a close, with what to say about it."""

    index: int
    time: float
    side: str  # the sender: "requestor" or "acceptor"
    kind: str  # "pdu", "fin", "rst"
    title: str
    detail: str = ""
    states: dict[str, str] = field(default_factory=dict)  # side -> "Sta5 → Sta6"
    status: str = "ok"  # "ok", "finding", "invalid", "differs"
    notes: list[str] = field(default_factory=list)  # findings, differences, codec issues


def _next_state(label: str, side: str) -> str:
    """The state a receiving side enters after ``label`` (an action, maybe "AE-6 reject")."""
    name = label.split()[0]
    spec = ACTIONS.get(name)
    if spec is None:
        return ""
    if name == "AE-6":
        return spec.next_states[-1] if "reject" in label else spec.next_states[0]
    if name == "AR-8":
        return spec.next_states[0] if side == "requestor" else spec.next_states[-1]
    return spec.next_states[0]


def ladder_rows(
    conn: Any, replays: Sequence[Mapping[str, Any]], issues: Sequence[Mapping[str, Any]]
) -> list[Row]:
    """The steps of a recorded connection (pcaps.flows.DicomConnection), judged and annotated."""
    from netdicom2.pcaps.describe import describe
    from netdicom2.pcaps.model import judge

    judgement = judge(conn)
    first = judgement.steps[0].time if judgement.steps else 0.0
    bad_pdus = {(str(i.get("side")), i.get("index")): i for i in issues}
    rows: list[Row] = []
    for index, step in enumerate(judgement.steps):
        event = step.event
        record = event.record
        other = "acceptor" if step.side == "requestor" else "requestor"
        if event.kind == "pdu" and record is not None:
            name = PDU_NAMES.get(record.pdu_type, f"PDU type 0x{record.pdu_type:02X}")
            length = record.length
            # Sizes are whole PDUs, 6-byte header included (as in the terminal output).
            size = len(record.data)
            whole = size if length is None else length + 6
            title = f"{name} · {size} B" if size == whole else f"{name} · {size} of {whole} B"
            if record.pdu is not None:
                detail = describe(record.pdu).removeprefix(name).strip()
            else:
                detail = f"{record.status}: {record.error or ''}"
            if record.notes:
                detail = (detail + " · " if detail else "") + "; ".join(record.notes)
        else:
            title = "RST (reset)" if event.kind == "rst" else "FIN (close)"
            detail = "transport closed"
        row = Row(index, step.time - first, step.side, event.kind, title, detail)
        if judgement.judged:
            row.states[step.side] = f"Sta{step.state_before} → Sta{step.state_after}"
            if step.peer_action:
                nxt = _next_state(step.peer_action, other)
                row.states[other] = f"{step.peer_action}" + (f" → {nxt}" if nxt else "")
        if record is not None and record.status != "ok":
            row.status = "invalid"
        issue = bad_pdus.get((step.side, record.index)) if record is not None else None
        if issue is not None:
            row.status = "invalid"
            row.notes.append(f"codec {issue.get('kind')}: {issue.get('detail')}")
        if step.finding is not None:
            row.status = "finding" if row.status == "ok" else row.status
            row.notes.append(f"recording left PS3.8 at {step.finding.cell}: {step.finding.text}")
        rows.append(row)
    for replay in replays:
        for diff in replay.get("differences") or []:
            step = diff.get("step")
            if not isinstance(step, int) or not 0 <= step < len(rows):
                continue
            excused = diff.get("excused_by")
            rows[step].notes.append(
                f"{replay.get('mode')}: {diff.get('what')}: recorded {diff.get('expected')}, "
                f"got {diff.get('actual')}"
                + (" (excused: recording already left PS3.8)" if excused else "")
            )
            if not excused:
                rows[step].status = "differs"
    return rows


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row_height(row: Row) -> int:
    """Vertical space of a step: more when a note is printed under it."""
    return _ROW + (16 if row.notes else 0)


def ladder_svg(
    rows: Sequence[Row], requestor: str, acceptor: str, extra: Sequence[str] = ()
) -> str:
    """The ladder diagram: two lanes, one arrow per step, states beside the lanes."""
    shown = list(rows[:_MAX_ROWS])
    tail = len(extra) + (1 if len(rows) > _MAX_ROWS else 0)
    height = _TOP + sum(_row_height(r) for r in shown) + _ROW * tail + 16
    mid = (_LEFT + _RIGHT) // 2
    parts = [
        f'<svg class="ladder" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="ladder diagram">',
        "<defs>",
        *(
            f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="11" '
            'markerHeight="11" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
            for k, c in _COLOURS.items()
        ),
        "</defs>",
        '<text x="12" y="62" class="hd">time</text><text x="118" y="62" class="hd">step</text>',
    ]
    for x, role, where in ((_LEFT, "requestor", requestor), (_RIGHT, "acceptor", acceptor)):
        parts.append(
            f'<rect x="{x - 120}" y="8" width="240" height="40" rx="6" class="lane-box {role}"/>'
            f'<text x="{x}" y="25" text-anchor="middle" class="lane">{esc(role)}</text>'
            f'<text x="{x}" y="41" text-anchor="middle" class="addr">{esc(where)}</text>'
            f'<line x1="{x}" y1="48" x2="{x}" y2="{height - 8}" class="lifeline"/>'
        )
    y = _TOP + 18
    for row in shown:
        parts.append(_arrow(row, y))
        y += _row_height(row)
    if len(rows) > _MAX_ROWS:
        parts.append(
            f'<text x="{mid}" y="{y}" text-anchor="middle" class="note">'
            f"… {len(rows) - _MAX_ROWS} more steps not drawn</text>"
        )
        y += _ROW
    for text in extra:
        parts.append(
            f'<g class="step st-differs"><title>{esc(text)}</title>'
            f'<text x="{mid}" y="{y}" text-anchor="middle" class="diff">'
            f"✗ after the recording: {esc(_clip(text, 110))}</text></g>"
        )
        y += _ROW
    parts.append("</svg>")
    return "".join(parts)


def _arrow(row: Row, y: int) -> str:
    """One step: the arrow (or close marker), its labels, the states at both lanes."""
    start, end = (_LEFT, _RIGHT) if row.side == "requestor" else (_RIGHT, _LEFT)
    colour_key = row.status if row.status in _COLOURS else row.side
    colour = _COLOURS[colour_key]
    tooltip = "\n".join([f"step {row.index}: {row.title}", row.detail, *row.notes])
    mid = (_LEFT + _RIGHT) // 2
    dash = ' stroke-dasharray="6 4"' if row.kind != "pdu" or row.status == "invalid" else ""
    width = 3 if row.status in ("differs", "invalid") else 2
    out = [
        f'<g class="step st-{esc(row.status)}" data-step="{row.index}">',
        f"<title>{esc(tooltip)}</title>",
        f'<text x="12" y="{y + 4}" class="time">+{row.time:.3f} s</text>',
        f'<text x="118" y="{y + 4}" class="idx">#{row.index}</text>',
        f'<line x1="{start}" y1="{y}" x2="{end}" y2="{y + 10}" stroke="{colour}" '
        f'stroke-width="{width}"{dash} marker-end="url(#arrow-{colour_key})"/>',
        f'<text x="{mid}" y="{y - 6}" text-anchor="middle" class="pdu" style="fill:{colour}">'
        f"{esc(row.title)}</text>",
        f'<text x="{mid}" y="{y + 24}" text-anchor="middle" class="fields">'
        f"{esc(_clip(row.detail, 88))}</text>",
    ]
    if row.kind != "pdu":
        out.append(f'<circle cx="{start}" cy="{y}" r="6" fill="{colour}"/>')
    for side, text in row.states.items():
        x, anchor = (_LEFT - 12, "end") if side == "requestor" else (_RIGHT + 12, "start")
        out.append(
            f'<text x="{x}" y="{y + 9}" text-anchor="{anchor}" class="state">{esc(text)}</text>'
        )
    if row.notes:
        mark = "✗" if row.status in ("differs", "invalid") else "⚠"
        out.append(
            f'<text x="{mid}" y="{y + 42}" text-anchor="middle" class="note" style="fill:{colour}">'
            f"{mark} {esc(_clip(row.notes[0], 100))}"
            + (f" (+{len(row.notes) - 1})" if len(row.notes) > 1 else "")
            + "</text>"
        )
    out.append("</g>")
    return "".join(out)


_SVG_CSS = """
svg.ladder { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  max-width: 100%; height: auto; }
svg.ladder text { font-family: system-ui, "DejaVu Sans", sans-serif; font-size: 12px;
  fill: #1f2328; }
svg.ladder .hd { fill: #59636e; }
svg.ladder .lane { font-weight: 700; font-size: 13px; }
svg.ladder .addr, svg.ladder .time, svg.ladder .idx { font-family: ui-monospace,
  "DejaVu Sans Mono", monospace; font-size: 11px; fill: #59636e; }
svg.ladder .lane-box { fill: #f6f8fa; stroke: #d1d9e0; }
svg.ladder .lane-box.requestor { stroke: #0969da; }
svg.ladder .lane-box.acceptor { stroke: #8250df; }
svg.ladder .lifeline { stroke: #d1d9e0; stroke-width: 2; }
svg.ladder .pdu { font-weight: 700; }
svg.ladder .fields { fill: #59636e; font-size: 11px; }
svg.ladder .state { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 11px;
  fill: #1f2328; }
svg.ladder .note { font-size: 11px; font-weight: 600; }
svg.ladder .diff { fill: #cf222e; font-weight: 700; }
svg.ladder g.step:hover .fields { fill: #1f2328; }
"""


def _load(path: Path, ports: Sequence[int]) -> tuple[Any, str]:
    """The capture (pcaps.flows.Capture) or None and why it could not be read."""
    try:
        from netdicom2.pcaps.flows import load_capture
    except ImportError as exc:  # scapy is an optional extra
        return None, f"the pcap tooling is not installed ({exc})"
    try:
        return load_capture(path, ports), ""
    except (OSError, ValueError) as exc:
        return None, f"cannot read the capture: {exc}"


def _verdict(result: Mapping[str, Any]) -> str:
    """A badge for one replay result."""
    if result.get("skipped"):
        return '<span class="badge v-blank">skipped</span>'
    if result.get("ok"):
        return '<span class="badge v-pass">✓ same as recorded</span>'
    return '<span class="badge v-fail">✗ different</span>'


def _replay_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Each replay of a connection: verdict, differences, not copied, notes, transcript."""
    out = []
    for result in results:
        items = []
        if result.get("skipped"):
            items.append(f"<li>skipped: {esc(result['skipped'])}</li>")
        for diff in result.get("differences") or []:
            where = (
                f"step {diff.get('step')}"
                if diff.get("step") is not None
                else "after the recording"
            )
            excused = (
                f" <em>(excused: {esc(diff['excused_by'])})</em>" if diff.get("excused_by") else ""
            )
            cls = "muted" if diff.get("excused_by") else "bad"
            recorded, got = esc(diff.get("expected")), esc(diff.get("actual"))
            items.append(
                f'<li class="{cls}">{esc(where)}: {esc(diff.get("what"))}: recorded '
                f"<code>{recorded}</code>, got <code>{got}</code>{excused}</li>"
            )
        items += [f"<li>not copied: {esc(t)}</li>" for t in result.get("not_copied") or []]
        items += [f"<li>note: {esc(t)}</li>" for t in result.get("notes") or []]
        transcript = result.get("transcript") or []
        trans = (
            "<details><summary>netdicom2's transitions in this replay</summary><pre>"
            + esc("\n".join(map(str, transcript)))
            + "</pre></details>"
            if transcript
            else ""
        )
        out.append(
            f'<div class="card"><h3>{_verdict(result)} {esc(result.get("mode"))} '
            f'<small class="muted">{esc(result.get("elapsed"))} s</small></h3>'
            + (f"<ul>{''.join(items)}</ul>" if items else "<p>no difference</p>")
            + trans
            + "</div>"
        )
    return f'<div class="cards">{"".join(out)}</div>' if out else ""


def render_replay(
    report: Report,
    *,
    ports: Sequence[int] = (),
    base: Path | None = None,
    missing: list[str] | None = None,
) -> str:
    """The page of a replay (or codec check) report, with a ladder per connection.

    Captures named by a relative path are read from ``base`` (default: the current directory).
    Each capture whose ladder could not be drawn is added to ``missing`` with the reason.
    """
    captures = [c for c in report.get("captures") or [] if isinstance(c, Mapping)]
    summary_rows = []
    sections = []
    for n, entry in enumerate(captures):
        file = str(entry.get("file") or f"capture {n + 1}")
        ok = entry.get("ok")
        verdict = str(entry.get("verdict") or ("OK" if ok else "FAIL"))
        badge = (
            f'<span class="badge v-pass">✓ {esc(verdict)}</span>'
            if ok and verdict == "OK"
            else f'<span class="badge v-blank">{esc(verdict)}</span>'
            if ok or verdict == "UNREACHABLE"
            else f'<span class="badge v-fail">✗ {esc(verdict)}</span>'
        )
        codec = entry.get("codec") if isinstance(entry.get("codec"), Mapping) else None
        replays = [r for r in entry.get("replays") or [] if isinstance(r, Mapping)]
        what = (
            _codec_summary(codec)
            if codec
            else f"peer down: {entry.get('unreachable')}"
            if entry.get("unreachable")
            else f"{sum(1 for r in replays if r.get('ok'))} of {len(replays)} replays as recorded"
        )
        summary_rows.append(
            f'<tr><td><a href="#capture-{n}">{esc(file)}</a></td>'
            f'<td class="num">{esc(entry.get("connections"))}</td><td>{esc(what)}</td>'
            f"<td>{badge}</td></tr>"
        )
        where = (base or Path.cwd()) / file
        section, why = _capture_section(n, file, where, badge, entry, codec, replays, ports)
        sections.append(section)
        if why and missing is not None:
            missing.append(f"{file}: {why}")
    overall = report.get("ok")
    modes = sorted(
        {
            str(r.get("mode"))
            for c in captures
            for r in c.get("replays") or []
            if isinstance(r, Mapping) and r.get("mode")
        }
    )
    body = [
        '<div class="cards"><div class="card"><h3>Summary</h3>'
        + kv_list(
            [
                ("captures", len(captures)),
                ("check", ", ".join(modes) if modes else "codec round trip"),
                ("result", "OK: no unexcused difference" if overall else "FAIL: see below"),
                *([("partial", "yes: the run was interrupted")] if report.get("partial") else []),
            ]
        )
        + "</div></div>",
        '<table class="list"><thead><tr><th>capture</th><th>connections</th><th>result</th>'
        f"<th></th></tr></thead><tbody>{''.join(summary_rows)}</tbody></table>",
        _legend(),
        *sections,
    ]
    document = page(
        "Capture replay",
        "\n".join(body),
        subtitle="Ladder diagrams of the recorded DICOM connections, with the replay's verdicts",
        kind="replay",
    )
    return document.replace("</style>", _SVG_CSS + "</style>", 1)


def _legend() -> str:
    """What the arrow colours mean."""
    items = [
        ("requestor", "PDU from the requestor"),
        ("acceptor", "PDU from the acceptor"),
        ("finding", "the recording left PS3.8 here (finding)"),
        ("differs", "the replay differed, or the codec refused the PDU"),
    ]
    spans = "".join(
        '<span><svg width="34" height="10"><line x1="0" y1="5" x2="34" y2="5" '
        f'stroke="{_COLOURS[k]}" stroke-width="3"/></svg> {esc(t)}</span>'
        for k, t in items
    )
    return (
        f'<div class="legend">{spans}<span class="muted">dashed: a close (FIN/RST) or bytes '
        "that are not a PDU · beside each lane: that side's state before → after (sender) "
        "or its Table 9-10 action (receiver)</span></div>"
    )


def _capture_section(
    n: int,
    file: str,
    where: Path,
    badge: str,
    entry: Mapping[str, Any],
    codec: Mapping[str, Any] | None,
    replays: Sequence[Mapping[str, Any]],
    ports: Sequence[int],
) -> tuple[str, str]:
    """One capture: each connection's ladder and replay results; why no ladder, if none."""
    out = [f'<h2 id="capture-{n}">{badge} {esc(file)}</h2>']
    issues = [i for i in (codec or {}).get("issues") or [] if isinstance(i, Mapping)]
    out += [f'<p class="bad">warning: {esc(w)}</p>' for w in entry.get("warnings") or []]
    if codec:
        out.append(f"<p>Codec: {esc(_codec_summary(codec))}; {len(issues)} issues.</p>")
    capture, why = _load(where, ports)
    if capture is None:
        out.append(f'<p class="bad">No ladder: {esc(why)}</p>')
        out.append(_replay_table(replays))
        return "".join(out), why
    if not capture.connections:
        out.append("<p>No DICOM connection in this capture.</p>")
    for conn in capture.connections:
        mine = [r for r in replays if r.get("connection") == conn.label]
        conn_issues = [i for i in issues if i.get("connection") == conn.label]
        rows = ladder_rows(conn, mine, conn_issues)
        extra = [
            f"{r.get('mode')}: {d.get('what')}: recorded {d.get('expected')}, got {d.get('actual')}"
            for r in mine
            for d in r.get("differences") or []
            if d.get("step") is None and not d.get("excused_by")
        ]
        (rh, rp), (ah, ap) = conn.requestor, conn.acceptor
        out.append(
            f"<h3>{esc(conn.label)} <small class='muted'>roles from {esc(conn.roles_from)}, "
            f"{esc(conn.pdu_count)} PDUs</small></h3>"
        )
        out += [f'<p class="muted">{esc(note)}</p>' for note in conn.notes]
        out.append(ladder_svg(rows, f"{rh}:{rp}", f"{ah}:{ap}", extra))
        out.append(_replay_table(mine))
    return "".join(out), ""


def _codec_summary(codec: Mapping[str, Any]) -> str:
    """ "301 of 385 PDUs checked, 301 round-trip byte-exactly, 84 incomplete"."""
    pdus, exact = codec.get("pdus"), codec.get("exact")
    incomplete = codec.get("incomplete") or 0
    total = codec.get("total", pdus)
    text = f"{pdus} of {total} PDUs checked, {exact} round-trip byte-exactly"
    return text + (f", {incomplete} incomplete (not checked)" if incomplete else "")


def write_replay_html(
    report: Report, path: Path, *, ports: Sequence[int] = (), base: Path | None = None
) -> list[str]:
    """Write the page of a replay report to ``path``; return the captures drawn without ladder.

    The captures are read again for the ladders: a capture that cannot be read (a relative
    path from elsewhere, a moved file) is named in the page and in the returned list.
    """
    missing: list[str] = []
    write_page(path, render_replay(report, ports=ports, base=base, missing=missing))
    return missing
