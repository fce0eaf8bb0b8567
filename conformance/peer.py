"""The scripted peer's transport: raw bytes over TCP, whole PDUs in, with deadlines.

``Wire`` is one TCP connection seen from the peer's side. It writes arbitrary bytes (also cut
into segments with a delay between them), reads whole PDUs by their 6-byte header (PS3.8
§9.3.1, the peer's own framing, independent of the IUT's codec), tells a normal close (FIN)
from a reset (RST), and closes, half-closes or resets (SO_LINGER 0) on request. Every wait
blocks in ``selectors`` until data, close or the deadline: never a sleep loop.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Address",
    "Closed",
    "Connector",
    "Frame",
    "Listener",
    "PeerError",
    "Wire",
    "parse_frame",
]

Address = tuple[str, int]
Connector = Callable[[Address], socket.socket]

_HEADER = struct.Struct(">BBI")  # PS3.8 §9.3.1: PDU-type, reserved, PDU-length
_MAX_FRAME = 1 << 26  # a peer under test that announces more is not followed further


class PeerError(Exception):
    """The peer could not do what the script asked (the IUT closed, nothing came, …)."""


@dataclass(frozen=True)
class Frame:
    """One whole PDU as received: its bytes and when its last byte arrived (monotonic)."""

    data: bytes
    at: float

    @property
    def pdu_type(self) -> int:
        """Byte 1, the PDU-type (PS3.8 §9.3.1)."""
        return self.data[0]


@dataclass(frozen=True)
class Closed:
    """The IUT closed the transport: "fin" (orderly) or "rst" (reset), and when."""

    how: Literal["fin", "rst"]
    at: float
    pending: bytes = b""  # bytes of an incomplete PDU left in the buffer


def parse_frame(data: bytes) -> dict[str, int]:
    """The fields a cell checks: type; source/reason of A-ABORT, result/source/reason of RJ.

    Read straight from PS3.8 Tables 9-21 and 9-26 (bytes 8, 9, 10), not through the IUT's codec.
    """
    out = {"type": data[0], "length": _HEADER.unpack_from(data)[2]}
    if data[0] in (0x03, 0x07) and len(data) >= 10:
        out.update(result=data[7], source=data[8], reason=data[9])
    return out


class Wire:
    """One TCP connection driven by the scripted peer."""

    def __init__(self, sock: socket.socket) -> None:
        """Take a connected socket; it becomes non-blocking."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._buffer = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self.closed: Closed | None = None  # the IUT's close, once seen
        self.write_shut = False
        self.send_error: str | None = None  # why our last send could not complete
        self.last_activity = time.monotonic()

    @classmethod
    def connect(cls, address: Address, connector: Connector | None = None) -> Wire:
        """Connect to the IUT (directly, or through ``connector``, e.g. into a namespace)."""
        try:
            sock = (
                connector(address)
                if connector is not None
                else socket.create_connection(address, timeout=5)
            )
        except OSError as exc:
            raise PeerError(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return cls(sock)

    # ------------------------------------------------------------------ output

    def send(self, data: bytes, segments: tuple[int, ...] = (), delay: float = 0.0) -> bool:
        """Write ``data`` (cut after each of ``segments`` bytes, waiting ``delay`` between).

        Returns False when the IUT closed or reset the transport before all was written:
        what it sent before that is still read by the next expectation.
        """
        pieces: list[bytes] = []
        rest = data
        for size in segments:
            pieces.append(rest[:size])
            rest = rest[size:]
        pieces.append(rest)
        for index, piece in enumerate(p for p in pieces if p):
            if index and delay:
                self._poll(time.monotonic() + delay)  # a timed gap, still reading
            try:
                self._write(piece)
            except ConnectionError as exc:
                self.send_error = repr(exc)
                return False
        self.last_activity = time.monotonic()
        return True

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` within 5 s (the IUT must keep reading)."""
        view = memoryview(data)
        deadline = time.monotonic() + 5.0
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            while view:
                try:
                    sent = self.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except ConnectionError:
                    raise  # reset or broken pipe: the IUT is gone; the caller decides
                except OSError as exc:
                    raise PeerError(f"send failed: {exc!r}") from exc
                view = view[sent:]
                if view and not sel.select(max(0.0, deadline - time.monotonic())):
                    raise PeerError("the IUT stopped reading (send blocked for 5 s)")

    def half_close(self) -> None:
        """shutdown(SHUT_WR): the IUT reads end-of-stream (FIN); we can still read."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.write_shut = True
        self.last_activity = time.monotonic()

    def reset(self) -> None:
        """Close with SO_LINGER on and 0 s: the IUT gets a RST."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        """Close our end (FIN); idempotent."""
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(self.sock)
        self._selector.close()
        self.sock.close()
        self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ input

    def next_event(self, deadline: float) -> Frame | Closed | None:
        """The next whole PDU, the IUT's close, or None when ``deadline`` passes first."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            if self.closed is not None:
                return self.closed
            if not self._poll(deadline):
                return None

    def peek(self) -> Closed | None:
        """Read what has already arrived (without waiting); the IUT's close if it came."""
        for _ in range(64):  # bounded: at most 64 reads of what is queued now
            if not self._poll(time.monotonic()):
                break
        return self.closed

    def _take_frame(self) -> Frame | None:
        """A whole PDU from the buffer, if there is one (framing by PDU-length, §9.3.1)."""
        if len(self._buffer) < 6:
            return None
        length = _HEADER.unpack_from(self._buffer)[2]
        if length > _MAX_FRAME:
            raise PeerError(f"the IUT sent a PDU-length of {length}: not followed")
        if len(self._buffer) < 6 + length:
            return None
        data = bytes(self._buffer[: 6 + length])
        del self._buffer[: 6 + length]
        return Frame(data, time.monotonic())

    def _poll(self, deadline: float) -> bool:
        """Read what arrives until ``deadline``; False on timeout, True after any input."""
        if self.closed is not None:
            return False
        if self.sock.fileno() < 0:
            raise PeerError("the peer has closed its own end of the transport")
        while not self._selector.select(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                return False
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionResetError:
            self.closed = Closed("rst", time.monotonic(), bytes(self._buffer))
            return True
        except OSError as exc:
            raise PeerError(f"receive failed: {exc!r}") from exc
        if not data:
            self.closed = Closed("fin", time.monotonic(), bytes(self._buffer))
        else:
            self._buffer += data
        return True


class Listener:
    """A listening socket for the IUT to connect to (the IUT as association requestor)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind and listen; ``port`` 0 picks a free one."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.address: Address = self.sock.getsockname()[:2]

    def accept(self, within: float) -> socket.socket:
        """The next incoming connection within ``within`` seconds."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            if not sel.select(within):
                raise PeerError(f"no TCP connection from the IUT within {within} s")
        conn, _ = self.sock.accept()
        return conn

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()
