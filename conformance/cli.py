"""`netdicom2 conformance`: the PS3.8 Table 9-10 matrix against a target, with reports.

Targets: ``local`` (our sans-I/O core on a fake clock), ``provider`` (our threaded provider
over loopback sockets), ``HOST:PORT`` (any association acceptor, black box) or, with
``--listen PORT``, any association requestor that connects to us. Exit status 0 iff no cell
failed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from conformance.matrix import CellResult, Target, run_matrix
from conformance.recipes import Params
from conformance.report import print_report, to_junit, to_markdown, write_json

__all__ = ["add_subcommand", "main", "parse_target"]


def parse_target(args: argparse.Namespace) -> Target:
    """The Target named by the command line."""
    params = Params(called_ae=args.called_ae, calling_ae=args.calling_ae, artim=args.artim)
    if args.listen is not None:
        spawn = tuple(shlex.split(args.spawn)) if args.spawn else None
        host, _, port = args.listen.rpartition(":")
        if not port.isdigit():
            raise SystemExit(f"netdicom2 conformance: bad --listen {args.listen!r}")
        return Target(
            f"listen:{args.listen}",
            "remote-requestor",
            params,
            listen_port=int(port),
            listen_host=host.strip("[]") or "0.0.0.0",
            spawn=spawn,
        )
    target = args.target
    if target in ("local", "provider"):
        return Target(target, target, params)
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(
            f"netdicom2 conformance: bad --target {target!r} (local, provider, or HOST:PORT)"
        )
    return Target(target, "remote", params, address=(host.strip("[]"), int(port)))


def add_subcommand(subparsers: Any) -> None:
    """Register `conformance` on the `netdicom2` parser."""
    p = subparsers.add_parser(
        "conformance",
        help="run the PS3.8 Table 9-10 matrix against a target",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="local", help="local | provider | HOST:PORT")
    p.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        help="test an association requestor that connects to PORT",
    )
    p.add_argument(
        "--spawn",
        metavar="CMD",
        help="with --listen: command started for each cell ({port} is replaced)",
    )
    p.add_argument(
        "--artim",
        type=float,
        metavar="S",
        help="remote peer: its ARTIM in seconds (enables the Evt18 cells)",
    )
    p.add_argument("--called-ae", default="ANY-SCP", metavar="T")
    p.add_argument("--calling-ae", default="NETDICOM2-CONF", metavar="T")
    p.add_argument(
        "--cell", action="append", metavar="StaN-EvtM", help="run only this cell (repeatable)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="cells run at once (default 4 for local and provider, 1 for a remote peer: use more"
        " only with a peer that serves several associations at once)",
    )
    p.add_argument("--json", type=Path, metavar="F", help="write the JSON report to F")
    p.add_argument("--junit", type=Path, metavar="F", help="write JUnit XML to F")
    p.add_argument("--markdown", type=Path, metavar="F", help="write Markdown to F")
    p.add_argument("--html", type=Path, metavar="F", help="write a self-contained HTML page to F")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the reproducing script of each failed cell",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the matrix, print it, write the reports; 0 iff no cell failed."""
    # The provider logs lost transports as warnings: expected here, so kept quiet.
    logging.getLogger("netdicom2").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    target = parse_target(args)

    def progress(result: CellResult) -> None:
        if args.verbose:
            print(f"{result.test_id}: {result.verdict} {result.reason}", file=sys.stderr)

    jobs = (
        args.jobs if args.jobs is not None else (4 if target.kind in ("local", "provider") else 1)
    )
    from reports.progress import matrix_bar  # reports/: a bar on a terminal, else nothing

    with matrix_bar(args.cell, enabled=not args.verbose, then=progress) as on_cell:
        report = run_matrix(target, only=args.cell, jobs=max(1, jobs), progress=on_cell)
    print_report(report, verbose=args.verbose)
    if args.json:
        write_json(report, args.json)
    if args.junit:
        args.junit.write_text(to_junit(report) + "\n")
    if args.markdown:
        args.markdown.write_text(to_markdown(report))
    if args.html:  # reports/ renders the same JSON as --json writes
        from reports.html_conformance import write_conformance_html

        write_conformance_html(report.to_json(), args.html)
    return 0 if report.ok else 1
