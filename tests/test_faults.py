"""The fault-injecting proxy (conformance.faults): each fault does exactly what it says."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from netdicom2.acse import build_rq
from netdicom2.conformance.faults import (
    Corrupt,
    Delay,
    Drop,
    Duplicate,
    Fault,
    FaultProxy,
    HalfClose,
    Split,
    Stall,
    random_faults,
    random_splits,
    sweep_offsets,
)
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.fsm import State
from netdicom2.pdu import AAbortPDU, decode
from tests.hostile import read_exactly

WAIT = 5.0
DATA = bytes(range(256)) * 800  # 204800 bytes: several proxy reads and kernel buffers


pytestmark = pytest.mark.usefixtures("no_leaks")


@contextlib.contextmanager
def proxied(
    faults: list[Fault], **kwargs: object
) -> Iterator[tuple[FaultProxy, socket.socket, socket.socket]]:
    """A proxy with `faults`, a client connected through it and the upstream's accepted end."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        FaultProxy(listener.getsockname(), faults, **kwargs) as proxy,  # type: ignore[arg-type]
    ):
        client = socket.create_connection(proxy.address, timeout=WAIT)
        listener.settimeout(WAIT)
        server, _ = listener.accept()
        server.settimeout(WAIT)
        try:
            yield proxy, client, server
        finally:
            client.close()
            server.close()


def read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the peer's FIN ("fin") or RST ("rst")."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return bytes(data), "rst"
        if not chunk:
            return bytes(data), "fin"
        data += chunk


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """sendall() in a thread (the other end may be reading at the same time); errors ignored."""

    def run() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_without_faults_both_directions_arrive_unchanged() -> None:
    with proxied([]) as (proxy, client, server):
        writer = send_in_background(client, DATA)
        assert read_exactly(server, len(DATA)) == DATA
        writer.join(WAIT)
        server.sendall(DATA[::-1])
        assert read_exactly(client, len(DATA)) == DATA[::-1]
        client.shutdown(socket.SHUT_WR)  # FIN passes through as a half-close
        assert read_to_end(server) == (b"", "fin")
        server.close()
        assert read_to_end(client) == (b"", "fin")
        assert proxy.wait_idle(WAIT)
        (record,) = proxy.records
        assert record.transferred == {"c2s": len(DATA), "s2c": len(DATA)}
        assert record.end == "closed"


@pytest.mark.parametrize("offset", [1, 6, 65535, 65536, 100_001])
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_drop_rst_delivers_exactly_offset_bytes_then_resets_both_ends(
    offset: int, direction: str
) -> None:
    with proxied([Drop(direction, offset, "rst")]) as (proxy, client, server):  # type: ignore[arg-type]
        sender, receiver = (client, server) if direction == "c2s" else (server, client)
        writer = send_in_background(sender, DATA)
        assert read_to_end(receiver) == (DATA[:offset], "rst")
        writer.join(WAIT)
        assert read_to_end(sender)[1] == "rst"
        assert proxy.wait_idle(WAIT)
        (record,) = proxy.records
        assert record.end == "dropped-rst"
        assert record.fired == [Drop(direction, offset, "rst")]  # type: ignore[arg-type]


def test_drop_rst_at_offset_zero_resets_the_fresh_connection() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        FaultProxy(listener.getsockname(), [Drop("c2s", 0)]) as proxy,
    ):
        try:
            client = socket.create_connection(proxy.address, timeout=WAIT)
        except ConnectionResetError:
            pass  # the reset can beat connect()'s own check of SO_ERROR
        else:
            assert read_to_end(client) == (b"", "rst")
            client.close()
        listener.settimeout(WAIT)
        server, _ = listener.accept()
        assert read_to_end(server) == (b"", "rst")
        server.close()
        assert proxy.wait_idle(WAIT)


@pytest.mark.parametrize("offset", [0, 10, 70_000])
def test_drop_fin_delivers_exactly_offset_bytes_then_an_orderly_close(offset: int) -> None:
    with proxied([Drop("c2s", offset, "fin")]) as (proxy, client, server):
        writer = send_in_background(client, DATA)
        assert read_to_end(server) == (DATA[:offset], "fin")
        writer.join(WAIT)
        assert read_to_end(client) == (b"", "fin")
        server.close()
        client.close()
        assert proxy.wait_idle(WAIT)
        assert proxy.records[0].end == "dropped-fin"


def test_drop_beyond_the_end_of_the_stream_never_fires() -> None:
    with proxied([Drop("c2s", 1000)]) as (proxy, client, server):
        client.sendall(b"x" * 10)
        client.shutdown(socket.SHUT_WR)
        assert read_to_end(server) == (b"x" * 10, "fin")
        server.close()
        assert read_to_end(client) == (b"", "fin")
        assert proxy.wait_idle(WAIT)
        assert proxy.records[0].fired == [] and proxy.records[0].end == "closed"


def test_half_close_ends_one_direction_and_keeps_the_other() -> None:
    with proxied([HalfClose("c2s", 10)]) as (proxy, client, server):
        client.sendall(b"a" * 50)
        assert read_to_end(server) == (b"a" * 10, "fin")  # the rest was discarded
        server.sendall(b"still here")
        assert read_exactly(client, 10) == b"still here"
        client.close()
        server.close()
        assert proxy.wait_idle(WAIT)
        assert proxy.records[0].fired == [HalfClose("c2s", 10)]


def test_duplicate_and_corrupt_change_exactly_the_byte_at_their_offset() -> None:
    faults: list[Fault] = [Duplicate("c2s", 3), Corrupt("c2s", 5, 0x0F), Corrupt("s2c", 0)]
    with proxied(faults) as (proxy, client, server):
        client.sendall(b"\x00\x01\x02\x03\x04\x05\x06")
        assert read_exactly(server, 8) == b"\x00\x01\x02\x03\x03\x04\x0a\x06"
        server.sendall(b"\x10\x11")
        assert read_exactly(client, 2) == b"\xef\x11"
        assert sorted(map(repr, proxy.records[0].fired)) == sorted(map(repr, faults))


def test_splits_leave_the_stream_unchanged_and_are_recorded() -> None:
    splits = random_splits(7, "c2s", len(DATA), mean=5000)
    with proxied(list(splits)) as (proxy, client, server):
        writer = send_in_background(client, DATA)
        assert read_exactly(server, len(DATA)) == DATA
        writer.join(WAIT)
        client.close()
        server.close()
        assert proxy.wait_idle(WAIT)
        assert proxy.records[0].fired == splits


@pytest.mark.realtime
def test_delay_holds_the_bytes_from_its_offset_for_its_time() -> None:
    with proxied([Delay("c2s", 4, 0.3)]) as (_, client, server):
        started = time.monotonic()
        client.sendall(b"abcdefgh")
        assert read_exactly(server, 4) == b"abcd"
        first = time.monotonic() - started
        assert read_exactly(server, 4) == b"efgh"
        second = time.monotonic() - started
        print(f"\ndelay 0.3 s: first part after {first:.4f} s, the rest after {second:.4f} s")
        assert first < 0.25 and 0.3 <= second < 1.0


def test_stall_stops_reading_the_sender_so_its_writes_block() -> None:
    with proxied([Stall("c2s", 100)], buffer_limit=1 << 16) as (proxy, client, server):
        sent = fill(client)
        assert sent < 64 << 20  # the window closed: the proxy no longer reads
        assert read_exactly(server, 100) == DATA[:100]
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.recv(1)
        assert proxy.records[0].transferred["c2s"] == 100
        print(f"\nstall at 100: the sender's writes blocked after {sent} bytes")


@pytest.mark.realtime
def test_a_timed_stall_resumes_reading() -> None:
    with proxied([Stall("c2s", 3, 0.2)]) as (_, client, server):
        started = time.monotonic()
        client.sendall(b"abcdef")
        assert read_exactly(server, 6) == b"abcdef"
        assert time.monotonic() - started >= 0.2


def fill(sock: socket.socket, quiet: float = 0.3, cap: int = 64 << 20) -> int:
    """Write until the socket stays unwritable for `quiet` seconds (or `cap` bytes): bytes sent."""
    sent = 0
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while sent < cap and selector.select(quiet):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(DATA)
    return sent


def test_memory_is_bounded_when_the_receiver_never_reads() -> None:
    limit = 1 << 16
    with proxied([], buffer_limit=limit) as (proxy, client, _server):
        sent = fill(client)
        held = proxy.buffered
        print(f"\nreceiver never reads: sender blocked after {sent} bytes, proxy holds {held}")
        assert sent < 64 << 20
        assert 0 < held <= limit + (1 << 16)
        assert proxy.records[0].transferred["c2s"] <= sent


def test_faults_are_reproducible_from_a_seed_and_their_reprs_evaluate() -> None:
    lengths = {"c2s": 300_000, "s2c": 500}
    first = random_faults(42, lengths, count=50)  # type: ignore[arg-type]
    assert first == random_faults(42, lengths, count=50)  # type: ignore[arg-type]
    assert first != random_faults(43, lengths, count=50)  # type: ignore[arg-type]
    namespace = {
        cls.__name__: cls for cls in (Split, Delay, Stall, Drop, HalfClose, Duplicate, Corrupt)
    }
    assert {type(f) for f in first} == set(namespace.values())
    assert [eval(repr(f), dict(namespace)) for f in first] == first
    assert repr(Drop("c2s", 12, "fin")) == "Drop(direction='c2s', offset=12, how='fin')"
    with pytest.raises(ValueError):
        Drop("up", 1)  # type: ignore[arg-type]


def test_sweep_offsets_are_dense_first_then_strided_with_edges_and_the_end() -> None:
    points = sweep_offsets(10_000, dense=100, stride=1000, edges=[5000], width=3)
    assert points[:100] == list(range(100))
    assert {1100, 2100, 4999, 5000, 5003, 10_000} <= set(points)
    assert points == sorted(set(points)) and points[-1] == 10_000


def test_a_plan_per_connection_and_the_connector_hook() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        FaultProxy(listener.getsockname(), lambda i: [Corrupt("c2s", 0, i + 1)]) as proxy,
    ):
        listener.settimeout(WAIT)
        for index in range(3):
            client = proxy.connector()(("192.0.2.1", 104))  # the address is ignored
            server, _ = listener.accept()
            client.sendall(b"\x00")
            assert server.recv(1) == bytes([index + 1])
            client.close()
            server.close()
        assert proxy.wait_idle(WAIT)
        assert [r.faults for r in proxy.records] == [(Corrupt("c2s", 0, i + 1),) for i in range(3)]


def test_an_unreachable_upstream_closes_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as gone:
        address = gone.getsockname()
    with FaultProxy(address) as proxy:
        client = socket.create_connection(proxy.address, timeout=WAIT)
        assert read_to_end(client)[0] == b""
        client.close()
        assert proxy.records[0].end == "upstream-failed"


def test_close_ends_open_connections_and_releases_every_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = FaultProxy(listener.getsockname(), [Stall("s2c", 0)]).start()
        clients = [socket.create_connection(proxy.address, timeout=WAIT) for _ in range(5)]
        servers = [listener.accept()[0] for _ in clients]
        proxy.close()
        proxy.close()  # twice is harmless
        for client in clients:
            assert read_to_end(client)[0] == b""
            client.close()
        for server in servers:
            server.close()
    unstarted = FaultProxy(("127.0.0.1", 9))
    unstarted.close()


def test_wrap_puts_faults_between_an_acceptor_provider_and_its_peer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, FaultProxy(("127.0.0.1", 9)) as proxy:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        accepted, _ = listener.accept()
        # The requestor's PDU-type byte 01H becomes FEH: Sta2 + Evt19 → AA-1 (PS3.8 Table 9-10).
        acceptor = DULServiceProvider(proxy.wrap(accepted, [Corrupt("s2c", 0, 0xFF)]))
        acceptor.start()
        client.sendall(
            build_rq("ANY-SCP", "ME", [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])]).encode()
        )
        abort = decode(read_exactly(client, 10))
        assert isinstance(abort, AAbortPDU) and abort.source == 0
        client.close()
        acceptor.join(WAIT)
        assert acceptor.state is State.Sta1
        assert proxy.wait_idle(WAIT)
