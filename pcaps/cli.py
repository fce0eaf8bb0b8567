"""`netdicom2 replay` and `netdicom2 record`: the pcap tooling's console commands."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["add_record", "add_replay", "parse_endpoint", "run_replay"]

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def parse_endpoint(text: str, default_host: str | None = None) -> tuple[str, int]:
    """ "HOST:PORT" (or "PORT" when a default host is given) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
        host, port = default_host, text
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host, number


def add_replay(sub: SubParsers) -> None:
    """Register `netdicom2 replay`."""
    p = sub.add_parser(
        "replay",
        help="check or replay the DICOM associations of a pcap/pcapng capture",
        description="Read DICOM connections from captures and check the codec (default), "
        "replay them against a local netdicom2 provider, or against a live acceptor.",
    )
    p.add_argument("pcaps", nargs="+", type=Path, metavar="PCAP")
    p.add_argument(
        "--check",
        choices=["codec"],
        default="codec",
        help="without --against: every PDU must decode and re-encode byte-exactly",
    )
    p.add_argument(
        "--against",
        metavar="local|HOST:PORT",
        help="replay against a local netdicom2 provider, or a live acceptor",
    )
    p.add_argument(
        "--as",
        dest="role",
        choices=["scp", "scu", "both"],
        default="both",
        help="with --against local: the role netdicom2 plays (default both)",
    )
    p.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        help="also treat this TCP port as DICOM (repeatable)",
    )
    p.add_argument(
        "--timing",
        choices=["asap", "recorded"],
        default="asap",
        help="send as soon as allowed, or keep the recorded spacing",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer")
    p.add_argument("--artim", type=float, default=1.0, help="ARTIM of the local provider (s)")
    p.add_argument(
        "--strict-datasets",
        action="store_true",
        help="with HOST:PORT: also compare data set sizes and bytes",
    )
    p.add_argument(
        "--allow-invalid",
        action="store_true",
        help="with --check codec: PDUs the codec refuses do not fail the check",
    )
    p.add_argument("--json", type=Path, metavar="F", help="write the full report as JSON")
    p.add_argument("--html", type=Path, metavar="F", help="write an HTML page with ladder diagrams")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=run_replay)


def add_record(sub: SubParsers) -> None:
    """Register `netdicom2 record`."""
    p = sub.add_parser(
        "record",
        help="relay connections to a PACS and record them into a pcap (no tcpdump needed)",
    )
    p.add_argument(
        "--listen",
        required=True,
        metavar="[HOST:]PORT",
        help="address to listen on (host defaults to 127.0.0.1)",
    )
    p.add_argument("--forward", required=True, metavar="HOST:PORT", help="the real acceptor")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.pcap")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(handler=run_record)


def _print(lines: Sequence[str], quiet: bool) -> None:
    """Print report lines unless quiet."""
    if not quiet:
        for line in lines:
            print(line)


def _replay_lines(result: Any) -> list[str]:
    """A readable diff of one replayed connection."""
    verdict = "SKIPPED" if result.skipped else ("OK" if result.ok else "DIFFERENT")
    lines = [f"{result.connection}  [{result.mode}]  {verdict}  ({result.elapsed:.3f} s)"]
    if result.skipped:
        lines.append(f"  skipped: {result.skipped}")
    for finding in result.findings:
        lines.append(
            f"  recording non-conforming: {finding.side} at {finding.cell}: {finding.text}"
        )
    lines += [f"  not copied: {text}" for text in result.not_copied]
    for diff in result.differences:
        mark = "~" if diff.excused_by else "!"
        where = f"step {diff.step}" if diff.step is not None else "after the recording"
        lines.append(f"  {mark} {where}: {diff.what}: recorded {diff.expected}")
        lines.append(f"  {' ' * len(where)}   {' ' * len(diff.what)}  got      {diff.actual}")
        if diff.excused_by:
            lines.append(f"      excused: recording already left PS3.8 ({diff.excused_by[:90]})")
    lines += [f"  note: {note}" for note in result.notes]
    return lines


def run_replay(args: argparse.Namespace) -> int:
    """Exit 0 iff every capture passes the requested check or replay."""
    from pcaps.codec_check import check_codec
    from pcaps.flows import load_capture
    from pcaps.replay_local import replay_local
    from pcaps.replay_remote import replay_remote

    report: dict[str, Any] = {"captures": []}
    ok = True
    total_pdus = 0
    for path in args.pcaps:
        try:
            capture = load_capture(path, args.port)
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            return 2
        entry: dict[str, Any] = {"file": str(path), "connections": len(capture.connections)}
        if not args.quiet:
            print(
                f"== {path}: {len(capture.connections)} DICOM connections "
                f"({capture.stats.packets} packets, link type {capture.stats.linktype})"
            )
        if args.against is None:
            codec = check_codec(capture)
            _print(codec.lines, args.quiet)
            passed = codec.ok(args.allow_invalid)
            total_pdus += codec.pdus
            for issue in codec.issues:
                print(
                    f"  {issue.kind.upper()}: {issue.connection} {issue.side} PDU "
                    f"{issue.index} @{issue.offset}: {issue.detail}"
                )
            print(
                f"{path}: {codec.exact}/{codec.pdus} PDUs round-trip byte-exactly "
                f"({codec.rate:,.0f} PDUs/s) -> {'OK' if passed else 'FAIL'}"
            )
            entry["codec"] = codec.as_dict()
            entry["ok"] = passed
        else:
            results = []
            for conn in capture.connections:
                if args.against == "local":
                    roles = ["scp", "scu"] if args.role == "both" else [args.role]
                    for role in roles:
                        results.append(
                            replay_local(
                                conn,
                                role,
                                timing=args.timing,
                                step_timeout=args.timeout,
                                artim=args.artim,
                            )
                        )
                else:
                    address = parse_endpoint(args.against)
                    results.append(
                        replay_remote(
                            conn,
                            address,
                            timing=args.timing,
                            step_timeout=args.timeout,
                            strict_datasets=args.strict_datasets,
                        )
                    )
            for result in results:
                _print(_replay_lines(result), args.quiet)
            passed = all(r.ok or r.skipped for r in results)
            good = sum(1 for r in results if r.ok)
            print(
                f"{path}: {good}/{len(results)} replays without unexcused difference -> "
                f"{'OK' if passed else 'FAIL'}"
            )
            entry["replays"] = [r.as_dict() for r in results]
            entry["ok"] = passed
        ok = ok and passed
        report["captures"].append(entry)
    report["ok"] = ok
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.html is not None:  # reports/ renders the same data as --json writes
        from reports.html_replay import write_replay_html

        write_replay_html(json.loads(json.dumps(report, default=str)), args.html, ports=args.port)
    return 0 if ok else 1


def run_record(args: argparse.Namespace) -> int:
    """Relay and record until SIGINT or SIGTERM."""
    from pcaps.recorder import RecordingProxy

    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2))
    listen = parse_endpoint(args.listen, default_host="127.0.0.1")
    forward = parse_endpoint(args.forward)
    proxy = RecordingProxy(listen, forward, args.out, max_connections=args.max_connections)

    def on_signal(signum: int, _frame: object) -> None:
        proxy.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = proxy.address
    print(
        f"netdicom2 record: {host}:{port} -> {forward[0]}:{forward[1]}, writing {args.out}",
        flush=True,
    )
    proxy.serve_forever()
    print(
        f"netdicom2 record: {proxy.connections} connections, {proxy.bytes_relayed} bytes, "
        f"{proxy.sink.packets} packets in {args.out}",
        flush=True,
    )
    return 0
