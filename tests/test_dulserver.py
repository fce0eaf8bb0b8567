"""DULServer: many acceptor associations in one selectors loop (one thread, no hand-offs)."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from netdicom2.acse import negotiate
from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import Association
from netdicom2.dimse import VERIFICATION_SOP_CLASS, c_echo_rq
from netdicom2.dulserver import ENDED, ERROR, IDLE, SHUTDOWN, Channel, DULServer
from netdicom2.exceptions import ProviderStoppedError
from netdicom2.fsm import State
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRqPDU, AReleaseRpPDU, AReleaseRqPDU
from tests.hostile import association_rq, echo_pdata

WAIT = 5.0
TOLERANCE = 1.0  # seconds a timer may fire late on a shared, noisy machine
CONTEXTS = [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])]


class Recorder:
    """A service user that accepts, answers the release, and raises on P-DATA if told to."""

    def __init__(self, server: Server, channel: Channel) -> None:
        self.server = server
        self.channel = channel
        self.seen: list[str] = []

    def indication(self, primitive: PDU) -> None:
        """Record the primitive's type; answer RQ with AC and RELEASE-RQ with RP."""
        self.seen.append(type(primitive).__name__)
        if isinstance(primitive, AAssociateRqPDU):
            self.channel.send(negotiate(primitive)[0])
        elif isinstance(primitive, AReleaseRqPDU):
            self.channel.send(AReleaseRpPDU())
        elif self.server.fail_on_data and not isinstance(primitive, AAbortPDU):
            raise RuntimeError("a bug in the service user")

    def closed(self, outcome: str) -> None:
        """Record how the connection ended."""
        self.server.endings.append((outcome, self.seen))
        self.server.ended.set()


class Server(DULServer):
    """A DULServer on 127.0.0.1 recording every ending."""

    def __init__(self, *, fail_on_data: bool = False, **kwargs: float) -> None:
        super().__init__(socket.create_server(("127.0.0.1", 0)), **kwargs)  # type: ignore[arg-type]
        self.fail_on_data = fail_on_data
        self.endings: list[tuple[str, list[str]]] = []
        self.ended = threading.Event()
        self.channels_seen: list[Channel] = []

    def new_handler(self, channel: Channel) -> Recorder:
        """A Recorder; the channel is kept for tests that inspect it afterwards."""
        self.channels_seen.append(channel)
        return Recorder(self, channel)


@contextlib.contextmanager
def running(**kwargs: float | bool) -> Iterator[Server]:
    """A started Server, shut down on exit."""
    server = Server(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One whole PDU from a blocking socket (type, body); (0, b"") at EOF."""
    header = _read_exactly(sock, 6)
    if len(header) < 6:
        return 0, b""
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer at EOF."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def connect(address: tuple[str, int]) -> socket.socket:
    """A blocking client socket with a bounded wait for every read."""
    return socket.create_connection(address, timeout=WAIT)


def associated(address: tuple[str, int]) -> socket.socket:
    """A client that sent an A-ASSOCIATE-RQ and got its AC (type 02H)."""
    sock = connect(address)
    sock.sendall(association_rq())
    assert read_pdu(sock)[0] == 0x02
    return sock


def test_one_thread_serves_every_association(no_leaks: None) -> None:
    with StorageSCP("127.0.0.1", 0) as scp:
        threads = threading.active_count()
        held = [Association(scp.address, CONTEXTS, timeout=WAIT) for _ in range(20)]
        for assoc in held:
            assoc.associate()
        assert scp.active == 20
        for assoc in held:
            assoc.send_message(assoc.context_for(VERIFICATION_SOP_CLASS), c_echo_rq(1))
            assert assoc.receive_command().status == 0x0000
        assert threading.active_count() == threads  # 20 associations, no thread more
        for assoc in held:
            assoc.release()
        assert scp.wait_idle(WAIT, connections=20)
    assert (scp.stats.released, scp.stats.echoes, scp.stats.active) == (20, 20, 0)


def test_pdus_of_one_segment_are_answered_in_order(no_leaks: None) -> None:
    """C-ECHO-RQ and A-RELEASE-RQ in one write: C-ECHO-RSP (AR-7 in Sta8), then the RP."""
    with StorageSCP("127.0.0.1", 0) as scp, associated(scp.address) as sock:
        sock.sendall(echo_pdata() + AReleaseRqPDU().encode())
        assert [read_pdu(sock)[0] for _ in range(2)] == [0x04, 0x06]
        sock.close()
        assert scp.wait_idle(WAIT, connections=1)
    assert (scp.stats.echoes, scp.stats.released) == (1, 1)


def test_a_pdata_sent_before_our_ac_is_an_unexpected_pdu(no_leaks: None) -> None:
    """RQ and P-DATA in one write: the P-DATA meets Sta3 (Evt10 → AA-8, source 2, reason 2)."""
    with StorageSCP("127.0.0.1", 0) as scp, connect(scp.address) as sock:
        sock.sendall(association_rq() + echo_pdata())
        pdu_type, body = read_pdu(sock)
        assert (pdu_type, body[2], body[3]) == (0x07, 2, 2)  # no AC: Evt7 in Sta13 is blank
        sock.close()
        assert scp.wait_idle(WAIT, connections=1)
    stats = scp.stats
    assert (stats.provider_aborted, stats.associations, stats.errors, stats.echoes) == (1, 0, 0, 0)


def test_an_answer_crossing_the_peers_abort_is_dropped_without_error(no_leaks: None) -> None:
    """C-ECHO-RQ and A-ABORT in one write: AA-3 ends it before the answer (a blank cell)."""
    with StorageSCP("127.0.0.1", 0) as scp, associated(scp.address) as sock:
        sock.sendall(echo_pdata() + AAbortPDU(source=0).encode())
        assert read_pdu(sock) == (0, b"")  # AA-3: closed, no C-ECHO-RSP
        assert scp.wait_idle(WAIT, connections=1)
    assert (scp.stats.aborted, scp.stats.errors, scp.stats.unclean) == (1, 0, 0)


def test_a_failing_service_user_aborts_its_association_only(no_leaks: None) -> None:
    with running(fail_on_data=True) as server:
        with associated(server.address) as bystander, associated(server.address) as sock:
            sock.sendall(echo_pdata())
            pdu_type, body = read_pdu(sock)
            assert (pdu_type, body[2]) == (0x07, 0)  # A-ABORT, source 0 (AA-1)
            assert server.ended.wait(WAIT)
            bystander.sendall(AReleaseRqPDU().encode())
            assert read_pdu(bystander)[0] == 0x06  # the other association is untouched
        assert server.wait_idle(WAIT, connections=2)
    assert sorted(outcome for outcome, _ in server.endings) == [ENDED, ERROR]


def test_an_idle_association_is_aborted_after_idle_timeout(no_leaks: None) -> None:
    """PS3.8 §9.1.4 Note 2: the application's own limit, not ARTIM: A-ABORT, then closed."""
    with running(idle_timeout=0.3) as server:
        with associated(server.address) as sock:
            started = time.monotonic()
            assert read_pdu(sock)[0] == 0x07
            waited = time.monotonic() - started
            assert read_pdu(sock) == (0, b"")
        assert server.wait_idle(WAIT, connections=1)
    assert 0.3 <= waited < 0.3 + TOLERANCE
    assert server.endings == [(IDLE, ["AAssociateRqPDU"])]


def test_artim_closes_a_connection_that_sends_nothing(no_leaks: None) -> None:
    """PS3.8 §9.1.5, Sta2 + Evt18 → AA-2: closed, no indication, no service user made."""
    with running(artim_timeout=0.3) as server:
        with connect(server.address) as sock:
            started = time.monotonic()
            assert read_pdu(sock) == (0, b"")
            waited = time.monotonic() - started
        assert server.wait_idle(WAIT, connections=1)
    assert 0.3 <= waited < 0.3 + TOLERANCE
    assert server.endings == []


def test_artim_closes_sta13_when_the_peer_keeps_the_connection_after_the_release() -> None:
    """AR-4 starts ARTIM in Sta13; Evt18 → AA-2 closes the transport the peer left open."""
    with running(artim_timeout=0.3) as server:
        with associated(server.address) as sock:
            sock.sendall(AReleaseRqPDU().encode())
            assert read_pdu(sock)[0] == 0x06
            started = time.monotonic()
            assert read_pdu(sock) == (0, b"")
            waited = time.monotonic() - started
        assert server.wait_idle(WAIT, connections=1)
    assert waited < 0.3 + TOLERANCE
    assert server.endings == [(ENDED, ["AAssociateRqPDU", "AReleaseRqPDU"])]


def test_shutdown_aborts_established_associations(no_leaks: None) -> None:
    server = Server()
    server.start()
    with associated(server.address) as sock:
        server.shutdown()
        assert read_pdu(sock)[0] == 0x07  # AA-1 on Evt15
        assert read_pdu(sock) == (0, b"")
    assert server.endings == [(SHUTDOWN, ["AAssociateRqPDU"])]


def test_shutdown_waits_for_a_loop_run_by_another_thread(no_leaks: None) -> None:
    server = Server()
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    with associated(server.address):
        pass  # the loop is running: shutdown() must not close its selector under it
    server.shutdown()
    loop.join(WAIT)
    assert not loop.is_alive()


def test_shutdown_before_serving_releases_everything(no_leaks: None) -> None:
    server = Server()
    server.shutdown()
    server.serve_forever()  # returns at once: shut down already
    assert server.endings == []


def test_a_channel_refuses_primitives_after_its_end() -> None:
    with running() as server:
        with associated(server.address) as sock:
            sock.sendall(AReleaseRqPDU().encode())
            assert read_pdu(sock)[0] == 0x06
        assert server.wait_idle(WAIT, connections=1)
    (channel,) = server.channels_seen
    assert channel.state is State.Sta1 and channel.finished
    with pytest.raises(ProviderStoppedError, match="Sta1"):
        channel.send(AReleaseRpPDU())


def test_accepted_sockets_have_tcp_nodelay(no_leaks: None) -> None:
    """Each PDU leaves in its own segment at once: no Nagle delay on accepted connections."""
    with running() as server, associated(server.address) as sock:
        (channel,) = server.channels_seen
        assert channel.sock is not None
        assert channel.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.sendall(AReleaseRqPDU().encode())
        assert read_pdu(sock)[0] == 0x06


def test_transitions_are_logged_at_debug(no_leaks: None, caplog: pytest.LogCaptureFixture) -> None:
    """`netdicom2 scp -vv`: one line per Table 9-10 transition, as the provider writes them."""
    caplog.set_level(logging.DEBUG, logger="netdicom2.dul")
    with running() as server:
        with associated(server.address) as sock:
            sock.sendall(AReleaseRqPDU().encode())
            assert read_pdu(sock)[0] == 0x06
        assert server.wait_idle(WAIT, connections=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "netdicom2.dul"]
    assert lines[:3] == [
        "Sta1 + Evt5 -> AE-5 -> Sta2",
        "Sta2 + Evt6 -> AE-6 -> Sta3",
        "Sta3 + Evt7 -> AE-7 -> Sta6",
    ]
    assert "Sta6 + Evt12 -> AR-2 -> Sta8" in lines and "Sta8 + Evt14 -> AR-4 -> Sta13" in lines
