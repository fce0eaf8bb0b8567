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
loop stops reading a connection while 1 MiB of output waits for it, and drops the
transport when the peer reads nothing for `send_timeout` seconds (Evt17).

Handlers run in the loop thread and must not block: a slow handler delays every association.

Hostile peers meet bounds, not growth: each PDU in progress holds at most about twice the bytes
received (`PDUFramer`), an A-ASSOCIATE-RQ is refused past `max_associate_length`, the bytes held
by all connections are bounded by `max_buffered` (beyond it the connections holding the most
are aborted first), one peer address holds at most `max_per_address` associations, and a full
backlog of connections without A-ASSOCIATE-RQ (`max_pending`) drops a silent one (the oldest of
the address with the most) before any that is sending its request (`admission.Admission`).

Failures are loud. An exception while serving one connection is contained to it: one ERROR line,
that association aborted, the loop goes on. One that cannot be contained (the selector or the
listener failing, memory exhausted outside a connection) stops the loop: every association is
aborted, the listener closed, a CRITICAL line logged, `failure` set, and `ServerFailedError` is
raised by `serve_forever()` and again by `shutdown()` and `wait()`. With `start()`, `on_failure`
is called with the exception; without one, the main thread is interrupted (as by Ctrl-C) so that
a process does not live on with a dead server.
"""

from __future__ import annotations

import _thread
import contextlib
import heapq
import itertools
import logging
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from netdicom2.admission import Admission
from netdicom2.connection import (
    check_settings,
)
from netdicom2.exceptions import ServerFailedError
from netdicom2.framing import DEFAULT_MAX_ASSOCIATE_LENGTH
from netdicom2.fsm import State
from netdicom2.pdu import AAssociateRjPDU, AAssociateRqPDU
from netdicom2.transport import (
    ENDED,
    ERROR,
    EVICTED,
    IDLE,
    SHED,
    SHUTDOWN,
    Channel,
    Handler,
    set_nodelay,
)

__all__ = [
    "ENDED",
    "ERROR",
    "EVICTED",
    "IDLE",
    "SHED",
    "SHUTDOWN",
    "Channel",
    "DULServer",
    "Handler",
]

log = logging.getLogger("netdicom2.server")
_transitions = logging.getLogger("netdicom2.dul")  # the logger DULServiceProvider writes them to

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_STA1 = State.Sta1  # bound once: reading a member from an Enum class is a hook call
# After accept() fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listener is
# not watched for this long instead of spinning on a listener that stays readable; connections
# wait in the backlog (PS3.8 §9.1.4 Note 1: temporary lack of resources).
ACCEPT_BACKOFF = 0.1

#: Default budget of bytes buffered (PDUs in progress, output waiting) over all connections.
DEFAULT_MAX_BUFFERED = 256 * 1024 * 1024
#: Default cap of associations one peer address holds at once (the rest: A-ASSOCIATE-RJ).
DEFAULT_MAX_PER_ADDRESS = 256


class DULServer:
    """Accepts on one listening socket; serves every connection in one selectors loop.

    Subclasses give each connection its service user (`new_handler`), may refuse an
    A-ASSOCIATE-RQ (`admit`, PS3.8 AE-6) and count events (`accept_failed`, `evicted`).
    `max_pending` bounds connections still in Sta2 (no A-ASSOCIATE-RQ yet, bounded in time by
    ARTIM): beyond it a silent one is dropped (the oldest of the address with the most silent
    ones), or when none is silent the oldest one sending its request. `idle_timeout` aborts an
    association with no indication for that long (PS3.8 §9.1.4 Note 2, not ARTIM).
    `max_associate_length` bounds the PDU-length of an A-ASSOCIATE-RQ (Evt19 beyond),
    `max_buffered` the bytes held over all connections (the connections holding most are
    aborted first, outcome SHED), `max_per_address` the associations of one peer address
    (A-ASSOCIATE-RJ 2/3/2 beyond; 0: no cap).
    `on_failure` is told when the loop stops on a failure it could not contain (see above).
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
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
        on_failure: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Serve ``listener`` (bound and listening) once start() or serve_forever() is called.

        Settings no association can use raise ValueError; the listener is then closed.
        """
        try:
            check_settings(max_pdu_length=max_pdu_length, artim_timeout=artim_timeout)
            if not send_timeout > 0 or (idle_timeout is not None and not idle_timeout > 0):
                raise ValueError(f"timeouts must be more than 0 s: {send_timeout}, {idle_timeout}")
            if not 74 <= max_associate_length <= 0xFFFFFFFF:  # PS3.8 Table 9-11: 68 + header
                raise ValueError(
                    f"max_associate_length must be 74..2**32-1: {max_associate_length}"
                )
            admission: Admission[Channel] = Admission(
                max_pending=max_pending,
                max_per_address=max_per_address,
                max_buffered=max_buffered,
            )
        except ValueError:
            listener.close()
            raise
        self.artim_timeout = artim_timeout
        self.max_pdu_length = max_pdu_length
        self.send_timeout = send_timeout
        self.idle_timeout = idle_timeout
        self.max_pending = max_pending
        self.max_associate_length = max_associate_length
        self.max_buffered = max_buffered
        self.max_per_address = max_per_address
        self.on_failure = on_failure
        self.admission = admission  # pending order, per-address counts, bytes buffered
        self.failure: BaseException | None = None  # why the loop stopped, if it failed
        self._name = name
        listener.setblocking(False)
        # Linux copies TCP_NODELAY from the listener to each accepted socket (a system call
        # per connection saved); elsewhere it is set on each one.
        self._nodelay_inherited = set_nodelay(listener) and sys.platform == "linux"
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self._address: tuple[str, int] = (host, port)
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = _wakeup_pair()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        self._channels: dict[int, Channel] = {}  # by socket descriptor
        self.now = time.monotonic()  # when the loop's current turn began
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

    def address_refused(self, channel: Channel) -> None:
        """An A-ASSOCIATE-RQ was refused RJ 2/3/2: its address holds max_per_address already."""

    def shedding(self, channel: Channel) -> None:
        """A connection is about to be aborted for holding the most of max_buffered."""

    # ------------------------------------------------------------------ running

    @property
    def address(self) -> tuple[str, int]:
        """The listening host and port (still known once the listener is closed)."""
        return self._address

    @property
    def active(self) -> int:
        """Connections accepted and not yet closed."""
        return self._active

    def start(self) -> None:
        """Run serve_forever() in a thread of its own (a failure: see on_failure)."""
        self._thread = threading.Thread(target=self._run_thread, name=self._name, daemon=True)
        self._thread.start()

    def _run_thread(self) -> None:
        """serve_forever() in start()'s thread: a failure goes to on_failure, or the main thread."""
        try:
            self.serve_forever()
        except BaseException as exc:  # a handler's SystemExit too: the loop is gone either way
            failure = (exc.__cause__ or exc) if isinstance(exc, ServerFailedError) else exc
            if self.failure is None:
                self.failure = failure
                log.critical("server loop ended: %s: %s", type(exc).__name__, exc)
            try:
                if self.on_failure is not None:
                    self.on_failure(failure)
                else:
                    # Nobody watches this thread: stop the process as Ctrl-C would, rather
                    # than leave it running with its listener closed.
                    _interrupt_main()
            except Exception:
                log.exception("on_failure failed")

    def serve_forever(self) -> None:
        """The loop: accept, read, write and fire deadlines until shutdown(); then clean up.

        Raises ServerFailedError (from the original exception) when the loop stopped on a
        failure no connection could contain; every association is then aborted.
        """
        with self._lifecycle:
            if self._stopping or self._running:
                return  # shut down already, or served by another thread
            self._running = True
            self._loop_thread = threading.get_ident()
        try:
            self._loop()
        except Exception as exc:
            self.failure = exc
            log.critical("server loop failed, no longer serving: %s: %s", type(exc).__name__, exc)
            log.debug("server loop failure", exc_info=exc)
            raise ServerFailedError(f"server loop failed: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                self._cleanup()
            finally:
                self._done.set()

    def _loop(self) -> None:
        """serve_forever()'s turns; an exception raised here could not be contained."""
        selector = self._selector
        listener, wakeup = self._listener, self._wakeup_r
        heap = self._heap
        paused_until: float | None = None
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
                try:
                    if mask & _WRITE:
                        channel.flush()
                    if mask & _READ:
                        channel.read()
                    self.settle(channel)
                except Exception as exc:
                    self.contain(channel, exc)
                    continue
                self.account(channel)
            if paused_until is not None and now >= paused_until:
                selector.register(listener, selectors.EVENT_READ)
                paused_until = None
            if heap and heap[0][0] <= now:
                self._expire(now)

    def shutdown(self) -> None:
        """Stop accepting, abort every association, close every socket; wait for the loop.

        Raises ServerFailedError when the loop had stopped on a failure (see serve_forever).
        """
        with self._lifecycle:
            self._stopping = True
            running = self._running
        if not running:
            self._cleanup()  # never served: nothing else touches the descriptors
            return
        with contextlib.suppress(OSError):
            self._wakeup_w.send(b"\0")
        if threading.get_ident() == self._loop_thread and not self._done.is_set():
            return  # called from a handler: the loop cleans up when this turn ends
        self._done.wait()
        if self._thread is not None:
            self._thread.join()
        self._raise_failure()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the loop has ended (shutdown or failure); True if it has.

        Raises ServerFailedError when it ended on a failure: a supervisor's main thread can
        block here and exit non-zero.
        """
        ended = self._done.wait(timeout)
        if ended:
            self._raise_failure()
        return ended

    def _raise_failure(self) -> None:
        """Re-raise the loop's failure to the caller (PS3.8 aside: no silent half-alive server)."""
        if self.failure is not None:
            failure = self.failure
            raise ServerFailedError(
                f"server loop failed: {type(failure).__name__}: {failure}"
            ) from failure

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
            sock, address = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError, ConnectionResetError):
            return True  # none left, or that one was reset while in the backlog
        except OSError as exc:
            self.accept_failed(exc)
            return False
        channel: Channel | None = None
        try:
            self._make_room()
            channel = self._serve(sock, now, address)
        except Exception as exc:
            if channel is None:
                log.error("accepted connection failed: %s: %s", type(exc).__name__, exc)
                sock.close()
            else:
                self.contain(channel, exc)
        return True

    def _serve(self, sock: socket.socket, now: float, address: object = None) -> Channel:
        """Start serving an accepted socket: Evt5 → AE-5 (ARTIM started), Sta2."""
        sock.setblocking(False)
        if not self._nodelay_inherited:
            set_nodelay(sock)  # each PDU leaves at once (no Nagle delay)
        peer = address[0] if isinstance(address, tuple) and address else ""
        channel = Channel(self, sock, str(peer))
        self._channels[sock.fileno()] = channel
        self.admission.waiting(channel, channel.peer)
        with self._idle_lock:
            self._active += 1
            self._accepted += 1
        self.accepted(channel)
        channel.perform(channel.connection.transport_accepted(now))
        self.settle(channel)
        return channel

    def _make_room(self) -> None:
        """Over max_pending connections without an A-ASSOCIATE-RQ: drop one to make room.

        The oldest silent one goes first; one already sending its request only when none is
        silent (PS3.8 §9.1.4 Note 1 leaves the policy to the acceptor; see Admission).
        """
        chosen = self.admission.to_evict()
        if chosen is None:
            return
        oldest, silent = chosen
        log.info(
            "over %d connections without A-ASSOCIATE-RQ: dropping the oldest %s one",
            self.max_pending,
            "silent" if silent else "sending",
        )
        self.evicted(oldest)
        oldest.abort(EVICTED)  # Sta2: Evt15 has no action; closed, Evt17 → AA-5

    @property
    def pending(self) -> dict[Channel, str]:
        """Connections in Sta2 from which nothing came yet, oldest first, with their address."""
        return self.admission.pending

    @property
    def buffered(self) -> int:
        """Bytes buffered by every connection (PDUs in progress, output waiting)."""
        return self.admission.buffered

    # ------------------------------------------------------------------ bounds and failures

    def account(self, channel: Channel) -> None:
        """Count what a connection buffers; over max_buffered, shed the largest holders."""
        if channel.finished:
            return
        if self.admission.hold(channel, channel.connection.buffered + channel.queued):
            self._shed()

    def _shed(self) -> None:
        """Abort the connections holding the most until the buffered bytes fit the budget."""
        admission = self.admission
        while admission.buffered > self.max_buffered:
            victim = admission.largest()
            if victim is None:
                return
            log.warning(
                "%d bytes buffered, over the budget of %d: aborting the connection holding %d",
                admission.buffered,
                self.max_buffered,
                admission.held[victim],
            )
            self.shedding(victim)
            try:
                victim.abort(SHED)
            except Exception as exc:
                self.contain(victim, exc)
            admission.release(victim)  # ended (even if its abort failed and it was dropped)

    def contain(self, channel: Channel, exc: Exception) -> None:
        """An exception while serving one connection: log one line, abort it, serve the rest."""
        log.error(
            "connection from %s failed, aborting it: %s: %s", channel.peer, type(exc).__name__, exc
        )
        log.debug("connection failure", exc_info=exc)
        try:
            channel.abort(ERROR)
        except Exception:
            self._discard(channel)  # the protocol cannot end it: drop it without a word

    def _discard(self, channel: Channel) -> None:
        """Forget a connection whose abort failed: close its socket, count it finished."""
        sock = channel.sock
        if sock is not None:
            self.forget_socket(channel, sock)
            channel.sock = None
            sock.close()
        if not channel.finished:
            channel.finished = True
            self._ended(channel)
            with self._idle_lock:
                self._active -= 1
                if self._idle_waiters:
                    self._idle.notify_all()

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
        self._ended(channel)
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

    def _ended(self, channel: Channel) -> None:
        """Give back what a finished connection held: pending place, bytes, address slot."""
        self.admission.release(channel)
        if channel.address_counted:
            channel.address_counted = False
            self.admission.give_address(channel.peer)

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
            try:
                channel.expire(now)
                self.settle(channel)
            except Exception as exc:
                self.contain(channel, exc)

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


def _interrupt_main() -> None:
    """Deliver SIGINT to the main thread: a real signal also ends a blocking wait there."""
    main = threading.main_thread().ident
    if main is not None and hasattr(signal, "pthread_kill"):
        signal.pthread_kill(main, signal.SIGINT)
    else:  # pragma: no cover - not POSIX
        _thread.interrupt_main()


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
