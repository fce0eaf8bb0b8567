"""A fuzzing campaign as HTML: progress over time, verdicts, outcome classes, cells, findings.

Input is the summary of ``netdicom2 fuzz --json`` (see docs/fuzzing.md). Every key is optional:
an older or partial summary renders with what it has. ``Timeline`` samples a running campaign
(its ``Stats``, through the progress callback) so that the page can show examples, outcome
classes, cells and findings over time; without it only the final numbers are shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from netdicom2.conformance.table import cell as table_cell
from netdicom2.reports.common import (
    ACTION_TEXT,
    EVENT_TEXT,
    STATE_TEXT,
    CellView,
    esc,
    grid,
    kv_list,
    page,
    write_page,
)

__all__ = ["Timeline", "is_fuzz_summary", "render_fuzz", "write_fuzz_html"]

Summary = Mapping[str, Any]

# verdict -> CSS colour (docs/fuzzing.md, "Oracles": the verdicts)
_VERDICT_COLOURS = {
    "conform": "#1a7f37",
    "deviation": "#cf222e",
    "deviation-interp": "#bc4c00",
    "hang": "#8250df",
    "timing": "#d4a72c",
    "crash": "#82071e",
    "failure": "#cf222e",
    "setup-failed": "#8c959f",
}
_PALETTE = (
    "#0969da", "#1a7f37", "#bc4c00", "#8250df", "#d4a72c", "#cf222e", "#1b7c83", "#6e7781",
    "#bf3989", "#0550ae", "#116329", "#953800",
)  # fmt: skip


class _Stats(Protocol):
    """What ``Timeline`` reads from a running campaign (fuzz.campaign.Stats)."""

    examples: int
    cells: Any
    findings: Any

    @property
    def elapsed(self) -> float: ...

    def distinct_outcomes(self) -> int: ...


class Timeline:
    """Samples of a running campaign, at most ``limit``, spread evenly over its duration."""

    def __init__(self, limit: int = 400) -> None:
        self.samples: list[dict[str, float]] = []
        self.limit = limit
        self._interval = 0.25
        self._last = -1.0

    def sample(self, stats: _Stats) -> None:
        """Record the campaign's counters if enough time passed since the last sample."""
        now = stats.elapsed
        if self.samples and now - self._last < self._interval:
            return
        self._last = now
        self.samples.append(
            {
                "seconds": round(now, 3),
                "examples": stats.examples,
                "outcomes": stats.distinct_outcomes(),
                "cells": len(stats.cells),
                "findings": len(stats.findings),
            }
        )
        if len(self.samples) > self.limit:  # keep every other sample, sample half as often
            self.samples = self.samples[::2]
            self._interval *= 2

    def wrap(self, progress: Callable[[Any], None]) -> Callable[[Any], None]:
        """A progress callback that samples, then calls ``progress``."""

        def callback(stats: Any) -> None:
            self.sample(stats)
            progress(stats)

        return callback

    def finish(self, summary: Summary) -> list[dict[str, float]]:
        """The samples with a last one taken from the campaign's summary."""
        last = {
            "seconds": float(summary.get("seconds") or 0.0),
            "examples": float(summary.get("examples") or 0),
            "outcomes": float(summary.get("distinct_outcomes") or 0),
            "cells": float(summary.get("cells_reached") or 0),
            "findings": float(len(summary.get("findings") or [])),
        }
        return [*self.samples, last]


def is_fuzz_summary(data: object) -> bool:
    """Whether ``data`` looks like the summary of ``netdicom2 fuzz``."""
    return isinstance(data, Mapping) and "examples" in data and "verdicts" in data


def _chart(points: Sequence[tuple[float, float]], title: str, colour: str) -> str:
    """A small line chart (x: seconds, y: a counter) as inline SVG."""
    width, height, left, bottom = 330, 170, 46, 26
    xmax = max((p[0] for p in points), default=0.0) or 1.0
    ymax = max((p[1] for p in points), default=0.0) or 1.0

    def xy(p: tuple[float, float]) -> str:
        x = left + (width - left - 10) * p[0] / xmax
        y = height - bottom - (height - bottom - 22) * p[1] / ymax
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(p) for p in points)
    last = points[-1] if points else (0.0, 0.0)
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>'
        f'<text x="{left}" y="14" class="ct">{esc(title)}</text>'
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'class="axis"/>'
        f'<line x1="{left}" y1="22" x2="{left}" y2="{height - bottom}" class="axis"/>'
        f'<text x="{left - 4}" y="26" text-anchor="end" class="tick">{esc(_num(ymax))}</text>'
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="tick">0</text>'
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" class="tick">'
        f"{esc(_num(xmax))} s</text>"
        f'<text x="{left}" y="{height - 8}" class="tick">0 s</text>'
        f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>'
        f'<circle cx="{xy(last).split(",")[0]}" cy="{xy(last).split(",")[1]}" r="3" '
        f'fill="{colour}"/></svg>'
    )


def _num(value: float) -> str:
    """A number without a useless fraction."""
    return f"{value:.0f}" if float(value).is_integer() or value >= 100 else f"{value:.2f}"


def _over_time(summary: Summary) -> str:
    """Examples, outcome classes, cells and findings against time, when sampled."""
    samples = [s for s in summary.get("timeline") or [] if isinstance(s, Mapping)]
    if len(samples) < 2:
        return (
            '<p class="muted">This summary has no timeline (it is written by <code>netdicom2 '
            "fuzz --html</code>); only the final counts are shown.</p>"
        )
    charts = []
    for key, title, colour in (
        ("examples", "examples run", "#0969da"),
        ("outcomes", "distinct outcome classes", "#8250df"),
        ("cells", "Table 9-10 cells reached", "#1b7c83"),
        ("findings", "distinct findings", "#cf222e"),
    ):
        points = [(float(s.get("seconds") or 0), float(s.get(key) or 0)) for s in samples]
        charts.append(_chart(points, title, colour))
    return f'<div class="charts">{"".join(charts)}</div>'


def _verdicts(summary: Summary) -> str:
    """A proportional bar and counts of the verdicts."""
    verdicts = summary.get("verdicts") or {}
    if not isinstance(verdicts, Mapping) or not verdicts:
        return "<p>No verdicts.</p>"
    total = sum(int(v or 0) for v in verdicts.values()) or 1
    spans = "".join(
        f'<span style="width:{100 * int(n or 0) / total:.2f}%;background:'
        f'{_VERDICT_COLOURS.get(str(k), "#6e7781")}" title="{esc(k)}: {esc(n)}"></span>'
        for k, n in verdicts.items()
    )
    legend = " ".join(
        f'<span class="badge" style="color:#fff;background:'
        f'{_VERDICT_COLOURS.get(str(k), "#6e7781")}">{esc(n)} {esc(k)}</span>'
        for k, n in verdicts.items()
    )
    return f'<div class="bar">{spans}</div><div class="legend">{legend}</div>'


def _outcomes(summary: Summary) -> str:
    """Outcome classes per malformation kind: a stacked bar and the commonest outcomes."""
    table = summary.get("outcomes_by_malformation") or {}
    if not isinstance(table, Mapping) or not table:
        return "<p>No outcome classes recorded.</p>"
    names = sorted(
        {str(o) for counts in table.values() if isinstance(counts, Mapping) for o in counts}
    )
    colour = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
    rows = []
    for kind, counts in table.items():
        if not isinstance(counts, Mapping):
            continue
        ordered = sorted(counts.items(), key=lambda kv: -int(kv[1] or 0))
        total = sum(int(n or 0) for _, n in ordered) or 1
        bar = "".join(
            f'<span style="width:{100 * int(n or 0) / total:.2f}%;background:{colour[str(o)]}" '
            f'title="{esc(o)}: {esc(n)}"></span>'
            for o, n in ordered
        )
        shown = ", ".join(f"{o} ×{n}" for o, n in ordered[:4])
        more = f" … {len(ordered) - 4} more" if len(ordered) > 4 else ""
        rows.append(
            f'<tr><td class="mono">{esc(kind)}</td><td class="num">{esc(total)}</td>'
            f'<td class="num">{len(ordered)}</td><td><div class="bar">{bar}</div></td>'
            f'<td class="mono small">{esc(shown + more)}</td></tr>'
        )
    key = " ".join(
        f'<span><span class="swatch" style="background:{colour[n]}"></span>{esc(n)}</span>'
        for n in names
    )
    return (
        '<table class="list outcomes"><thead><tr><th>malformation</th><th>cases</th>'
        "<th>classes</th><th>outcome classes</th><th>commonest</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<details><summary>{len(names)} outcome classes (colour key)</summary>"
        f'<div class="legend mono">{key}</div></details>'
    )


def _cells(summary: Summary) -> str:
    """The 13x19 grid with the defined cells the campaign reached highlighted."""
    reached: set[tuple[str, str]] = set()
    for text in summary.get("cells") or []:
        cell_part = str(text).split("->")[0]
        state, _, event = cell_part.partition("/")
        reached.add((state, event))

    def view(state: str, event: str) -> CellView:
        action = table_cell(state, event).action
        hover = f"{state}: {STATE_TEXT[state]}\n{event}: {EVENT_TEXT[event]}\n"
        if action is None:
            return CellView("v-blank", "·", hover + "blank cell")
        is_reached = (state, event) in reached
        hover += f"{action}: {ACTION_TEXT.get(action, '')}\n"
        hover += "reached by the campaign" if is_reached else "not reached"
        return CellView("reached" if is_reached else "unreached", esc(action), hover)

    count = summary.get("cells_reached", len(reached))
    return (
        f"<p>{esc(count)} of the 123 defined cells of Table 9-10 were reached: "
        '<span class="badge reached-key">reached</span> '
        '<span class="badge unreached-key">not reached</span> · blank cell</p>' + grid(view)
    )


def _findings(summary: Summary) -> str:
    """Each distinct finding: verdict, count, first example, what, and how to reproduce it."""
    findings = [f for f in summary.get("findings") or [] if isinstance(f, Mapping)]
    if not findings:
        return '<p class="ok">No finding: every case conformed.</p>'
    rows = []
    for f in sorted(findings, key=lambda f: -int(f.get("count") or 0)):
        verdict = str(f.get("verdict") or "")
        colour = _VERDICT_COLOURS.get(verdict, "#6e7781")
        repro = f.get("repro") or ""
        how = (
            '<div class="how"><button class="copy" type="button">copy</button></div>'
            f'<pre class="repro">{esc(repro)}</pre>'
            if repro
            else ""
        )
        rows.append(
            f'<tr class="finding"><td><span class="badge" style="color:#fff;background:{colour}">'
            f'{esc(verdict)}</span></td><td class="num">{esc(f.get("count"))}</td>'
            f'<td class="num">{esc(f.get("first_example"))}</td>'
            f'<td><div class="sig">{esc(f.get("signature"))}</div>'
            f'<div class="muted">{esc(f.get("detail"))}</div>'
            + (f'<div class="muted">{esc(f.get("shrunk"))}</div>' if f.get("shrunk") else "")
            + f"{how}</td></tr>"
        )
    return (
        '<table class="list findings"><thead><tr><th>verdict</th><th>count</th>'
        "<th>first at example</th><th>signature, detail and reproduction command</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


_FUZZ_CSS = """
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
svg.chart { border: 1px solid var(--line); border-radius: 8px; background: #fff; }
svg.chart text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #59636e; }
svg.chart .ct { font-weight: 600; font-size: 12px; fill: #1f2328; }
svg.chart .axis { stroke: #d1d9e0; }
table.outcomes .bar { min-width: 220px; margin: 2px 0; }
.small { font-size: 11px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border-radius: 2px; }
.badge.reached-key { color: #0a3069; background: #b6e3ff; }
.badge.unreached-key { color: #57606a; background: #eaeef2; }
table.findings .sig { font-weight: 600; }
table.findings .how { float: right; margin-top: 6px; }
table.findings pre.repro { margin: 4px 70px 2px 0; padding: 4px 8px; }
"""


def _counts(counts: object) -> str | None:
    """ "rejected 3, unresponsive 1" for the non-zero counts, None when there are none."""
    if not isinstance(counts, Mapping):
        return None
    items = [f"{k} {n}" for k, n in counts.items() if isinstance(n, int) and n]
    return ", ".join(items) or None


def render_fuzz(summary: Summary, timeline: Sequence[Mapping[str, float]] | None = None) -> str:
    """The page of a fuzzing campaign's summary (``timeline``: samples taken while it ran)."""
    if timeline:
        summary = {**summary, "timeline": list(timeline)}
    artim = summary.get("artim") if isinstance(summary.get("artim"), Mapping) else {}
    assert isinstance(artim, Mapping)
    measured = artim.get("closes_measured")
    pairs: list[tuple[str, object]] = [
        ("target", summary.get("target")),
        ("examples", summary.get("examples")),
        ("run time", f"{summary.get('seconds')} s"),
        ("rate", f"{summary.get('examples_per_second')} examples/s"),
        (
            "codec inputs",
            f"{summary.get('codec_inputs')} ({summary.get('codec_inputs_per_second')}/s)",
        ),
        ("outcome classes", summary.get("distinct_outcomes")),
        ("cells reached", f"{summary.get('cells_reached')} of 123"),
        (
            "ARTIM closes",
            f"{measured} measured, error {artim.get('error_min_s')} … {artim.get('error_max_s')}"
            f" s (mean {artim.get('error_mean_s')})"
            if measured
            else None,
        ),
        ("peak RSS", f"{summary.get('max_rss_kb')} KiB" if summary.get("max_rss_kb") else None),
        (
            "RSS growth",
            f"{summary.get('rss_growth_kb')} KiB" if "rss_growth_kb" in summary else None,
        ),
        ("peer", " ".join(map(str, (summary.get("peer") or {}).values())) or None),
        ("setup failures", _counts(summary.get("setup_failed"))),
        ("[interp] notes", _counts(summary.get("interpretations"))),
        (
            "failing cases",
            f"{summary.get('failing_cases')} ({summary.get('unconfirmed_findings') or 0} "
            "did not reproduce)"
            if "failing_cases" in summary
            else None,
        ),
        ("peer stopped", summary.get("stopped") or None),
    ]
    findings = summary.get("findings") or []
    body = [
        '<div class="cards"><div class="card"><h3>Campaign</h3>',
        kv_list(pairs),
        '</div><div class="card"><h3>Verdicts</h3>',
        _verdicts(summary),
        f'<p class="{"bad" if findings else "ok"}">{len(findings)} distinct findings</p>',
        "</div></div>",
        "<h2>Over time</h2>",
        _over_time(summary),
        f"<h2>Findings ({len(findings)})</h2>",
        _findings(summary),
        "<h2>Outcome classes by input kind</h2>",
        _outcomes(summary),
        "<h2>PS3.8 Table 9-10 cells reached</h2>",
        _cells(summary),
    ]
    document = page(
        f"Fuzzing campaign: {summary.get('target') or 'unknown target'}",
        "\n".join(body),
        subtitle=f"{summary.get('examples')} examples in {summary.get('seconds')} s"
        + (" (partial: interrupted)" if summary.get("partial") else ""),
        kind="fuzz",
    )
    return document.replace("</style>", _FUZZ_CSS + "</style>", 1)


def write_fuzz_html(
    summary: Summary, path: Path, timeline: Sequence[Mapping[str, float]] | None = None
) -> None:
    """Write the page of a campaign summary to ``path``."""
    write_page(path, render_fuzz(summary, timeline))
