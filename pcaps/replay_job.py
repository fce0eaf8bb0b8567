"""`netdicom2 replay`: validate the command line, run each capture, summarise, write reports.

Exit status (documented in docs/pcaps.md): 0 every capture passes; 1 a difference, a codec
failure, or (``--strict``) a warning; 2 a bad command line or an unreadable capture; 3 the live
peer could not be reached (refused, unreachable, reset before answering): peer down is not peer
different. Ctrl-C / SIGTERM: the summary so far is printed, the reports are written marked
partial, and the interrupt goes on to the console script (130/143).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdicom2.cli import JobError, UsageError, connect_error
from netdicom2.pcaps.pcapfile import Limits

__all__ = ["EXIT_UNREACHABLE", "run_replay"]

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_UNREADABLE = 2
EXIT_UNREACHABLE = 3


@dataclass
class _Job:
    """What the run has found so far."""

    args: argparse.Namespace
    report: dict[str, Any] = field(default_factory=lambda: {"captures": []})
    different: bool = False
    unreadable: bool = False
    unreachable: bool = False
    summaries: list[str] = field(default_factory=list)
    taken: set[Path] = field(default_factory=set)  # files written by --extract
    listener: socket.socket | None = None  # --listen

    def say(self, line: str, *, summary: bool = False) -> None:
        """Print a detail line (not with -q) or a summary line (always)."""
        if summary:
            self.summaries.append(line)
        if summary or not self.args.quiet:
            print(line, flush=True)

    @property
    def status(self) -> int:
        """Unreadable input first, then differences, then an unreachable peer."""
        if self.unreadable:
            return EXIT_UNREADABLE
        if self.different:
            return EXIT_DIFFERENT
        return EXIT_UNREACHABLE if self.unreachable else EXIT_OK


def _validate(args: argparse.Namespace) -> None:
    """Every value checked before any work (role, target host, capture files)."""
    if args.role is not None and args.against != "local":
        raise UsageError("--as needs --against local (it names the role netdicom2 plays there)")
    if args.role is None:
        args.role = "both"
    live_only = [f for f in ("verbatim", "fill_holes") if getattr(args, f)]
    if live_only and not isinstance(args.against, tuple):
        flag = "--" + live_only[0].replace("_", "-")
        raise UsageError(f"{flag} needs --against HOST:PORT (it shapes what a live peer is sent)")
    if args.ignore and not (isinstance(args.against, tuple) or args.listen):
        raise UsageError("--ignore needs --against HOST:PORT or --listen (a live comparison)")
    if args.listen is not None and args.against is not None:
        raise UsageError("--listen and --against exclude each other (play the acceptor or not)")
    if args.spawn is not None:
        if args.listen is None:
            raise UsageError("--spawn needs --listen (it starts the requestor that connects)")
        try:
            program = shlex.split(args.spawn)[0] if args.spawn.strip() else ""
        except ValueError as exc:
            raise UsageError(f"--spawn {args.spawn!r}: {exc}") from None
        if not program or shutil.which(program) is None:
            raise UsageError(f"--spawn: cannot run {program!r} (not found or not executable)")
    if isinstance(args.against, tuple):
        host, port = args.against
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UsageError(f"--against {host}:{port}: {connect_error(exc, host, port)}") from None
    for path in args.pcaps:
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise UsageError(f"capture {path} {what}")


def _codec(job: _Job, path: Path, capture: Any, entry: dict[str, Any], warned: bool) -> None:
    """``--check codec`` on one capture."""
    from netdicom2.pcaps.codec_check import check_codec

    args = job.args
    codec = check_codec(capture)
    for line in codec.lines:
        job.say(line)
    for issue in codec.issues:
        job.say(
            f"  {issue.kind.upper()}: {issue.connection} {issue.side} PDU "
            f"{issue.index} @{issue.offset}: {issue.detail}"
        )
    passed = codec.ok(args.allow_invalid)
    qualified = codec.incomplete > 0 or warned
    if not passed:
        verdict = "FAIL"
    elif qualified:
        verdict = "INCOMPLETE" + (" (--strict: FAIL)" if args.strict else "")
    else:
        verdict = "OK"
    job.say(f"{path}: {codec.summary()} ({codec.rate:,.0f} PDUs/s) -> {verdict}", summary=True)
    failed = not passed or (qualified and args.strict)
    job.different = job.different or failed
    entry["codec"] = codec.as_dict()
    entry["verdict"] = verdict
    entry["ok"] = not failed


def _replays(job: _Job, path: Path, capture: Any, entry: dict[str, Any], warned: bool) -> None:
    """``--against``: replay every connection of one capture."""
    from netdicom2.pcaps.cli import replay_lines
    from netdicom2.pcaps.replay_local import replay_local
    from netdicom2.pcaps.replay_remote import replay_remote

    args = job.args
    results: list[Any] = []
    entry["replays"] = [r.as_dict() for r in results]
    down: str | None = None
    for conn in capture.connections:
        if job.listener is not None:
            from netdicom2.pcaps.replay_listen import replay_listen

            batch = [
                replay_listen(
                    conn,
                    job.listener,
                    command=args.spawn,
                    timeout=args.timeout,
                    accept_timeout=max(10.0, 2 * args.timeout) if args.spawn else 60.0,
                    ignore=args.ignore,
                )
            ]
        elif args.against == "local":
            roles = ["scp", "scu"] if args.role == "both" else [args.role]
            batch = [
                replay_local(
                    conn, role, timing=args.timing, step_timeout=args.timeout, artim=args.artim
                )
                for role in roles
            ]
        else:
            batch = [
                replay_remote(
                    conn,
                    args.against,
                    timing=args.timing,
                    step_timeout=args.timeout,
                    strict_datasets=args.strict_datasets,
                    verbatim=args.verbatim,
                    ignore=args.ignore,
                    fill_holes=args.fill_holes,
                )
            ]
        for result in batch:
            results.append(result)
            entry["replays"].append(result.as_dict())
            if result.unreachable is not None:
                down = result.unreachable
                break
            for line in replay_lines(result):
                job.say(line)
        if down is not None:
            break  # the same peer for every connection: one line per capture
    kinds = ("OK", "DIFFERENT", "SKIPPED", "INCOMPLETE")
    counts = {v: sum(1 for r in results if r.verdict == v) for v in kinds}
    warned = warned or counts["INCOMPLETE"] > 0
    if down is not None:
        job.unreachable = True
        job.say(f"{path}: peer down: {down} -> UNREACHABLE", summary=True)
        entry.update(ok=False, verdict="UNREACHABLE", unreachable=down)
        return
    failed = counts["DIFFERENT"] > 0 or (warned and args.strict)
    verdict = "FAIL" if failed else ("INCOMPLETE" if warned else "OK")
    if not failed and counts["SKIPPED"]:
        verdict += f", {counts['SKIPPED']} skipped"
    incomplete = f", {counts['INCOMPLETE']} incomplete" if counts["INCOMPLETE"] else ""
    job.say(
        f"{path}: {counts['OK']} of {len(results)} replays as recorded, {counts['DIFFERENT']} "
        f"different{incomplete}, {counts['SKIPPED']} skipped -> {verdict}",
        summary=True,
    )
    job.different = job.different or failed
    entry.update(ok=not failed, verdict=verdict)


def _extract(job: _Job, path: Path, capture: Any, entry: dict[str, Any]) -> None:
    """``--extract DIR``: the capture's C-STORE data sets as Part 10 files."""
    from netdicom2.pcaps.extract import extract_datasets

    files: list[str] = []
    skipped: list[str] = []
    for conn in capture.connections:
        got = extract_datasets(conn, job.args.extract, job.taken)
        files += [str(f) for f in got.files]
        skipped += got.skipped
    for why in skipped:
        job.say(f"  not extracted: {why}")
    left = f" ({len(skipped)} not extracted)" if skipped else ""
    job.say(f"{path}: extracted {len(files)} data sets to {job.args.extract}{left}", summary=True)
    entry["extracted"] = files
    entry["not_extracted"] = skipped


def _one(job: _Job, path: Path, limits: Limits) -> None:
    """Load one capture, report what reading it met, check or replay it."""
    from netdicom2.pcaps.flows import load_capture

    args = job.args
    entry: dict[str, Any] = {"file": str(path)}
    job.report["captures"].append(entry)
    try:
        capture = load_capture(path, args.port, limits)
    except (OSError, ValueError) as exc:
        job.unreadable = True
        entry.update(ok=False, verdict="UNREADABLE", error=str(exc))
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return
    stats = capture.stats
    entry["connections"] = len(capture.connections)
    entry["read"] = {
        "format": stats.file.format,
        "compressed": stats.file.compressed,
        "packets": stats.packets,
        "bytes": stats.file.bytes_read,
        "snapped": stats.file.snapped,
        "stopped": stats.file.stopped,
    }
    warnings = list(stats.file.warnings)
    entry["warnings"] = warnings
    job.say(
        f"== {path}: {len(capture.connections)} DICOM connections "
        f"({stats.packets} packets, link type {stats.linktype}, {stats.file.format}"
        f"{', gzip' if stats.file.compressed else ''})"
    )
    for warning in warnings:
        job.say(f"{path}: warning: {warning}", summary=True)
    if args.extract is not None:
        _extract(job, path, capture, entry)
    if args.against is None and job.listener is None:
        _codec(job, path, capture, entry, bool(warnings))
    else:
        _replays(job, path, capture, entry, bool(warnings))


def _write_reports(job: _Job) -> None:
    """``--json`` and ``--html`` (both from the same data)."""
    args = job.args
    if args.json is not None:
        args.json.write_text(json.dumps(job.report, indent=2, default=str))
    if args.html is not None:  # reports/ renders the same data as --json writes
        from netdicom2.reports.html_replay import write_replay_html

        data = json.loads(json.dumps(job.report, default=str))
        write_replay_html(data, args.html, ports=args.port)


def run_replay(args: argparse.Namespace) -> int:
    """Check or replay every capture; the exit status says the worst outcome."""
    _validate(args)
    job = _Job(args)
    if args.max_bytes is None:  # the defaults, with the gzip expansion ratio
        limits = Limits(max_packets=args.max_packets, time_limit=args.time_limit)
    else:  # an explicit byte budget replaces the ratio
        limits = Limits(args.max_packets, args.max_bytes, args.time_limit, gzip_ratio=0)
    done = 0
    if args.listen is not None:
        try:
            job.listener = socket.create_server(args.listen)
        except OSError as exc:
            where = f"{args.listen[0]}:{args.listen[1]}"
            raise JobError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        host, port = job.listener.getsockname()[:2]
        print(f"netdicom2 replay: playing the recorded acceptors on {host}:{port}", flush=True)
    try:
        for path in args.pcaps:
            _one(job, path, limits)
            done += 1
    except KeyboardInterrupt:
        job.report.update(partial=True, ok=False, exit_status=None)
        for entry in job.report["captures"]:
            entry.setdefault("verdict", "INTERRUPTED")
        print(
            f"interrupted: {done} of {len(args.pcaps)} captures done; "
            "reports written marked partial",
            file=sys.stderr,
            flush=True,
        )
        _write_reports(job)
        raise
    finally:
        if job.listener is not None:
            job.listener.close()
    job.report.update(partial=False, ok=job.status == EXIT_OK, exit_status=job.status)
    try:
        _write_reports(job)
    except OSError as exc:
        raise JobError(f"cannot write the report: {exc}") from exc
    return job.status
