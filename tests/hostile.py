"""Hostile DICOM UL clients for reliability tests and benchmarks, driven by one selectors thread.

Each client misbehaves in one way that PS3.8 leaves to the acceptor's timers and limits: silence
(§9.1.5, ARTIM in Sta2), a 4 GB PDU-length (§9.3.1, Annex D.1), a truncated A-ASSOCIATE-RQ, never
reading what it is sent, one byte per interval. `HostileCrowd` records how the server reacted.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netdicom2.acse import build_rq
from netdicom2.dimse import VERIFICATION_SOP_CLASS, c_echo_rq, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import PDataTfPDU

__all__ = [
    "Hostile",
    "HostileCrowd",
    "HostileOutcome",
    "association_rq",
    "echo_pdata",
    "read_exactly",
    "read_pdu",
]

_CHUNK = 1 << 16
_INF = float("inf")
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def association_rq(called: str = "ANY-SCP", calling: str = "HOSTILE") -> bytes:
    """An encoded A-ASSOCIATE-RQ proposing Verification, Implicit VR LE (PS3.8 Table 9-11)."""
    rq = build_rq(called, calling, [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])])
    return rq.encode()


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole PDU (6-byte header, then PDU-length bytes) from a raw socket; EOF fails."""
    sock.settimeout(timeout)
    header = read_exactly(sock, 6)
    return header + read_exactly(sock, struct.unpack(">I", header[2:6])[0])


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes, or AssertionError on EOF."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def echo_pdata(message_id: int = 1, context_id: int = 1) -> bytes:
    """An encoded P-DATA-TF with a whole C-ECHO-RQ command (PS3.8 Annex E.2: header 03H)."""
    pdv = PresentationDataValueItem(context_id, 0x03, encode_command(c_echo_rq(message_id)))
    return PDataTfPDU([pdv]).encode()


@dataclass(frozen=True)
class Hostile:
    """A misbehaving client: what it sends, how fast, and whether it reads what it is sent."""

    kind: str
    payload: bytes = b""
    interval: float = 0.0  # > 0: one byte of the payload per interval (a slow writer)
    reads: bool = True  # False: read the first PDU it is sent, then never read again
    pump: bytes = b""  # after that first PDU: sent over and over while the socket takes it
    pump_limit: int = 0

    @classmethod
    def silent(cls) -> Hostile:
        """Connects and sends nothing (PS3.8 §9.1.5: Sta2 + Evt18 → AA-2 at ARTIM)."""
        return cls("silent")

    @classmethod
    def huge(cls, length: int = 0xFFFFFFFF) -> Hostile:
        """Announces an A-ASSOCIATE-RQ of `length` bytes and sends no more (Table 9-11 header)."""
        return cls("huge", struct.pack(">BBI", 0x01, 0, length))

    @classmethod
    def truncated(cls, keep: int = 64) -> Hostile:
        """Sends the first `keep` bytes of a valid A-ASSOCIATE-RQ, then stalls."""
        return cls("truncated", association_rq()[:keep])

    @classmethod
    def never_reads(cls, pump_limit: int = 1 << 18) -> Hostile:
        """Associates, reads the A-ASSOCIATE-AC, then sends C-ECHO-RQs and never reads."""
        return cls(
            "never-reads", association_rq(), reads=False, pump=echo_pdata(), pump_limit=pump_limit
        )

    @classmethod
    def slow(cls, interval: float = 0.1, payload: bytes | None = None) -> Hostile:
        """Sends an A-ASSOCIATE-RQ (or `payload`) one byte per `interval` seconds."""
        return cls("slow", association_rq() if payload is None else payload, interval=interval)


@dataclass
class HostileOutcome:
    """How the server treated one hostile client (times in seconds from its connect)."""

    kind: str
    first_pdu: int | None = None  # PDU-type of the first PDU the server sent (7 = A-ABORT)
    first_pdu_after: float | None = None
    ended_after: float | None = None  # the server closed (FIN) or reset (RST) the connection
    how: str = "open"  # fin | rst | open (still open when the crowd stopped) | refused
    sent: int = 0


# Linux TCP_INFO tcpi_state (include/net/tcp_states.h): what a client that never reads can see.
_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8


class _Client:
    """One hostile connection's progress."""

    def __init__(self, spec: Hostile, sock: socket.socket, started: float) -> None:
        self.spec, self.sock, self.started = spec, sock, started
        self.outcome = HostileOutcome(spec.kind)
        self.received = 0  # bytes of the first PDU read so far
        self.first_length: int | None = None
        self.header = bytearray()
        self.next_byte = started
        self.written = 0  # bytes of the payload sent
        self.pumped = 0
        self.block = spec.pump * (1 + _CHUNK // max(1, len(spec.pump)))  # one send's worth
        self.blocked = False
        self.done = False

    @property
    def reading(self) -> bool:
        """Readers always read; a never-reader only until it has the first PDU."""
        return self.spec.reads or self.first_length is None or self.received < self.first_length

    def read(self, now: float) -> None:
        """Read and discard; note the first PDU's type and length; EOF or RST ends it."""
        size = _CHUNK
        if not self.spec.reads:
            size = (6 if self.first_length is None else self.first_length) - self.received
        try:
            data = self.sock.recv(max(1, min(size, _CHUNK)))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.end(now, "rst")
            return
        if not data:
            self.end(now, "fin")
            return
        if self.outcome.first_pdu is None:
            self.outcome.first_pdu, self.outcome.first_pdu_after = data[0], now - self.started
        if len(self.header) < 6:
            self.header += data[: 6 - len(self.header)]
            if len(self.header) == 6:
                self.first_length = 6 + int.from_bytes(self.header[2:6], "big")
        self.received += len(data)

    def write(self, now: float) -> None:
        """Send what is due: the payload (at once or byte by byte), then the pump."""
        spec = self.spec
        self.blocked = False
        try:
            if self.written < len(spec.payload):
                if spec.interval > 0:
                    if now >= self.next_byte:
                        sent = self.sock.send(spec.payload[self.written : self.written + 1])
                        self.next_byte = now + spec.interval
                    else:
                        return
                else:
                    sent = self.sock.send(spec.payload[self.written :])
                self.written += sent
            elif spec.pump and not self.reading and self.pumped < spec.pump_limit:
                start = self.pumped % len(spec.pump)
                size = min(_CHUNK, spec.pump_limit - self.pumped)
                sent = self.sock.send(memoryview(self.block)[start : start + size])
                self.pumped += sent
            else:
                return
            self.outcome.sent += sent
            if spec.interval > 0:
                return
            self.blocked = self.written < len(spec.payload) or (
                bool(spec.pump) and not self.reading and self.pumped < spec.pump_limit
            )
        except (BlockingIOError, InterruptedError):
            self.blocked = True
        except OSError:
            self.end(now, "rst")

    def check_closed(self, now: float) -> None:
        """A client that does not read learns of the server's FIN/RST from the TCP state."""
        with contextlib.suppress(OSError):
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state in (_TCP_CLOSE, _TCP_CLOSE_WAIT):
                self.end(now, "rst" if state == _TCP_CLOSE else "fin")

    def deadline(self) -> float:
        """The next byte of a slow writer."""
        if self.spec.interval > 0 and self.written < len(self.spec.payload):
            return self.next_byte
        return _INF

    def end(self, now: float, how: str) -> None:
        """The server ended the connection: record when and how, close our end."""
        if self.done:
            return
        self.done = True
        self.outcome.ended_after, self.outcome.how = now - self.started, how
        self.sock.close()


class HostileCrowd:
    """Many hostile clients in one selectors thread; each outcome says how the server reacted.

    `connect()` returns a connected socket to the server under test (on 127.0.0.1, or inside a
    peer's network namespace). Clients that stop reading are watched through TCP_INFO every
    `poll` seconds, a timed wait of the selector.
    """

    def __init__(
        self,
        connect: Callable[[], socket.socket],
        clients: Sequence[Hostile],
        *,
        poll: float = 0.05,
    ) -> None:
        self._connect = connect
        self._specs = list(clients)
        self._clients: list[_Client] = []
        self.outcomes: list[HostileOutcome] = []
        self._poll = poll
        self._stop = False
        self._ended = threading.Condition()
        self._ended_count = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="hostile-crowd", daemon=True)

    def start(self, *, workers: int = 8, max_failures: int = 3) -> HostileCrowd:
        """Connect every client (`workers` at a time), then drive them all; returns self.

        After `max_failures` failed connects (a full backlog times out) the rest are not tried
        and count as refused."""
        slots: list[_Client | None] = [None] * len(self._specs)
        failures = [0]
        lock = threading.Lock()

        def connect(indices: range) -> None:
            for index in indices:
                with lock:
                    if failures[0] >= max_failures:
                        return
                try:
                    sock = self._connect()
                except OSError:
                    with lock:
                        failures[0] += 1
                    continue
                sock.setblocking(False)
                slots[index] = _Client(self._specs[index], sock, time.monotonic())

        count = max(1, min(workers, len(self._specs)))
        threads = [
            threading.Thread(target=connect, args=(range(i, len(self._specs), count),))
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for spec, client in zip(self._specs, slots, strict=True):
            if client is None:
                self.outcomes.append(HostileOutcome(spec.kind, how="refused"))
            else:
                self._clients.append(client)
                self.outcomes.append(client.outcome)
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Wait until the server ended every connection; False on timeout."""
        return self.wait_ended(len(self._clients), timeout)

    def wait_ended(self, count: int, timeout: float) -> bool:
        """Wait until the server ended at least `count` connections; False on timeout."""
        with self._ended:
            return self._ended.wait_for(lambda: self._ended_count >= count, timeout)

    def close(self) -> list[HostileOutcome]:
        """Stop; close the connections still open; the outcomes."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.is_alive():
            self._thread.join()
        for client in self._clients:
            if not client.done:
                client.done = True
                client.sock.close()
        self._wake_r.close()
        self._wake_w.close()
        return self.outcomes

    def _run(self) -> None:
        """Write what is due, wait for readability, writability or the next deadline."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, _READ, None)
            masks: dict[_Client, int] = {}
            while not self._stop:
                now = time.monotonic()
                deadline = _INF
                for client in self._clients:
                    if client.done:
                        if masks.pop(client, 0):
                            selector.unregister(client.sock)
                        continue
                    client.write(now)
                    if not client.done and not client.reading:
                        client.check_closed(now)
                        deadline = min(deadline, now + self._poll)
                    if client.done:
                        if masks.pop(client, 0):
                            selector.unregister(client.sock)
                        continue
                    deadline = min(deadline, client.deadline())
                    mask = (_READ if client.reading else 0) | (_WRITE if client.blocked else 0)
                    old = masks.get(client, 0)
                    if mask != old:
                        if not mask:
                            selector.unregister(client.sock)
                        elif not old:
                            selector.register(client.sock, mask, client)
                        else:
                            selector.modify(client.sock, mask, client)
                        masks[client] = mask
                ended = sum(1 for client in self._clients if client.done)
                if ended != self._ended_count:
                    with self._ended:
                        self._ended_count = ended
                        self._ended.notify_all()
                if ended == len(self._clients):
                    deadline = _INF
                timeout = None if deadline == _INF else max(0.0, deadline - time.monotonic())
                for key, mask in selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif isinstance(key.data, _Client) and mask & _READ:
                        key.data.read(time.monotonic())
            for client, mask in masks.items():
                if mask:
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(client.sock)
