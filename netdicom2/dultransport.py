"""The socket half of DULServiceProvider: effects performed on its one TCP connection.

`ProviderTransport` is what the provider does to its socket: perform an action's effects
(write a PDU, indicate, open or close the transport), TRANSPORT CONNECT (PS3.8 §9.1.2), read
into the sans-I/O core, write through a bounded output queue, and choose what the selector
watches. DULServiceProvider (dulprovider.py) owns the state it works on, the loop that calls
it, and the service user's API. `Dialer` is the requestor's TRANSPORT CONNECT to a host name:
resolved, then each address tried in turn, as socket.create_connection does, without blocking.
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
from typing import Any

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

__all__ = ["Address", "Connector", "Dialer", "ProviderTransport", "resolve"]

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


SockAddr = tuple[Any, ...]  # (host, port) for AF_INET, (host, port, flowinfo, scope) for AF_INET6


def resolve(address: Address, timeout: float) -> list[tuple[int, SockAddr]]:
    """The (family, socket address) of each address of the host, in the resolver's order.

    A numeric host is converted at once; a name is looked up with getaddrinfo (as
    socket.create_connection does) in a helper thread, waited for at most `timeout` seconds.
    OSError when it does not resolve (socket.gaierror) or not in time (ETIMEDOUT).
    """
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = _lookup(host, port, timeout)
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


def _lookup(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo(host, port) in a daemon thread, waited for at most `timeout` seconds."""
    outcome: list[Any] = []

    def look_up() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=look_up, name="netdicom2-resolve", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if not outcome:  # the resolver is still asking: given up (the thread ends on its own)
        raise OSError(errno.ETIMEDOUT, f"resolving {host!r} took more than {timeout:g} s")
    if isinstance(outcome[0], OSError):
        raise outcome[0]
    return list(outcome[0])


class Dialer:
    """TRANSPORT CONNECT (PS3.8 §9.1.2) to (host, port): each resolved address in turn.

    As socket.create_connection: the name is resolved and its addresses (IPv6 or IPv4, in the
    resolver's order) are tried until one connects; each connect is non-blocking. `timeout`
    bounds the whole of it, resolution included: each address gets an equal share of the time
    left when its turn comes, so a silent first address leaves time for the others. A name
    that does not resolve, or addresses that all fail, is a failed connect (the adapter's Evt17
    in Sta4 → AA-4); `failure` says why.
    """

    __slots__ = ("_candidates", "address", "attempt_deadline", "deadline", "failure")

    def __init__(self, address: Address, timeout: float, now: float) -> None:
        self.address = address
        self.deadline = now + timeout
        self.attempt_deadline = self.deadline  # when the address being tried is given up
        self.failure = "no address"
        self._candidates: deque[tuple[int, SockAddr]] = deque()

    def start(self) -> tuple[socket.socket | None, int]:
        """Resolve, then connect to the first address that does not fail at once.

        As start_connect: (socket, 0) connected, (socket, errno in IN_PROGRESS) in progress,
        (None, errno) failed with nothing left open.
        """
        try:
            self._candidates.extend(resolve(self.address, self.deadline - time.monotonic()))
        except OSError as exc:
            self.failure = str(exc) or type(exc).__name__
            return None, exc.errno or errno.EHOSTUNREACH
        return self.next()

    def failed(self, err: int) -> None:
        """The address being tried failed with `err` (SO_ERROR, or ETIMEDOUT for its share)."""
        self.failure = errno.errorcode.get(err, str(err))

    def next(self) -> tuple[socket.socket | None, int]:
        """Connect to the next address that does not fail at once (as start())."""
        err = errno.ETIMEDOUT
        while self._candidates:
            now = time.monotonic()
            if now >= self.deadline:
                self.failed(errno.ETIMEDOUT)
                break
            family, sockaddr = self._candidates.popleft()
            sock, err = start_connect(sockaddr, family)
            if sock is not None:
                self.attempt_deadline = now + (self.deadline - now) / (1 + len(self._candidates))
                return sock, err
            self.failed(err)
        self._candidates.clear()
        return None, err

    def has_more(self, now: float) -> bool:
        """True when another address may still be tried within the timeout."""
        return bool(self._candidates) and now < self.deadline


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
    _dialer: Dialer | None
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
        # PS3.8 §9.1.2: TRANSPORT CONNECT to the called presentation address, whose host may
        # be a name with several addresses (IPv6 and IPv4): each is tried in turn.
        self._dialer = dialer = Dialer(self.address, self._connect_timeout, now)
        started, err = dialer.start()
        self._dial(started, err, now)

    def _dial(self, started: socket.socket | None, err: int, now: float) -> None:
        """Go on from a connect the dialer began: confirmed, in progress, or failed (Evt17)."""
        dialer = self._dialer
        assert dialer is not None
        if started is None:
            # A failed TRANSPORT CONNECT: Evt17 in Sta4 (AA-4).
            log.warning("TCP connect to %s failed: %s", self.address, dialer.failure)
            self._dialer = None
            self._connect_failed(now)
            return
        if err == 0:
            # PS3.8 §9.1.2: the transport connection is confirmed (Evt2 → AE-2).
            self._dialer = None
            self._attach(started, nonblocking=True)
            self._connected(now)
            return
        self._sock = started
        self._connecting = True
        self._connect_deadline = dialer.attempt_deadline
        self._selector.register(started, WRITE)

    def _finish_connect(self) -> None:
        """The non-blocking connect completed: Evt2 on success; else the next address, or Evt17."""
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
            log.info("TCP connect to %s: %s", self.address, errno.errorcode.get(err, err))
            if self._dialer is None:
                self._connect_failed(now)
                return
            self._dialer.failed(err)
            self._dial(*self._dialer.next(), now)
            return
        self._dialer = None
        self._attach(sock, nonblocking=True)
        self._connected(now)

    def _connect_timed_out(self, now: float) -> None:
        """An address silent for its share of connect_timeout: the next, else Evt17 (AA-4)."""
        dialer = self._dialer
        if dialer is not None and self._connecting and dialer.has_more(now):
            self._close_socket(flush=False)
            dialer.failed(errno.ETIMEDOUT)
            self._dial(*dialer.next(), now)
            return
        log.warning("TCP connect to %s timed out", self.address)
        self._dialer = None
        self._transport_lost(now)

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
