"""`echo` and `store` always return: scripted hostile acceptors on loopback (issue: clients).

Each acceptor answers the A-ASSOCIATE-RQ and then misbehaves in one way: it drips or floods
P-DATA instead of a response, never answers the A-RELEASE-RQ, announces a Maximum Length no
PDV fits in, or answers with a command set that cannot be used. The requestor must return
within its timeout (plus a small slack), with one AssociationError and an A-ABORT on the wire.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netdicom2.acse import negotiate
from netdicom2.app_scu import AssociationError, echo, store
from netdicom2.dimse import (
    CommandSet,
    c_echo_rq,
    c_echo_rsp,
    c_store_rsp,
    decode_command,
    encode_command,
)
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAssociateRqPDU, PDataTfPDU, decode
from tests.dicomfiles import write_part10

TIMEOUT = 1.0
SLACK = 1.0  # process scheduling on a shared machine; the bug was "still running at 90 s"
WAIT = 10.0
ROOT = Path(__file__).resolve().parents[1]
A_ABORT, A_RELEASE_RQ, P_DATA = 0x07, 0x05, 0x04


class Peer:
    """The acceptor's end of one connection: whole PDUs in, raw bytes out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.pdus: list[tuple[int, bytes]] = []
        self.types: list[int] = []  # every PDU type the requestor sent
        self.closed = False
        self.send_failed = False

    def pump(self, wait: float, *, until_pdu: bool = False) -> None:
        """Read what arrives within `wait` seconds (or until a whole PDU came), split in PDUs."""
        end = time.monotonic() + wait
        while not self.closed:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                return
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.buffer += data
            while len(self.buffer) >= 6:
                length = struct.unpack(">I", self.buffer[2:6])[0]
                if len(self.buffer) < 6 + length:
                    break
                pdu = bytes(self.buffer[: 6 + length])
                del self.buffer[: 6 + length]
                self.pdus.append((pdu[0], pdu))
                self.types.append(pdu[0])
            if until_pdu and self.pdus:
                return

    def next_pdu(self, wait: float = WAIT) -> bytes:
        """The next whole PDU from the requestor (b"" once it has gone)."""
        end = time.monotonic() + wait
        while not self.pdus and not self.closed and time.monotonic() < end:
            self.pump(end - time.monotonic(), until_pdu=True)
        return self.pdus.pop(0)[1] if self.pdus else b""

    def send(self, data: bytes) -> bool:
        """Send; False once the requestor has gone (what it sent before stays readable)."""
        if self.send_failed or self.closed:
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            self.send_failed = True
        return not self.send_failed

    def accept(self, max_length: int | None = None) -> None:
        """Read the A-ASSOCIATE-RQ, answer an AC (its Maximum Length patched when given)."""
        rq = decode(self.next_pdu())
        assert isinstance(rq, AAssociateRqPDU), rq
        ac = negotiate(rq)[0].encode()
        if max_length is not None:  # sub-item 51H, length 4 (PS3.8 Annex D.1)
            at = ac.index(b"\x51\x00\x00\x04") + 4
            ac = ac[:at] + struct.pack(">I", max_length) + ac[at + 4 :]
        self.send(ac)

    def command_pdv(self, data: bytes, control: int = 0x03) -> bytes:
        return PDataTfPDU([PresentationDataValueItem(1, control, data)]).encode()


Script = Callable[[Peer], None]


class HostileAcceptor:
    """Accepts one connection and runs a script on it in a thread; then records till EOF."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.script = script
        self.peer: Peer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(WAIT)
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        finally:
            self.listener.close()
        self.peer = peer = Peer(sock)
        try:
            self.script(peer)
            peer.pump(WAIT)  # until the requestor closes
        finally:
            sock.close()

    def join(self) -> Peer:
        self.thread.join(WAIT + 5)
        assert not self.thread.is_alive()
        assert self.peer is not None
        return self.peer


def _until_closed(peer: Peer, pdu: bytes, interval: float) -> None:
    """Send `pdu` every `interval` seconds (0: as fast as possible) until the requestor leaves."""
    end = time.monotonic() + 30
    while time.monotonic() < end and peer.send(pdu):
        peer.pump(interval)
        if A_ABORT in peer.types:
            return


def drip_data_set(peer: Peer) -> None:
    """A data-set PDV instead of the response, again and again (never last)."""
    peer.accept()
    peer.next_pdu()  # the request
    _until_closed(peer, peer.command_pdv(b"\0" * 64, control=0x00), 0.2)


def drip_command_fragments(peer: Peer) -> None:
    """A response command set that never ends: a 2-byte fragment every 0.2 s, never last."""
    peer.accept()
    peer.next_pdu()
    _until_closed(peer, peer.command_pdv(b"\0\0", control=0x01), 0.2)


def flood_data_set(peer: Peer) -> None:
    """Data-set PDVs as fast as the socket takes them."""
    peer.accept()
    peer.next_pdu()
    _until_closed(peer, peer.command_pdv(b"\0" * 16000, control=0x00) * 16, 0.0)


def flood_wrong_responses(peer: Peer) -> None:
    """C-ECHO-RSPs for a message that was never sent, as fast as possible."""
    peer.accept()
    peer.next_pdu()
    rsp = encode_command(c_echo_rsp(c_echo_rq(999)))
    _until_closed(peer, peer.command_pdv(rsp) * 64, 0.0)


def no_release_answer(peer: Peer) -> None:
    """Answers each C-ECHO and C-STORE with status 0000H, never the A-RELEASE-RQ."""
    peer.accept()
    request: CommandSet | None = None
    while True:
        pdu = peer.next_pdu()
        if not pdu or pdu[0] != P_DATA:
            peer.pump(WAIT)  # an A-RELEASE-RQ (or the A-ABORT): silence
            return
        pdata = decode(pdu)
        assert isinstance(pdata, PDataTfPDU)
        for item in pdata.data_value_items:
            if item.is_command and item.is_last:
                request = decode_command(bytes(item.fragment))
                if request.command_field != 0x0030:
                    continue  # a C-STORE-RQ: the answer follows its data set
            elif not item.is_last:
                continue
            assert request is not None
            echoed = request.command_field == 0x0030
            rsp = c_echo_rsp(request) if echoed else c_store_rsp(request)
            peer.send(peer.command_pdv(encode_command(rsp)))


def max_length_one(peer: Peer) -> None:
    """An A-ASSOCIATE-AC whose Maximum Length Received is 1 (no PDV fits)."""
    peer.accept(max_length=1)


def malformed_response(peer: Peer) -> None:
    """A response command set whose first element runs past its end."""
    peer.accept()
    peer.next_pdu()
    peer.send(peer.command_pdv(b"\x00\x00\x00\x01\xff\xff\x00\x00garbage!"))


def slow_answers(peer: Peer) -> None:
    """Each answer just inside the per-PDU timeout: AC, then the response, then the release."""
    rq = decode(peer.next_pdu())
    assert isinstance(rq, AAssociateRqPDU)
    answers = [
        negotiate(rq)[0].encode(),
        peer.command_pdv(encode_command(c_echo_rsp(c_echo_rq(1)))),
        b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # A-RELEASE-RP
    ]
    for answer in answers:
        peer.pump(TIMEOUT * 0.7)  # within the per-PDU timeout, not within the exchange's
        if peer.closed or not peer.send(answer) or A_ABORT in peer.types:
            return
        peer.next_pdu()


SCRIPTS = {
    "drip-data-set": drip_data_set,
    "drip-command-fragments": drip_command_fragments,
    "flood-data-set": flood_data_set,
    "flood-wrong-responses": flood_wrong_responses,
    "no-release-answer": no_release_answer,
    "max-length-1": max_length_one,
    "malformed-response": malformed_response,
}
# What the one error line must say, for echo and for store.
WORDS = {
    "drip-data-set": ("data set where a response was due",) * 2,
    "drip-command-fragments": ("no response within 1 s",) * 2,
    "flood-data-set": ("data set where a response was due",) * 2,
    "flood-wrong-responses": ("C-ECHO-RSP for message 999", "command field 8030H, not 8001H"),
    "no-release-answer": ("no A-RELEASE-RP within 1 s",) * 2,
    "max-length-1": ("Maximum Length Received is 1",) * 2,
    "malformed-response": ("response bad element",) * 2,
}


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except AssociationError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.parametrize("script", list(SCRIPTS), ids=list(SCRIPTS))
def test_echo_returns_within_its_timeout_and_aborts(script: str) -> None:
    acceptor = HostileAcceptor(SCRIPTS[script])
    error, elapsed = _timed(lambda: echo(acceptor.address, timeout=TIMEOUT))
    peer = acceptor.join()
    assert isinstance(error, AssociationError), f"{script}: echo returned without an error"
    assert WORDS[script][0] in str(error)
    assert elapsed < TIMEOUT + SLACK, f"{script}: {elapsed:.1f} s"
    assert peer.types[-1] == A_ABORT, f"{script}: the requestor sent {peer.types[-3:]}"


@pytest.mark.parametrize("script", list(SCRIPTS), ids=list(SCRIPTS))
def test_store_returns_within_its_timeout_and_aborts(script: str, tmp_path: Path) -> None:
    files = [write_part10(tmp_path / "a.dcm", "1.2.826.0.1.3680043.9.3811.30.1", 3000)]
    acceptor = HostileAcceptor(SCRIPTS[script])
    error, elapsed = _timed(lambda: store(acceptor.address, files, timeout=TIMEOUT))
    peer = acceptor.join()
    assert isinstance(error, AssociationError), f"{script}: store returned without an error"
    assert WORDS[script][1] in str(error)
    assert elapsed < TIMEOUT + SLACK, f"{script}: {elapsed:.1f} s"
    assert peer.types[-1] == A_ABORT, f"{script}: the requestor sent {peer.types[-3:]}"


def test_echo_bounds_the_whole_exchange_not_only_each_pdu() -> None:
    acceptor = HostileAcceptor(slow_answers)
    error, elapsed = _timed(lambda: echo(acceptor.address, timeout=TIMEOUT))
    acceptor.join()
    assert isinstance(error, AssociationError)
    assert "within" in str(error)
    assert elapsed < TIMEOUT + SLACK


def test_echo_succeeds_with_answers_inside_the_time() -> None:
    def prompt(peer: Peer) -> None:
        peer.accept()
        peer.next_pdu()
        peer.send(peer.command_pdv(encode_command(c_echo_rsp(c_echo_rq(1)))))
        assert peer.next_pdu()[0] == A_RELEASE_RQ
        peer.send(b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00")

    acceptor = HostileAcceptor(prompt)
    assert echo(acceptor.address, timeout=TIMEOUT) == 0
    assert acceptor.join().types == [0x01, P_DATA, A_RELEASE_RQ]


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ("max-length-1", "Maximum Length Received is 1"),
        ("malformed-response", "response"),
        ("no-release-answer", "A-RELEASE-RP"),
        ("drip-command-fragments", "within 1 s"),
    ],
)
def test_the_command_line_says_one_line_and_exits_1(script: str, words: str) -> None:
    acceptor = HostileAcceptor(SCRIPTS[script])
    host, port = acceptor.address
    result = subprocess.run(
        [sys.executable, "-m", "netdicom2", "echo", host, str(port), "--timeout", str(TIMEOUT)],
        capture_output=True,
        text=True,
        timeout=WAIT + 20,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acceptor.join()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdicom2 echo: "), result.stderr
    assert words in lines[0]


def test_store_to_a_peer_that_stops_reading_returns_within_its_timeout(tmp_path: Path) -> None:
    files = [write_part10(tmp_path / "big.dcm", "1.2.826.0.1.3680043.9.3811.30.2", 8 << 20)]

    def never_reads(peer: Peer) -> None:
        peer.accept()
        time.sleep(TIMEOUT + SLACK + 1)  # reads nothing: our socket buffers fill up

    acceptor = HostileAcceptor(never_reads)
    error, elapsed = _timed(lambda: store(acceptor.address, files, timeout=TIMEOUT))
    acceptor.join()
    assert isinstance(error, AssociationError)
    assert "while the request was sent" in str(error)
    assert elapsed < TIMEOUT + SLACK, f"{elapsed:.1f} s"
