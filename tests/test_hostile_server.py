"""DULServer under hostile peers: bounded memory, contained failures, fair limits (PS3.8 §9.1.4)."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdicom2.acse import build_rq, negotiate
from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import echo
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.dulserver import ERROR, Channel, DULServer
from netdicom2.exceptions import ServerFailedError
from netdicom2.items import PresentationContextItemRQ
from netdicom2.pdu import PDU, AAssociateRqPDU, AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU
from tests.hostile import association_rq, read_pdu

WAIT = 5.0
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
RJ_LOCAL_LIMIT = bytes.fromhex("03 00 00000004 00 02 03 02")  # PS3.8 Table 9-21: 2/3/2


def rss_kib() -> int:
    """This process' resident memory now (KiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    """Descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


class User:
    """Accepts every RQ, answers RELEASE-RQ, counts P-DATA bytes."""

    def __init__(self, server: Server, channel: Channel) -> None:
        self.server = server
        self.channel = channel

    def indication(self, primitive: PDU) -> None:
        """Answer what needs an answer; count P-DATA bytes."""
        if isinstance(primitive, AAssociateRqPDU):
            self.channel.send(negotiate(primitive, max_pdu_length=0)[0])
        elif isinstance(primitive, AReleaseRqPDU):
            self.channel.send(AReleaseRpPDU())
        elif isinstance(primitive, PDataTfPDU):
            self.server.pdata_bytes += sum(len(v.fragment) for v in primitive.data_value_items)

    def closed(self, outcome: str) -> None:
        """Record the outcome."""
        self.server.outcomes.append(outcome)


class Server(DULServer):
    """A DULServer on 127.0.0.1 that accepts everything."""

    def __init__(self, **kwargs: object) -> None:
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        super().__init__(listener, **kwargs)  # type: ignore[arg-type]
        self.outcomes: list[str] = []
        self.pdata_bytes = 0
        self.evictions = 0

    def new_handler(self, channel: Channel) -> User:
        """A User."""
        return User(self, channel)

    def evicted(self, channel: Channel) -> None:
        """Count evictions."""
        self.evictions += 1


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[Server]:
    """A started Server, shut down on exit."""
    server = Server(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def until(predicate: object, what: str, timeout: float = WAIT) -> None:
    """Wait (bounded, on an Event) until predicate() is true."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


def connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    """A blocking client from ``source`` (any 127.x.y.z is loopback on Linux)."""
    return socket.create_connection(address, timeout=WAIT, source_address=(source, 0))


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset), reading what is left."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def associate_and_release(address: tuple[str, int]) -> bool:
    """A well-behaved association: RQ → AC, RELEASE-RQ → RELEASE-RP (PS3.8 §7.1, §7.2)."""
    with connect(address) as sock:
        sock.sendall(association_rq())
        assert read_pdu(sock)[0] == 0x02
        sock.sendall(AReleaseRqPDU().encode())
        return read_pdu(sock)[0] == 0x06


# ---------------------------------------------------------------- memory follows bytes received


def test_announced_lengths_do_not_cost_memory_and_artim_gives_it_back(no_leaks: None) -> None:
    # The attack, in process: headers announcing 256 KiB (within the limit) then two
    # single bytes, read one by one. Before: each PDU's whole body was allocated at once.
    base_rss, base_fds = rss_kib(), open_fds()
    with running(artim_timeout=3.0) as server:  # room to connect 300 on a loaded machine
        socks = []
        for _ in range(300):
            sock = connect(server.address)
            sock.sendall(struct.pack(">BBI", 0x01, 0, 256 * 1024))
            socks.append(sock)
        until(lambda: server.active == 300, "300 connections")
        for byte in (b"\x00", b"\x01"):
            for sock in socks:
                sock.send(byte)
            time.sleep(0.05)  # lets the loop read each byte on its own
        until(lambda: server.buffered >= 300 * 8, "the bytes to arrive")
        grown = rss_kib() - base_rss
        assert server.buffered <= 300 * 256  # at most the first small buffer each
        assert grown < 40_000, f"{grown} KiB for 2,400 bytes received"
        assert server.wait_idle(15, connections=300), "ARTIM did not close them"
        for sock in socks:
            sock.close()
        assert server.buffered == 0
    assert open_fds() <= base_fds + 1
    assert rss_kib() - base_rss < 40_000


def test_complete_large_requests_are_freed_after_artim(no_leaks: None) -> None:
    # 200 RQs of 256 KiB of item junk: refused after a bounded scan, memory back after ARTIM.
    base_rss = rss_kib()
    with running(artim_timeout=0.5) as server:
        socks = []
        for _ in range(200):
            sock = connect(server.address)
            sock.sendall(struct.pack(">BBI", 0x01, 0, 256 * 1024) + bytes(256 * 1024))
            socks.append(sock)
        assert server.wait_idle(15, connections=200), "ARTIM did not close them"
        for sock in socks:
            sock.close()
        assert server.buffered == 0
    assert rss_kib() - base_rss < 40_000, "the bodies' memory was not given back"


def test_max_pdu_zero_streams_a_giant_pdata_through_the_server() -> None:
    # PS3.8 Annex D.1 with maximum 0 (unlimited): a 3 GB P-DATA-TF is handed over in pieces.
    with running(max_pdu_length=0) as server:
        sock = connect(server.address)
        sock.sendall(association_rq())
        assert read_pdu(sock)[0] == 0x02
        announced = 3_000_000_000
        sock.sendall(struct.pack(">BBIIBB", 0x04, 0, announced, announced - 4, 1, 0x00))
        base = rss_kib()
        chunk = bytes(1 << 20)
        for _ in range(24):
            sock.sendall(chunk)
        until(lambda: server.pdata_bytes >= 23 << 20, "the pieces to be indicated")
        assert server.buffered <= 2 << 20
        assert rss_kib() - base < 40_000
        sock.close()


def test_the_budget_sheds_the_connection_holding_most(caplog: pytest.LogCaptureFixture) -> None:
    # max_buffered bounds what all connections hold together: the largest holder goes first.
    caplog.set_level(logging.WARNING, "netdicom2.server")
    with running(max_buffered=1 << 20) as server:
        small = []
        for _ in range(14):  # each holds 60,000 to 120,000 bytes (its buffer at most doubles)
            sock = connect(server.address)
            sock.sendall(struct.pack(">BBI", 0x01, 0, 200_000) + bytes(60_000))
            small.append(sock)
        until(lambda: server.buffered >= 14 * 60_000, "the small ones to arrive")
        big = connect(server.address)
        big.sendall(struct.pack(">BBI", 0x01, 0, 256 * 1024))
        for _ in range(25):
            with contextlib.suppress(OSError):
                big.sendall(bytes(10_000))
        assert closed_by_peer(big)
        until(lambda: server.active == 14, "the shedding")  # only the largest holder went
        assert server.buffered <= server.max_buffered
        assert "over the budget" in caplog.text
        assert associate_and_release(server.address)  # the server serves on
        for sock in (*small, big):
            sock.close()


# ---------------------------------------------------------------------------- loud failures


def test_an_exception_while_serving_one_connection_is_contained(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import netdicom2.transport as transport

    real = transport.receive

    def failing(sock: socket.socket, connection: object) -> object:
        with contextlib.suppress(OSError):
            if b"VICTIM" in sock.recv(64, socket.MSG_PEEK):  # its calling AE title
                raise MemoryError("no memory for this one")
        return real(sock, connection)  # type: ignore[arg-type]

    monkeypatch.setattr(transport, "receive", failing)
    caplog.set_level(logging.ERROR, "netdicom2.server")
    with running() as server:
        victim = connect(server.address)
        victim.sendall(association_rq(calling="VICTIM"))
        assert closed_by_peer(victim)  # that connection alone: aborted, closed
        until(lambda: ERROR in server.outcomes or server.active == 0, "the abort")
        assert associate_and_release(server.address)  # the others are served
        assert server.failure is None
        victim.close()
    assert "failed, aborting it: MemoryError" in caplog.text


def test_a_loop_failure_stops_the_server_loudly(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[BaseException] = []
    told = threading.Event()

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        told.set()

    server = Server(on_failure=on_failure)
    address = server.address
    held = connect(address)
    held.sendall(association_rq())
    server.start()
    assert read_pdu(held)[0] == 0x02

    def broken(timeout: float | None = None) -> list[object]:
        raise MemoryError("the selector could not allocate")

    server._selector.select = broken  # type: ignore[method-assign, assignment]
    with socket.create_connection(address, timeout=WAIT):  # wakes the loop: it fails
        pass
    assert told.wait(WAIT)
    assert isinstance(failures[0], MemoryError) and server.failure is failures[0]
    assert closed_by_peer(held)  # every association aborted, not left hanging
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT)  # and the listener is closed
    with pytest.raises(ServerFailedError, match="MemoryError"):
        server.wait(WAIT)
    with pytest.raises(ServerFailedError) as info:
        server.shutdown()
    assert isinstance(info.value.__cause__, MemoryError)
    assert "server loop failed" in caplog.text
    held.close()


def test_serve_forever_raises_its_failure_to_the_caller() -> None:
    # DULServer used as a library in the caller's own thread: the failure is raised there.
    server = Server()
    address = server.address

    def broken(timeout: float | None = None) -> list[object]:
        raise OSError(9, "Bad file descriptor")

    server._selector.select = broken  # type: ignore[method-assign, assignment]
    with pytest.raises(ServerFailedError, match="Bad file descriptor"):
        server.serve_forever()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT)
    with pytest.raises(ServerFailedError):
        server.shutdown()


# ------------------------------------------------------------------------------ fair limits


def test_one_address_cannot_hold_every_association() -> None:
    with running(max_per_address=2) as server:
        first = [connect(server.address) for _ in range(3)]
        for sock in first[:2]:
            sock.sendall(association_rq())
            assert read_pdu(sock)[0] == 0x02
        first[2].sendall(association_rq())
        assert read_pdu(first[2]) == RJ_LOCAL_LIMIT  # PS3.8 Table 9-21: 2/3/2
        other = connect(server.address, source="127.0.0.2")
        other.sendall(association_rq())
        assert read_pdu(other)[0] == 0x02  # another address is not locked out
        first[0].close()
        until(
            lambda: server.admission.per_address.get("127.0.0.1") == 1, "the slot to be given back"
        )
        again = connect(server.address)
        again.sendall(association_rq())
        assert read_pdu(again)[0] == 0x02
        for sock in (*first, other, again):
            sock.close()


def test_eviction_drops_the_oldest_silent_connection_before_a_sender() -> None:
    with running(max_pending=3) as server:
        silent_a = connect(server.address)
        until(lambda: server.active == 1, "A")
        sender = connect(server.address)
        rq = association_rq()
        sender.sendall(rq[:10])  # its request is on its way
        until(lambda: len(server.admission.receiving) == 1, "the sender's first bytes")
        silent_c = connect(server.address)
        until(lambda: server.active == 3, "C")
        d = connect(server.address)  # over max_pending: the oldest silent one (A) goes
        assert closed_by_peer(silent_a)
        e = connect(server.address)  # then C, still not the sender
        assert closed_by_peer(silent_c)
        sender.sendall(rq[10:])
        assert read_pdu(sender)[0] == 0x02
        assert server.evictions == 2
        for sock in (silent_a, silent_c, sender, d, e):
            sock.close()


def churning(server: Server) -> list[socket.socket]:
    """Silent connections through max_pending for 0.2 s and until 20 were evicted (bounded)."""
    start = time.monotonic()
    churn: list[socket.socket] = []
    while time.monotonic() < start + 0.2 or server.evictions < 20:
        assert time.monotonic() < start + WAIT, "the churn evicted nothing"
        churn.append(connect(server.address))
        if len(churn) > 30:
            churn.pop(0).close()
    return churn


def test_under_churn_a_slow_requestor_is_not_evicted() -> None:
    # A requestor that takes 0.2 s to send its RQ while silent connections churn through a
    # small max_pending: the silent ones go, it is answered.
    with running(max_pending=10) as server:
        sender = connect(server.address)
        rq = association_rq()
        sender.sendall(rq[:20])
        until(lambda: len(server.admission.receiving) == 1, "the sender's first bytes")
        churn = churning(server)
        sender.sendall(rq[20:])
        assert read_pdu(sender)[0] == 0x02
        for sock in (sender, *churn):
            sock.close()


def test_under_churn_from_one_address_a_silent_client_from_another_survives() -> None:
    # A client silent for 0.2 s before its RQ, while another address churns through a small
    # max_pending: the crowd's own connections are evicted, not the lone client.
    with running(max_pending=10) as server:
        lone = connect(server.address, source="127.0.0.2")
        until(lambda: server.active == 1, "the lone client")
        churn = churning(server)
        lone.sendall(association_rq())
        assert read_pdu(lone)[0] == 0x02
        for sock in (lone, *churn):
            sock.close()


# ------------------------------------------------------------------------------- starvation


def four_mib_request() -> bytes:
    """The issue's A-ASSOCIATE-RQ: 80,655 presentation contexts, all ID 1 (~4 MiB)."""
    rq = build_rq("ANY-SCP", "STARVER", [(VERIFICATION, [IMPLICIT])])
    app, _, info = rq.variable_items
    pcs = [PresentationContextItemRQ(1, VERIFICATION, [IMPLICIT])] * 80_655
    return AAssociateRqPDU("ANY-SCP", "STARVER", [app, *pcs, info]).encode()


def test_echo_answers_under_32_looping_4mib_requesters() -> None:
    data = four_mib_request()
    stop = threading.Event()
    sent = [0]

    def requester(address: tuple[str, int]) -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(address, timeout=2) as sock:
                    sock.sendall(data)
                    sent[0] += 1
                    sock.recv(65536)
            except OSError:
                pass

    with StorageSCP("127.0.0.1", 0) as scp:
        threads = [threading.Thread(target=requester, args=(scp.address,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        try:
            until(lambda: sent[0] >= 32, "the requesters to start")
            latencies = []
            for _ in range(4):
                start = time.monotonic()
                assert echo(scp.address, timeout=10.0) == 0
                latencies.append(time.monotonic() - start)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert max(latencies) < 2.0, latencies  # before: 0 of 4 within 10 s
        assert scp.stats.associations == 4  # none of the 4 MiB requests was indicated


LOOP_FAILS = """
import sys
from netdicom2 import cli, dulserver
def failing(self):
    raise MemoryError("no memory for the loop")
dulserver.DULServer._next_deadline = failing  # the loop's first turn fails
sys.exit(cli.main(["scp", "--port", "0"]))
"""


def test_netdicom2_scp_exits_non_zero_when_its_loop_fails() -> None:
    # No half-alive server: the loop's failure reaches the main thread (SIGINT by default,
    # as no on_failure is set), serve_forever() raises it, the CLI prints one line, exit 1.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", LOOP_FAILS],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "server loop failed, no longer serving: MemoryError" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "netdicom2 scp: the server stopped: server loop failed: MemoryError: " + (
        "no memory for the loop"
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_acceptor_providers_hold_what_arrived_not_what_was_announced() -> None:
    # The same attack on DULServiceProvider acceptors (one per connection): before, each
    # allocated the announced body (200 providers: +600 MB).
    base = rss_kib()
    providers, peers = [], []
    for _ in range(100):
        ours, theirs = socket.socketpair()
        provider = DULServiceProvider(ours, artim_timeout=5.0)
        provider.start()
        theirs.sendall(struct.pack(">BBI", 0x01, 0, 256 * 1024) + b"\x00")
        providers.append(provider)
        peers.append(theirs)
    time.sleep(0.1)  # lets each provider read the header and the first byte on its own
    for peer in peers:
        peer.sendall(b"\x01")
    until(lambda: all(p.connection.buffered for p in providers), "the bytes to arrive")
    assert sum(p.connection.buffered for p in providers) <= 100 * 256
    grown = rss_kib() - base
    assert grown < 12_000, f"{grown} KiB (the announced bodies would be 25,600 KiB)"
    for provider in providers:
        provider.kill()
    for peer in peers:
        peer.close()


def test_a_refused_pdu_is_aborted_with_a_clear_reason(caplog: pytest.LogCaptureFixture) -> None:
    # PS3.8 Table 9-10 Sta2 + Evt19 → AA-1: A-ABORT at once, and one line saying why.
    caplog.set_level(logging.INFO, "netdicom2.server")
    with running() as server:
        sock = connect(server.address)
        sock.sendall(struct.pack(">BBI", 0x01, 0, 4 * 1024 * 1024 - 6) + b"\x00\x01")
        assert read_pdu(sock) == bytes.fromhex("07 00 00000004 00 00 00 00")  # A-ABORT (AA-1)
        until(lambda: "PDU too large" in caplog.text, "the log line")
        sock.close()
    assert "PDU from 127.0.0.1 refused (Evt19)" in caplog.text


# ---------------------------------------------------------------------------- scp counters


def test_storage_scp_counts_per_address_refusals_and_shed_connections() -> None:
    # SCPStats says why clients were turned away: RJ 2/3/2 at max_per_address (PS3.8
    # Table 9-21) and connections aborted for holding the most of max_buffered.
    from netdicom2.app_scp import StorageSCP

    with StorageSCP("127.0.0.1", 0, max_per_address=1, max_buffered=1 << 20) as scp:
        held = connect(scp.address)
        held.sendall(association_rq())
        assert read_pdu(held)[0] == 0x02  # A-ASSOCIATE-AC: the address holds 1 now
        second = connect(scp.address)
        second.sendall(association_rq())
        rj = read_pdu(second)
        assert rj[0] == 0x03 and rj[-3:] == bytes([2, 3, 2])  # rejected-transient, 2/3/2
        until(lambda: scp.stats.rejected_per_address == 1, "the refusal to be counted")
        partial = []  # unfinished A-ASSOCIATE-RQ bodies, together past the 1 MiB budget
        for size in (230_000, 230_000, 230_000, 230_000, 255_000):
            sock = connect(scp.address)
            sock.sendall(struct.pack(">BBI", 0x01, 0, 256 * 1024) + bytes(size))
            partial.append(sock)
        until(lambda: scp.stats.shed == 1, "the shedding to be counted")
        assert scp.buffered <= scp.max_buffered
        # One holder was aborted: its socket reads EOF (or a reset); the others are still open.
        ready, _, _ = select.select(partial, [], [], WAIT)
        assert len(ready) >= 1 and closed_by_peer(ready[0])
        for sock in (held, second, *partial):
            sock.close()
    assert scp.stats.rejected_over_limit == 0
