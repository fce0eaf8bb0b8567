"""Fault injection for DICOM UL peers over TCP: a scriptable proxy and transport wrapper.

PS3.8 §9.1 maps the Upper Layer onto one TCP connection per association: the PDUs are a byte
stream (§9.1.3) and the association can end with an orderly close (FIN) or a transport provider
failure (RST, §9.1.4 cases e/f, Evt17). `FaultProxy` sits between a requestor and an acceptor
on 127.0.0.1 and does to either stream what networks and broken stacks do: split writes, delay
bytes, stop reading (zero window), cut the connection with FIN or RST at byte N, half-close,
duplicate or corrupt a byte. `FaultProxy.wrap` does the same to one socket (a transport wrapper
for an accepted connection; `connector()` is one for a requestor's `connect=` hook).

Faults are frozen dataclasses with evaluable reprs; offsets count the bytes the sender wrote.
`random_faults` and `random_splits` derive a plan from a seed, `sweep_offsets` the cut points of a
reset sweep.

Everything runs in one selectors thread per proxy: delays and stalls are deadlines of the
selector wait, never sleeps; each direction buffers at most `buffer_limit` bytes; the proxy
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "Corrupt",
    "Delay",
    "Drop",
    "Duplicate",
    "Fault",
    "FaultProxy",
    "HalfClose",
    "Record",
    "Split",
    "Stall",
    "random_faults",
    "random_splits",
    "sweep_offsets",
]

Address: TypeAlias = tuple[str, int]
Direction = Literal["c2s", "s2c"]
Connector = Callable[[Address], socket.socket]
LOOPBACK = "127.0.0.1"
_CHUNK = 1 << 16
_INF = float("inf")
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


# --------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """A fault at byte `offset` (0-based) of one direction: c2s = client to server, s2c back."""

    direction: Direction
    offset: int

    def __post_init__(self) -> None:
        """Reject a direction other than c2s/s2c and a negative offset."""
        if self.direction not in ("c2s", "s2c"):
            raise ValueError(f"direction must be 'c2s' or 's2c', not {self.direction!r}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset}")


@dataclass(frozen=True)
class Split(Fault):
    """The bytes before `offset` and from `offset` on leave in separate writes (TCP_NODELAY)."""


@dataclass(frozen=True)
class Delay(Fault):
    """The bytes from `offset` on are held `seconds` longer than the bytes before them."""

    seconds: float = 0.1


@dataclass(frozen=True)
class Stall(Fault):
    """After `offset` bytes, stop reading the sender (its window closes); None = for good."""

    seconds: float | None = None


@dataclass(frozen=True)
class Drop(Fault):
    """Deliver `offset` bytes, then end both connections: "fin" (orderly) or "rst" (abortive)."""

    how: Literal["fin", "rst"] = "rst"


@dataclass(frozen=True)
class HalfClose(Fault):
    """Deliver `offset` bytes, then FIN toward the receiver only; later bytes are discarded."""


@dataclass(frozen=True)
class Duplicate(Fault):
    """The byte at `offset` is sent twice."""


@dataclass(frozen=True)
class Corrupt(Fault):
    """The byte at `offset` is XORed with `mask` (non-zero)."""

    mask: int = 0xFF


FAULT_KINDS: tuple[type[Fault], ...] = (Split, Delay, Stall, Drop, HalfClose, Duplicate, Corrupt)
_BYTE_FAULTS = (Duplicate, Corrupt)
Plan = Sequence[Fault] | Callable[[int], Sequence[Fault]]


def random_faults(
    seed: int,
    lengths: Mapping[Direction, int],
    *,
    count: int = 1,
    kinds: Sequence[type[Fault]] = FAULT_KINDS,
    max_seconds: float = 0.05,
) -> list[Fault]:
    """`count` faults of `kinds` at offsets below `lengths`: the same list for the same seed."""
    rng = random.Random(seed)
    directions = sorted(d for d, n in lengths.items() if n > 0)
    out: list[Fault] = []
    for _ in range(count):
        direction: Direction = rng.choice(directions)
        offset = rng.randrange(lengths[direction])
        kind = rng.choice(list(kinds))
        seconds = round(rng.uniform(0.0, max_seconds), 4)
        if kind is Delay:
            out.append(Delay(direction, offset, seconds))
        elif kind is Stall:
            out.append(Stall(direction, offset, seconds))
        elif kind is Drop:
            out.append(Drop(direction, offset, rng.choice(("fin", "rst"))))
        elif kind is Corrupt:
            out.append(Corrupt(direction, offset, rng.randrange(1, 256)))
        else:
            out.append(kind(direction, offset))
    return out


def random_splits(seed: int, direction: Direction, length: int, *, mean: int = 64) -> list[Split]:
    """Segment edges about every `mean` bytes of a `length`-byte stream (a seeded chunking)."""
    rng = random.Random(seed)
    edges: list[Split] = []
    offset = 0
    while True:
        offset += 1 + int(rng.expovariate(1 / max(1, mean)))
        if offset >= length:
            return edges
        edges.append(Split(direction, offset))


def sweep_offsets(
    length: int,
    *,
    dense: int = 2048,
    stride: int = 1021,
    edges: Iterable[int] = (),
    width: int = 12,
) -> list[int]:
    """Cut points: every offset below `dense`, every `stride`-th after, `width` past each edge."""
    points = set(range(min(dense, length + 1)))
    points.update(range(dense, length + 1, stride))
    for edge in edges:
        points.update(range(max(0, edge - 1), min(length, edge + width) + 1))
    points.add(length)
    return sorted(points)


# ----------------------------------------------------------------------------------- the proxy


@dataclass
class Record:
    """What happened to one proxied connection: bytes read per direction, faults fired, end."""

    index: int
    faults: tuple[Fault, ...]
    transferred: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    fired: list[Fault] = field(default_factory=list)
    end: str = ""  # closed | reset | dropped-fin | dropped-rst | upstream-failed | shutdown


@dataclass
class _Chunk:
    """Bytes waiting to be written, not before `not_before` (a Delay)."""

    data: memoryview
    not_before: float


@dataclass(frozen=True)
class _Mark:
    """A point in the queue where the connection changes: drop, half-close, or end of stream."""

    kind: Literal["drop", "half", "eof"]
    fault: Fault | None = None


class _Flow:
    """One direction of a proxied connection: read from `src`, apply faults, write to `dst`."""

    def __init__(
        self, direction: Direction, src: socket.socket, dst: socket.socket, faults: Iterable[Fault]
    ) -> None:
        self.direction = direction
        self.src, self.dst = src, dst
        self.at: dict[int, list[Fault]] = {}
        for fault in faults:
            if fault.direction == direction:
                self.at.setdefault(fault.offset, []).append(fault)
        self.cuts = deque(sorted(self.at))
        self.offset = 0  # bytes read from the sender so far
        self.queue: deque[_Chunk | _Mark] = deque()
        self.queued = 0
        self.hold_until = 0.0
        self.stall_until = 0.0
        self.reading = True  # False after EOF, reset or a Drop
        self.discard = False  # after a HalfClose: read on (to see EOF), deliver nothing
        self.finished = False  # FIN sent to the receiver, or the connection was dropped

    def wants_read(self, now: float, limit: int) -> bool:
        """Readable interest: not stalled, not ended, and the buffer under its bound."""
        if not self.reading or now < self.stall_until:
            return False
        return self.discard or self.queued < limit

    def ready(self, now: float) -> bool:
        """Whether the head of the queue may be written (or acted on) now."""
        if not self.queue:
            return False
        head = self.queue[0]
        return isinstance(head, _Mark) or head.not_before <= now

    def deadline(self, now: float) -> float:
        """When this flow next needs the loop: a delayed chunk or the end of a stall."""
        when = _INF
        if self.queue and isinstance(self.queue[0], _Chunk) and self.queue[0].not_before > now:
            when = self.queue[0].not_before
        if self.reading and now < self.stall_until < _INF:
            when = min(when, self.stall_until)
        return when

    def limit(self) -> int:
        """Bytes to read at most: a read never crosses the next fault's offset."""
        for cut in self.cuts:
            if cut > self.offset:
                return min(_CHUNK, cut - self.offset)
        return _CHUNK

    def take(self, data: bytes, now: float, record: Record) -> None:
        """Apply the byte faults at the current offset, queue the bytes, then boundary faults."""
        start = self.offset
        self.offset += len(data)
        record.transferred[self.direction] = self.offset
        if self.discard:
            return
        out = bytearray(data)
        # Boundary faults at `start` fired when the offset got there; what is left is per byte.
        for fault in self.at.pop(start, []):
            record.fired.append(fault)
            if isinstance(fault, Corrupt):
                out[0] ^= fault.mask & 0xFF
            else:
                out[:0] = out[:1]  # Duplicate
        while self.cuts and self.cuts[0] < self.offset:
            self.cuts.popleft()
        self.queue.append(_Chunk(memoryview(bytes(out)), max(now, self.hold_until)))
        self.queued += len(out)
        self.boundary(now, record)

    def boundary(self, now: float, record: Record) -> None:
        """Fire the faults that sit between bytes at the current offset (PS3.8 §9.1.3 stream)."""
        faults = self.at.get(self.offset, [])
        for fault in [f for f in faults if not isinstance(f, _BYTE_FAULTS)]:
            faults.remove(fault)
            if isinstance(fault, Split):
                record.fired.append(fault)  # reads are already cut here; chunks go out apart
            elif isinstance(fault, Delay):
                record.fired.append(fault)
                self.hold_until = now + fault.seconds
            elif isinstance(fault, Stall):
                record.fired.append(fault)
                self.stall_until = _INF if fault.seconds is None else now + fault.seconds
            elif isinstance(fault, Drop):
                self.reading = False
                self.queue.append(_Mark("drop", fault))
            elif isinstance(fault, HalfClose):
                self.discard = True
                self.queue.append(_Mark("half", fault))


class _Pipe:
    """A proxied connection: client socket, upstream socket, and one _Flow each way."""

    def __init__(
        self,
        proxy: FaultProxy,
        index: int,
        client: socket.socket,
        upstream: socket.socket,
        faults: Sequence[Fault],
    ) -> None:
        self.proxy = proxy
        self.record = Record(index, tuple(faults))
        self.c2s = _Flow("c2s", client, upstream, faults)
        self.s2c = _Flow("s2c", upstream, client, faults)
        self.socks = (client, upstream)
        self.masks = {client: 0, upstream: 0}
        self.closing_until: float | None = None  # a FIN drop: drain both until EOF or then
        self.eof: set[socket.socket] = set()
        self.closed = False
        for sock in self.socks:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.monotonic()
        self.c2s.boundary(now, self.record)  # faults at offset 0
        self.s2c.boundary(now, self.record)

    def flows(self) -> tuple[_Flow, _Flow]:
        """Both directions."""
        return self.c2s, self.s2c

    def on_ready(self, sock: socket.socket, mask: int, now: float) -> None:
        """Read from and write to `sock` as the selector says it can."""
        if self.closing_until is not None:
            self._drain(sock)
            return
        if mask & _READ:
            self._read(self.c2s if sock is self.c2s.src else self.s2c, now)
        if mask & _WRITE and not self.closed:
            self._write(self.s2c if sock is self.s2c.dst else self.c2s, now)

    def _read(self, flow: _Flow, now: float) -> None:
        """One recv on the flow's sender: bytes, EOF (FIN to pass on) or a reset to pass on."""
        if not flow.wants_read(now, self.proxy.buffer_limit):
            return
        try:
            data = flow.src.recv(flow.limit())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort("reset")  # the sender reset: pass the RST on (§9.1.4 e)
            return
        if not data:
            flow.reading = False
            if not flow.discard:
                flow.queue.append(_Mark("eof"))
            else:
                flow.finished = True
            return
        flow.take(data, now, self.record)

    def _write(self, flow: _Flow, now: float) -> None:
        """Write ready chunks to the receiver in order; act on marks when they reach the head."""
        while flow.queue and not self.closed:
            head = flow.queue[0]
            if isinstance(head, _Mark):
                flow.queue.popleft()
                self._mark(flow, head, now)
                continue
            if head.not_before > now:
                return
            try:
                sent = flow.dst.send(head.data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.abort("reset")
                return
            flow.queued -= sent
            if sent < len(head.data):
                head.data = head.data[sent:]
                return
            flow.queue.popleft()

    def _mark(self, flow: _Flow, mark: _Mark, now: float) -> None:
        """A drop, half-close or end of stream reached the head of the queue: perform it."""
        if mark.fault is not None:
            self.record.fired.append(mark.fault)
        if mark.kind == "drop":
            assert isinstance(mark.fault, Drop)
            if mark.fault.how == "rst":
                self.abort("dropped-rst")
            else:
                self.fin_close(now, "dropped-fin")
            return
        with contextlib.suppress(OSError):
            flow.dst.shutdown(socket.SHUT_WR)  # FIN toward the receiver only
        flow.finished = True

    def fin_close(self, now: float, end: str) -> None:
        """Orderly close of both sides: FIN each way, then drain until EOF or the linger time."""
        self.record.end = end
        for flow in self.flows():
            flow.reading, flow.finished = False, True
            flow.queue.clear()
            flow.queued = 0
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        self.closing_until = now + self.proxy.linger

    def _drain(self, sock: socket.socket) -> None:
        """While closing: discard what arrives so that close() sends no RST; note EOF."""
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.eof.add(sock)

    def abort(self, end: str) -> None:
        """Abortive close of both sides (SO_LINGER 0: RST), PS3.8 §9.1.4 case e."""
        self.record.end = self.record.end or end
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        """Unregister and close both sockets; tell the proxy."""
        if self.closed:
            return
        self.closed = True
        self.record.end = self.record.end or "closed"
        for sock in self.socks:
            if self.masks[sock]:
                with contextlib.suppress(KeyError, ValueError):
                    self.proxy.selector.unregister(sock)
            sock.close()
        self.proxy.pipe_closed(self)

    def update(self, now: float) -> float:
        """Write what is due, close when both directions ended, set interest; next deadline."""
        if self.closing_until is not None:
            if len(self.eof) == 2 or now >= self.closing_until:
                self.close()
                return _INF
            for sock in self.socks:
                self._interest(sock, 0 if sock in self.eof else _READ)
            return self.closing_until
        for flow in self.flows():
            if flow.ready(now):
                self._write(flow, now)
        if self.closed:
            return _INF
        if all(f.finished and not f.reading and not f.queue for f in self.flows()):
            self.close()
            return _INF
        limit = self.proxy.buffer_limit
        for sock, inbound, outbound in (
            (self.c2s.src, self.c2s, self.s2c),
            (self.s2c.src, self.s2c, self.c2s),
        ):
            mask = _READ if inbound.wants_read(now, limit) else 0
            if outbound.ready(now):
                mask |= _WRITE
            self._interest(sock, mask)
        return min(self.c2s.deadline(now), self.s2c.deadline(now))

    def _interest(self, sock: socket.socket, mask: int) -> None:
        """Register, modify or unregister `sock` so that the selector watches `mask`."""
        old = self.masks[sock]
        if mask == old:
            return
        selector = self.proxy.selector
        if not mask:
            selector.unregister(sock)
        elif not old:
            selector.register(sock, mask, self)
        else:
            selector.modify(sock, mask, self)
        self.masks[sock] = mask


class FaultProxy:
    """A fault-injecting TCP proxy on 127.0.0.1 in front of `upstream` (one selectors thread).

    `faults` is a list applied to every connection, or `plan(index) -> faults` per connection.
    The upstream connection is made (blocking, loopback) when a client is accepted, through
    `connect` when given (e.g. a socket inside a peer's network namespace).
    """

    def __init__(
        self,
        upstream: Address,
        faults: Plan = (),
        *,
        connect: Connector | None = None,
        buffer_limit: int = 1 << 20,
        linger: float = 2.0,
        max_connections: int = 256,
        keep_records: int = 10_000,
    ) -> None:
        self.upstream = upstream
        self.plan: Plan = faults
        self.buffer_limit = buffer_limit
        self.linger = linger
        self.max_connections = max_connections
        self.records: deque[Record] = deque(maxlen=keep_records)
        self.selector = selectors.DefaultSelector()
        self._connect = connect
        self._listener = socket.create_server((LOOPBACK, 0), backlog=128)
        self._listener.setblocking(False)
        self.address: Address = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._listener, _READ, "listen")
        self.selector.register(self._wake_r, _READ, "wake")
        self._listening = True
        self._paused_until = 0.0
        self._pipes: set[_Pipe] = set()
        self._adopt: deque[tuple[socket.socket, socket.socket, Sequence[Fault]]] = deque()
        self._count = 0
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        """Start the proxy thread; returns self."""
        self._thread.start()
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connector(self) -> Connector:
        """A `connect=` hook for a requestor: whatever address it is given, reach the proxy."""

        def connect(_address: Address) -> socket.socket:
            return socket.create_connection(self.address, timeout=5)

        return connect

    def wrap(self, sock: socket.socket, faults: Sequence[Fault]) -> socket.socket:
        """A socket whose traffic to and from `sock`'s peer passes `faults` (c2s = ours out)."""
        with socket.create_server((LOOPBACK, 0)) as listener:
            local = socket.create_connection(listener.getsockname())
            inner, _ = listener.accept()
        with self._cond:
            self._adopt.append((inner, sock, tuple(faults)))
        self._wake()
        return local

    @property
    def buffered(self) -> int:
        """Bytes held by the proxy right now, all connections and directions (bounded)."""
        with self._cond:
            pipes = list(self._pipes)
        return sum(flow.queued for pipe in pipes for flow in pipe.flows())

    @property
    def open_connections(self) -> int:
        """Connections being proxied right now."""
        with self._cond:
            return len(self._pipes)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no proxied connection is open; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pipes and not self._adopt, timeout)

    def close(self) -> None:
        """Stop the thread; every open connection is closed, every socket released."""
        self._stop = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join()
        elif not self._thread.ident:
            self._cleanup()

    # ------------------------------------------------------------------ the loop thread

    def _run(self) -> None:
        """Block in the selector until I/O, a wakeup or the nearest delay/stall deadline."""
        try:
            deadline = _INF
            while not self._stop:
                now = time.monotonic()
                timeout = None if deadline == _INF else max(0.0, deadline - now)
                for key, mask in self.selector.select(timeout):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif isinstance(key.data, _Pipe) and not key.data.closed:
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        key.data.on_ready(sock, mask, time.monotonic())
                self._take_adopted()
                now = time.monotonic()
                deadline = min((p.update(now) for p in list(self._pipes)), default=_INF)
                if now < self._paused_until:
                    deadline = min(deadline, self._paused_until)
                self._listen(len(self._pipes) < self.max_connections and now >= self._paused_until)
        finally:
            self._cleanup()

    def _accept(self) -> None:
        """Accept clients and connect each upstream; over max_connections they wait in backlog."""
        while len(self._pipes) < self.max_connections:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: stop listening for a while, do not spin
                self._paused_until = time.monotonic() + 0.1
                self._listen(False)
                return
            try:
                if self._connect is not None:
                    upstream = self._connect(self.upstream)
                else:
                    upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                record = Record(self._count, (), end="upstream-failed")
                self._count += 1
                self.records.append(record)
                client.close()
                continue
            plan = self.plan
            faults = plan(self._count) if callable(plan) else plan
            self._new_pipe(client, upstream, faults)

    def _take_adopted(self) -> None:
        """Sockets handed over by wrap() from another thread."""
        while True:
            with self._cond:
                if not self._adopt:
                    return
                inner, outer, faults = self._adopt.popleft()
            self._new_pipe(inner, outer, faults)

    def _new_pipe(
        self, client: socket.socket, upstream: socket.socket, faults: Sequence[Fault]
    ) -> None:
        """Start proxying one connection."""
        pipe = _Pipe(self, self._count, client, upstream, faults)
        self._count += 1
        self.records.append(pipe.record)
        with self._cond:
            self._pipes.add(pipe)

    def pipe_closed(self, pipe: _Pipe) -> None:
        """A connection ended: forget it and wake wait_idle()."""
        with self._cond:
            self._pipes.discard(pipe)
            self._cond.notify_all()

    def _listen(self, on: bool) -> None:
        """Watch the listener or not (bounded connections, EMFILE back-off)."""
        if on == self._listening or self._stop:
            return
        if on:
            self.selector.register(self._listener, _READ, "listen")
        else:
            self.selector.unregister(self._listener)
        self._listening = on

    def _wake(self) -> None:
        """Wake the loop thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _cleanup(self) -> None:
        """Close every connection and socket the proxy owns."""
        for pipe in list(self._pipes):
            pipe.record.end = pipe.record.end or "shutdown"
            pipe.close()
        with self._cond:
            while self._adopt:
                inner, outer, _ = self._adopt.popleft()
                inner.close()
                outer.close()
            self._cond.notify_all()
        self.selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
