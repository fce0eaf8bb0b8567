"""``netdicom2 report``: turn saved JSON reports into self-contained HTML pages.

    netdicom2 report conformance.json --html matrix.html
    netdicom2 report --compare local.json dcmtk.json pynetdicom.json orthanc.json --html cmp.html
    netdicom2 report replay.json --html replay.html        # reads the captures it names again
    netdicom2 report fuzz.json --html campaign.html

The kind of each file is recognised from its content (the JSON of ``netdicom2 conformance``,
``netdicom2 replay`` or ``netdicom2 fuzz``). Several conformance reports are put side by side
on one page (``--compare`` says so explicitly). Exit status 0, or 2 when a file cannot be read
or its kind is not recognised.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from netdicom2.cli import bounded_int, output_path
from netdicom2.reports.html_conformance import (
    is_conformance_report,
    write_comparison_html,
    write_conformance_html,
)
from netdicom2.reports.html_fuzz import is_fuzz_summary, write_fuzz_html
from netdicom2.reports.html_replay import is_replay_report, write_replay_html

__all__ = ["add_subcommand", "main"]


def add_subcommand(subparsers: Any) -> None:
    """Register ``report`` on the ``netdicom2`` command line."""
    p = subparsers.add_parser(
        "report",
        help="write HTML pages from saved conformance, replay or fuzz JSON reports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    p.add_argument(
        "--html", type=output_path, required=True, metavar="F", help="write the page to F"
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="conformance reports side by side on one page (implied by several reports)",
    )
    p.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="with --compare: the name of each report, in order (default: its target)",
    )
    p.add_argument(
        "--port",
        type=bounded_int(1, 65535),
        action="append",
        default=[],
        help="replay reports: also treat this TCP port as DICOM when reading the captures",
    )
    p.add_argument(
        "--base",
        type=Path,
        metavar="DIR",
        help="replay reports: where their relative capture paths start (default: here)",
    )
    p.set_defaults(handler=main)


def _fail(message: str) -> int:
    """Print an error and return the usage-error status."""
    print(f"netdicom2 report: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Read the reports, recognise their kind, write the page."""
    loaded: list[Any] = []
    for path in args.reports:
        try:
            loaded.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            return _fail(f"cannot read {path}: {exc}")
    if all(is_conformance_report(d) for d in loaded):
        if args.label and len(args.label) != len(loaded):
            return _fail(f"{len(args.label)} --label for {len(loaded)} reports")
        if args.compare or len(loaded) > 1:
            write_comparison_html(loaded, args.html, args.label)
        else:
            write_conformance_html(loaded[0], args.html)
    elif len(loaded) > 1 or args.compare:
        return _fail("--compare and several reports need conformance reports")
    elif is_replay_report(loaded[0]):
        missing = write_replay_html(loaded[0], args.html, ports=args.port, base=args.base)
        if missing:
            hint = "" if args.base else "; pass --base DIR, the folder the replay ran in"
            print(
                f"netdicom2 report: wrote {args.html} without the ladder of "
                f"{len(missing)} capture(s){hint}: {'; '.join(missing)}"
            )
            return 0
    elif is_fuzz_summary(loaded[0]):
        write_fuzz_html(loaded[0], args.html)
    else:
        return _fail(f"{args.reports[0]}: not a conformance, replay or fuzz report")
    print(f"netdicom2 report: wrote {args.html}")
    return 0
