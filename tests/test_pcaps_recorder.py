"""The recording proxy: relay unchanged, write a replayable pcap, bounded memory, clean stop."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import echo, store
from netdicom2.pcaps.codec_check import check_codec
from netdicom2.pcaps.flows import load_capture
from netdicom2.pcaps.part10 import secondary_capture
from netdicom2.pcaps.recorder import RecordingProxy
from netdicom2.pcaps.replay_local import replay_local
from tests.pcaps_helpers import echo_pdus


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    """netdicom2's StorageSCP on 127.0.0.1, any free port."""
    with StorageSCP("127.0.0.1", 0) as server:
        yield server


def _bind(sock: socket.socket) -> int:
    """Bind ``sock`` to a free 127.0.0.1 port without listening; return the port."""
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return port


def _clean(path: Path, port: int, connections: int) -> None:
    """The capture has ``connections`` gap-free connections whose PDUs round-trip."""
    capture = load_capture(path, [port])
    assert len(capture.connections) == connections
    for conn in capture.connections:
        for direction in (conn.rq, conn.ac):
            stream = direction.stream
            assert stream.start_known and not stream.gaps and not stream.retransmitted_bytes
            assert stream.fin_time is not None
    report = check_codec(capture)
    assert report.issues == [] and report.pdus == report.exact > 0


def test_echo_through_the_proxy_is_recorded_and_replays(tmp_path: Path, scp: StorageSCP) -> None:
    out = tmp_path / "echo.pcap"
    with RecordingProxy(("127.0.0.1", 0), scp.address, out) as proxy:
        assert echo(proxy.address) == 0
        assert proxy.wait_finished(1, timeout=10)
    _clean(out, scp.address[1], 1)
    conn = load_capture(out, [scp.address[1]]).connections[0]
    assert conn.acceptor == ("127.0.0.1", scp.address[1])
    assert [r.pdu_type for r in conn.rq.pdus] == [1, 4, 5]
    for role in ("scp", "scu"):
        result = replay_local(conn, role, step_timeout=3.0)
        assert result.ok and not result.findings, result.differences


def test_synthesised_headers_have_valid_checksums_and_acks(tmp_path: Path, scp: StorageSCP) -> None:
    out = tmp_path / "echo.pcap"
    with RecordingProxy(("127.0.0.1", 0), scp.address, out, seed=3) as proxy:
        echo(proxy.address)
        proxy.wait_finished(1, timeout=10)
    packets = rdpcap(str(out))
    assert [p[TCP].flags for p in packets[:3]] == ["S", "SA", "A"]
    next_seq: dict[int, int] = {}
    for packet in packets:
        ip, tcp = packet[IP], packet[TCP]
        for layer in (ip, tcp):
            stored = layer.chksum
            del layer.chksum
            assert IP(bytes(ip))[type(layer)].chksum == stored
        sport, dport = tcp.sport, tcp.dport
        if "A" in tcp.flags and dport in next_seq:
            assert tcp.ack == next_seq[dport]  # acknowledges everything the other side sent
        length = len(tcp.payload) + (1 if "S" in tcp.flags or "F" in tcp.flags else 0)
        next_seq[sport] = (tcp.seq + length) % (1 << 32)
    times = [float(p.time) for p in packets]
    assert times == sorted(times)


def test_several_concurrent_connections(tmp_path: Path, scp: StorageSCP) -> None:
    out = tmp_path / "many.pcap"
    statuses: list[int] = []
    with RecordingProxy(("127.0.0.1", 0), scp.address, out) as proxy:
        threads = [
            threading.Thread(target=lambda: statuses.append(echo(proxy.address))) for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert proxy.wait_finished(5, timeout=10)
    assert statuses == [0] * 5
    _clean(out, scp.address[1], 5)


def test_large_store_with_small_buffers_replays(tmp_path: Path, scp: StorageSCP) -> None:
    """A 2 MB data set through 16 KiB relay buffers: backpressure, then a clean capture."""
    dataset = secondary_capture(tmp_path / "big.dcm", "big", rows=1024, columns=2048)
    out = tmp_path / "store.pcap"
    with RecordingProxy(("127.0.0.1", 0), scp.address, out, buffer_size=16384) as proxy:
        assert store(proxy.address, [dataset]) == [0]
        assert proxy.wait_finished(1, timeout=20)
        assert proxy.bytes_relayed > 2_000_000
    _clean(out, scp.address[1], 1)
    conn = load_capture(out, [scp.address[1]]).connections[0]
    started = time.perf_counter()
    result = replay_local(conn, "scp", step_timeout=5.0)
    rate = conn.pdu_count / (time.perf_counter() - started)
    assert result.ok, result.differences
    print(f"local replay of {conn.pdu_count} PDUs: {rate:,.0f} PDUs/s")


def test_refused_upstream_is_recorded_as_a_reset(tmp_path: Path) -> None:
    out = tmp_path / "refused.pcap"
    # Bound but not listening: connections are refused, and no other test can take the port.
    with (
        socket.socket() as bound,
        RecordingProxy(("127.0.0.1", 0), ("127.0.0.1", _bind(bound)), out) as proxy,
    ):
        # The proxy resets us as soon as the upstream refuses: maybe before connect() returns.
        with (
            contextlib.suppress(ConnectionError),
            socket.create_connection(proxy.address, timeout=5) as client,
        ):
            client.sendall(echo_pdus()[0])
            assert client.recv(10) == b""
        proxy.wait_finished(1, timeout=10)
    flags = [str(p[TCP].flags) for p in rdpcap(str(out))]
    assert flags == ["S", "RA"]


def test_client_reset_is_recorded(tmp_path: Path, scp: StorageSCP) -> None:
    out = tmp_path / "reset.pcap"
    with RecordingProxy(("127.0.0.1", 0), scp.address, out) as proxy:
        client = socket.create_connection(proxy.address, timeout=5)
        client.sendall(echo_pdus()[0])
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ)
        assert selector.select(5)  # the A-ASSOCIATE-AC came back through the proxy
        selector.close()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        assert proxy.wait_finished(1, timeout=10)
    capture = load_capture(out, [scp.address[1]])
    conn = capture.connections[0]
    assert conn.rq.stream.rst_time is not None
    assert [r.pdu_type for r in conn.ac.pdus] == [2]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_record_command_stops_cleanly_on_signal(
    tmp_path: Path, scp: StorageSCP, signum: int
) -> None:
    out = tmp_path / "cli.pcap"
    forward = f"{scp.address[0]}:{scp.address[1]}"
    command = [
        sys.executable,
        "-m",
        "netdicom2",
        "record",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        forward,
        "--out",
        str(out),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            port = int(line.split()[2].split(":")[1].rstrip(","))
            assert echo(("127.0.0.1", port)) == 0
            process.send_signal(signum)
            # The capture is complete and summarised; the status still says it was interrupted.
            assert process.wait(timeout=20) == 128 + signum
            assert "1 connections" in process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
    _clean(out, scp.address[1], 1)
