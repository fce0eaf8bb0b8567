"""`netdicom2 conformance`: the PS3.8 Table 9-10 matrix against a target, with reports.

Targets: ``local`` (our sans-I/O core on a fake clock), ``provider`` (our threaded provider
over loopback sockets), ``HOST:PORT`` (any association acceptor, black box) or, with
``--listen PORT``, any association requestor that connects to us. Exit status 0 iff no cell
failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import socket
import sys
from typing import Any, NoReturn

from netdicom2.cli import (
    EXIT_USAGE,
    JobError,
    UsageError,
    ae_title,
    bounded_int,
    connect_error,
    host_port,
    listen_address,
    output_path,
    seconds,
)
from netdicom2.conformance.matrix import CellResult, Report, Target, run_matrix
from netdicom2.conformance.recipes import Params
from netdicom2.conformance.report import print_report, to_junit, to_markdown, write_json
from netdicom2.conformance.table import EVENTS, STATES

__all__ = ["add_subcommand", "main", "parse_target"]

CELL_NAMES = frozenset(f"{s}-{e}" for s in STATES for e in EVENTS)


def cell_name(text: str) -> str:
    """An argparse type: a cell of Table 9-10, "Sta6-Evt10" (states 1..13, events 1..19)."""
    if text not in CELL_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown cell {text!r}: expected StaN-EvtM with N in 1..13 and M in 1..19"
        )
    return text


def parse_target(args: argparse.Namespace) -> Target:
    """The Target named by the command line (UsageError for a value that cannot work)."""
    params = Params(
        called_ae=args.called_ae,
        calling_ae=args.calling_ae,
        artim=args.artim,
        sta13_timer=getattr(args, "sta13_timer", None),
        max_wait=getattr(args, "max_wait", None),
    )
    if args.spawn and args.listen is None:
        raise UsageError("--spawn needs --listen (it starts the requestor that connects to us)")
    if args.listen is not None:
        host, port = args.listen
        return Target(
            f"listen:{host}:{port}",
            "remote-requestor",
            params,
            listen_port=port,
            listen_host=host,
            spawn=_spawn_argv(args.spawn) if args.spawn else None,
        )
    target = args.target
    if target in ("local", "provider"):
        return Target(target, target, params)
    try:
        address = host_port(target)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(
            f"bad --target {target!r}: {exc} (local, provider, or HOST:PORT)"
        ) from None
    return Target(target, "remote", params, address=address)


def _spawn_argv(text: str) -> tuple[str, ...]:
    """The --spawn command, split, its program found (UsageError when it cannot run)."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"bad --spawn {text!r}: {exc}") from None
    if not argv:
        raise UsageError("--spawn is empty")
    program = argv[0]
    found = shutil.which(program) if os.sep not in program else program
    if found is None or not (os.path.isfile(found) and os.access(found, os.X_OK)):
        raise UsageError(f"--spawn: cannot run {program!r}: no such executable program")
    return argv


def _check_reachable(target: Target) -> None:
    """Before any work: the acceptor answers a TCP connect, or our listener can bind."""
    if target.kind == "remote" and target.address is not None:
        host, port = target.address
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise JobError(connect_error(exc, host, port)) from None
    if target.kind == "remote-requestor" and target.listen_port:
        family = socket.AF_INET6 if ":" in target.listen_host else socket.AF_INET
        try:
            with socket.socket(family) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((target.listen_host, target.listen_port))
        except OSError as exc:
            where = f"{target.listen_host}:{target.listen_port}"
            raise JobError(f"cannot listen on {where}: {exc.strerror or exc}") from None


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
        type=listen_address,
        metavar="[HOST:]PORT",
        help="test an association requestor that connects to PORT (HOST: 127.0.0.1)",
    )
    p.add_argument(
        "--spawn",
        metavar="CMD",
        help="with --listen: command started for each cell ({port} is replaced)",
    )
    p.add_argument(
        "--artim",
        type=seconds(),
        metavar="S",
        help="remote peer: its ARTIM in Sta2 (wait for the A-ASSOCIATE-RQ), in seconds",
    )
    p.add_argument(
        "--sta13-timer",
        type=seconds(),
        metavar="S",
        help="remote peer: its timer in Sta13 (wait for the close); default: --artim",
    )
    p.add_argument(
        "--max-wait",
        type=seconds(),
        metavar="S",
        help="the longest wait for a peer's close (default 10 s, never below a timer x 1.25 + 2)",
    )
    p.add_argument("--called-ae", default="ANY-SCP", metavar="T", type=ae_title)
    p.add_argument("--calling-ae", default="NETDICOM2-CONF", metavar="T", type=ae_title)
    p.add_argument(
        "--cell",
        action="append",
        type=cell_name,
        metavar="StaN-EvtM",
        help="run only this cell (repeatable)",
    )
    p.add_argument(
        "--jobs",
        type=bounded_int(1, 64),
        help="cells run at once (default 4 for local and provider, 1 for a remote peer; lowered"
        " when the peer answers local-limit-exceeded)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a cell is inconclusive, too")
    p.add_argument("--json", type=output_path, metavar="F", help="write the JSON report to F")
    p.add_argument("--junit", type=output_path, metavar="F", help="write JUnit XML to F")
    p.add_argument("--markdown", type=output_path, metavar="F", help="write Markdown to F")
    p.add_argument(
        "--html", type=output_path, metavar="F", help="write a self-contained HTML page to F"
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the reproducing script of each failed cell",
    )
    p.set_defaults(handler=main)
    p.error = _one_line_error


def _one_line_error(message: str) -> NoReturn:
    """A bad value on the command line: one line on stderr, exit 2 (no usage block)."""
    print(f"netdicom2 conformance: {message} (see --help)", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _write_reports(report: Report, args: argparse.Namespace) -> None:
    """Print the matrix and write every report asked for."""
    print_report(report, verbose=args.verbose)
    if args.json:
        write_json(report, args.json)
    if args.junit:
        args.junit.write_text(to_junit(report) + "\n")
    if args.markdown:
        args.markdown.write_text(to_markdown(report))
    if args.html:  # reports/ renders the same JSON as --json writes
        from netdicom2.reports.html_conformance import write_conformance_html

        write_conformance_html(report.to_json(), args.html)


def main(args: argparse.Namespace) -> int:
    """Run the matrix, print it, write reports; 0 iff no cell failed (--strict: or undecided)."""
    # The provider logs lost transports as warnings: expected here, so kept quiet.
    logging.getLogger("netdicom2").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    target = parse_target(args)
    _check_reachable(target)

    def progress(result: CellResult) -> None:
        if args.verbose:
            print(f"{result.test_id}: {result.verdict} {result.reason}", file=sys.stderr)

    jobs = (
        args.jobs if args.jobs is not None else (4 if target.kind in ("local", "provider") else 1)
    )
    from netdicom2.reports.progress import matrix_bar  # reports/: a bar on a terminal, else nothing

    partial: list[Report] = []
    try:
        with matrix_bar(args.cell, enabled=not args.verbose, then=progress) as on_cell:
            report = run_matrix(
                target, only=args.cell, jobs=jobs, progress=on_cell, on_interrupt=partial.append
            )
    except KeyboardInterrupt:  # the summary so far and the reports, marked partial
        if partial:
            _write_reports(partial[0], args)
        raise
    _write_reports(report, args)
    return 0 if (report.strict_ok if args.strict else report.ok) else 1
