"""The `netdicom2 scp` command line: options, start-up checks, serving until a signal.

Start-up refuses what cannot work in one line before serving (cli.UsageError, exit 2: an AE
title over 16 characters, a host that is not local, an output folder that cannot hold files;
cli.JobError, exit 1: a port in use). The loop runs in the main thread: SIGINT/SIGTERM
(cli.Interrupted) abort every association, a summary is printed, the exit status is 130/143;
an exception the loop cannot contain ends the process with one line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import socket
from pathlib import Path

from netdicom2.app_files import MAX_IN_PROGRESS, byte_size, prepare_output_dir
from netdicom2.app_scp import MAX_DATASET_SIZE, MAX_PER_ADDRESS, StorageSCP
from netdicom2.cli import MAX_LENGTH, JobError, UsageError, ae_title, bounded_int, seconds
from netdicom2.dulserver import DEFAULT_MAX_BUFFERED
from netdicom2.exceptions import ServerFailedError

__all__ = ["add_scp"]

log = logging.getLogger("netdicom2.scp")


def add_scp(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `netdicom2 scp`."""
    p = sub.add_parser("scp", help="run a Verification/Storage SCP (one DULServer loop)")
    p.add_argument(
        "--port", type=bounded_int(0, 0xFFFF), default=11112, help="TCP port (default 11112)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--ae-title", type=ae_title, default=None, help="reject other called AE titles (RJ 1/1/7)"
    )
    p.add_argument("--artim", type=seconds(), default=30.0, help="ARTIM timeout in seconds")
    p.add_argument(
        "--max-pdu",
        type=bounded_int(0, MAX_LENGTH),
        default=16384,
        help="maximum PDU length we receive (0: unlimited)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="write received data sets here as <SOP Instance UID>.dcm (created if missing)",
    )
    p.add_argument(
        "--max-dataset-size",
        type=byte_size,
        default=MAX_DATASET_SIZE,
        metavar="BYTES",
        help="refuse a larger data set with status A700H and discard it; "
        "suffixes K, M, G, T (powers of 1024); default 4G",
    )
    p.add_argument(
        "--max-in-progress",
        type=byte_size,
        default=MAX_IN_PROGRESS,
        metavar="BYTES",
        help="data-set bytes all associations may have in unfinished files at once; "
        "a store that would pass it is refused with A700H (default 8G)",
    )
    p.add_argument(
        "--max-associations",
        type=bounded_int(1, 1 << 20),
        default=500,
        help="concurrent associations",
    )
    p.add_argument(
        "--max-per-address",
        type=bounded_int(0, 1 << 20),
        default=MAX_PER_ADDRESS,
        help=f"associations one peer address may hold at once, RJ 2/3/2 beyond "
        f"(default {MAX_PER_ADDRESS}; 0: no cap)",
    )
    p.add_argument(
        "--max-buffered",
        type=byte_size,
        default=DEFAULT_MAX_BUFFERED,
        metavar="BYTES",
        help="bytes all connections may hold in receive buffers; beyond, the connections "
        "holding most are aborted first (default 256M)",
    )
    p.add_argument(
        "--max-pending",
        type=bounded_int(1, 1 << 20),
        default=1000,
        help="connections without A-ASSOCIATE-RQ yet; beyond, the oldest is dropped",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds(zero=True),
        default=60.0,
        help="abort an association silent this long, seconds (0: never)",
    )
    p.add_argument(
        "--send-timeout",
        type=seconds(),
        default=30.0,
        help="drop a peer that reads nothing this long",
    )
    p.add_argument(
        "--max-operations",
        type=bounded_int(0, 0xFFFF),
        default=0,
        help="outstanding requests a requestor may invoke, PS3.7 D.3.3.3 (0: what it proposes)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: one line per association and per store; -vv: every PS3.8 transition too",
    )
    p.set_defaults(handler=_run)


def _raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each connection holds descriptors."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _listen_error(exc: OSError, host: str, port: int) -> Exception:
    """The one-line error for a listener that cannot be opened on host:port."""
    # socket.create_server appends "(while attempting to bind on address ...)": we name it.
    reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
    if isinstance(exc, socket.gaierror) or (exc.errno or 0) < 0:  # EAI_* codes are negative
        return UsageError(f"--host {host!r}: cannot resolve it ({reason})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(f"--host {host}: not an address of this machine ({reason})")
    if exc.errno == errno.EADDRINUSE:
        return JobError(f"port {port} on {host} is in use: another program listens there")
    if exc.errno == errno.EACCES:
        return JobError(f"no permission to listen on {host}:{port} ({reason})")
    return JobError(f"cannot listen on {host}:{port}: {reason}")


def _configure_logging(verbose: int) -> None:
    """Warnings only; -v adds one line per association and store; -vv every transition."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _run(args: argparse.Namespace) -> int:
    """Serve in this thread until SIGINT or SIGTERM (Interrupted: exit 130 / 143)."""
    _configure_logging(args.verbose)
    _raise_fd_limit()
    if args.output_dir is not None:
        prepare_output_dir(args.output_dir)
    try:
        scp = StorageSCP(
            args.host,
            args.port,
            ae_title=args.ae_title,
            artim_timeout=args.artim,
            max_pdu_length=args.max_pdu,
            output_dir=args.output_dir,
            max_associations=args.max_associations,
            max_pending=args.max_pending,
            idle_timeout=args.idle_timeout or None,
            send_timeout=args.send_timeout,
            max_operations=args.max_operations,
            max_dataset_size=args.max_dataset_size,
            max_in_progress=args.max_in_progress,
            max_per_address=args.max_per_address,
            max_buffered=args.max_buffered,
        )
    except OSError as exc:
        raise _listen_error(exc, args.host, args.port) from None
    except ValueError as exc:  # a limit the server refuses (e.g. --max-buffered under 1 MiB)
        raise UsageError(str(exc)) from None
    host, port = scp.address[:2]
    try:
        # The first line names the address alone: scripts read the port from its last word.
        print(f"netdicom2 scp listening on {host}:{port}", flush=True)
        if args.output_dir is not None:
            log.info("writing data sets into %s", args.output_dir)
        # In the main thread: a signal interrupts the selector wait, the loop's cleanup aborts
        # every association (removing half-written files) and the exit status says why.
        scp.serve_forever()
    except ServerFailedError as exc:  # logged CRITICAL by the loop; the process must not linger
        _summary(scp)
        raise JobError(f"the server stopped: {exc}") from exc
    except KeyboardInterrupt:
        scp.shutdown()
        _summary(scp)
        raise
    _summary(scp)
    raise JobError("the server loop stopped unexpectedly; see the log above")


def _summary(scp: StorageSCP) -> None:
    """One line: what was served."""
    stats = scp.stats
    turned_away = {
        "over --max-associations": stats.rejected_over_limit,
        "over --max-per-address": stats.rejected_per_address,
        "evicted (--max-pending)": stats.evicted,
        "shed (--max-buffered)": stats.shed,
    }
    limits = ", ".join(f"{count} {why}" for why, count in turned_away.items() if count)
    print(
        f"netdicom2 scp: {stats.associations} associations, {stats.echoes} echoes, "
        f"{stats.stores} stores ({stats.store_failures} refused), "
        f"{stats.bytes_received} data-set bytes" + (f"; limits: {limits}" if limits else ""),
        flush=True,
    )
