"""Socket plumbing shared by the adapters: TRANSPORT CONNECT, TCP_NODELAY, transition logging."""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from typing import Any

import pytest

from netdicom2.connection import Connection
from netdicom2.dultransport import Dialer, resolve
from netdicom2.transport import IN_PROGRESS, log_transition, set_nodelay, start_connect

NAME = "pacs.netdicom2.test"  # resolved by the fake resolver below, nowhere else
_real_getaddrinfo = socket.getaddrinfo


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


def fake_names(monkeypatch: pytest.MonkeyPatch, answers: list[tuple[str, int]]) -> None:
    """Make NAME resolve to the given (host, port) addresses, in that order."""

    def getaddrinfo(host: str, port: object, *args: Any) -> list[Any]:
        if host != NAME:
            return _real_getaddrinfo(host, port, *args)  # type: ignore[arg-type]
        flags = args[3] if len(args) > 3 else 0
        if flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr_host, addr_port in answers:
            family = socket.AF_INET6 if ":" in addr_host else socket.AF_INET
            sockaddr = (
                (addr_host, addr_port, 0, 0)
                if family == socket.AF_INET6
                else (addr_host, addr_port)
            )
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _dial_to_end(dialer: Dialer) -> socket.socket | None:
    """Run a Dialer as the adapter does: watch each connect, then the next address."""
    sock, err = dialer.start()
    while sock is not None and err:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            assert selector.select(5)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            dialer.failed(err)
            sock, err = dialer.next()
    return sock


def test_resolve_gives_numeric_hosts_at_once_in_their_family() -> None:
    assert resolve(("127.0.0.1", 104), 1.0) == [(socket.AF_INET, ("127.0.0.1", 104))]
    [(family, sockaddr)] = resolve(("::1", 104), 1.0)
    assert family == socket.AF_INET6 and sockaddr[:2] == ("::1", 104)


def test_a_name_that_does_not_resolve_is_a_failed_connect_with_its_reason() -> None:
    dialer = Dialer(("no-such-host.invalid", 104), 5.0, time.monotonic())
    sock, err = dialer.start()
    assert sock is None and err != 0
    assert dialer.failure  # e.g. "[Errno -2] Name or service not known", for the log line


def test_a_name_with_only_an_ipv6_address_connects_over_ipv6(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The old rule (AF_INET6 only when the host contains ':') could never reach it.
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        fake_names(monkeypatch, [("::1", listener.getsockname()[1])])
        sock = _dial_to_end(Dialer((NAME, 0), 5.0, time.monotonic()))
        assert sock is not None
        with sock:
            assert sock.family == socket.AF_INET6 and sock.getblocking() is False
            accepted, _ = listener.accept()
            accepted.close()


def test_each_address_is_tried_in_turn_as_create_connection_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "localhost" resolving to ::1 first, where nothing listens: refused, then 127.0.0.1.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        fake_names(monkeypatch, [("::1", port), ("127.0.0.1", port)])
        sock = _dial_to_end(Dialer((NAME, port), 5.0, time.monotonic()))
        assert sock is not None
        with sock:
            assert sock.family == socket.AF_INET
            accepted, _ = listener.accept()
            accepted.close()


def test_every_address_refused_is_one_failed_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    fake_names(monkeypatch, [("::1", port), ("127.0.0.1", port)])
    dialer = Dialer((NAME, port), 5.0, time.monotonic())
    assert _dial_to_end(dialer) is None
    assert dialer.failure == "ECONNREFUSED" and not dialer.has_more(time.monotonic())


def test_each_address_gets_an_equal_share_of_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        fake_names(monkeypatch, [("127.0.0.1", port), ("127.0.0.1", port), ("127.0.0.1", port)])
        now = time.monotonic()
        dialer = Dialer((NAME, port), 6.0, now)
        sock, _ = dialer.start()
        assert sock is not None
        sock.close()
        # Three addresses: the first has a third of the 6 s, the others wait their turn.
        assert dialer.attempt_deadline == pytest.approx(now + 2.0, abs=0.2)
        assert dialer.has_more(time.monotonic())
