"""What every HTML report shares: escaping, the standard's names, the page shell, the 13x19 grid.

Each report is one self-contained file: inline CSS and JavaScript, inline SVG, no fonts, no
images, no fetches. A Content-Security-Policy of ``default-src 'none'`` makes the browser refuse
any network access the page might attempt. Every value taken from a report is passed through
``esc`` (``html.escape``) before it reaches the markup.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdicom2 import __version__
from netdicom2.conformance.table import ACTIONS, EVENTS, STATES
from netdicom2.fsm import Event, State

__all__ = [
    "ACTION_TEXT",
    "EVENTS",
    "EVENT_SHORT",
    "EVENT_TEXT",
    "STATES",
    "STATE_SHORT",
    "STATE_TEXT",
    "VERDICTS",
    "CellView",
    "esc",
    "grid",
    "kv_list",
    "page",
    "summary_bar",
    "write_page",
]

# PS3.8 §9.2.1 Tables 9-1 … 9-5 and §9.2.2 Table 9-10, in the standard's words (hover text).
STATE_TEXT: dict[str, str] = {s: State(s).description for s in STATES}
EVENT_TEXT: dict[str, str] = {e: Event(e).description for e in EVENTS}
ACTION_TEXT: dict[str, str] = {name: spec.text for name, spec in ACTIONS.items()}

# Short labels printed in the grid's headers (the full text is on hover).
STATE_SHORT: dict[str, str] = dict(
    zip(
        STATES,
        (
            "idle",
            "awaiting A-ASSOCIATE-RQ",
            "awaiting local accept/reject",
            "awaiting transport open",
            "awaiting AC/RJ",
            "established",
            "awaiting RELEASE-RP",
            "awaiting local release rsp",
            "collision rq: local rsp",
            "collision ac: awaiting RP",
            "collision rq: awaiting RP",
            "collision ac: local rsp",
            "awaiting transport close",
        ),
        strict=True,
    )
)
EVENT_SHORT: dict[str, str] = dict(
    zip(
        EVENTS,
        (
            "A-ASSOCIATE rq",
            "transport confirm",
            "AC PDU",
            "RJ PDU",
            "transport indication",
            "RQ PDU",
            "accept rsp",
            "reject rsp",
            "P-DATA rq",
            "P-DATA-TF PDU",
            "A-RELEASE rq",
            "RELEASE-RQ PDU",
            "RELEASE-RP PDU",
            "A-RELEASE rsp",
            "A-ABORT rq",
            "A-ABORT PDU",
            "transport closed",
            "ARTIM expired",
            "invalid PDU",
        ),
        strict=True,
    )
)

# verdict -> (glyph, label)
VERDICTS: dict[str, tuple[str, str]] = {
    "pass": ("✓", "pass"),
    "fail": ("✗", "fail"),
    "na": ("–", "not applicable"),
    "blank": ("·", "blank cell"),
}


def esc(value: object) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
:root { color-scheme: light; --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff;
  --soft:#f6f8fa; --accent:#0969da;
  --pass:#1a7f37; --pass-bg:#d2f4dc; --fail:#cf222e; --fail-bg:#ffd8d3;
  --na:#8a6100; --na-bg:#fbf0c9; --blank:#8c959f; --blank-bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans",
  sans-serif; color: var(--fg); background: var(--bg); }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 12.5px; }
header.top { padding: 14px 24px 10px; border-bottom: 1px solid var(--line);
  background: linear-gradient(#f6f8fa, #fff); }
header.top .brand { font-size: 12px; letter-spacing: .08em; text-transform: uppercase;
  color: var(--muted); }
header.top h1 { margin: 2px 0 4px; font-size: 22px; }
header.top p { margin: 0; color: var(--muted); }
main { padding: 8px 24px 24px; }
h2 { font-size: 17px; margin: 22px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 4px 0 8px; }
h4 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); }
footer { padding: 12px 24px; color: var(--muted); font-size: 12px;
  border-top: 1px solid var(--line); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
  background: var(--bg); min-width: 260px; }
.card h3 { margin-top: 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; border: 1px solid transparent; white-space: nowrap; }
.v-pass { color: var(--pass); background: var(--pass-bg); }
.v-fail { color: var(--fail); background: var(--fail-bg); }
.v-na { color: var(--na); background: var(--na-bg); }
.v-blank { color: var(--blank); background: var(--blank-bg); }
.bar { display: flex; height: 14px; border-radius: 7px; overflow: hidden; min-width: 260px;
  border: 1px solid var(--line); margin: 6px 0 2px; }
.bar span { display: block; height: 100%; }
.bar .v-pass { background: var(--pass); } .bar .v-fail { background: var(--fail); }
.bar .v-na { background: #d4a72c; } .bar .v-blank { background: #d1d9e0; }
.legend { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 10px; font-size: 13px; }
.legend .badge { min-width: 22px; text-align: center; }
table.grid { border-collapse: separate; border-spacing: 2px; }
table.grid th { font-weight: 600; font-size: 12px; color: var(--muted); }
table.grid thead th { vertical-align: bottom; padding: 0 0 4px; }
table.grid thead th .lbl { writing-mode: vertical-rl; transform: rotate(180deg);
  display: block; margin: 0 auto 4px; font-weight: 400; font-size: 11px; white-space: nowrap; }
table.grid tbody th { text-align: left; padding-right: 8px; white-space: nowrap; }
table.grid tbody th .lbl { font-weight: 400; font-size: 11px; margin-left: 6px; }
table.grid th .num { color: var(--fg); }
table.grid td.c { width: 50px; height: 30px; text-align: center; border-radius: 4px;
  font: 600 11px/30px ui-monospace, "DejaVu Sans Mono", monospace; cursor: pointer;
  border: 1px solid rgba(31,35,40,.06); padding: 0; }
table.grid td.c:hover, table.grid td.c:focus { outline: 2px solid var(--accent);
  outline-offset: 0; }
table.grid td.c.selected { outline: 3px solid var(--fg); outline-offset: -1px; }
table.grid td.v-fail { box-shadow: inset 0 0 0 1px var(--fail); }
table.grid td.c.cmp { line-height: 0; padding: 3px 4px; white-space: nowrap; width: auto;
  min-width: 50px; }
table.grid td.c.cmp .m { display: inline-block; width: 8px; height: 22px; margin: 0 1px;
  border-radius: 2px; vertical-align: middle; }
table.grid td.c.cmp .m.v-pass { background: var(--pass); }
table.grid td.c.cmp .m.v-fail { background: var(--fail); }
table.grid td.c.cmp .m.v-na { background: #d4a72c; }
table.grid td.c.cmp .m.v-blank { background: #d1d9e0; }
table.grid td.c.cmp.differ { box-shadow: inset 0 0 0 2px var(--fg); }
table.grid td.reached { color: #0a3069; background: #b6e3ff; }
table.grid td.unreached { color: #57606a; background: #eaeef2; }
.detail { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px;
  margin: 12px 0; background: var(--soft); max-width: 1360px; }
.detail .hint { color: var(--muted); margin: 0; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  overflow: auto; margin: 4px 0; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 420px; }
button.copy { font-size: 11px; padding: 1px 8px; margin-left: 8px; cursor: pointer;
  border: 1px solid var(--line); border-radius: 6px; background: #fff; }
table.list { border-collapse: collapse; width: 100%; max-width: 1360px; margin: 6px 0; }
table.list th, table.list td { border-bottom: 1px solid var(--line); padding: 4px 8px;
  text-align: left; vertical-align: top; }
table.list th { background: var(--soft); font-size: 12px; color: var(--muted); }
table.list td.num { text-align: right; font-variant-numeric: tabular-nums; }
details > summary { cursor: pointer; color: var(--accent); margin: 4px 0; }
.muted { color: var(--muted); }
.ok { color: var(--pass); font-weight: 600; } .bad { color: var(--fail); font-weight: 600; }
"""

SCRIPT = """
(function () {
  var panel = document.getElementById('detail');
  function show(id, remember) {
    var source = document.getElementById('detail-' + id);
    if (!panel || !source) { return false; }
    document.querySelectorAll('[data-cell].selected').forEach(function (e) {
      e.classList.remove('selected');
    });
    document.querySelectorAll('[data-cell]').forEach(function (e) {
      if (e.dataset.cell === id) { e.classList.add('selected'); }
    });
    panel.innerHTML = source.innerHTML;  /* markup escaped when the report was written */
    panel.dataset.cell = id;
    if (remember) { try { history.replaceState(null, '', '#' + id); } catch (e) {} }
    return true;
  }
  function copy(button) {
    var pre = button.parentElement.nextElementSibling;
    var text = pre ? pre.textContent : '';
    button.textContent = 'copied';
    try {
      navigator.clipboard.writeText(text).catch(function () {});
    } catch (e) { /* no clipboard from file:// in some browsers: the text stays selectable */ }
  }
  document.addEventListener('click', function (ev) {
    var button = ev.target.closest('button.copy');
    if (button) { copy(button); return; }
    var cell = ev.target.closest('[data-cell]');
    if (cell) { show(cell.dataset.cell, true); }
  });
  document.addEventListener('keydown', function (ev) {
    var cell = ev.target.closest && ev.target.closest('[data-cell]');
    if (cell && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault(); show(cell.dataset.cell, true);
    }
  });
  function fromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (id && show(id, false)) { panel.scrollIntoView({block: 'nearest'}); }
  }
  window.addEventListener('hashchange', fromHash);
  fromHash();
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def page(title: str, body: str, *, subtitle: str = "", kind: str = "report") -> str:
    """A whole HTML document: the shared CSS and script, a header, ``body`` (markup)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="netdicom2 {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f'<header class="top"><div class="brand">netdicom2 · {esc(kind)}</div>'
        f"<h1>{esc(title)}</h1>" + (f"<p>{esc(subtitle)}</p>" if subtitle else "") + "</header>\n"
        f"<main>\n{body}\n</main>\n"
        f"<footer>Written by netdicom2 {esc(__version__)}. Self-contained: no fonts, images or "
        "scripts are fetched (Content-Security-Policy default-src 'none').</footer>\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )


def write_page(path: Path, document: str) -> None:
    """Write a report (UTF-8)."""
    path.write_text(document, encoding="utf-8")


@dataclass(frozen=True)
class CellView:
    """How one grid cell looks: CSS classes, its markup (already escaped), hover text, id."""

    classes: str
    markup: str
    title: str
    cell_id: str | None = None


def grid(view: Callable[[str, str], CellView], *, label: str = "PS3.8 Table 9-10") -> str:
    """The 13 x 19 table: one row per state, one column per event, headers named as in PS3.8."""
    head = ['<th class="corner"></th>']
    for event in EVENTS:
        head.append(
            f'<th scope="col" title="{esc(event)}: {esc(EVENT_TEXT[event])}">'
            f'<span class="lbl">{esc(EVENT_SHORT[event])}</span>'
            f'<span class="num">{esc(event.removeprefix("Evt"))}</span></th>'
        )
    rows = []
    for state in STATES:
        row = [
            f'<th scope="row" title="{esc(state)}: {esc(STATE_TEXT[state])}">'
            f'<span class="num">{esc(state)}</span>'
            f'<span class="lbl">{esc(STATE_SHORT[state])}</span></th>'
        ]
        for event in EVENTS:
            cell = view(state, event)
            attrs = f' data-cell="{esc(cell.cell_id)}" tabindex="0"' if cell.cell_id else ""
            row.append(
                f'<td class="c {esc(cell.classes)}" title="{esc(cell.title)}"{attrs}>'
                f"{cell.markup}</td>"
            )
        rows.append("<tr>" + "".join(row) + "</tr>")
    return (
        f'<table class="grid" aria-label="{esc(label)}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def kv_list(pairs: Iterable[tuple[str, object]]) -> str:
    """A definition list of (label, value) pairs; values are escaped, empty ones skipped."""
    items = [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs if v is not None and v != ""]
    return f'<dl class="kv">{"".join(items)}</dl>'


def summary_bar(
    counts: Mapping[str, Any], verdicts: Mapping[str, tuple[str, str]] = VERDICTS
) -> str:
    """A proportional bar of the verdict counts, with the numbers as a legend."""
    total = sum(int(counts.get(v, 0) or 0) for v in verdicts) or 1
    spans = "".join(
        f'<span class="v-{v}" style="width:{100 * int(counts.get(v, 0) or 0) / total:.2f}%" '
        f'title="{esc(verdicts[v][1])}: {esc(counts.get(v, 0))}"></span>'
        for v in verdicts
    )
    legend = " ".join(
        f'<span class="badge v-{v}">{esc(counts.get(v, 0))} {esc(verdicts[v][1])}</span>'
        for v in verdicts
    )
    return f'<div class="bar">{spans}</div><div class="legend">{legend}</div>'
