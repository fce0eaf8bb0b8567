"""`netdicom2 replay` and `netdicom2 record`: the pcap tooling's console commands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["add_record", "add_replay", "replay_lines", "run_replay"]

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _against(text: str) -> str | tuple[str, int]:
    """``--against``: "local" or HOST:PORT (port 1..65535), else a usage error."""
    from netdicom2.cli import host_port

    return "local" if text == "local" else host_port(text)


def _folder(text: str) -> Path:
    """``--extract DIR``: an existing, writable folder (checked before any work)."""
    import os

    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not an existing folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {text} is not writable")
    return path


def add_replay(sub: SubParsers) -> None:
    """Register `netdicom2 replay`."""
    from netdicom2.cli import bounded_int, listen_address, output_path, seconds
    from netdicom2.pcaps.ignore import RULES

    p = sub.add_parser(
        "replay",
        help="check or replay the DICOM associations of a pcap/pcapng capture",
        description="Read DICOM connections from captures and check the codec (default), "
        "replay them against a local netdicom2 provider, or against a live acceptor. "
        "Exit status: 0 every capture passes; 1 a difference (or, with --strict, a warning); "
        "2 a bad command line or an unreadable capture; 3 the live peer could not be reached "
        "(refused, unreachable, reset at connect); 130/143 interrupted.",
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
        type=_against,
        metavar="local|HOST:PORT",
        help="replay against a local netdicom2 provider, or a live acceptor",
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        metavar="[HOST:]PORT",
        help="play the recorded acceptor to a live requestor connecting here (host defaults "
        "to 127.0.0.1; port 0: any free port)",
    )
    p.add_argument(
        "--spawn",
        metavar="CMD",
        help="with --listen: start CMD ({port} replaced) once per recorded connection",
    )
    p.add_argument(
        "--as",
        dest="role",
        choices=["scp", "scu", "both"],
        default=None,
        help="with --against local: the role netdicom2 plays (default both)",
    )
    p.add_argument(
        "--port",
        type=bounded_int(1, 65535),
        action="append",
        default=[],
        help="also treat this TCP port as DICOM when reading the captures (repeatable)",
    )
    p.add_argument(
        "--timing",
        choices=["asap", "recorded"],
        default="asap",
        help="send as soon as allowed, or keep the recorded spacing",
    )
    p.add_argument(
        "--timeout", type=seconds(), default=5.0, help="seconds to wait for each answer (default 5)"
    )
    p.add_argument("--artim", type=seconds(), default=1.0, help="ARTIM of the local provider (s)")
    p.add_argument(
        "--strict-datasets",
        action="store_true",
        help="with HOST:PORT: also compare data set sizes and bytes",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        choices=sorted(RULES),
        metavar="FIELD",
        help="with HOST:PORT or --listen: excuse differences of FIELD (repeatable; shown as "
        "excused): " + ", ".join(sorted(RULES)),
    )
    p.add_argument(
        "--verbatim",
        action="store_true",
        help="with HOST:PORT: send P-DATA-TF as recorded, even above the live acceptor's "
        "Maximum Length (default: re-fragment them)",
    )
    p.add_argument(
        "--fill-holes",
        action="store_true",
        help="with HOST:PORT: send a PDU the capture lacks bytes of with those bytes zeroed "
        "(default: stop before it); later comparisons are marked",
    )
    p.add_argument(
        "--allow-invalid",
        action="store_true",
        help="with --check codec: PDUs the codec refuses do not fail the check",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="warnings (truncated file, absurd lengths, limits reached, incomplete PDUs) fail",
    )
    p.add_argument(
        "--max-packets",
        type=bounded_int(0, 1 << 40),
        default=2_000_000,
        metavar="N",
        help="read at most N packets of each capture (0: no limit; default 2,000,000)",
    )
    p.add_argument(
        "--max-bytes",
        type=bounded_int(0, 1 << 50),
        default=None,
        metavar="N",
        help="read at most N bytes of each (expanded) capture (0: no limit; default 4 GiB, "
        "and gzip input at most 100 times its compressed size, at least 64 MiB)",
    )
    p.add_argument(
        "--time-limit",
        type=seconds(zero=True),
        default=600.0,
        metavar="S",
        help="stop reading a capture after S seconds (0: no limit; default 600)",
    )
    p.add_argument(
        "--extract",
        type=_folder,
        metavar="DIR",
        help="also write every C-STORE data set of the captures to DIR as DICOM Part 10 files",
    )
    p.add_argument("--json", type=output_path, metavar="F", help="write the full report as JSON")
    p.add_argument(
        "--html", type=output_path, metavar="F", help="write an HTML page with ladder diagrams"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=run_replay)


def add_record(sub: SubParsers) -> None:
    """Register `netdicom2 record`."""
    from netdicom2.cli import bounded_int, host_port, listen_address, output_path

    p = sub.add_parser(
        "record",
        help="relay connections to a PACS and record them into a pcap (no tcpdump needed)",
    )
    p.add_argument(
        "--listen",
        required=True,
        type=listen_address,
        metavar="[HOST:]PORT",
        help="address to listen on (host defaults to 127.0.0.1; port 0: any free port)",
    )
    p.add_argument(
        "--forward", required=True, type=host_port, metavar="HOST:PORT", help="the real acceptor"
    )
    p.add_argument("--out", required=True, type=output_path, metavar="FILE.pcap")
    p.add_argument(
        "--max-connections",
        type=bounded_int(1, 65535),
        default=256,
        help="connections relayed at once; more are closed at accept (default 256)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(handler=run_record)


def replay_lines(result: Any) -> list[str]:
    """A readable diff of one replayed connection."""
    lines = [f"{result.connection}  [{result.mode}]  {result.verdict}  ({result.elapsed:.3f} s)"]
    if result.skipped:
        lines.append(f"  skipped: {result.skipped}")
    for finding in result.findings:
        lines.append(
            f"  recording non-conforming: {finding.side} at {finding.cell}: {finding.text}"
        )
    lines += [f"  not copied: {text}" for text in result.not_copied]
    if result.unreachable:
        lines.append(f"  peer down: {result.unreachable}")
    if result.incomplete:
        lines.append(f"  incomplete: {result.incomplete}")
    for diff in result.differences:
        mark = "~" if diff.excused_by else "!"
        where = f"step {diff.step}" if diff.step is not None else "after the recording"
        lines.append(f"  {mark} {where}: {diff.what}: recorded {diff.expected}")
        lines.append(f"  {' ' * len(where)}   {' ' * len(diff.what)}  got      {diff.actual}")
        if diff.excused_by and diff.excused_by.startswith("--ignore"):
            lines.append(f"      excused: {diff.excused_by}")
        elif diff.excused_by:
            lines.append(f"      excused: recording already left PS3.8 ({diff.excused_by[:90]})")
        if diff.marked:
            lines.append(f"      marked: {diff.marked}")
    lines += [f"  note: {note}" for note in result.notes]
    return lines


def run_replay(args: argparse.Namespace) -> int:
    """`netdicom2 replay` (``pcaps.replay_job``)."""
    from netdicom2.pcaps.replay_job import run_replay as run

    return run(args)


def run_record(args: argparse.Namespace) -> int:
    """Relay and record until SIGINT or SIGTERM (then exit 130/143 after the summary)."""
    import socket

    from netdicom2.cli import JobError, UsageError, connect_error
    from netdicom2.pcaps.recorder import RecordingProxy

    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="netdicom2 record: %(message)s"
    )
    listen, forward = args.listen, args.forward
    try:
        socket.getaddrinfo(forward[0], forward[1], type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        message = connect_error(exc, *forward)
        raise UsageError(f"--forward {forward[0]}:{forward[1]}: {message}") from None
    try:
        proxy = RecordingProxy(listen, forward, args.out, max_connections=args.max_connections)
    except OSError as exc:
        where = f"{listen[0]}:{listen[1]}"
        raise JobError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        with socket.create_connection(forward, timeout=2.0):
            pass
    except OSError as exc:
        print(
            f"netdicom2 record: warning: {connect_error(exc, *forward)}; every client will be "
            "reset until it listens",
            file=sys.stderr,
            flush=True,
        )
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
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
    return 128 + received[0] if received else 0
