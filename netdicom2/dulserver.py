"""DULServer: every acceptor association of one listening socket, served by one selectors loop.

`DULServiceProvider` gives each association a provider and its user a thread. An SCP that
answers from within the indication (the example `netdicom2 scp`) needs neither: here one
thread runs one selector over the listener and every accepted connection, each with its own
sans-I/O `Connection` (PS3.8 Table 9-10), and calls the connection's `Handler` with each
indication as it is issued. The handler answers with `Channel.send()`, which runs Table 9-10
and writes at once. No thread starts per connection, no indication crosses a thread, and each
connection costs one file descriptor (its socket).

The loop blocks in `select()` until a socket is ready, another thread wakes it (shutdown) or
the nearest deadline passes (ARTIM, a bounded send, the idle timeout); deadlines are kept in a
heap. It never polls and never sleeps. Output a peer does not read is queued and bounded: the
loop stops reading a connection while `_OUT_HIGH_WATER` bytes wait for it, and drops the
transport when the peer reads nothing for `send_timeout` seconds (Evt17).

Handlers run in the loop thread and must not block: a slow handler delays every association.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import sys
import threading
import time
from typing import Protocol

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    SendPDU,
    check_settings,
)
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError
from netdicom2.fsm import State
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRjPDU, AAssociateRqPDU, PDataTfPDU
from netdicom2.transport import (
    TRANSCRIPT_LIMIT,
    OutputQueue,
    log_transition,
    receive,
    set_nodelay,
    split_pdata,
)

__all__ = ["Channel", "DULServer", "Handler"]

log = logging.getLogger("netdicom2.server")
_transitions = logging.getLogger("netdicom2.dul")  # the logger DULServiceProvider writes them to

_OUT_HIGH_WATER = 1 << 20  # stop reading a connection while this much output waits for it
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_STA1 = State.Sta1  # bound once: reading a member from an Enum class is a hook call
# After accept() fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listener is
# not watched for this long instead of spinning on a listener that stays readable; connections
# wait in the backlog (PS3.8 §9.1.4 Note 1: temporary lack of resources).
ACCEPT_BACKOFF = 0.1

# How a connection ended, as Handler.closed() is told.
ENDED = ""  # by the protocol: released, aborted, rejected, transport lost or ARTIM
IDLE = "idle"  # no indication within idle_timeout: we aborted (PS3.8 §9.1.4 Note 2)
EVICTED = "evicted"  # dropped in Sta2 to make room for newer connections (max_pending)
ERROR = "error"  # the handler raised: we aborted
SHUTDOWN = "shutdown"  # the server is shutting down: we aborted


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
        "connection",
        "finished",
        "handler",
        "idle_deadline",
        "mask",
        "scheduled",
        "server",
        "sock",
    )

    def __init__(self, server: DULServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket | None = sock
        self.connection = Connection(
            requestor=False,
            artim_timeout=server.artim_timeout,
            max_pdu_length=server.max_pdu_length,
            acceptable=self._admit,
            # One DEBUG line per transition (as DULServiceProvider), when asked for at accept.
            observer=log_transition if _transitions.isEnabledFor(logging.DEBUG) else None,
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

    def _admit(self, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 AE-6: the server's policy decides on this connection's A-ASSOCIATE-RQ."""
        return self.server.admit(self, rq)

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
            server.pending.pop(self, None)  # no longer waiting for its A-ASSOCIATE-RQ
            self.handler = server.new_handler(self)
        try:
            self.handler.indication(primitive)
        except LocalProtocolError as exc:
            # The answer crossed the end of the association: a Table 9-10 blank cell (e.g. a
            # C-ECHO-RSP after the peer's A-ABORT that came in the same read).
            log.debug("answer not sent: %s", exc)
        except Exception:
            log.exception("service user failed; aborting the association")
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
        elif effects:
            self.perform(effects)

    def _write(self, effect: SendPDU) -> None:
        """Write one PDU in one system call (gathering its parts) when the socket takes it."""
        sock = self.sock
        if sock is None:
            return  # the transport is gone: PS3.8 §7.3, data in transit may be lost
        try:
            self._out.write(sock, effect)  # what is left waits, bounded by send_timeout
        except OSError as exc:
            log.info("transport error while writing: %s", exc)
            self.transport_lost(time.monotonic())

    def flush(self) -> None:
        """Write queued output while the socket takes it; re-arm the bounded-send deadline."""
        if self.sock is None:
            return
        try:
            self._out.flush(self.sock)
        except OSError as exc:
            log.info("transport error while writing: %s", exc)
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
            log.warning(
                "peer stopped reading for %.1f s: transport dropped", self.server.send_timeout
            )
            self.transport_lost(now)
        due = self.connection.timer_deadline
        if not self.finished and due is not None and now >= due:
            self.perform(self.connection.handle_timer(now))
        if not self.finished and self.idle_deadline is not None and now >= self.idle_deadline:
            log.info("no PDU for %s s: aborting the association", self.server.idle_timeout)
            self.abort(IDLE)


class DULServer:
    """Accepts on one listening socket; serves every connection in one selectors loop.

    Subclasses give each connection its service user (`new_handler`), may refuse an
    A-ASSOCIATE-RQ (`admit`, PS3.8 AE-6) and count events (`accept_failed`, `evicted`).
    `max_pending` bounds connections still in Sta2 (no A-ASSOCIATE-RQ yet, bounded in time by
    ARTIM): beyond it the oldest is dropped. `idle_timeout` aborts an association with no
    indication for that long (PS3.8 §9.1.4 Note 2, not ARTIM).
    """

    def __init__(
        self,
        listener: socket.socket,
        *,
        artim_timeout: float = 30.0,
        max_pdu_length: int = 16384,
        send_timeout: float = 30.0,
        idle_timeout: float | None = None,
        max_pending: int = 1000,
        name: str = "dul-server",
    ) -> None:
        """Serve ``listener`` (bound and listening) once start() or serve_forever() is called.

        Settings no association can use raise ValueError; the listener is then closed.
        """
        try:
            check_settings(max_pdu_length=max_pdu_length, artim_timeout=artim_timeout)
            if not send_timeout > 0 or (idle_timeout is not None and not idle_timeout > 0):
                raise ValueError(f"timeouts must be more than 0 s: {send_timeout}, {idle_timeout}")
            if max_pending < 1:
                raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        except ValueError:
            listener.close()
            raise
        self.artim_timeout = artim_timeout
        self.max_pdu_length = max_pdu_length
        self.send_timeout = send_timeout
        self.idle_timeout = idle_timeout
        self.max_pending = max_pending
        self._name = name
        listener.setblocking(False)
        # Linux copies TCP_NODELAY from the listener to each accepted socket (a system call
        # per connection saved); elsewhere it is set on each one.
        self._nodelay_inherited = set_nodelay(listener) and sys.platform == "linux"
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = _wakeup_pair()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        self._channels: dict[int, Channel] = {}  # by socket descriptor
        self.now = time.monotonic()  # when the loop's current turn began
        self.pending: dict[Channel, None] = {}  # Sta2 without an indication yet, oldest first
        self._heap: list[tuple[float, int, Channel]] = []
        self._sequence = itertools.count()
        self._stopping = False
        self._closed = False
        self._running = False  # serve_forever() is running, in whichever thread
        self._loop_thread: int | None = None  # that thread's ident
        self._lifecycle = threading.Lock()
        self._done = threading.Event()  # serve_forever() has cleaned up and returned
        self._thread: threading.Thread | None = None
        # wait_idle() waits on _idle; the loop holds its lock directly (no Python-level
        # __enter__) and notifies only when a waiter is there to be woken.
        self._idle_lock = threading.Lock()
        self._idle = threading.Condition(self._idle_lock)
        self._idle_waiters = 0
        self._active = 0  # connections being served (read by wait_idle from other threads)
        self._accepted = 0

    # ------------------------------------------------------------------ subclass hooks

    def new_handler(self, channel: Channel) -> Handler:
        """The service user of a connection, made at its first indication."""
        raise NotImplementedError

    def admit(self, channel: Channel, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 AE-6: None accepts the A-ASSOCIATE-RQ, an RJ refuses it (RJ, ARTIM, Sta13)."""
        return None

    def accepted(self, channel: Channel) -> None:
        """A connection was accepted (Evt5 → AE-5, ARTIM started)."""

    def accept_failed(self, exc: OSError) -> None:
        """accept() failed for lack of resources; the listener backs off for ACCEPT_BACKOFF."""
        log.warning("accept failed: %s", exc)

    def evicted(self, channel: Channel) -> None:
        """A connection in Sta2 was dropped to make room (max_pending)."""

    # ------------------------------------------------------------------ running

    @property
    def address(self) -> tuple[str, int]:
        """The listening host and port."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def active(self) -> int:
        """Connections accepted and not yet closed."""
        return self._active

    def start(self) -> None:
        """Run serve_forever() in a thread of its own."""
        self._thread = threading.Thread(target=self.serve_forever, name=self._name, daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """The loop: accept, read, write and fire deadlines until shutdown(); then clean up."""
        selector = self._selector
        listener, wakeup = self._listener, self._wakeup_r
        heap = self._heap
        paused_until: float | None = None
        with self._lifecycle:
            if self._stopping or self._running:
                return  # shut down already, or served by another thread
            self._running = True
            self._loop_thread = threading.get_ident()
        try:
            while not self._stopping:
                due = self._next_deadline()
                if paused_until is not None and (due is None or paused_until < due):
                    due = paused_until
                timeout = None if due is None else max(0.0, due - time.monotonic())
                events = selector.select(timeout)
                self.now = now = time.monotonic()
                for key, mask in events:
                    channel = key.data
                    if channel is None:
                        if key.fileobj is listener:
                            if not self._accept(now):
                                selector.unregister(listener)  # back off (PS3.8 §9.1.4 Note 1)
                                paused_until = now + ACCEPT_BACKOFF
                        else:
                            _drain_wakeup(wakeup)
                        continue
                    if channel.finished:
                        continue
                    if mask & _WRITE:
                        channel.flush()
                    if mask & _READ:
                        channel.read()
                    self.settle(channel)
                if paused_until is not None and now >= paused_until:
                    selector.register(listener, selectors.EVENT_READ)
                    paused_until = None
                if heap and heap[0][0] <= now:
                    self._expire(now)
        finally:
            self._cleanup()
            self._done.set()

    def shutdown(self) -> None:
        """Stop accepting, abort every association, close every socket; wait for the loop."""
        with self._lifecycle:
            self._stopping = True
            running = self._running
        if not running:
            self._cleanup()  # never served: nothing else touches the descriptors
            return
        with contextlib.suppress(OSError):
            self._wakeup_w.send(b"\0")
        if threading.get_ident() == self._loop_thread:
            return  # called from a handler: the loop cleans up when this turn ends
        self._done.wait()
        if self._thread is not None:
            self._thread.join()

    def wait_idle(self, timeout: float, *, connections: int = 0) -> bool:
        """Wait until ``connections`` were accepted in all and none is being served."""
        with self._idle:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(
                    lambda: self._active == 0 and self._accepted >= connections, timeout
                )
            finally:
                self._idle_waiters -= 1

    # ------------------------------------------------------------------ the loop's parts

    def _accept(self, now: float) -> bool:
        """Accept one connection (PS3.8 §9.1.2); False: out of resources, back off.

        One per readiness: the listener stays readable while the backlog holds more, and
        connections already accepted are served in between.
        """
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError, ConnectionResetError):
            return True  # none left, or that one was reset while in the backlog
        except OSError as exc:
            self.accept_failed(exc)
            return False
        self._make_room()
        self._serve(sock, now)
        return True

    def _serve(self, sock: socket.socket, now: float) -> None:
        """Start serving an accepted socket: Evt5 → AE-5 (ARTIM started), Sta2."""
        sock.setblocking(False)
        if not self._nodelay_inherited:
            set_nodelay(sock)  # each PDU leaves at once (no Nagle delay)
        channel = Channel(self, sock)
        self._channels[sock.fileno()] = channel
        self.pending[channel] = None
        with self._idle_lock:
            self._active += 1
            self._accepted += 1
        self.accepted(channel)
        channel.perform(channel.connection.transport_accepted(now))
        self.settle(channel)

    def _make_room(self) -> None:
        """Over max_pending connections without an A-ASSOCIATE-RQ: drop the oldest of them."""
        if len(self.pending) < self.max_pending:
            return
        oldest = next(iter(self.pending))
        del self.pending[oldest]
        log.info(
            "over %d connections without A-ASSOCIATE-RQ: dropping the oldest", self.max_pending
        )
        self.evicted(oldest)
        oldest.abort(EVICTED)  # Sta2: Evt15 has no action; closed, Evt17 → AA-5

    def settle(self, channel: Channel) -> None:
        """After a channel's events: finish it when over, else update interest and deadline."""
        if channel.finished:
            return
        sock = channel.sock
        if sock is None:
            if channel.connection.state is _STA1:
                self.finish(channel, ENDED)
                return
        else:
            mask = channel.wanted_mask()
            if mask != channel.mask:
                if not channel.mask:
                    self._selector.register(sock, mask, channel)
                elif not mask:
                    self._selector.unregister(sock)
                else:
                    self._selector.modify(sock, mask)
                channel.mask = mask
        # One heap entry per channel: pushed again only when its deadline moved earlier (a
        # later one, e.g. the idle deadline after each indication, is found when the entry
        # comes up), so the heap stays as small as the number of channels.
        deadline = channel.deadline()
        if deadline is not None and (channel.scheduled is None or deadline < channel.scheduled):
            channel.scheduled = deadline
            heapq.heappush(self._heap, (deadline, next(self._sequence), channel))

    def forget_socket(self, channel: Channel, sock: socket.socket) -> None:
        """A channel is closing its socket: stop watching it."""
        self._channels.pop(sock.fileno(), None)
        if channel.mask:
            try:  # noqa: SIM105 - not contextlib.suppress: no context manager per connection
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            channel.mask = 0

    def finish(self, channel: Channel, outcome: str) -> None:
        """The connection is over (Sta1, socket closed): tell its handler, count it."""
        if channel.finished:
            return
        if channel.sock is not None:  # Sta1 with the socket still open cannot stay so
            channel.transport_lost(time.monotonic())
        channel.finished = True
        self.pending.pop(channel, None)
        try:
            if channel.handler is not None:
                channel.handler.closed(outcome)
        except Exception:
            log.exception("service user failed while closing")
        finally:
            with self._idle_lock:
                self._active -= 1
                if self._idle_waiters:
                    self._idle.notify_all()

    def _next_deadline(self) -> float | None:
        """The nearest live deadline in the heap (stale entries are dropped)."""
        heap = self._heap
        while heap:
            deadline, _, channel = heap[0]
            if not channel.finished and channel.scheduled == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def _expire(self, now: float) -> None:
        """Fire every deadline that has passed."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, channel = heapq.heappop(heap)
            if channel.finished or channel.scheduled != deadline:
                continue
            channel.scheduled = None
            channel.expire(now)
            self.settle(channel)

    def _cleanup(self) -> None:
        """Abort every connection and release every descriptor (once)."""
        if self._closed:
            return
        self._closed = True
        for channel in list(self._channels.values()):
            channel.abort(SHUTDOWN)
        with contextlib.suppress(OSError):
            self._selector.close()
        self._listener.close()
        self._wakeup_r.close()
        self._wakeup_w.close()


def _wakeup_pair() -> tuple[socket.socket, socket.socket]:
    """A non-blocking socketpair that wakes the selector from another thread."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    return reader, writer


def _drain_wakeup(reader: socket.socket) -> None:
    """Consume pending wakeup bytes."""
    with contextlib.suppress(OSError):
        while reader.recv(4096):
            pass
