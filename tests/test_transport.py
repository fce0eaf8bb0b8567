"""Socket plumbing shared by the adapters: TRANSPORT CONNECT, TCP_NODELAY, transition logging."""

from __future__ import annotations

import errno
import logging
import selectors
import socket

import pytest

from netdicom2.connection import Connection
from netdicom2.transport import IN_PROGRESS, log_transition, set_nodelay, start_connect


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.timeout(10)
def test_start_connect_to_a_listener_gives_a_connected_nonblocking_socket() -> None:
    # PS3.8 §9.1.2: TRANSPORT CONNECT; on loopback the handshake completes within connect(2).
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock, err = start_connect(listener.getsockname()[:2])
        assert sock is not None
        with sock:
            assert sock.getblocking() is False
            if err in IN_PROGRESS:  # a slow handshake: wait for writability, as the adapter
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    assert selector.select(5)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            assert err == 0
            accepted, _ = listener.accept()
            with accepted:
                assert sock.getpeername() == accepted.getsockname()


def test_start_connect_refused_leaves_nothing_open() -> None:
    # A failed TRANSPORT CONNECT (the adapter's Evt17 in Sta4 → AA-4): no socket is returned.
    sock, err = start_connect(("127.0.0.1", _closed_port()))
    assert sock is None
    assert err == errno.ECONNREFUSED


def test_set_nodelay_on_tcp_and_its_absence_on_unix_sockets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert set_nodelay(listener) is True
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    left, right = socket.socketpair()
    with left, right:
        assert set_nodelay(left) is False  # AF_UNIX has no TCP options


def test_log_transition_writes_one_debug_line_per_table_9_10_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = Connection(requestor=False, observer=log_transition)
    with caplog.at_level(logging.DEBUG, logger="netdicom2.dul"):
        connection.transport_accepted(0.0)  # Sta1 + Evt5 → AE-5 → Sta2
    assert [r.getMessage() for r in caplog.records] == ["Sta1 + Evt5 -> AE-5 -> Sta2"]
