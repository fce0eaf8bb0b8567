"""The socket half of DULServiceProvider: effects performed on its one TCP connection.

`ProviderTransport` is what the provider does to its socket: perform an action's effects
(write a PDU, indicate, open or close the transport), TRANSPORT CONNECT (PS3.8 §9.1.2), read
into the sans-I/O core, write through a bounded output queue, and choose what the selector
watches. DULServiceProvider (dulprovider.py) owns the state it works on, the loop that calls
it, and the service user's API.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    OpenTransport,
    SendPDU,
    StartTimer,
    StopTimer,
)
from netdicom2.fsm import State
from netdicom2.transport import OutputQueue, receive, set_nodelay, start_connect

__all__ = ["Address", "Connector", "ProviderTransport"]

log = logging.getLogger("netdicom2.dul")

Address = tuple[str, int]
Connector = Callable[[Address], socket.socket]

# Bounded memory: the loop stops reading the socket while this much output waits for a peer
# that does not read, or this many indications wait for a user that does not receive; TCP flow
# control then holds the peer back (a stalled peer is dropped after send_timeout). send() blocks
# from the high-water mark until the output is back under the low one.
OUT_HIGH_WATER = 1 << 20
OUT_LOW_WATER = 1 << 19
MAX_QUEUED = 64
# Effects of a user primitive that send() performs itself (the rest go to the loop).
_INLINE_EFFECTS = (SendPDU, StartTimer, StopTimer)
READ = selectors.EVENT_READ  # what the loop wants from the socket (self._mask)
WRITE = selectors.EVENT_WRITE


class ProviderTransport:
    """DULServiceProvider's socket: effects, TRANSPORT CONNECT, reads, bounded writes, interest.

    A base of DULServiceProvider only: the attributes below are set by its constructor, and
    the methods run under its lock where they say so.
    """

    connection: Connection
    address: Address | None
    _connector: Connector | None
    _connect_timeout: float
    _lock: threading.RLock
    _room: threading.Condition | None
    _effects: deque[Effect]
    _incoming: queue.SimpleQueue[object]
    _selector: selectors.BaseSelector
    _sock: socket.socket | None
    _mask: int
    _out: OutputQueue
    _input_paused: bool
    _connecting: bool
    _connect_deadline: float | None
    _requests: int
    _opens: int

    def _perform_in_order(self, effects: list[Effect]) -> None:
        """Under the lock: perform an event's effects now, unless earlier effects still wait.

        For the input events (Evt2, Evt3 … Evt19), whose actions never open a transport. An
        effect that fails (a write error: Evt17) queues its own effects after these.
        """
        if self._effects:
            self._effects.extend(effects)
            return
        for effect in effects:
            if type(effect) is Indicate:
                self._incoming.put(effect.primitive)  # the usual effect: as _perform
            else:
                self._perform(effect)

    def _perform_now(self, effects: list[Effect]) -> bool:
        """Write a primitive's PDUs now, in order, unless effects wait; True: kick the loop."""
        if self._effects or self._sock is None or self._connecting:
            self._effects.extend(effects)
            return True
        for effect in effects:
            if not isinstance(effect, _INLINE_EFFECTS):
                self._effects.extend(effects)
                return True
        for effect in effects:
            if type(effect) is SendPDU:
                self._write(effect)  # StartTimer/StopTimer: the loop reads the deadline
        # A partial write leaves output the loop must watch for; an error leaves effects.
        return bool(self._effects) or bool(self._out and not self._mask & WRITE)

    def _perform(self, effect: Effect) -> None:
        """Carry out one effect of an action."""
        if isinstance(effect, Indicate):
            self._incoming.put(effect.primitive)
        elif isinstance(effect, SendPDU):
            self._write(effect)
        elif isinstance(effect, CloseTransport):
            self._close_socket(flush=True)
        elif isinstance(effect, OpenTransport):
            self._open()
        # StartTimer / StopTimer: the loop reads connection.timer_deadline before each wait.

    def _attach(self, sock: socket.socket, *, nonblocking: bool = False) -> None:
        """Take ownership of a connected socket: non-blocking, TCP_NODELAY, registered."""
        if not nonblocking:
            sock.setblocking(False)
        set_nodelay(sock)
        self._sock = sock
        self._selector.register(sock, READ)
        self._mask = READ

    def _open(self) -> None:
        """AE-1: issue TRANSPORT CONNECT; Evt2 follows when the connection completes."""
        assert self.address is not None or self._connector is not None
        now = time.monotonic()
        self._opens += 1
        if self._connector is not None:
            ticket = self._opens
            try:
                sock = self._connector(self.address or ("", 0))
            except OSError as exc:
                log.warning("TCP connect failed: %s", exc)
                if self._is_current_connect(ticket):
                    self._connect_failed(now)
                return
            if not self._is_current_connect(ticket):
                # PS3.8 Table 9-10 Sta4/Evt15 → AA-2 already ended this association: the late
                # connection belongs to none and is closed (never taken for a newer one).
                log.info("closing a connection that completed after its association ended")
                sock.close()
                return
            self._attach(sock)
            self._connected(now)
            return
        assert self.address is not None
        started, err = start_connect(self.address)
        if started is None:
            # A failed TRANSPORT CONNECT: Evt17 in Sta4 (AA-4), as from _finish_connect.
            log.warning("TCP connect to %s failed: %s", self.address, errno.errorcode.get(err, err))
            self._connect_failed(now)
            return
        if err == 0:
            # PS3.8 §9.1.2: the transport connection is confirmed (Evt2 → AE-2).
            self._attach(started, nonblocking=True)
            self._connected(now)
            return
        self._sock = started
        self._connecting = True
        self._connect_deadline = now + self._connect_timeout
        self._selector.register(started, WRITE)

    def _finish_connect(self) -> None:
        """The non-blocking connect completed: Evt2 on success, Evt17 (AA-4) on failure."""
        assert self._sock is not None
        now = time.monotonic()
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sock = self._sock
        self._selector.unregister(sock)
        self._connecting = False
        self._connect_deadline = None
        self._sock = None
        if err:
            sock.close()
            log.warning("TCP connect to %s failed: %s", self.address, errno.errorcode.get(err))
            self._connect_failed(now)
            return
        self._attach(sock, nonblocking=True)
        self._connected(now)

    def _is_current_connect(self, ticket: int) -> bool:
        """True when connect number `ticket` still serves the association waiting in Sta4."""
        with self._lock:
            return ticket == self._requests and self.connection.state is State.Sta4

    def _connected(self, now: float) -> None:
        """PS3.8 §9.1.2: the connection is confirmed (Evt2 → AE-2 sends the A-ASSOCIATE-RQ)."""
        with self._lock:
            self._perform_in_order(self.connection.transport_connected(now))

    def _connect_failed(self, now: float) -> None:
        """A failed TRANSPORT CONNECT is a closed transport in Sta4 (Evt17 → AA-4)."""
        self._connecting = False
        self._connect_deadline = None
        with self._lock:
            self._effects.extend(self.connection.transport_closed(now))

    def _read(self) -> None:
        """Feed received bytes to the core (a large PDU lands in its own buffer); EOF is Evt17."""
        with self._lock:
            sock = self._sock
            if sock is None:
                return
            effects = receive(sock, self.connection)
            refused = self.connection.refused
            if refused is not None:  # one line saying why a PDU was Evt19
                self.connection.refused = None
                log.info("PDU refused (Evt19): %s", refused)
            if effects is None:
                self._transport_lost(time.monotonic())
            elif effects:
                self._perform_in_order(effects)

    def _write(self, effect: SendPDU) -> None:
        """Write one PDU in one system call (gathering its parts) when the socket takes it."""
        if self._sock is None:
            return  # the transport is gone: PS3.8 §7.3, data in transit may be lost
        try:
            self._out.write(self._sock, effect)  # what is left waits, bounded by send_timeout
        except OSError as exc:
            log.info("transport error while writing: %s", exc)
            self._transport_lost(time.monotonic())

    def _flush(self) -> None:
        """Write pending output while the socket takes it; re-arm the bounded-send deadline."""
        with self._lock:
            if self._sock is None:
                return
            try:
                self._out.flush(self._sock)
            except OSError as exc:
                log.info("transport error while writing: %s", exc)
                self._transport_lost(time.monotonic())
                return
            if self._out.size < OUT_LOW_WATER and self._room is not None:
                self._room.notify_all()

    def _transport_lost(self, now: float) -> None:
        """Peer close, reset, network failure or stalled peer: Evt17 (AA-4, AA-5 or AR-5)."""
        self._close_socket(flush=False)
        with self._lock:
            if self.connection.state is State.Sta1:
                return
            self._effects.extend(self.connection.transport_closed(now))

    def _close_socket(self, *, flush: bool) -> None:
        """Close the transport (PS3.8 §9.1.4: no linger); best-effort write of pending output."""
        with self._lock:  # no send() may write on a descriptor being closed
            sock = self._sock
            if sock is None:
                return
            self._out.drop(sock if flush and not self._connecting else None)
            self._connect_deadline = None
            if self._mask or self._connecting:  # registered: unregister before the fd is reused
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
            self._mask = 0
            self._connecting = False
            sock.close()
            self._sock = None
            if self._room is not None:
                self._room.notify_all()

    def _update_interest(self) -> None:
        """Watch for output room while output waits; for input unless a bound is reached."""
        if (
            self._mask == READ
            and not self._out
            and not self._input_paused
            and self._incoming.qsize() < MAX_QUEUED
        ):
            return  # the usual turn: reading, nothing to write (send() wakes us if that changes)
        with self._lock:  # send() appends output and reads the mask under it
            sock = self._sock
            if sock is None or self._connecting:
                return
            # Announce the pause before checking the queue, so that a receive() in between
            # wakes the loop instead of being missed.
            self._input_paused = True
            paused = self._out.size >= OUT_HIGH_WATER or self._incoming.qsize() >= MAX_QUEUED
            self._input_paused = paused
            mask = 0 if paused else READ
            if self._out:
                mask |= WRITE
            if mask == self._mask:
                return
            if not mask:
                self._selector.unregister(sock)
            elif not self._mask:
                self._selector.register(sock, mask)
            else:
                self._selector.modify(sock, mask)
            self._mask = mask
