"""`netdicom2 scp`: a Verification and Storage SCP, every association in one DULServer loop.

Each accepted TCP connection gets its own PS3.8 state machine and a service user (`_Session`)
that negotiates, answers C-ECHO and C-STORE (status 0000H) and the release from within the
indication, in the loop thread: no thread per connection. Data sets stream to `output_dir` as
Part 10 files, fragment by fragment, or are counted and discarded: the SCP never holds a whole
data set in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from netdicom2.acse import AcceptedContext, check_window, negotiate
from netdicom2.cli import MAX_LENGTH, bounded_int, seconds
from netdicom2.dimse import (
    COMMAND_FIELDS,
    NO_DATA_SET,
    CommandFragments,
    CommandSet,
    DimseError,
    c_echo_rsp,
    c_store_rsp,
    decode_command,
    encode_command,
    part10_header,
)
from netdicom2.dulserver import ERROR, IDLE, Channel, DULServer
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

__all__ = ["StorageSCP", "add_subcommand"]

log = logging.getLogger("netdicom2.scp")

# PS3.7 Annex C: statuses the example SCP answers with.
SUCCESS = 0x0000
UNRECOGNIZED_OPERATION = 0x0211
PROCESSING_FAILURE = 0x0110
# PS3.7 §9.3: the command fields answered, read once.
_C_ECHO_RQ = COMMAND_FIELDS["C-ECHO-RQ"]
_C_STORE_RQ = COMMAND_FIELDS["C-STORE-RQ"]


@dataclass
class SCPStats:
    """Counters a test or benchmark can read while the SCP runs."""

    connections: int = 0
    associations: int = 0
    rejected_over_limit: int = 0
    stores: int = 0
    echoes: int = 0
    bytes_received: int = 0
    active: int = 0
    # How associations ended, as the service user saw it (PS3.8 §7.2-§7.4).
    released: int = 0
    aborted: int = 0  # A-ABORT indication (the peer's user abort, source 0)
    provider_aborted: int = 0  # A-P-ABORT indication (source 2, or the transport was lost)
    idle_aborted: int = 0  # no PDU within idle_timeout: we aborted (PS3.8 §9.1.4 Note 2)
    evicted: int = 0  # dropped before an A-ASSOCIATE-RQ to make room (max_pending)
    accept_errors: int = 0  # accept() failed for lack of resources
    errors: int = 0  # the service user failed (a bug, or e.g. a full disk)
    unclean: int = 0  # the provider was not back in Sta1 when its service user ended
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class StorageSCP(DULServer):
    """A listening socket whose connections are all served by one DULServer loop (acceptor).

    Limits: `max_associations` established at once, more are answered A-ASSOCIATE-RJ
    (transient, service-provider presentation, local limit exceeded: 2/3/2, PS3.8 Table 9-21);
    `max_pending` connections still waiting for their A-ASSOCIATE-RQ (Sta2, bounded by ARTIM),
    beyond which the oldest is dropped; `idle_timeout` seconds without a PDU in an association
    before it is aborted (PS3.8 §9.1.4 Note 2, not ARTIM); `send_timeout` seconds a peer may
    leave our output unread. Each connection costs one file descriptor (its socket) and no
    thread: the service user answers from within the indication, in the loop thread.
    `max_operations` bounds the Asynchronous Operations Window granted to a requestor that
    proposes one (PS3.7 D.3.3.3; 0, the default, grants what it proposes): requests are
    performed in the order received and each is answered when complete, so pipelined requests
    wait in the transport, bounded by TCP flow control.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11112,
        *,
        ae_title: str | None = None,
        artim_timeout: float = 30.0,
        max_pdu_length: int = 16384,
        output_dir: Path | None = None,
        max_associations: int = 500,
        abstract_syntaxes: list[str] | None = None,
        max_pending: int = 1000,
        idle_timeout: float | None = 60.0,
        send_timeout: float = 30.0,
        max_operations: int = 0,
    ) -> None:
        """Bind host:port (127.0.0.1 by default) and prepare; start() serves."""
        check_window("max_operations", max_operations)
        if max_associations < 1:
            raise ValueError(f"max_associations must be at least 1, not {max_associations}")
        super().__init__(
            socket.create_server((host, port), backlog=1024),
            artim_timeout=artim_timeout,
            max_pdu_length=max_pdu_length,
            send_timeout=send_timeout,
            idle_timeout=idle_timeout,
            max_pending=max_pending,
            name="scp",
        )
        self.ae_title = ae_title
        self.output_dir = output_dir
        self.abstract_syntaxes = abstract_syntaxes
        self.max_associations = max_associations
        self.max_operations = max_operations
        self.stats = SCPStats()
        self._admitted = 0  # associations holding a slot (taken at AE-6, loop thread only)

    def start(self) -> StorageSCP:  # type: ignore[override]
        """Serve in a background thread; returns self."""
        super().start()
        return self

    # ------------------------------------------------------------------ DULServer hooks

    def new_handler(self, channel: Channel) -> _Session:
        """The service user of a connection whose first indication came."""
        return _Session(self, channel)

    def accepted(self, channel: Channel) -> None:
        """Count the connection (PS3.8 §9.1.2: Evt5)."""
        with self.stats.lock:
            self.stats.connections += 1

    def admit(self, channel: Channel, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 §7.1.2.6 / Table 9-21: over the cap, RJ transient, local limit exceeded (AE-6)."""
        if self._admitted < self.max_associations:
            self._admitted += 1
            return None
        with self.stats.lock:
            self.stats.rejected_over_limit += 1
        return AAssociateRjPDU(result=2, source=3, reason_diag=2)

    def accept_failed(self, exc: OSError) -> None:
        """Count and log a failed accept(); the listener backs off (PS3.8 §9.1.4 Note 1)."""
        with self.stats.lock:
            self.stats.accept_errors += 1
        log.warning("accept failed: %s", exc)

    def evicted(self, channel: Channel) -> None:
        """Count a connection dropped in Sta2 to make room (max_pending)."""
        with self.stats.lock:
            self.stats.evicted += 1

    def count_ending(self, session: _Session, outcome: str) -> None:
        """Release the slot and count how the association ended (SCPStats)."""
        if session.admitted:
            self._admitted -= 1
        with self.stats.lock:
            stats = self.stats
            if session.established:
                stats.active -= 1
            if outcome == IDLE:
                stats.idle_aborted += 1
            elif outcome == ERROR:
                stats.errors += 1
            elif session.abort is not None:
                if session.abort.source == 0:
                    stats.aborted += 1
                else:
                    stats.provider_aborted += 1
            elif session.released:
                stats.released += 1

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Session:
    """Per-association service-user state: negotiated contexts and the message being received."""

    def __init__(self, scp: StorageSCP, channel: Channel) -> None:
        self.scp = scp
        self.channel = channel
        self.contexts: dict[int, AcceptedContext] = {}
        self.command = CommandFragments()
        self.pending: CommandSet | None = None
        self.pending_context = 0
        self.sink: BinaryIO | None = None
        self.admitted = False  # the indication came: _admit took a slot at AE-6
        self.established = False
        self.released = False
        self.abort: AAbortPDU | None = None

    def indication(self, pdu: PDU) -> None:
        """React to one indication of the provider (in the loop thread: never blocks)."""
        if isinstance(pdu, AAssociateRqPDU):
            self.admitted = True
            answer, accepted = negotiate(
                pdu,
                abstract_syntaxes=self.scp.abstract_syntaxes,
                max_pdu_length=self.scp.max_pdu_length,
                ae_title=self.scp.ae_title,
                max_operations_performed=self.scp.max_operations,
            )
            self.contexts = {context.context_id: context for context in accepted}
            self.channel.send(answer)  # raises if the association ended meanwhile (Sta13: AA-8)
            if not isinstance(answer, AAssociateRjPDU):
                self.established = True
                with self.scp.stats.lock:
                    self.scp.stats.associations += 1
                    self.scp.stats.active += 1
        elif isinstance(pdu, PDataTfPDU):
            for item in pdu.data_value_items:
                self._pdv(item)
        elif isinstance(pdu, AReleaseRqPDU):
            self.released = True
            self.channel.send(AReleaseRpPDU())  # PS3.8 §7.2: release is always affirmative
        elif isinstance(pdu, AAbortPDU):
            self.abort = pdu  # A-ABORT / A-P-ABORT: nothing to answer, the provider ends it

    def _pdv(self, item: PresentationDataValueItem) -> None:
        """Collect command fragments; stream data-set fragments (PS3.8 Annex E)."""
        if item.context_id not in self.contexts:
            log.warning("P-DATA on presentation context %d that was not accepted", item.context_id)
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        if item.is_command:
            if self.pending is not None:
                # PS3.8 Annex E.2 [interp], as framing.Reassembler: a command fragment while the
                # data set of the previous command is expected is a protocol error.
                log.warning("command fragment while a data set is expected")
                self.channel.send(AAbortPDU(source=0, reason_diag=0))
                return
            try:
                data = self.command.add(item.fragment, item.is_last)
            except DimseError as exc:  # past MAX_COMMAND_LENGTH
                log.warning("%s", exc)
                self.channel.send(AAbortPDU(source=0, reason_diag=0))
                return
            if data is not None:
                self._command_complete(item.context_id, data)
            return
        if self.pending is None:
            log.warning("data set fragment without a command")
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        with self.scp.stats.lock:
            self.scp.stats.bytes_received += len(item.fragment)
        if self.sink is not None:
            self.sink.write(item.fragment)
        if item.is_last:
            self._store_complete()

    def _command_complete(self, context_id: int, data: bytes | memoryview) -> None:
        """A whole command set arrived: answer C-ECHO, prepare a C-STORE, refuse the rest."""
        try:
            command = decode_command(data)
        except DimseError as exc:
            log.warning("undecodable command set: %s", exc)
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        if command.command_field == _C_ECHO_RQ:
            with self.scp.stats.lock:
                self.scp.stats.echoes += 1
            self._respond(context_id, c_echo_rsp(command))
        elif command.command_field == _C_STORE_RQ and command.has_data_set:
            self.pending, self.pending_context = command, context_id
            if self.scp.output_dir is not None:
                self.sink = self._open_sink(command, self.contexts[context_id])
        else:
            response = CommandSet(
                {
                    0x0002: command.get_uid(0x0002),
                    0x0100: (command.command_field | 0x8000) & 0xFFFF,
                    0x0120: command.message_id,
                    0x0800: NO_DATA_SET,
                    0x0900: UNRECOGNIZED_OPERATION,
                }
            )
            self._respond(context_id, response)

    def _open_sink(self, command: CommandSet, context: AcceptedContext) -> BinaryIO:
        """A Part 10 file named after the SOP instance, header written, ready for fragments."""
        assert self.scp.output_dir is not None
        instance = command.get_uid(0x1000)
        name = re.sub(r"[^0-9A-Za-z.]", "_", instance) or "unnamed"
        sink = (self.scp.output_dir / f"{name}.dcm").open("wb")
        sink.write(part10_header(command.get_uid(0x0002), instance, context.transfer_syntax))
        return sink

    def _store_complete(self) -> None:
        """The last data-set fragment arrived: close the file and answer C-STORE-RSP."""
        assert self.pending is not None
        status = SUCCESS
        if self.sink is not None:
            try:
                self.sink.close()
            except OSError:
                status = PROCESSING_FAILURE
            self.sink = None
        with self.scp.stats.lock:
            self.scp.stats.stores += 1
        command, context_id = self.pending, self.pending_context
        self.pending = None
        self._respond(context_id, c_store_rsp(command, status))

    def _respond(self, context_id: int, command: CommandSet) -> None:
        """Send a response command set as one last command fragment (PS3.8 Annex E.2: 03H)."""
        pdv = PresentationDataValueItem(context_id, 0x03, encode_command(command))
        self.channel.send(PDataTfPDU([pdv]))

    def closed(self, outcome: str) -> None:
        """The association is over: close a half-written file, count how it ended."""
        if self.sink is not None:
            with contextlib.suppress(OSError):
                self.sink.close()
            self.sink = None
        self.scp.count_ending(self, outcome)


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `netdicom2 scp`."""
    p = sub.add_parser("scp", help="run a Verification/Storage SCP (one DULServer loop)")
    p.add_argument(
        "--port", type=bounded_int(0, 0xFFFF), default=11112, help="TCP port (default 11112)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--ae-title", default=None, help="reject other called AE titles (RJ 1/1/7)")
    p.add_argument("--artim", type=seconds(), default=30.0, help="ARTIM timeout in seconds")
    p.add_argument(
        "--max-pdu",
        type=bounded_int(0, MAX_LENGTH),
        default=16384,
        help="maximum PDU length we receive (0: unlimited)",
    )
    p.add_argument("--output-dir", type=Path, default=None, help="write received data sets here")
    p.add_argument(
        "--max-associations",
        type=bounded_int(1, 1 << 20),
        default=500,
        help="concurrent associations",
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
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.set_defaults(handler=_run)


def _raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each connection holds descriptors."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2))
    _raise_fd_limit()
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
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
    )
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    scp.start()
    print(f"netdicom2 scp listening on {scp.address[0]}:{scp.address[1]}", flush=True)
    done.wait()
    scp.shutdown()
    return 0
