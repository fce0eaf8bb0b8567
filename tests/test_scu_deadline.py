"""`store --timeout T` bounds the sending of each data set too (issue: clients always return).

A peer that reads 1 KiB every 0.5 s makes progress often enough that the "reads nothing for
T" rule never drops it; the request's send deadline (T for each 64 MiB of data set or part of
them) ends it: A-ABORT where the socket still takes it, close, one line, exit 1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netdicom2.app_scu import SEND_UNIT, Association, AssociationError, store
from tests.dicomfiles import write_part10
from tests.test_scu_hostile import A_ABORT, P_DATA, ROOT, WAIT, HostileAcceptor, Peer

T = 2.0
SLACK = 1.0  # scheduling on a shared machine
# In-process the bound is tighter: before the send deadline, the requestor returned after
# 2.8-4.1 s here (the no-progress rule fired between two window openings), after it 2.0 s.
TIGHT = 0.6
STARTUP = 1.5  # a new interpreter importing the package, for the command-line test
SIZE = 5 << 20


class Trickle:
    """Reads 1 KiB every 0.5 s until told to stop; then reads the rest at once, till EOF."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.trickled = 0

    def __call__(self, peer: Peer) -> None:
        peer.accept()
        peer.sock.setblocking(False)
        while not self.stop.wait(0.5):
            try:
                data = peer.sock.recv(1024)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            self.trickled += len(data)
            peer.buffer += data
        peer.sock.setblocking(True)
        peer.pump(WAIT)  # what the requestor sent before it closed, parsed into PDUs


def _acceptor(trickle: Trickle) -> HostileAcceptor:
    acceptor = HostileAcceptor(trickle)
    # Small kernel buffers on the peer's side (the data set cannot hide in them) and a
    # network's segment size, not loopback's 64 KiB: each KiB read opens the TCP window again,
    # so the requestor sees the peer make progress (the attack on a real network).
    acceptor.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    acceptor.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    return acceptor


def _check_ending(trickle: Trickle, peer: Peer) -> None:
    """The requestor closed; its last whole PDU is an A-ABORT unless a PDU was cut short."""
    assert trickle.trickled > 0, "the peer never read: the no-progress rule would do"
    assert peer.closed, "the requestor did not close the connection"
    assert P_DATA in peer.types
    if not peer.buffer:  # the stream ends on a PDU boundary: the A-ABORT fitted in
        assert peer.types[-1] == A_ABORT, peer.types[-3:]


def test_store_to_a_peer_that_reads_a_little_every_half_second_returns_in_time(
    tmp_path: Path,
) -> None:
    files = [write_part10(tmp_path / "big.dcm", "1.2.826.0.1.3680043.9.3811.31.1", SIZE)]
    trickle = Trickle()
    acceptor = _acceptor(trickle)
    started = time.monotonic()
    # Either the send deadline ("did not read it ... within 2 s") or, when the kernel showed
    # no progress at all for T, the per-PDU rule ("reads nothing for 2 s") ends it: both at T.
    with pytest.raises(AssociationError, match=r"while the request was sent.* 2 s"):
        store(acceptor.address, files, timeout=T)
    elapsed = time.monotonic() - started
    trickle.stop.set()
    peer = acceptor.join()
    assert elapsed < T + TIGHT, f"{elapsed:.2f} s"
    _check_ending(trickle, peer)


def test_the_command_line_says_one_line_and_exits_1_within_its_timeout(tmp_path: Path) -> None:
    big = write_part10(tmp_path / "big.dcm", "1.2.826.0.1.3680043.9.3811.31.2", SIZE)
    trickle = Trickle()
    acceptor = _acceptor(trickle)
    host, port = acceptor.address
    command = [sys.executable, "-m", "netdicom2", "store", host, str(port), str(big)]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "--timeout", f"{T:g}"],
        capture_output=True,
        text=True,
        timeout=WAIT + 20,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    elapsed = time.monotonic() - started
    trickle.stop.set()
    peer = acceptor.join()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdicom2 store: "), result.stderr
    assert "while the request was sent" in lines[0] and " 2 s" in lines[0]
    assert elapsed < T + SLACK + STARTUP, f"{elapsed:.1f} s"
    _check_ending(trickle, peer)


def test_the_send_limit_is_the_timeout_for_each_64_mib_started() -> None:
    assoc = Association(("127.0.0.1", 9), [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])], timeout=T)
    try:
        assert assoc.send_limit(0) == T
        assert assoc.send_limit(SEND_UNIT) == T
        assert assoc.send_limit(SEND_UNIT + 1) == 2 * T
        assert assoc.send_limit(10 * SEND_UNIT) == 10 * T
    finally:
        assoc.abort()
