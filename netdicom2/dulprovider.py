"""DULServiceProvider: the threaded adapter that runs the sans-I/O core over one TCP socket.

The event loop blocks in `selectors` until the socket is readable or writable, another thread
wakes it through a socketpair, or the nearest deadline (ARTIM, application timeouts, a bounded
send) passes. It never polls and never sleeps. User primitives are handed to the core
synchronously in `send()` (so misuse raises at once, naming the state), and the PDU they
produce is written at once by the caller, in one system call, when no output is queued ahead
of it; otherwise the loop writes it when the socket has room, and `send()` blocks while more
than `OUT_HIGH_WATER` bytes wait (bounded memory). Indications reach `receive()` through one
queue: at most one thread hand-off per PDU. What is done on the socket itself (effects, TRANSPORT
CONNECT, reads, bounded writes, what the selector watches) is the base class ProviderTransport
(dultransport.py); this module holds the loop, its timers and the service user's API.

Where the loop runs: by default in the provider's own thread (`start()`). With
`threaded=False` there is no such thread: the loop runs in whichever thread calls `receive()`
(or `send()`, `kill()`), under a lock, until an indication is ready or the timeout passes.
This saves a thread start and every hand-off per association, for a user with one thread that
alternates `send()` and `receive()` (the example SCU and SCP); timers (ARTIM, the bounded
send) then run only while a thread is inside one of these calls.

Indications reach `receive()` as PDU objects (PS3.8 §7): AAssociateRqPDU (A-ASSOCIATE
indication), AAssociateAcPDU / AAssociateRjPDU (confirmation), PDataTfPDU (P-DATA),
AReleaseRqPDU / AReleaseRpPDU (A-RELEASE indication / confirmation) and AAbortPDU. An AAbortPDU
with source 0 is the peer's A-ABORT; with source 2 it is an A-P-ABORT: the peer's provider abort,
our own provider abort (AA-8, with the reason we sent), or the loss of the transport (AA-4,
reason 0: peer reset, closed connection, failed connect, or a peer that stopped reading and let
a send time out).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    SendPDU,
    Transition,
)
from netdicom2.dultransport import (
    OUT_HIGH_WATER,
    OUT_LOW_WATER,
    READ,
    WRITE,
    Address,
    Connector,
    Dialer,
    ProviderTransport,
)
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError, TimeoutError
from netdicom2.framing import DEFAULT_MAX_ASSOCIATE_LENGTH
from netdicom2.fsm import State
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRqPDU, PDataTfPDU
from netdicom2.transport import (
    TRANSCRIPT_LIMIT,
    OutputQueue,
    Wakeup,
    log_transition,
    split_pdata,
)

__all__ = ["Address", "Connector", "DULServiceProvider", "OutputQueue", "split_pdata"]

log = logging.getLogger("netdicom2.dul")

Observer = Callable[[Transition], None]

_STOPPED = object()  # placed in the incoming queue when the loop exits
# A selector watches one socket and one wakeup: poll(2) needs no kernel object per provider
# (epoll costs three more system calls per association).
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)
_get_ident = threading.get_ident


class DULServiceProvider(ProviderTransport, threading.Thread):
    """The DICOM UL service provider for one association at a time (PS3.8 §9).

    With `dul_socket` (an accepted connection) the provider is the association acceptor and
    starts with Evt5 (AE-5, ARTIM started). Without it, it is a requestor: sending an
    AAssociateRqPDU opens the TCP connection to `address` (Evt1 → AE-1 → connect → Evt2 →
    AE-2), or asks `connect(address)` for a connected socket when given.

    An acceptor's thread exits when its association is over (back in Sta1: the socket is
    closed and cannot carry another association, §9.1.1); `receive()` then raises
    ProviderStoppedError once the indications are consumed. A requestor's thread stays in
    Sta1 for a next association until `stop()` or `kill()`.

    With `threaded=False` the provider is never started: the calling threads run its loop
    (see the module docstring), with the same indications, errors and endings.
    """

    def __init__(
        self,
        dul_socket: socket.socket | None = None,
        *,
        address: Address | None = None,
        connect: Connector | None = None,
        artim_timeout: float = 30.0,
        max_pdu_length: int = 16384,
        association_timeout: float | None = None,
        release_timeout: float | None = None,
        connect_timeout: float = 30.0,
        send_timeout: float = 30.0,
        acceptable: Callable[[AAssociateRqPDU], Any] | None = None,
        observer: Observer | None = None,
        name: str | None = None,
        threaded: bool = True,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
    ) -> None:
        super().__init__(name=name or "DULServiceProvider", daemon=True)
        self._threaded = threaded
        self._pump = threading.Lock()  # threaded=False: held by the thread running the loop
        self._pumper: int | None = None  # that thread's ident, while it runs the loop
        self.address = address
        self._connector = connect
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._observers: list[Observer] = [observer] if observer is not None else []
        self._lock = threading.RLock()  # observers run under it and may call send()
        # Output fell under OUT_LOW_WATER: only the threaded send() waits for it.
        self._room = threading.Condition(self._lock) if threaded else None
        self._effects: deque[Effect] = deque()
        self._incoming: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._terminate = False
        self._killed = False
        self._error: BaseException | None = None
        self._exited = False
        self._selector = _Selector()
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup, READ)
        self._sock: socket.socket | None = None
        # An acceptor serves the one association of its socket and exits when it is over.
        self._one_shot = dul_socket is not None
        self._connecting = False
        self._connect_deadline: float | None = None
        self._dialer: Dialer | None = None  # the TRANSPORT CONNECT in progress (address=)
        # The k-th TRANSPORT CONNECT (AE-1) belongs to the k-th A-ASSOCIATE request: a connect
        # that completes after its association was aborted (Sta4 + Evt15 → AA-2) is stale.
        self._requests = 0
        self._opens = 0
        self._out = OutputQueue(send_timeout)
        self._mask = 0  # what the selector watches on self._sock (READ, WRITE)
        self._input_paused = False
        self.connection = Connection(
            artim_timeout=artim_timeout,
            max_pdu_length=max_pdu_length,
            association_timeout=association_timeout,
            release_timeout=release_timeout,
            acceptable=acceptable,
            # PS3.8 §9.3.2 [interp]: A-ASSOCIATE-RQ/AC (and unknown PDU types) past this length
            # are refused at their header (Evt19); fixed-length PDUs have their own small bound.
            max_other_length=max_associate_length,
            # Not a bound method: the provider and its connection form no reference cycle, so
            # each association's objects are freed at once instead of by the cyclic GC.
            observer=_transition_observer(self._observers),
            transcript_limit=TRANSCRIPT_LIMIT,
        )
        if dul_socket is not None:
            # PS3.8 §9.1.2: the acceptor accepts the connection and starts ARTIM (Evt5 → AE-5).
            self._attach(dul_socket)
            with self._lock:
                self._effects.extend(self.connection.transport_accepted(time.monotonic()))

    # ----------------------------------------------------------------- the seed API

    def send(self, primitive: PDU, *, deadline: float | None = None) -> None:
        """Hand a user primitive to the state machine; its PDU(s) are written at once if they can.

        Raises LocalProtocolError (naming state and primitive) when Table 9-10 has no action
        for it in the current state, and ProviderStoppedError once the loop has exited. Blocks
        while more than OUT_HIGH_WATER bytes wait for the peer to read (until it reads, or
        send_timeout drops it). `deadline` (a time.monotonic() value) bounds that wait as a
        whole, however the peer trickles: past it, TimeoutError, with the primitive handed
        over and its unsent bytes still queued; ending the association is the user's choice
        (kill(): A-ABORT, Evt15 → AA-1), as after receive()'s TimeoutError.
        """
        if self._error is not None:
            raise self._error  # _raise_if_failed
        connection = self.connection
        with self._lock:
            if self._exited or self._terminate:
                raise ProviderStoppedError(connection.state, None, primitive)
            is_rq = isinstance(primitive, AAssociateRqPDU)
            if is_rq and self.address is None and self._connector is None:
                raise LocalProtocolError(
                    connection.state,
                    "Evt1",
                    primitive,
                    "no called presentation address: pass address=(host, port)",
                )
            now = time.monotonic()
            timer = connection.timer_deadline
            if isinstance(primitive, PDataTfPDU):
                peer_max = connection.peer_max_pdu_length or 0
                kick = False
                for part in split_pdata(primitive, peer_max):
                    kick |= self._perform_now(connection.send(part, now))
            else:
                kick = self._perform_now(connection.send(primitive, now))
                if is_rq:
                    self._requests += 1
            later = connection.timer_deadline
            # ARTIM (re)started: the loop must wait for the new, earlier deadline.
            if later is not None and (timer is None or later < timer):
                kick = True
        if kick:
            self._kick()
        if self._out.size >= OUT_HIGH_WATER:
            self._wait_for_room(deadline)

    def receive(self, timeout: float | None) -> PDU:
        """The next indication or confirmation; TimeoutError when none arrives in time."""
        if not self._threaded:
            return self._deliver(self._pump_until_indication(timeout))
        try:
            item = self._incoming.get(timeout=timeout)
        except queue.Empty:
            self._raise_if_failed()
            raise TimeoutError(f"no PDU within {timeout} s") from None
        return self._deliver(item)

    def _deliver(self, item: object) -> PDU:
        """Return a queued indication; the end-of-loop marker raises (and stays queued)."""
        if item is _STOPPED:
            self._incoming.put(_STOPPED)  # every later call sees it too
            self._raise_if_failed()
            raise ProviderStoppedError(self.connection.state, None, None)
        if self._input_paused:
            self._wake()  # the loop stopped reading for us: there is room again
        return item  # type: ignore[return-value]

    def stop(self) -> bool:
        """Set the termination flag only when the association is idle (Sta1)."""
        with self._lock:
            if self.connection.state is not State.Sta1 and not self._exited:
                return False
            self._terminate = True
        self._kick()
        return True

    def kill(self) -> None:
        """Set the termination flag and wait for the thread to exit.

        An association still in progress is ended first: A-ABORT (Evt15 → AA-1) where Table
        9-10 allows it, then the transport is closed at once without waiting for ARTIM.
        """
        with self._lock:
            self._terminate = True
            self._killed = True
        if not self._threaded and self._pump.acquire(blocking=False):
            # Nobody runs the loop: this thread ends the association, no wakeup needed.
            try:
                if not self._exited:
                    self._pump_once(0)
            finally:
                self._pump.release()
            return
        self._wake()
        if threading.current_thread() is self or self._pumper == threading.get_ident():
            return  # called by an observer in the loop thread: the loop ends it on return
        if self.is_alive():
            self.join()
        elif not self._threaded:
            with self._pump:  # a thread running the loop finishes its turn (woken) first
                if not self._exited:
                    self._pump_once(0)
        elif not self._exited:
            self._shutdown()

    def run(self) -> None:
        """The event loop: block in selectors until I/O, a wakeup or the next deadline."""
        try:
            while not self._step(None):
                pass
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._shutdown()

    def _fail(self, exc: BaseException) -> None:
        """A bug in the loop (ARCHITECTURE §4): log it, A-P-ABORT, re-raise on the next call."""
        if isinstance(exc, Exception):
            log.exception("DUL event loop failed in %s", self.connection.state.value)
        else:  # Ctrl-C or SystemExit in the pumping thread: no bug, no traceback
            log.info(
                "DUL event loop stopped by %s in %s",
                type(exc).__name__,
                self.connection.state.value,
            )
        self._error = exc
        if self.connection.state is not State.Sta1:
            self._incoming.put(AAbortPDU(source=2, reason_diag=0))

    # ----------------------------------------------------------------- threaded=False

    def _pump_until_indication(self, timeout: float | None) -> object:
        """Run the loop in this thread until an indication is queued or the timeout passes."""
        incoming, pump = self._incoming, self._pump
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not incoming.empty():
                try:
                    return incoming.get_nowait()
                except queue.Empty:  # another receiver took it
                    pass
            if deadline is None:
                remaining = None
                acquired = pump.acquire()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._raise_if_failed()
                    raise TimeoutError(f"no PDU within {timeout} s")
                acquired = pump.acquire(timeout=remaining)
            if acquired:
                try:
                    if not self._exited:
                        self._pump_once(remaining)
                finally:
                    pump.release()

    def _pump_once(self, timeout: float | None, *, io: bool = True) -> None:
        """One turn of the loop in the calling thread, which holds _pump (threaded=False)."""
        self._pumper = _get_ident()
        try:
            if self._step(timeout, io=io) or (self._terminate and self._step(0)):
                self._shutdown()
        except BaseException as exc:
            self._fail(exc)
            self._shutdown()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: after cleaning up, as Python would
        finally:
            self._pumper = None

    def _kick(self) -> None:
        """Have queued effects performed now: by the loop's thread, else in this one."""
        if self._threaded or self._pumper is not None or not self._pump.acquire(blocking=False):
            self._wake()  # the loop thread (or the thread running the loop) does it
            return
        try:
            if not self._exited:
                self._pump_once(0, io=False)  # the next receive() waits for input
        finally:
            self._pump.release()

    def _wait_for_room(self, deadline: float | None) -> None:
        """Block until the queued output falls under OUT_LOW_WATER or the transport is gone.

        TimeoutError once `deadline` (monotonic) has passed while the output still waits.
        """
        if threading.current_thread() is self or self._pumper == threading.get_ident():
            return  # an observer in the loop: the loop cannot wait for itself
        if self._room is not None:
            if not self.is_alive():
                return  # nobody would ever flush it
            with self._room:
                while self._out.size >= OUT_LOW_WATER and self._sock is not None:
                    self._room.wait(_time_left(deadline, self._out.size))
            return
        while self._out.size >= OUT_LOW_WATER and self._sock is not None and not self._exited:
            remaining = _time_left(deadline, self._out.size)
            if self._pump.acquire(timeout=-1 if remaining is None else remaining):
                try:
                    if not self._exited:
                        self._pump_once(remaining)
                finally:
                    self._pump.release()

    # ----------------------------------------------------------------- observers

    def add_observer(self, observer: Observer) -> None:
        """Call `observer(transition)` for every Table 9-10 transition, in the loop thread."""
        self._observers.append(observer)

    @property
    def state(self) -> State:
        """The current PS3.8 state (Sta1..Sta13)."""
        return self.connection.state

    # ----------------------------------------------------------------- the loop

    def _step(self, timeout: float | None, *, io: bool = True) -> bool:
        """One turn: drain effects, wait for input (at most `timeout`), handle it. True: exit.

        With `io=False` (a kick from send() while no thread runs the loop) the turn performs
        effects and due timers but does not poll the socket unless output waits for room.
        """
        if self._effects:
            self._drain()
        if self._terminate:
            self._end_association()
            return True
        if self._one_shot and self._sock is None and self.connection.state is State.Sta1:
            return True  # PS3.8 §9.1.1: one association per connection, and it has ended
        due = self._next_deadline()
        if not io and not self._out:
            if due is not None:
                now = time.monotonic()
                if now >= due:
                    self._check_deadlines(now)
                    if self._effects:
                        self._drain()
            return False
        self._update_interest()
        wait = timeout
        if due is not None:
            wait = due - time.monotonic()
            if wait < 0.0:
                wait = 0.0
            if timeout is not None and timeout < wait:
                wait = timeout
        events = self._selector.select(wait)
        now = time.monotonic()
        for key, mask in events:
            if key.fileobj is self._wakeup:
                self._wakeup.clear()
            elif self._connecting:
                self._finish_connect()
            else:
                if mask & WRITE:
                    self._flush()
                if mask & READ and self._sock is not None:
                    self._read()
        if due is not None and now >= due:
            self._check_deadlines(now)  # deadlines set since are later than `now`
        if self._effects:
            self._drain()
        return False

    def _next_deadline(self) -> float | None:
        """The nearest deadline (ARTIM, application timeout, bounded send or connect) or None."""
        # Read without the lock: a send() that sets an earlier deadline wakes the loop (kick).
        nearest = self.connection.timer_deadline
        sending, connecting = self._out.deadline, self._connect_deadline
        if sending is not None and (nearest is None or sending < nearest):
            nearest = sending
        if connecting is not None and (nearest is None or connecting < nearest):
            nearest = connecting
        return nearest

    def _check_deadlines(self, now: float) -> None:
        """Fire ARTIM / application timeouts (Evt18, Evt15) and bounded sends and connects."""
        with self._lock:
            if self._out.stalled(now):
                log.warning(
                    "peer stopped reading for %.1f s: transport dropped", self._send_timeout
                )
                self._transport_lost(now)
            if self._connect_deadline is not None and now >= self._connect_deadline:
                self._connect_timed_out(now)
            deadline = self.connection.timer_deadline
            if deadline is not None and now >= deadline:
                self._effects.extend(self.connection.handle_timer(now))

    def _drain(self) -> None:
        """Perform queued effects in order (PS3.8 action order)."""
        while True:
            with self._lock:
                if not self._effects:
                    return
                effect = self._effects.popleft()
                if type(effect) is SendPDU or type(effect) is CloseTransport:
                    self._perform(effect)  # under the lock: ordered with send()'s own writes
                    continue
            self._perform(effect)  # a connector may block; the queue needs no lock

    def _end_association(self) -> None:
        """On kill: A-ABORT where Table 9-10 allows Evt15, then close and return to Sta1."""
        now = time.monotonic()
        if not self._killed or self.connection.state is State.Sta1:
            return
        with self._lock, contextlib.suppress(LocalProtocolError):
            self._effects.extend(self.connection.send(AAbortPDU(source=0), now))
        self._drain()
        if self._association_open():
            # PS3.8 §9.1.4: closed at once; the A-ABORT leaves if the socket still takes what
            # is queued ahead of it (never a part of it: no gap in the stream).
            self._close_socket(flush=True)
            self._transport_lost(now)
            self._drain()

    def _association_open(self) -> bool:
        """True while the machine is anywhere but Sta1."""
        return self.connection.state is not State.Sta1

    # ----------------------------------------------------------------- wakeups and shutdown

    def _wake(self) -> None:
        """Wake the loop from another thread; it re-reads effects and flags."""
        self._wakeup.set()

    def _shutdown(self) -> None:
        """Release every file descriptor and tell blocked receivers that the loop is gone."""
        with self._lock:
            self._exited = True
        self._close_socket(flush=False)
        with contextlib.suppress(OSError):
            self._selector.close()
        self._wakeup.close()
        self._incoming.put(_STOPPED)

    def _raise_if_failed(self) -> None:
        """Re-raise, in the user's thread, an exception that ended the loop (ARCHITECTURE §4)."""
        if self._error is not None:
            raise self._error


def _time_left(deadline: float | None, queued: int) -> float | None:
    """Seconds until `deadline` (None: no bound); TimeoutError once it has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0.0:
        raise TimeoutError(f"{queued} bytes still queued for the peer at the send deadline")
    return remaining


def _transition_observer(observers: list[Observer]) -> Observer:
    """The connection's observer: log one line per transition at DEBUG, then tell `observers`."""

    debug_enabled = log.isEnabledFor  # the level is read at each call: it may change

    def on_transition(transition: Transition) -> None:
        if debug_enabled(logging.DEBUG):
            log_transition(transition)
        for observer in observers:
            observer(transition)

    return on_transition
