"""The threaded DULServiceProvider over real loopback sockets: the seed contract, every ending."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from netdicom2.acse import build_rq, negotiate
from netdicom2.actions import SendPDU
from netdicom2.connection import Transition
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError, TimeoutError
from netdicom2.fsm import State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import (
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
    decode,
)
from netdicom2.transport import OutputQueue, split_pdata
from tests.test_transport import NAME, fake_names

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
WAIT = 5.0


def open_fds() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test ends with the file descriptors and threads it started with."""
    fds, threads = open_fds(), threading.active_count()
    yield
    assert threading.active_count() == threads, threading.enumerate()
    assert open_fds() == fds


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (client, server) pair of TCP sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def rq(max_pdu: int = 16384) -> AAssociateRqPDU:
    """An A-ASSOCIATE-RQ proposing Verification."""
    return build_rq("ANY-SCP", "TEST-SCU", [(VERIFICATION, [IMPLICIT_LE])], max_pdu_length=max_pdu)


def ac_for(request: AAssociateRqPDU, max_pdu: int = 16384) -> AAssociateAcPDU:
    """The AC our negotiation helper gives for `request`."""
    answer, _ = negotiate(request, max_pdu_length=max_pdu)
    assert isinstance(answer, AAssociateAcPDU)
    return answer


def read_pdu(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Read exactly one whole PDU (6-byte header + PDU-length) from a raw peer socket."""
    sock.settimeout(timeout)
    header = _read_exact(sock, 6)
    (length,) = struct.unpack(">I", header[2:6])
    return header + _read_exact(sock, length)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    """`size` bytes or AssertionError on EOF."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def assert_closed(sock: socket.socket, timeout: float = WAIT) -> None:
    """The peer closed the connection (EOF or reset)."""
    sock.settimeout(timeout)
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""


def pair_of_providers(
    **acceptor_kwargs: object,
) -> tuple[DULServiceProvider, DULServiceProvider, socket.socket]:
    """An acceptor on an accepted socket and a requestor that will connect to it."""
    listener = socket.create_server(("127.0.0.1", 0))
    requestor = DULServiceProvider(address=listener.getsockname())
    requestor.start()
    requestor.send(rq())
    server, _ = listener.accept()
    acceptor = DULServiceProvider(server, **acceptor_kwargs)  # type: ignore[arg-type]
    acceptor.start()
    return requestor, acceptor, listener


def test_association_echo_data_and_release_end_in_sta1_with_everything_closed() -> None:
    requestor, acceptor, listener = pair_of_providers()
    try:
        indication = acceptor.receive(WAIT)
        assert isinstance(indication, AAssociateRqPDU)
        assert acceptor.state is State.Sta3
        acceptor.send(ac_for(indication))
        confirmation = requestor.receive(WAIT)
        assert isinstance(confirmation, AAssociateAcPDU)
        assert requestor.state is State.Sta6
        pdv = PresentationDataValueItem(1, 0x03, b"\x00\x01" * 8)
        requestor.send(PDataTfPDU([pdv]))
        data = acceptor.receive(WAIT)
        assert isinstance(data, PDataTfPDU)
        assert bytes(data.data_value_items[0].fragment) == b"\x00\x01" * 8
        requestor.send(AReleaseRqPDU())
        assert isinstance(acceptor.receive(WAIT), AReleaseRqPDU)
        acceptor.send(AReleaseRpPDU())
        assert isinstance(requestor.receive(WAIT), AReleaseRpPDU)
        # The acceptor's association is over once the requestor closes (Sta13 + Evt17 → AR-5).
        acceptor.join(WAIT)
        assert not acceptor.is_alive()
        assert acceptor.state is State.Sta1
        assert requestor.state is State.Sta1
        with pytest.raises(ProviderStoppedError):
            acceptor.receive(WAIT)
        assert requestor.stop() is True
        requestor.join(WAIT)
        assert not requestor.is_alive()
    finally:
        requestor.kill()
        acceptor.kill()
        listener.close()


def test_receive_raises_timeout_error_when_nothing_arrives() -> None:
    dul = DULServiceProvider(address=("127.0.0.1", 9))
    dul.start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        dul.receive(0.05)
    assert time.monotonic() - started >= 0.05
    dul.kill()


def test_stop_is_false_mid_association_and_true_when_idle(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    assert acceptor.state is State.Sta2
    assert acceptor.stop() is False  # Sta2: a transport is open, the association is not idle
    client.sendall(rq().encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    assert acceptor.stop() is False
    acceptor.send(AAbortPDU())  # Evt15 in Sta3 → AA-1: A-ABORT, ARTIM, Sta13
    abort = decode(read_pdu(client))
    assert isinstance(abort, AAbortPDU) and abort.source == 0
    client.close()  # Sta13 + Evt17 → AR-5 → Sta1
    acceptor.join(WAIT)
    assert acceptor.state is State.Sta1
    assert acceptor.stop() is True


def test_send_in_a_blank_cell_raises_local_protocol_error_naming_state_and_primitive() -> None:
    dul = DULServiceProvider(address=("127.0.0.1", 9))
    dul.start()
    with pytest.raises(LocalProtocolError) as excinfo:
        dul.send(AReleaseRqPDU())  # Evt11 in Sta1: blank cell
    assert "Sta1" in str(excinfo.value) and "AReleaseRqPDU" in str(excinfo.value)
    assert dul.state is State.Sta1
    dul.kill()


def test_requestor_without_address_is_refused_at_send() -> None:
    dul = DULServiceProvider()
    with pytest.raises(LocalProtocolError, match="address"):
        dul.send(rq())
    dul.kill()


def test_kill_mid_association_sends_a_user_abort_and_closes(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    client.sendall(rq().encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.kill()
    abort = decode(read_pdu(client))
    assert isinstance(abort, AAbortPDU) and abort.source == 0
    assert_closed(client)
    assert not acceptor.is_alive()
    assert acceptor.state is State.Sta1


def test_receive_after_kill_and_send_after_stop_raise_typed_errors() -> None:
    dul = DULServiceProvider(address=("127.0.0.1", 9))
    dul.start()
    dul.kill()
    dul.kill()  # a second kill is harmless
    with pytest.raises(ProviderStoppedError, match="Sta1"):
        dul.receive(WAIT)
    with pytest.raises(ProviderStoppedError):
        dul.send(rq())
    other = DULServiceProvider(address=("127.0.0.1", 9))
    other.start()
    assert other.stop() is True
    with pytest.raises(ProviderStoppedError):
        other.send(rq())
    other.join(WAIT)


@pytest.mark.realtime
def test_acceptor_drops_a_silent_connection_at_artim_not_before(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    artim = 0.3
    started = time.monotonic()
    acceptor = DULServiceProvider(server, artim_timeout=artim)
    acceptor.start()
    assert_closed(client)  # Sta2 + Evt18 → AA-2: close, no PDU
    elapsed = time.monotonic() - started
    assert artim <= elapsed < artim + 0.5
    acceptor.join(WAIT)
    assert acceptor.state is State.Sta1
    with pytest.raises(ProviderStoppedError):
        acceptor.receive(WAIT)  # AA-2 in Sta2 issues no indication


def test_peer_reset_in_sta6_gives_an_a_p_abort_indication(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    request = rq()
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    assert isinstance(decode(read_pdu(client)), AAssociateAcPDU)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST: Sta6 + Evt17 → AA-4
    indication = acceptor.receive(WAIT)
    assert isinstance(indication, AAbortPDU) and indication.source == 2
    acceptor.join(WAIT)
    assert acceptor.state is State.Sta1


def test_unknown_pdu_type_in_sta6_aborts_with_unrecognized_pdu(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    request = rq()
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    read_pdu(client)
    client.sendall(b"\x42\x00\x00\x00\x00\x02\xab\xcd")  # Sta6 + Evt19 → AA-8
    abort = decode(read_pdu(client))
    assert isinstance(abort, AAbortPDU)
    assert (abort.source, abort.reason_diag) == (2, 1)
    indication = acceptor.receive(WAIT)
    assert isinstance(indication, AAbortPDU) and indication.source == 2
    assert acceptor.state is State.Sta13
    client.close()
    acceptor.join(WAIT)


def test_huge_declared_length_is_aborted_at_once_without_allocation(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    client.sendall(b"\x01\x00\xff\xff\xff\xf0")  # an A-ASSOCIATE-RQ announcing ~4 GiB
    abort = decode(read_pdu(client))  # Sta2 + Evt19 → AA-1: source 0 (PS3.8 §5.4 note)
    assert isinstance(abort, AAbortPDU) and abort.source == 0
    assert acceptor.state is State.Sta13
    client.close()
    acceptor.join(WAIT)


def test_connect_refused_gives_an_a_p_abort_indication() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
    dul = DULServiceProvider(address=address)
    dul.start()
    dul.send(rq())  # Sta1 + Evt1 → AE-1 → Sta4; the refused connect is Evt17 → AA-4
    indication = dul.receive(WAIT)
    assert isinstance(indication, AAbortPDU) and indication.source == 2
    assert dul.state is State.Sta1
    dul.kill()


def test_a_host_that_does_not_resolve_is_a_failed_connect_not_a_loop_failure() -> None:
    # A TRANSPORT CONNECT that cannot start (name resolution fails) is Evt17 in Sta4 → AA-4,
    # an A-P-ABORT indication; nothing is raised on the next call (ARCHITECTURE §4).
    dul = DULServiceProvider(address=("no-such-host.invalid", 104))
    dul.start()
    dul.send(rq())
    indication = dul.receive(WAIT)
    assert isinstance(indication, AAbortPDU) and indication.source == 2
    assert dul.state is State.Sta1
    assert dul.stop()
    dul.kill()


def test_outgoing_p_data_is_split_to_the_peer_maximum(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    request = rq(max_pdu=1000)  # the peer (client) accepts P-DATA-TF PDUs of at most 1000 bytes
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    read_pdu(client)
    payload = bytes(range(256)) * 20  # 5120 bytes in one PDV
    acceptor.send(PDataTfPDU([PresentationDataValueItem(1, 0x02, payload)]))
    received = b""
    headers = []
    while len(received) < len(payload):
        raw = read_pdu(client)
        assert len(raw) - 6 <= 1000
        pdu = decode(raw)
        assert isinstance(pdu, PDataTfPDU)
        for item in pdu.data_value_items:
            headers.append(item.control_header)
            received += bytes(item.fragment)
    assert received == payload
    assert headers[-1] == 0x02 and all(h == 0x00 for h in headers[:-1])
    acceptor.kill()


def test_split_pdata_keeps_fragments_even_and_marks_only_the_last() -> None:
    item = PresentationDataValueItem(3, 0x03, b"ab" * 100)
    parts = split_pdata(PDataTfPDU([item]), 50)
    assert all(6 + len(p.data_value_items[0].fragment) <= 50 for p in parts)
    assert all(len(p.data_value_items[0].fragment) % 2 == 0 for p in parts)
    assert [p.data_value_items[0].control_header for p in parts][-1] == 0x03
    assert {p.data_value_items[0].control_header for p in parts[:-1]} == {0x01}
    assert b"".join(bytes(p.data_value_items[0].fragment) for p in parts) == b"ab" * 100


def test_a_peer_that_stops_reading_is_dropped_after_the_send_timeout(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    acceptor = DULServiceProvider(server, send_timeout=0.3)
    acceptor.start()
    request = rq(max_pdu=0)
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    big = PresentationDataValueItem(1, 0x02, b"\x00" * (16 << 20))
    acceptor.send(PDataTfPDU([big]))  # the client never reads: the kernel buffers fill up
    indication = acceptor.receive(WAIT)
    assert isinstance(indication, AAbortPDU) and indication.source == 2
    acceptor.join(WAIT)
    assert acceptor.state is State.Sta1


def test_an_exception_in_the_loop_reaches_the_user_and_leaves_nothing_open(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair

    def broken_observer(transition: Transition) -> None:
        if transition.state is State.Sta2:
            raise RuntimeError("observer bug")

    acceptor = DULServiceProvider(server, observer=broken_observer)
    acceptor.start()
    client.sendall(rq().encode())  # Sta2 + Evt6: the observer raises inside the loop thread
    acceptor.join(WAIT)
    assert not acceptor.is_alive()
    notice = acceptor.receive(WAIT)  # ARCHITECTURE §4: first an A-P-ABORT indication ...
    assert isinstance(notice, AAbortPDU) and notice.source == 2
    with pytest.raises(RuntimeError, match="observer bug"):
        acceptor.receive(WAIT)  # ... then the error itself, re-raised in the user's thread
    assert_closed(client)


def test_threaded_false_runs_the_loop_in_the_callers_thread_and_ends_cleanly(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    threads = threading.active_count()
    acceptor = DULServiceProvider(server, threaded=False)  # never started
    request = rq()
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)  # the loop ran in receive()
    acceptor.send(ac_for(request))  # written at once, in this thread
    assert decode(read_pdu(client)).pdu_type == 0x02
    pdv = PresentationDataValueItem(1, 0x03, b"\x00" * 8)
    client.sendall(PDataTfPDU([pdv]).encode())
    data = acceptor.receive(WAIT)
    assert isinstance(data, PDataTfPDU) and bytes(data.data_value_items[0].fragment) == bytes(8)
    client.sendall(AReleaseRqPDU().encode())
    assert isinstance(acceptor.receive(WAIT), AReleaseRqPDU)
    acceptor.send(AReleaseRpPDU())
    assert decode(read_pdu(client)).pdu_type == 0x06
    client.close()  # Sta13 + Evt17 → AR-5 → Sta1: the one-shot acceptor ends
    with pytest.raises(ProviderStoppedError):
        acceptor.receive(WAIT)
    assert threading.active_count() == threads and not acceptor.is_alive()
    assert acceptor.state is State.Sta1


def test_threaded_false_receive_times_out_and_kill_from_another_thread_releases_it(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server, threaded=False)
    with pytest.raises(TimeoutError):
        acceptor.receive(0.05)  # Sta2: nothing arrives, ARTIM (30 s) not due
    outcome: list[BaseException] = []

    def receiver() -> None:
        try:
            acceptor.receive(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=receiver)
    thread.start()
    acceptor.kill()  # wakes the thread blocked in the loop, ends the association
    thread.join(WAIT)
    assert [type(e) for e in outcome] == [ProviderStoppedError]
    assert acceptor.state is State.Sta1
    assert_closed(client)


def test_a_requestor_with_threaded_false_associates_against_a_threaded_acceptor() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    requestor = DULServiceProvider(address=listener.getsockname(), threaded=False)
    request = rq()
    requestor.send(request)  # AE-1: the connect starts in this thread
    server, _ = listener.accept()
    acceptor = DULServiceProvider(server)
    acceptor.start()
    try:
        assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
        acceptor.send(ac_for(request))
        assert isinstance(requestor.receive(WAIT), AAssociateAcPDU)
        requestor.send(AReleaseRqPDU())
        assert isinstance(acceptor.receive(WAIT), AReleaseRqPDU)
        acceptor.send(AReleaseRpPDU())
        assert isinstance(requestor.receive(WAIT), AReleaseRpPDU)
        assert requestor.state is State.Sta1
    finally:
        requestor.kill()
        acceptor.kill()
        listener.close()


def test_a_large_pdata_is_written_without_copying_and_send_blocks_at_the_high_water_mark(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server, threaded=False, send_timeout=WAIT)
    request = rq(max_pdu=0)
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    read_pdu(client)
    payload = memoryview(bytes(range(256)) * (12 << 12))  # 12 MiB, far over the socket buffers
    received = bytearray()

    def reader() -> None:
        while len(received) < len(payload) + 12:
            received.extend(client.recv(1 << 20))

    thread = threading.Thread(target=reader)
    thread.start()
    acceptor.send(PDataTfPDU([PresentationDataValueItem(1, 0x02, payload)]))  # blocks, pumps
    with pytest.raises(TimeoutError):
        acceptor.receive(0.2)  # the loop runs in calls only: this one writes what is left
    thread.join(WAIT)
    assert bytes(received[12:]) == payload  # the PDV header, then the fragment intact
    acceptor.kill()


def test_output_queue_keeps_order_and_never_copies_a_fragment() -> None:
    """What a full socket does not take waits, as views of the PDU, and leaves in order."""
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    fragment = memoryview(bytes(range(256)) * 4096)  # 1 MiB: more than the socket takes
    pdus = [PDataTfPDU([PresentationDataValueItem(1, 0x00, fragment)]) for _ in range(2)]
    effects = [SendPDU(pdu, parts=pdu.encode_parts()) for pdu in pdus]
    out = OutputQueue()
    try:
        assert out.write(sender, effects[0]) is True  # the socket took part of it
        assert out.write(sender, effects[1]) is True  # queued whole behind the first
        expected = b"".join(effect.data for effect in effects)
        assert 0 < out.size < len(expected)
        # Bounded in time: a peer that reads nothing for send_timeout (30 s) is stalled.
        assert out.deadline is not None
        assert not out.stalled(out.deadline - 1) and out.stalled(out.deadline)
        received = bytearray()
        while out:
            received += receiver.recv(1 << 20)
            out.flush(sender)
        while len(received) < len(expected):
            received += receiver.recv(1 << 20)
        assert received == expected and out.size == 0
        assert out.deadline is None and not out.stalled(float("inf"))
    finally:
        sender.close()
        receiver.close()


def test_output_queue_drop_writes_what_fits_then_forgets() -> None:
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    pdu = AReleaseRqPDU()
    out = OutputQueue()
    try:
        out._add([pdu.encode()], 0)  # as if the socket had refused it
        out.drop(sender)
        assert receiver.recv(64) == pdu.encode()
        assert not out and out.size == 0
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "threaded-false"])
def test_send_deadline_bounds_a_send_to_a_peer_that_reads_a_little_now_and_then(
    tcp_pair: tuple[socket.socket, socket.socket], threaded: bool
) -> None:
    # The "no progress for send_timeout" rule never ends a peer that reads 1 KiB every 0.1 s;
    # the caller's deadline ends the wait as a whole (then the user aborts: Evt15 → AA-1).
    client, server = tcp_pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    acceptor = DULServiceProvider(server, threaded=threaded, send_timeout=WAIT)
    if threaded:
        acceptor.start()
    request = rq(max_pdu=0)
    client.sendall(request.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    acceptor.send(ac_for(request))
    read_pdu(client)
    done = threading.Event()
    taken = [0]

    def trickle() -> None:
        while not done.wait(0.1):
            with contextlib.suppress(OSError):
                taken[0] += len(client.recv(1024))

    thread = threading.Thread(target=trickle)
    thread.start()
    big = PDataTfPDU([PresentationDataValueItem(1, 0x02, bytes(8 << 20))])
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="send deadline"):
            acceptor.send(big, deadline=started + 0.5)
        elapsed = time.monotonic() - started
        assert 0.45 < elapsed < 1.5, f"{elapsed:.2f} s"
        assert taken[0] > 0 and acceptor.state is State.Sta6  # the peer did read, slowly
        acceptor.kill()  # A-ABORT where the socket takes it, then closed at once
        assert acceptor.state is State.Sta1
    finally:
        done.set()
        thread.join(WAIT)


def test_a_requestor_reaches_a_name_whose_first_address_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # TRANSPORT CONNECT to a name (PS3.8 §9.1.2): ::1 refuses, 127.0.0.1 accepts (Evt2 → AE-2).
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        fake_names(monkeypatch, [("::1", port), ("127.0.0.1", port)])
        requestor = DULServiceProvider(address=(NAME, port))
        requestor.start()
        try:
            requestor.send(rq())
            listener.settimeout(WAIT)
            server, _ = listener.accept()
            with server:
                assert decode(read_pdu(server)).pdu_type == 0x01  # the A-ASSOCIATE-RQ
                assert requestor.state is State.Sta5
        finally:
            requestor.kill()
        assert requestor.state is State.Sta1


def test_an_address_that_stays_silent_gives_way_to_the_next_in_its_share_of_the_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener whose accept queue is full drops SYNs: the connect neither completes nor
    # fails. With two addresses it has half of connect_timeout, then the next is tried.
    with (
        socket.create_server(("127.0.0.1", 0), backlog=0) as silent,
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.socket() as filler,
    ):
        filler.connect(silent.getsockname())  # fills the accept queue
        fake_names(
            monkeypatch,
            [("127.0.0.1", silent.getsockname()[1]), ("127.0.0.1", listener.getsockname()[1])],
        )
        requestor = DULServiceProvider(address=(NAME, 104), connect_timeout=1.0)
        requestor.start()
        try:
            started = time.monotonic()
            requestor.send(rq())
            listener.settimeout(WAIT)
            server, _ = listener.accept()
            with server:
                assert decode(read_pdu(server)).pdu_type == 0x01
            assert 0.4 < time.monotonic() - started < 1.0  # its share: half of 1 s
        finally:
            requestor.kill()


def test_output_queue_drop_stops_at_a_partial_write_leaving_no_gap() -> None:
    class Stingy:
        """A socket that takes at most 10 bytes per call (its buffer is nearly full)."""

        def __init__(self) -> None:
            self.written = b""

        def send(self, data: memoryview) -> int:
            self.written += bytes(data[:10])
            return min(10, len(data))

    out = OutputQueue()
    out._add([b"a" * 100, b"b" * 100], 0)
    sock = Stingy()
    out.drop(sock)  # type: ignore[arg-type]
    assert sock.written == b"a" * 10  # never "b"s after a cut: the peer would see a gap
    assert not out and out.size == 0
