"""`netdicom2 scp`: a Verification and Storage SCP on DULServiceProvider, one thread each.

Every accepted TCP connection gets its own provider (the DUL thread) and a service-user thread
that negotiates, answers C-ECHO and C-STORE (status 0000H) and the release. Data sets stream to
`output_dir` as Part 10 files, fragment by fragment, or are counted and discarded: the SCP never
holds a whole data set in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from netdicom2.acse import AcceptedContext, negotiate
from netdicom2.dimse import (
    COMMAND_FIELDS,
    NO_DATA_SET,
    CommandSet,
    DimseError,
    c_echo_rsp,
    c_store_rsp,
    decode_command,
    encode_command,
    part10_header,
)
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import LocalProtocolError, NetDicomError, TimeoutError
from netdicom2.fsm import State
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

# After accept() fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM, no thread), the
# listener is not watched for this long, instead of spinning on a listener that stays readable;
# the connection waits in the backlog (PS3.8 §9.1.4 Note 1: temporary lack of resources).
ACCEPT_BACKOFF = 0.1
_MAX_LEFTOVER = 1024  # indications read after our send was refused (bounded)


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
    accept_errors: int = 0  # accept() or thread start failed for lack of resources
    errors: int = 0  # the service user failed (a bug, or e.g. a full disk)
    unclean: int = 0  # the provider was not back in Sta1 when its service user ended
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class StorageSCP:
    """A listening socket whose connections are served by DULServiceProvider (acceptor).

    Limits: `max_associations` established at once, more are answered A-ASSOCIATE-RJ
    (transient, service-provider presentation, local limit exceeded: 2/3/2, PS3.8 Table 9-21);
    `max_pending` connections still waiting for their A-ASSOCIATE-RQ (Sta2, bounded by ARTIM),
    beyond which the oldest is dropped; `idle_timeout` seconds without a PDU in an association
    before it is aborted (PS3.8 §9.1.4 Note 2, not ARTIM); `send_timeout` seconds a peer may
    leave our output unread. Each connection costs one thread (its service user runs the
    provider's loop) and two file descriptors (the socket and the provider's wakeup eventfd; a
    socketpair, so three, off Linux).
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
    ) -> None:
        """Bind host:port (127.0.0.1 by default) and prepare; start() serves."""
        self.ae_title = ae_title
        self.artim_timeout = artim_timeout
        self.max_pdu_length = max_pdu_length
        self.output_dir = output_dir
        self.abstract_syntaxes = abstract_syntaxes
        self.max_associations = max_associations
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.stats = SCPStats()
        self._slots = threading.BoundedSemaphore(max_associations)
        self._listener = socket.create_server((host, port), backlog=1024)
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._finished: list[threading.Thread] = []
        self._providers: set[DULServiceProvider] = set()
        # Connections whose A-ASSOCIATE-RQ has not arrived yet, oldest first (Sta2).
        self._pending: dict[DULServiceProvider, None] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._serving: threading.Thread | None = None
        self._parked: socket.socket | None = None  # accepted, waiting for descriptors

    def start(self) -> StorageSCP:
        """Serve in a background thread; returns self."""
        self._serving = threading.Thread(target=self.serve_forever, name="scp-accept", daemon=True)
        self._serving.start()
        return self

    def serve_forever(self) -> None:
        """Accept connections until shutdown(); each one is served in its own thread."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            paused_until: float | None = None
            while not self._stopping.is_set():
                timeout = None
                if paused_until is not None:
                    timeout = paused_until - time.monotonic()
                    if timeout <= 0:
                        selector.register(self._listener, selectors.EVENT_READ)
                        paused_until = timeout = None
                for key, _ in selector.select(timeout):
                    if key.fileobj is self._listener and not self._accept():
                        # Out of file descriptors, memory or threads: stop watching the
                        # listener for a moment instead of spinning on it (PS3.8 §9.1.4
                        # Note 1: temporary lack of resources).
                        selector.unregister(self._listener)
                        paused_until = time.monotonic() + ACCEPT_BACKOFF
                        break

    def _accept(self) -> bool:
        """Accept every pending connection (PS3.8 §9.1.2); False: out of resources, back off."""
        for _ in range(1024):  # bounded: the selector reports the rest on its next turn
            sock, self._parked = self._parked, None
            if sock is None:
                try:
                    sock, _ = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    return True
                except (ConnectionAbortedError, ConnectionResetError):
                    continue  # that one connection was reset while in the backlog
                except OSError as exc:
                    return self._lacking("accept failed", exc)
                self._make_room()
            try:
                # PS3.8 §9.1.2: accepted, ARTIM starts now (Evt5 → AE-5 in the constructor).
                dul = DULServiceProvider(
                    sock,
                    artim_timeout=self.artim_timeout,
                    max_pdu_length=self.max_pdu_length,
                    send_timeout=self.send_timeout,
                    acceptable=self._admit,
                    name="scp-dul",
                    threaded=False,  # the service-user thread runs its loop: one thread each
                )
            except OSError as exc:  # no descriptors for its selector and wakeup pair
                self._parked = sock  # served first when resources are back, like the backlog
                return self._lacking("cannot serve a connection", exc)
            thread = threading.Thread(target=self._serve, args=(dul,), daemon=True)
            with self._idle:
                with self.stats.lock:
                    self.stats.connections += 1
                self._providers.add(dul)
                self._pending[dul] = None
                self._threads.add(thread)
                self._finished = [t for t in self._finished if t.is_alive()]
                self._idle.notify_all()
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                self._forget(dul, thread)
                dul.kill()  # not started: closes its socket and descriptors
                return self._lacking("cannot serve a connection", exc)
        return True

    def _lacking(self, what: str, exc: BaseException) -> bool:
        """Count and log a failure for lack of resources; False (the caller backs off)."""
        with self.stats.lock:
            self.stats.accept_errors += 1
        log.warning("%s: %s", what, exc)
        return False

    def _forget(self, dul: DULServiceProvider, thread: threading.Thread) -> None:
        """The connection is no longer served: drop it from every registry, wake wait_idle()."""
        with self._idle:
            self._providers.discard(dul)
            self._pending.pop(dul, None)
            if thread in self._threads:
                self._threads.discard(thread)
                if thread.ident is not None:
                    self._finished.append(thread)
            self._idle.notify_all()

    def _make_room(self) -> None:
        """Over max_pending connections without an A-ASSOCIATE-RQ: drop the oldest of them."""
        with self._lock:
            if len(self._pending) < self.max_pending:
                return
            oldest = next(iter(self._pending))
            del self._pending[oldest]
        with self.stats.lock:
            self.stats.evicted += 1
        log.info(
            "over %d connections without A-ASSOCIATE-RQ: dropping the oldest", self.max_pending
        )
        oldest.kill()  # Sta2: Evt15 has no action, the transport is closed (Evt17 → AA-5)

    def _serve(self, dul: DULServiceProvider) -> None:
        """The service-user thread of one connection, running its provider's loop; cleans up."""
        try:
            self._serve_association(dul)
        finally:
            self._forget(dul, threading.current_thread())

    def _admit(self, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 §7.1.2.6 / Table 9-21: over the cap, RJ transient, local limit exceeded (AE-6)."""
        if self._slots.acquire(blocking=False):
            return None
        with self.stats.lock:
            self.stats.rejected_over_limit += 1
        return AAssociateRjPDU(result=2, source=3, reason_diag=2)

    def _serve_association(self, dul: DULServiceProvider) -> None:
        """The service user of one association, from A-ASSOCIATE indication to the end."""
        session = _Session(self, dul)
        outcome = ""
        try:
            # Sta2 is ARTIM's (PS3.8 §9.1.5): wait for the A-ASSOCIATE indication without a
            # timeout of our own, then no longer than idle_timeout for each next indication.
            first = dul.receive(None)
            with self._lock:
                self._pending.pop(dul, None)
            session.handle(first)
            while True:
                session.handle(dul.receive(self.idle_timeout))
        except TimeoutError:
            outcome = "idle"
            log.info("no PDU for %s s: aborting the association", self.idle_timeout)
        except LocalProtocolError:
            # The provider stopped (the association is over, or we are shutting down), or our
            # answer crossed the end of the association (a Table 9-10 blank cell, e.g. Evt7
            # after AA-4): the indication that ended it may still be queued.
            self._drain(dul, session)
        except Exception:
            outcome = "error"
            log.exception("service user failed; aborting the association")
        finally:
            unclean = outcome == "" and dul.state is not State.Sta1 and not self._stopping.is_set()
            dul.kill()
            session.close()
            self._count_ending(session, outcome, unclean)

    def _drain(self, dul: DULServiceProvider, session: _Session) -> None:
        """Read the indications left after the association ended, noting an abort."""
        with contextlib.suppress(NetDicomError):
            for _ in range(_MAX_LEFTOVER):
                pdu = dul.receive(self.artim_timeout)
                if isinstance(pdu, AAbortPDU):
                    session.abort = pdu

    def _count_ending(self, session: _Session, outcome: str, unclean: bool) -> None:
        """Release the slot and count how the association ended (SCPStats)."""
        if session.admitted:
            self._slots.release()
        with self.stats.lock:
            stats = self.stats
            if session.established:
                stats.active -= 1
            stats.unclean += unclean
            if outcome == "idle":
                stats.idle_aborted += 1
            elif outcome == "error":
                stats.errors += 1
            elif session.abort is not None:
                if session.abort.source == 0:
                    stats.aborted += 1
                else:
                    stats.provider_aborted += 1
            elif session.released:
                stats.released += 1

    def wait_idle(self, timeout: float, *, connections: int = 0) -> bool:
        """Wait until `connections` were accepted in all, none is being served, threads ended."""
        deadline = time.monotonic() + timeout

        def idle() -> bool:
            return not self._threads and self.stats.connections >= connections

        with self._idle:
            if not self._idle.wait_for(idle, timeout):
                return False
            finished, self._finished = self._finished, []
        for thread in finished:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in finished)

    def shutdown(self) -> None:
        """Stop accepting, kill every association, wait for every thread, close every socket."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._serving is not None:
            self._serving.join()
        with self._lock:  # the accepting thread has ended: no provider is added after this
            providers = list(self._providers)
        for dul in providers:
            dul.kill()
        with self._lock:
            threads = [*self._threads, *self._finished]
            self._finished = []
        for thread in threads:
            thread.join()
        if self._parked is not None:
            self._parked.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Session:
    """Per-association service-user state: negotiated contexts and the message being received."""

    def __init__(self, scp: StorageSCP, dul: DULServiceProvider) -> None:
        self.scp = scp
        self.dul = dul
        self.contexts: dict[int, AcceptedContext] = {}
        self.command = bytearray()
        self.pending: CommandSet | None = None
        self.pending_context = 0
        self.sink: BinaryIO | None = None
        self.admitted = False  # the indication came: _admit took a slot at AE-6
        self.established = False
        self.released = False
        self.abort: AAbortPDU | None = None

    def handle(self, pdu: PDU) -> None:
        """React to one indication of the provider."""
        if isinstance(pdu, AAssociateRqPDU):
            self.admitted = True
            answer, accepted = negotiate(
                pdu,
                abstract_syntaxes=self.scp.abstract_syntaxes,
                max_pdu_length=self.scp.max_pdu_length,
                ae_title=self.scp.ae_title,
            )
            self.contexts = {context.context_id: context for context in accepted}
            if not isinstance(answer, AAssociateRjPDU):
                self.established = True
                with self.scp.stats.lock:
                    self.scp.stats.associations += 1
                    self.scp.stats.active += 1
            self.dul.send(answer)
        elif isinstance(pdu, PDataTfPDU):
            for item in pdu.data_value_items:
                self._pdv(item)
        elif isinstance(pdu, AReleaseRqPDU):
            self.released = True
            self.dul.send(AReleaseRpPDU())  # PS3.8 §7.2: release is always affirmative
        elif isinstance(pdu, AAbortPDU):
            self.abort = pdu  # A-ABORT / A-P-ABORT: nothing to answer, the provider ends it

    def _pdv(self, item: PresentationDataValueItem) -> None:
        """Collect command fragments; stream data-set fragments (PS3.8 Annex E)."""
        if item.context_id not in self.contexts:
            log.warning("P-DATA on presentation context %d that was not accepted", item.context_id)
            self.dul.send(AAbortPDU(source=0, reason_diag=0))
            return
        if item.is_command:
            self.command += item.fragment
            if item.is_last:
                self._command_complete(item.context_id)
            return
        if self.pending is None:
            log.warning("data set fragment without a command")
            self.dul.send(AAbortPDU(source=0, reason_diag=0))
            return
        with self.scp.stats.lock:
            self.scp.stats.bytes_received += len(item.fragment)
        if self.sink is not None:
            self.sink.write(item.fragment)
        if item.is_last:
            self._store_complete()

    def _command_complete(self, context_id: int) -> None:
        """A whole command set arrived: answer C-ECHO, prepare a C-STORE, refuse the rest."""
        try:
            command = decode_command(bytes(self.command))
        except DimseError as exc:
            log.warning("undecodable command set: %s", exc)
            self.dul.send(AAbortPDU(source=0, reason_diag=0))
            return
        finally:
            self.command.clear()
        if command.command_field == COMMAND_FIELDS["C-ECHO-RQ"]:
            with self.scp.stats.lock:
                self.scp.stats.echoes += 1
            self._respond(context_id, c_echo_rsp(command))
        elif command.command_field == COMMAND_FIELDS["C-STORE-RQ"] and command.has_data_set:
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
        self.dul.send(PDataTfPDU([pdv]))

    def close(self) -> None:
        """Close a half-written file when the association ends abnormally."""
        if self.sink is not None:
            with contextlib.suppress(OSError):
                self.sink.close()
            self.sink = None


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `netdicom2 scp`."""
    p = sub.add_parser("scp", help="run a Verification/Storage SCP on DULServiceProvider")
    p.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--ae-title", default=None, help="reject other called AE titles (RJ 1/1/7)")
    p.add_argument("--artim", type=float, default=30.0, help="ARTIM timeout in seconds")
    p.add_argument("--max-pdu", type=int, default=16384, help="maximum PDU length we receive")
    p.add_argument("--output-dir", type=Path, default=None, help="write received data sets here")
    p.add_argument("--max-associations", type=int, default=500, help="concurrent associations")
    p.add_argument(
        "--max-pending",
        type=int,
        default=1000,
        help="connections without A-ASSOCIATE-RQ yet; beyond, the oldest is dropped",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="abort an association silent this long, seconds (0: never)",
    )
    p.add_argument(
        "--send-timeout", type=float, default=30.0, help="drop a peer that reads nothing this long"
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
