"""A recording proxy: relay a modality's DICOM connections to their PACS and write a pcap.

For sites where tcpdump is not an option. The proxy listens, connects each accepted client to
the forward address, relays both directions unchanged, and writes what it relays as packets
with synthesised Ethernet/IPv4 (or IPv6)/TCP headers: a three-way handshake when the upstream
connection is up, data segments with consistent sequence and acknowledgement numbers, FIN or
RST as each side ends. The client's real address is the source and the forward address the
destination, so the capture looks like the direct connection to the PACS and reads in
Wireshark and in ``netdicom2 replay``.

Memory is bounded: each direction of each connection buffers at most ``buffer_size`` bytes
(reading stops while the other side is slow: backpressure), and packets go straight to the
file. One selectors loop serves every connection; it never sleeps.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PcapSink", "RecordingProxy"]

log = logging.getLogger("netdicom2.pcaps.recorder")

Endpoint = tuple[str, int]
Connector = Callable[[Endpoint], socket.socket]

_SEGMENT = 32768  # payload bytes per synthesised segment (below the 65535-byte IP limit)
_MASK = 0xFFFFFFFF
_CLIENT_MAC = "02:00:00:00:00:01"
_SERVER_MAC = "02:00:00:00:00:02"


def _address(host: str, v6: bool) -> str:
    """``host`` as an address of the chosen family (IPv4 mapped into IPv6 when needed)."""
    addr = ipaddress.ip_address(host)
    if v6 and addr.version == 4:
        return f"::ffff:{addr}"
    return str(addr)


class _Flow:
    """The synthesised TCP state of one relayed connection (RFC 9293 §3.4 numbering)."""

    def __init__(
        self, sink: PcapSink, client: Endpoint, server: Endpoint, rng: random.Random
    ) -> None:
        self.sink = sink
        v6 = ":" in client[0] or ":" in server[0]
        self.v6 = v6
        self.hosts = (_address(client[0], v6), _address(server[0], v6))
        self.ports = (client[1], server[1])
        self.next_seq = [rng.getrandbits(32), rng.getrandbits(32)]  # client, server
        self.ip_id = [rng.getrandbits(16), rng.getrandbits(16)]
        self.finished = [False, False]

    def _emit(self, side: int, flags: str, payload: bytes = b"", *, ack: bool = True) -> None:
        """Write one segment sent by ``side`` (0 client, 1 server)."""
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw

        other = 1 - side
        macs = (_CLIENT_MAC, _SERVER_MAC)
        if self.v6:
            ip: Any = IPv6(src=self.hosts[side], dst=self.hosts[other])
        else:
            ip = IP(src=self.hosts[side], dst=self.hosts[other], id=self.ip_id[side], flags="DF")
            self.ip_id[side] = (self.ip_id[side] + 1) & 0xFFFF
        tcp = TCP(
            sport=self.ports[side],
            dport=self.ports[other],
            flags=flags,
            seq=self.next_seq[side] & _MASK,
            ack=self.next_seq[other] & _MASK if ack else 0,
            window=65535,
        )
        packet = Ether(src=macs[side], dst=macs[other]) / ip / tcp
        if payload:
            packet = packet / Raw(payload)
        self.sink.write(packet)

    def open(self) -> None:
        """SYN, SYN-ACK, ACK: the three-way handshake (RFC 9293 §3.5)."""
        self._emit(0, "S", ack=False)
        self.next_seq[0] += 1
        self._emit(1, "SA")
        self.next_seq[1] += 1
        self._emit(0, "A")

    def refused(self) -> None:
        """SYN answered by RST-ACK: the forward address refused the connection."""
        self._emit(0, "S", ack=False)
        self.next_seq[0] += 1
        self._emit(1, "RA")
        self.finished = [True, True]

    def data(self, side: int, payload: bytes) -> None:
        """Data sent by ``side``, cut into segments."""
        view = memoryview(payload)
        for start in range(0, len(view), _SEGMENT):
            piece = bytes(view[start : start + _SEGMENT])
            self._emit(side, "PA", piece)
            self.next_seq[side] += len(piece)

    def fin(self, side: int) -> None:
        """``side`` closed its direction: FIN, then the other side's ACK of it."""
        if self.finished[side]:
            return
        self._emit(side, "FA")
        self.next_seq[side] += 1
        self.finished[side] = True
        self._emit(1 - side, "A")

    def rst(self, side: int) -> None:
        """``side`` reset the connection."""
        if not all(self.finished):
            self._emit(side, "RA")
        self.finished = [True, True]


class PcapSink:
    """Streams synthesised packets into a pcap file (scapy's PcapWriter, Ethernet link type)."""

    def __init__(self, path: Path, *, seed: int | None = None) -> None:
        from scapy.utils import PcapWriter

        self._writer = PcapWriter(str(path), linktype=1, sync=False)
        self._rng = random.Random(seed)
        self._last = 0.0
        self.packets = 0

    def flow(self, client: Endpoint, server: Endpoint) -> _Flow:
        """A new connection's synthesised TCP state."""
        return _Flow(self, client, server, self._rng)

    def write(self, packet: Any) -> None:
        """Timestamp (never decreasing) and write one packet."""
        self._last = max(time.time(), self._last + 1e-6)
        packet.time = self._last
        self._writer.write(packet)
        self.packets += 1

    def flush(self) -> None:
        """Push buffered packets to the file."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._writer.close()


class _Relay:
    """One client connection and its upstream connection, with a bounded buffer each way."""

    def __init__(self, proxy: RecordingProxy, client: socket.socket, peer: Endpoint) -> None:
        self.proxy = proxy
        self.socks: list[socket.socket | None] = [client, None]  # 0 client, 1 upstream
        self.peer = peer
        self.out = [bytearray(), bytearray()]  # bytes waiting to be written TO side i
        self.eof = [False, False]  # side i sent FIN
        self.shut = [False, False]  # we shut down writing towards side i
        self.connecting = True
        self.deadline = time.monotonic() + proxy.connect_timeout
        self.flow: _Flow | None = None
        client.setblocking(False)

    def interest(self, side: int) -> int:
        """Selector events wanted on ``side``'s socket."""
        if side == 1 and self.connecting:
            return selectors.EVENT_WRITE
        mask = 0
        if (
            not self.connecting
            and not self.eof[side]
            and len(self.out[1 - side]) < self.proxy.buffer_size
        ):
            mask |= selectors.EVENT_READ
        if self.out[side]:
            mask |= selectors.EVENT_WRITE
        return mask

    def connected(self) -> None:
        """The upstream connection is up: record the handshake and start relaying."""
        self.connecting = False
        self.flow = self.proxy.sink.flow(self.peer, self.proxy.forward_ip)
        self.flow.open()

    def read(self, side: int) -> bool:
        """Read from ``side``; False when the relay is over (reset)."""
        sock = self.socks[side]
        assert sock is not None and self.flow is not None
        room = self.proxy.buffer_size - len(self.out[1 - side])
        try:
            data = sock.recv(max(1, min(room, 1 << 16)))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.flow.rst(side)
            return False
        if not data:
            self.eof[side] = True
            self.flow.fin(side)
            self._maybe_shutdown(1 - side)
            return True
        self.flow.data(side, data)
        self.out[1 - side] += data
        self.proxy.bytes_relayed += len(data)
        return True

    def write(self, side: int) -> bool:
        """Write pending bytes to ``side``; False when the relay is over (reset)."""
        sock = self.socks[side]
        assert sock is not None
        try:
            sent = sock.send(self.out[side])
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            if self.flow is not None:
                self.flow.rst(side)
            return False
        del self.out[side][:sent]
        self._maybe_shutdown(side)
        return True

    def _maybe_shutdown(self, side: int) -> None:
        """Pass a FIN on to ``side`` once everything before it was written."""
        sock = self.socks[side]
        if self.eof[1 - side] and not self.out[side] and not self.shut[side] and sock is not None:
            self.shut[side] = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    @property
    def done(self) -> bool:
        """Both directions ended and drained."""
        return all(self.eof) and not any(self.out)

    def close(self, *, abort: bool = False) -> None:
        """Close both sockets (RST when ``abort``), recording how the connection ended."""
        if self.flow is not None and abort:
            self.flow.rst(0)
        elif self.flow is not None:
            self.flow.fin(0)
            self.flow.fin(1)
        for sock in self.socks:
            if sock is None:
                continue
            if abort:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        self.socks = [None, None]


class RecordingProxy:
    """Listen, relay every connection to ``forward``, record both directions into ``out``."""

    def __init__(
        self,
        listen: Endpoint,
        forward: Endpoint,
        out: Path,
        *,
        connect: Connector | None = None,
        buffer_size: int = 256 * 1024,
        connect_timeout: float = 10.0,
        max_connections: int = 256,
        seed: int | None = None,
    ) -> None:
        self.forward = forward
        self.forward_ip: Endpoint = (
            str(socket.getaddrinfo(forward[0], forward[1], type=socket.SOCK_STREAM)[0][4][0]),
            forward[1],
        )
        self.buffer_size = buffer_size
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._connector = connect
        # Listen first: when the address is taken, no empty capture file is left behind.
        self._listener = socket.create_server(listen, backlog=64)
        self._listener.setblocking(False)
        try:
            self.sink = PcapSink(out, seed=seed)
        except BaseException:
            self._listener.close()
            raise
        self.address: Endpoint = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._relays: set[_Relay] = set()
        self._progress = threading.Condition()
        self.connections = 0
        self.finished = 0
        self.bytes_relayed = 0

    # ------------------------------------------------------------------ control

    def start(self) -> RecordingProxy:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="record-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler); waits for a started thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def wait_finished(self, connections: int, timeout: float) -> bool:
        """Wait until ``connections`` relayed connections have ended (False on timeout)."""
        with self._progress:
            return self._progress.wait_for(lambda: self.finished >= connections, timeout)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop

    def serve_forever(self) -> None:
        """Relay until stop(): one selectors loop, woken by I/O, a wakeup or a connect deadline."""
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                deadlines = [r.deadline for r in self._relays if r.connecting]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for key, mask in selector.select(timeout):
                    if key.data is None:
                        self._accept(selector)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        relay, side = key.data
                        if relay in self._relays:
                            self._event(selector, relay, side, mask)
                now = time.monotonic()
                for relay in [r for r in self._relays if r.connecting and now >= r.deadline]:
                    log.warning("connect to %s:%d timed out", *self.forward)
                    self._refused(selector, relay)
                self.sink.flush()
        finally:
            for relay in list(self._relays):
                self._drop(selector, relay, abort=False)
            selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            self.sink.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        """Accept pending clients and start their upstream connections."""
        for _ in range(64):  # bounded per wakeup; the rest stay in the backlog
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            if len(self._relays) >= self.max_connections:
                log.warning("too many connections; refusing %s", peer)
                client.close()
                continue
            self.connections += 1
            relay = _Relay(self, client, (str(peer[0]), int(peer[1])))
            self._relays.add(relay)
            self._connect(selector, relay)

    def _connect(self, selector: selectors.BaseSelector, relay: _Relay) -> None:
        """Open the upstream connection (non-blocking, or through the connect hook)."""
        if self._connector is not None:
            try:
                upstream = self._connector(self.forward)
            except OSError as exc:
                log.warning("connect to %s:%d failed: %s", *self.forward, exc)
                self._refused(selector, relay)
                return
            upstream.setblocking(False)
            relay.socks[1] = upstream
            relay.connected()
        else:
            family = socket.AF_INET6 if ":" in self.forward_ip[0] else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            upstream.connect_ex(self.forward_ip)
            relay.socks[1] = upstream
        with contextlib.suppress(OSError):
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._update(selector, relay)

    def _event(self, selector: selectors.BaseSelector, relay: _Relay, side: int, mask: int) -> None:
        """Handle readiness of one socket of a relay."""
        if side == 1 and relay.connecting:
            sock = relay.socks[1]
            assert sock is not None
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                log.warning(
                    "cannot connect to %s:%d (%s): client %s:%d reset",
                    *self.forward,
                    os.strerror(error),
                    *relay.peer,
                )
                self._refused(selector, relay)
                return
            relay.connected()
        else:
            alive = True
            if mask & selectors.EVENT_WRITE and relay.out[side]:
                alive = relay.write(side)
            if alive and mask & selectors.EVENT_READ:
                alive = relay.read(side)
            if not alive:
                self._drop(selector, relay, abort=True)
                return
            if relay.done:
                self._drop(selector, relay, abort=False)
                return
        self._update(selector, relay)

    def _update(self, selector: selectors.BaseSelector, relay: _Relay) -> None:
        """Re-arm both sockets: a socket with nothing to do leaves the selector until it has."""
        for side in (0, 1):
            sock = relay.socks[side]
            if sock is None:
                continue
            mask = relay.interest(side)
            try:
                key: selectors.SelectorKey | None = selector.get_key(sock)
            except KeyError:
                key = None
            if not mask:
                if key is not None:
                    selector.unregister(sock)
            elif key is None:
                selector.register(sock, mask, (relay, side))
            elif key.events != mask:
                selector.modify(sock, mask, (relay, side))

    def _refused(self, selector: selectors.BaseSelector, relay: _Relay) -> None:
        """The upstream connection failed: record SYN + RST, reset the client."""
        relay.connecting = False
        relay.flow = self.sink.flow(relay.peer, self.forward_ip)
        relay.flow.refused()
        self._drop(selector, relay, abort=True)

    def _drop(self, selector: selectors.BaseSelector, relay: _Relay, *, abort: bool) -> None:
        """Unregister and close a relay."""
        for sock in relay.socks:
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
        if not abort and not relay.done:
            for side in (0, 1):  # shutting down: write what we can, without waiting
                sock = relay.socks[side]
                if sock is not None and relay.out[side]:
                    with contextlib.suppress(OSError):
                        sock.send(relay.out[side])
        relay.close(abort=abort)
        self._relays.discard(relay)
        with self._progress:
            self.finished += 1
            self._progress.notify_all()
