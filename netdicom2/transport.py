"""Socket plumbing shared by the adapters (DULServiceProvider, DULServer), and DULServer's Channel.

`OutputQueue` holds what a non-blocking socket has not taken yet, as views of the PDUs;
`receive` does one read into the sans-I/O core (a large PDU lands in its own buffer);
`Wakeup` wakes a selector from another thread; `split_pdata` cuts an outgoing P-DATA-TF to the
peer's maximum PDU length without copying (PS3.8 Annex D.1); `start_connect` begins a
TRANSPORT CONNECT without blocking (PS3.8 §9.1.2); `set_nodelay` and `log_transition` are the
socket option and the DEBUG line both adapters use.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    SendPDU,
    Transition,
)
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError
from netdicom2.fsm import State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRjPDU, AAssociateRqPDU, PDataTfPDU

if TYPE_CHECKING:
    from netdicom2.dulserver import DULServer

__all__ = [
    "ENDED",
    "ERROR",
    "EVICTED",
    "IDLE",
    "IN_PROGRESS",
    "MAX_PARTS",
    "RECV_SIZE",
    "SHED",
    "SHUTDOWN",
    "TRANSCRIPT_LIMIT",
    "Channel",
    "Handler",
    "OutputQueue",
    "Wakeup",
    "log_transition",
    "receive",
    "set_nodelay",
    "split_pdata",
    "start_connect",
]

log = logging.getLogger("netdicom2.dul")

# Below glibc's mmap threshold: each read allocates from the heap. The rest of a large PDU is
# received straight into its own buffer instead (Connection.receive_buffer).
RECV_SIZE = 1 << 16
# The transitions each adapter's connection keeps (Connection.transcript_limit): one comes per
# PDU, so an association of many small PDUs must not grow memory for as long as it lasts.
TRANSCRIPT_LIMIT = 4096
# Where input that is ignored anyway is read (its content is never looked at: shared).
_SCRATCH = memoryview(bytearray(RECV_SIZE))
# A P-DATA-TF's pieces are gathered by one sendmsg(2), well under IOV_MAX; more are joined.
MAX_PARTS = 64
# connect_ex results of a TCP connect that has not completed yet.
IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK})
# Sockets created here are non-blocking from the start (Linux: a system call fewer).
_STREAM = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)


def start_connect(
    address: tuple[Any, ...], family: int | None = None
) -> tuple[socket.socket | None, int]:
    """Begin a non-blocking TCP connect (PS3.8 §9.1.2, TRANSPORT CONNECT) to one address.

    `address` is a socket address of `family` (as getaddrinfo gives them); without a family,
    AF_INET6 when the host contains ':'. (socket, 0): connected; (socket, an errno in
    IN_PROGRESS): watch it for writability, then read SO_ERROR; (None, errno): failed, nothing
    left open.
    """
    if family is None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        sock = socket.socket(family, _STREAM)
    except OSError as exc:
        return None, exc.errno or errno.EIO
    if _STREAM == socket.SOCK_STREAM:  # pragma: no cover - no SOCK_NONBLOCK
        sock.setblocking(False)
    try:
        err = sock.connect_ex(address)
    except OSError as exc:  # a host name that does not resolve (gaierror): the connect failed
        sock.close()
        return None, exc.errno or errno.EIO
    if err in IN_PROGRESS:
        # A near peer (loopback, LAN) completes the handshake within connect(2): asking once
        # more says 0 or EISCONN (connected) or the error (failed) without a trip through the
        # selector; a connect still in progress is watched by the caller.
        err = sock.connect_ex(address)
        if err == errno.EISCONN:
            err = 0
    if err and err not in IN_PROGRESS:
        sock.close()
        return None, err
    return sock, err


def set_nodelay(sock: socket.socket) -> bool:
    """TCP_NODELAY on: each PDU leaves at once; False for a socket without TCP options."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # AF_UNIX socketpairs (tests) have no TCP options
        return False
    return True


def log_transition(transition: Transition) -> None:
    """Log a Table 9-10 transition at DEBUG: "Sta2 + Evt6 -> AE-6 -> Sta3"."""
    log.debug(
        "%s + %s -> %s -> %s",
        transition.state.value,
        transition.event.value,
        transition.action.value,
        transition.next_state.value,
    )


def receive(sock: socket.socket, connection: Connection) -> list[Effect] | None:
    """One read from ``sock`` into ``connection``: its effects; None when the transport is lost.

    A large PDU in progress is received straight into its own buffer (no joining copy). EOF,
    a reset or another socket error is the loss of the transport (the caller's Evt17); a read
    that would block gives no effect.
    """
    if connection.discarding:
        # Nothing is kept (Sta13 after a refused PDU, waiting for the close or ARTIM): read
        # into one scratch buffer, no allocation per read.
        try:
            size = sock.recv_into(_SCRATCH)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            log.info("transport error while reading: %s", exc)
            return None
        return [] if size else None
    buffer = connection.receive_buffer()
    try:
        if buffer is None:
            data = sock.recv(RECV_SIZE)
            size = len(data)
        else:
            size = sock.recv_into(buffer)
    except (BlockingIOError, InterruptedError):
        return []
    except OSError as exc:
        log.info("transport error while reading: %s", exc)
        return None
    if not size:
        return None
    if buffer is None:
        return connection.receive_bytes(data, time.monotonic())
    return connection.receive_into(size, time.monotonic())


def split_pdata(pdu: PDataTfPDU, max_pdu_length: int) -> list[PDataTfPDU]:
    """Cut a P-DATA-TF so that no PDU-length exceeds the peer's maximum (PS3.8 Annex D.1, E.1).

    A PDV is never split across PDUs as such: an oversized fragment becomes several fragments,
    all but the last with bit 1 of the message control header cleared (PS3.8 Annex E.2). Each
    fragment is even-length when the original is, and slicing never copies the payload.
    """
    if max_pdu_length <= 0 or _pdata_length(pdu.data_value_items) <= max_pdu_length:
        return [pdu]
    # 6 = PDV item-length (4) + presentation context ID (1) + message control header (1).
    room = (max_pdu_length - 6) & ~1
    if room <= 0:
        raise ValueError(f"peer maximum PDU length {max_pdu_length} cannot carry any PDV")
    out: list[PDataTfPDU] = []
    for item in pdu.data_value_items:
        fragment = memoryview(item.fragment)
        if len(fragment) <= room:
            out.append(PDataTfPDU([item]))
            continue
        last_bit = item.control_header & 0x02
        more = item.control_header & ~0x02 & 0xFF
        for start in range(0, len(fragment), room):
            piece = fragment[start : start + room]
            header = more | last_bit if start + room >= len(fragment) else more
            out.append(PDataTfPDU([PresentationDataValueItem(item.context_id, header, piece)]))
    return out


def _pdata_length(items: Iterable[PresentationDataValueItem]) -> int:
    """PDU-length of a P-DATA-TF: each PDV item is 4 + 1 + 1 + fragment bytes (Table 9-23)."""
    length = 0
    for item in items:
        length += 6 + len(item.fragment)
    return length


class OutputQueue:
    """Bytes of PDUs the socket has not taken yet, kept as views of the PDUs (no copy).

    The send is bounded in time: ``deadline`` is when the peer, having read nothing of the
    queued bytes for ``send_timeout`` seconds, is given up (the adapter's Evt17). It is set
    when bytes are first queued, moved on whenever the socket takes some, cleared when the
    queue empties.
    """

    __slots__ = ("_chunks", "deadline", "send_timeout", "size")

    def __init__(self, send_timeout: float = 30.0) -> None:
        self._chunks: deque[memoryview] = deque()
        self.size = 0  # bytes queued
        self.send_timeout = send_timeout
        self.deadline: float | None = None

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def stalled(self, now: float) -> bool:
        """True when queued bytes have waited past the deadline (the peer stopped reading)."""
        return self.deadline is not None and now >= self.deadline and bool(self._chunks)

    def write(self, sock: socket.socket, effect: SendPDU) -> bool:
        """Send a PDU in one system call (its parts gathered) behind any queued output.

        What the socket does not take is queued; True when this PDU left bytes queued (behind
        earlier output it is queued whole). OSError other than EAGAIN: the transport is lost.
        """
        parts = effect.parts if len(effect.parts) <= MAX_PARTS else (effect.data,)
        if self._chunks:
            self._add(parts, 0)
            return True
        try:
            sent = sock.send(parts[0]) if len(parts) == 1 else sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < effect.size:
            self._add(parts, sent)
            self.deadline = time.monotonic() + self.send_timeout
            return True
        return False

    def _add(self, parts: Sequence[bytes | memoryview], skip: int) -> None:
        """Queue the parts after their first ``skip`` bytes (what the socket took)."""
        for part in parts:
            size = len(part)
            if skip >= size:
                skip -= size
                continue
            self._chunks.append(memoryview(part)[skip:])
            self.size += size - skip
            skip = 0

    def flush(self, sock: socket.socket) -> int:
        """Write queued bytes while the socket takes them, gathered by sendmsg(2); bytes sent.

        OSError other than EAGAIN: the transport is lost.
        """
        chunks_queued = self._chunks
        total = 0
        while chunks_queued:
            chunks = list(itertools.islice(chunks_queued, MAX_PARTS))
            try:
                sent = sock.sendmsg(chunks)  # gathered: headers do not go alone
            except (BlockingIOError, InterruptedError):
                return total
            total += sent
            self.size -= sent
            self.deadline = time.monotonic() + self.send_timeout  # the peer is reading
            for chunk in chunks:
                if sent < len(chunk):
                    chunks_queued[0] = chunk[sent:]
                    return total  # the socket is full
                sent -= len(chunk)
                chunks_queued.popleft()
        self.deadline = None
        return total

    def drop(self, sock: socket.socket | None = None) -> None:
        """Forget the queued bytes; given the closing socket, write them first, best effort."""
        if sock is not None:
            with contextlib.suppress(OSError):
                for chunk in self._chunks:
                    if sock.send(chunk) < len(chunk):
                        break  # full: a later chunk would leave a gap in the byte stream
        self._chunks.clear()
        self.size = 0
        self.deadline = None


class Wakeup:
    """A non-blocking wakeup for a selector: an eventfd on Linux, a socketpair elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # set() never writes to a descriptor closed (and reused)
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            self._pair = socket.socketpair()
            for end in self._pair:
                end.setblocking(False)
            self._fd = self._pair[0].fileno()

    def fileno(self) -> int:
        """The descriptor the loop watches."""
        return self._fd

    def set(self) -> None:
        """Make the descriptor readable (any thread); harmless once closed."""
        with self._lock, contextlib.suppress(OSError):
            if self._fd < 0:
                return
            if self._pair is None:
                os.eventfd_write(self._fd, 1)
            else:  # pragma: no cover - not Linux
                self._pair[1].send(b"\0")

    def clear(self) -> None:
        """Consume every pending wakeup."""
        with self._lock, contextlib.suppress(OSError):
            if self._fd < 0:
                return
            if self._pair is None:
                os.eventfd_read(self._fd)
            else:  # pragma: no cover - not Linux
                while self._pair[0].recv(4096):
                    pass

    def close(self) -> None:
        """Release the descriptor(s)."""
        with self._lock:
            if self._fd < 0:
                return
            if self._pair is None:
                os.close(self._fd)
            else:  # pragma: no cover - not Linux
                for end in self._pair:
                    end.close()
            self._fd = -1


# ------------------------------------------------------------------ DULServer's connections

server_log = logging.getLogger("netdicom2.server")
_OUT_HIGH_WATER = 1 << 20  # stop reading a connection while this much output waits for it
# How a connection ended, as Handler.closed() is told.
ENDED = ""  # by the protocol: released, aborted, rejected, transport lost or ARTIM
IDLE = "idle"  # no indication within idle_timeout: we aborted (PS3.8 §9.1.4 Note 2)
EVICTED = "evicted"  # dropped in Sta2 to make room for newer connections (max_pending)
ERROR = "error"  # the handler raised: we aborted
SHUTDOWN = "shutdown"  # the server is shutting down: we aborted
SHED = "shed"  # over the server's budget of buffered bytes, it held the most: we aborted

# PS3.8 Table 9-21: rejected-transient, service-provider (presentation), local-limit-exceeded.
_LOCAL_LIMIT = (2, 3, 2)
_STA1 = State.Sta1  # bound once: reading a member from an Enum class is a hook call
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Handler(Protocol):
    """The service user of one connection, called in the loop thread."""

    def indication(self, primitive: PDU) -> None:
        """An indication or confirmation of PS3.8 §7 (A-ASSOCIATE, P-DATA, A-RELEASE, A-ABORT)."""

    def closed(self, outcome: str) -> None:
        """The transport is closed and the machine is back in Sta1; ``outcome``: see ENDED."""


class Channel:
    """One accepted transport connection and its PS3.8 state machine (the acceptor)."""

    __slots__ = (
        "_out",
        "address_counted",
        "connection",
        "finished",
        "handler",
        "idle_deadline",
        "mask",
        "peer",
        "scheduled",
        "server",
        "sock",
    )

    def __init__(self, server: DULServer, sock: socket.socket, peer: str = "") -> None:
        self.server = server
        self.sock: socket.socket | None = sock
        self.peer = peer  # the peer's address (host), for max_per_address
        self.address_counted = False  # holds one of its address's association slots
        self.connection = Connection(
            requestor=False,
            artim_timeout=server.artim_timeout,
            max_pdu_length=server.max_pdu_length,
            max_other_length=server.max_associate_length,
            acceptable=self._admit,
            # One DEBUG line per transition (as DULServiceProvider), when asked for at accept.
            observer=log_transition if log.isEnabledFor(logging.DEBUG) else None,
            transcript_limit=TRANSCRIPT_LIMIT,
        )
        self.handler: Handler | None = None
        self.finished = False
        self.mask = 0  # what the selector watches on the socket
        self.scheduled: float | None = None  # the deadline this channel has in the heap
        self.idle_deadline: float | None = None
        self._out = OutputQueue(server.send_timeout)

    @property
    def state(self) -> State:
        """The current PS3.8 state (Sta1..Sta13)."""
        return self.connection.state

    @property
    def queued(self) -> int:
        """Bytes of output waiting for the peer to read them."""
        return self._out.size

    def _admit(self, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 AE-6: the per-address cap, then the server's policy, decide on the RQ."""
        server = self.server
        admission = server.admission
        if admission.address_full(self.peer):
            # PS3.8 §7.1.2.6, Table 9-21: rejected-transient, local limit exceeded (2/3/2).
            server_log.info(
                "%s holds %d associations: A-ASSOCIATE-RJ 2/3/2",
                self.peer,
                admission.max_per_address,
            )
            server.address_refused(self)
            return AAssociateRjPDU(*_LOCAL_LIMIT)
        answer = server.admit(self, rq)
        if answer is None:
            admission.take_address(self.peer)
            self.address_counted = True
        return answer

    def send(self, primitive: PDU) -> None:
        """Hand a user primitive to Table 9-10 and write its PDU(s) now (loop thread only).

        Raises LocalProtocolError naming state and primitive for a blank cell (the state is
        unchanged), ProviderStoppedError once the connection has ended.
        """
        if self.finished:
            raise ProviderStoppedError(self.connection.state, None, primitive)
        now = time.monotonic()
        if type(primitive) is PDataTfPDU:
            # PS3.8 Annex D.1: no P-DATA-TF longer than the peer's maximum PDU length.
            for part in split_pdata(primitive, self.connection.peer_max_pdu_length or 0):
                self.perform(self.connection.send(part, now))
        else:
            self.perform(self.connection.send(primitive, now))
        # The loop settles the channel (interest, deadline) once the indication returns.

    def abort(self, outcome: str) -> None:
        """End the connection now: A-ABORT where Table 9-10 allows Evt15 (AA-1), then close."""
        if self.finished:
            return
        now = time.monotonic()
        with contextlib.suppress(LocalProtocolError):  # Sta2, Sta4: Evt15 has no PDU to send
            self.perform(self.connection.send(AAbortPDU(source=0, reason_diag=0), now))
        if self.connection.state is not _STA1:
            self.transport_lost(now)  # PS3.8 §9.1.4: closed without waiting for ARTIM
        self.server.finish(self, outcome)

    # ------------------------------------------------------------------ effects

    def perform(self, effects: list[Effect]) -> None:
        """Carry out an action's effects in order (timers: the loop reads timer_deadline)."""
        for effect in effects:
            if self.finished:
                return  # the handler aborted the connection meanwhile
            if type(effect) is SendPDU:
                self._write(effect)
            elif type(effect) is Indicate:
                self._indicate(effect.primitive)
            elif type(effect) is CloseTransport:
                self._close(flush=True)
            # StartTimer / StopTimer: read back from connection.timer_deadline by settle().
            # OpenTransport: only AE-1 issues it, and an acceptor never sends an RQ (Evt1).

    def _indicate(self, primitive: PDU) -> None:
        """Give an indication to the handler; a failing handler aborts the connection."""
        server = self.server
        if server.idle_timeout is not None:
            self.idle_deadline = server.now + server.idle_timeout
        if self.handler is None:
            server.admission.unpend(self)  # no longer waiting for its A-ASSOCIATE-RQ
            self.handler = server.new_handler(self)
        try:
            self.handler.indication(primitive)
        except LocalProtocolError as exc:
            # The answer crossed the end of the association: a Table 9-10 blank cell (e.g. a
            # C-ECHO-RSP after the peer's A-ABORT that came in the same read).
            server_log.debug("answer not sent: %s", exc)
        except Exception:
            server_log.exception("service user failed; aborting the association")
            self.abort(ERROR)

    # ------------------------------------------------------------------ transport

    def read(self) -> None:
        """Feed received bytes to the core (a large PDU lands in its own buffer); EOF: Evt17."""
        sock = self.sock
        if sock is None:
            return
        effects = receive(sock, self.connection)
        if effects is None:
            self.transport_lost(time.monotonic())
            return
        if self.handler is None:
            self.server.admission.sending(self)  # its RQ is on its way (eviction order)
        refused = self.connection.refused
        if refused is not None:
            self.connection.refused = None
            server_log.info("PDU from %s refused (Evt19): %s", self.peer, refused)
        if effects:
            self.perform(effects)

    def _write(self, effect: SendPDU) -> None:
        """Write one PDU in one system call (gathering its parts) when the socket takes it."""
        sock = self.sock
        if sock is None:
            return  # the transport is gone: PS3.8 §7.3, data in transit may be lost
        try:
            self._out.write(sock, effect)  # what is left waits, bounded by send_timeout
        except OSError as exc:
            server_log.info("transport error while writing: %s", exc)
            self.transport_lost(time.monotonic())

    def flush(self) -> None:
        """Write queued output while the socket takes it; re-arm the bounded-send deadline."""
        if self.sock is None:
            return
        try:
            self._out.flush(self.sock)
        except OSError as exc:
            server_log.info("transport error while writing: %s", exc)
            self.transport_lost(time.monotonic())

    def transport_lost(self, now: float) -> None:
        """Peer close, reset, network failure or stalled peer: Evt17 (AA-4, AA-5 or AR-5)."""
        self._close(flush=False)
        if self.connection.state is not _STA1:
            self.perform(self.connection.transport_closed(now))

    def _close(self, *, flush: bool) -> None:
        """Close the transport (PS3.8 §9.1.4: no linger); best-effort write of queued output."""
        sock = self.sock
        if sock is None:
            return
        self._out.drop(sock if flush else None)
        self.server.forget_socket(self, sock)
        self.sock = None
        sock.close()

    def wanted_mask(self) -> int:
        """Read unless output is backed up (bounded memory); write while output waits."""
        queued = self._out.size  # > 0 exactly while output waits
        if not queued:
            return _READ
        return _WRITE if queued >= _OUT_HIGH_WATER else _READ | _WRITE

    def deadline(self) -> float | None:
        """The nearest of ARTIM / application timeout, bounded send and idle deadline."""
        nearest = self.connection.timer_deadline
        other = self._out.deadline
        if other is not None and (nearest is None or other < nearest):
            nearest = other
        other = self.idle_deadline
        if other is not None and (nearest is None or other < nearest):
            nearest = other
        return nearest

    def expire(self, now: float) -> None:
        """Fire what is due: a stalled send (Evt17), ARTIM (Evt18), the idle timeout."""
        if self._out.stalled(now):
            server_log.warning(
                "peer stopped reading for %.1f s: transport dropped", self.server.send_timeout
            )
            self.transport_lost(now)
        due = self.connection.timer_deadline
        if not self.finished and due is not None and now >= due:
            self.perform(self.connection.handle_timer(now))
        if not self.finished and self.idle_deadline is not None and now >= self.idle_deadline:
            server_log.info("no PDU for %s s: aborting the association", self.server.idle_timeout)
            self.abort(IDLE)
