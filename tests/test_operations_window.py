"""Asynchronous Operations Window (PS3.7 D.3.3.3): negotiation, and pipelined C-STOREs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netdicom2.acse import build_rq, negotiate, operations_window, window_granted
from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import Association, AssociationError, store
from netdicom2.dimse import (
    CommandSet,
    c_store_rsp,
    decode_command,
    encode_command,
)
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import TimeoutError
from netdicom2.items import AsynchronousOperationsWindowSubItem, PresentationDataValueItem
from netdicom2.pdu import (
    AAssociateAcPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
    decode,
)
from tests.dicomfiles import write_part10

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
WAIT = 10.0
# A requestor keeping to its window sends nothing more in this time; one that does not would
# have its next C-STORE-RQ here well within it (loopback, a few KiB).
QUIET = 0.3


def _rq(max_operations: int = 1) -> AAssociateRqPDU:
    return build_rq("ANY-SCP", "ME", [(VERIFICATION, [IMPLICIT_LE])], max_operations=max_operations)


# ----------------------------------------------------------------------------- negotiation


def test_no_window_is_proposed_by_default_and_none_is_answered() -> None:
    rq = _rq()
    assert operations_window(rq) is None
    ac, _ = negotiate(rq, max_operations_performed=8)
    assert isinstance(ac, AAssociateAcPDU)
    assert operations_window(ac) is None  # synchronous: 1/1 without the sub-item


def test_a_proposed_window_survives_encoding_in_the_rq() -> None:
    rq = decode(_rq(max_operations=16).encode())
    assert isinstance(rq, AAssociateRqPDU)
    assert operations_window(rq) == (16, 1)
    assert rq.user_information is not None
    assert len(rq.user_information.all(AsynchronousOperationsWindowSubItem)) == 1


@pytest.mark.parametrize(
    ("proposed", "limit", "granted"),
    [
        (16, 0, 16),  # the acceptor sets no limit: what the requestor proposed
        (16, 4, 4),  # the acceptor's limit
        (2, 4, 2),  # never more than proposed
        (0, 8, 8),  # the requestor proposes unlimited: the acceptor's limit
        (0, 0, 0),  # both unlimited
        (16, 1, 1),  # an acceptor that performs one at a time
    ],
)
def test_the_acceptor_grants_the_smaller_window_zero_meaning_unlimited(
    proposed: int, limit: int, granted: int
) -> None:
    ac, _ = negotiate(_rq(max_operations=proposed), max_operations_performed=limit)
    assert isinstance(ac, AAssociateAcPDU)
    decoded = decode(ac.encode())
    assert isinstance(decoded, AAssociateAcPDU)
    # The second value: operations the requestor performs for us; this acceptor invokes none
    # beyond one at a time.
    assert operations_window(decoded) == (granted, 1)


def _ac_with(window: tuple[int, int] | None) -> AAssociateAcPDU:
    """Our AC to an RQ proposing Verification, its 53H replaced by `window` (None: without)."""
    ac, _ = negotiate(_rq(max_operations=8), max_operations_performed=0)
    assert isinstance(ac, AAssociateAcPDU) and ac.user_information is not None
    info = ac.user_information
    info.sub_items = [
        s for s in info.sub_items if type(s) is not AsynchronousOperationsWindowSubItem
    ]
    if window is not None:
        info.sub_items.append(AsynchronousOperationsWindowSubItem(*window))
    return ac


@pytest.mark.parametrize(
    ("window", "proposed", "granted"),
    [
        (None, 8, 1),  # no 53H in the AC: synchronous
        ((3, 1), 8, 3),  # the acceptor's limit
        ((0, 1), 8, 8),  # unlimited from the acceptor: what we proposed
        ((16, 1), 8, 8),  # an acceptor granting more than proposed: never more than proposed
        ((16, 1), 1, 1),  # we proposed none: an unasked 53H changes nothing
    ],
)
def test_the_window_a_requestor_keeps_under_an_ac(
    window: tuple[int, int] | None, proposed: int, granted: int
) -> None:
    assert window_granted(_ac_with(window), proposed) == granted


def test_an_association_refuses_an_unbounded_or_invalid_window() -> None:
    for bad in (0, -1, 0x10000):
        with pytest.raises(ValueError, match="max_operations"):
            Association(("127.0.0.1", 9), [(VERIFICATION, [IMPLICIT_LE])], max_operations=bad)


def test_window_sizes_outside_uint16_are_refused_before_anything_is_sent() -> None:
    for bad in (-1, 0x10000):
        with pytest.raises(ValueError, match="max_operations"):
            _rq(max_operations=bad)
        with pytest.raises(ValueError, match="max_operations_performed"):
            negotiate(_rq(max_operations=4), max_operations_performed=bad)
        with pytest.raises(ValueError, match="max_operations"):
            StorageSCP("127.0.0.1", 0, max_operations=bad)


# ----------------------------------------------------------------------------- against StorageSCP


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Seven small Secondary Capture files, each a different size."""
    return [
        write_part10(tmp_path / f"{i}.dcm", f"1.2.826.0.1.3680043.9.3811.77.{i}", 1000 + 517 * i)
        for i in range(7)
    ]


@pytest.mark.parametrize(("proposed", "limit", "window"), [(8, 0, 8), (8, 3, 3), (1, 0, 1)])
def test_the_window_granted_by_storage_scp(proposed: int, limit: int, window: int) -> None:
    with StorageSCP("127.0.0.1", 0, max_operations=limit) as scp:
        contexts = [(VERIFICATION, [IMPLICIT_LE])]
        with Association(scp.address, contexts, max_operations=proposed, timeout=WAIT) as assoc:
            assert assoc.window == window


@pytest.mark.parametrize("max_operations", [1, 2, 16])
def test_pipelined_store_into_storage_scp_keeps_every_data_set(
    tmp_path: Path, files: list[Path], max_operations: int
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with StorageSCP("127.0.0.1", 0, output_dir=out) as scp:
        statuses = store(scp.address, files, max_operations=max_operations, timeout=WAIT)
        assert statuses == [0] * len(files)
        assert scp.wait_idle(WAIT)
        assert scp.stats.stores == len(files)
    for path in files:
        written = out / f"1.2.826.0.1.3680043.9.3811.77.{path.stem}.dcm"
        assert written.read_bytes() == path.read_bytes()


def test_store_cli_takes_max_operations(tmp_path: Path, files: list[Path]) -> None:
    with StorageSCP("127.0.0.1", 0) as scp:
        host, port = scp.address
        result = subprocess.run(
            [
                *(sys.executable, "-m", "netdicom2", "store", host, str(port)),
                *map(str, files),
                *("--max-operations", "4", "--timeout", str(WAIT)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("status 0x0000") == len(files)
        assert scp.wait_idle(WAIT)
        assert scp.stats.stores == len(files)


# ----------------------------------------------------------------------------- scripted acceptor


class ScriptedAcceptor:
    """An acceptor on DULServiceProvider that grants a window and answers as a test says."""

    def __init__(self, listener: socket.socket, grant: int) -> None:
        sock, _ = listener.accept()
        self.dul = DULServiceProvider(sock)
        self.dul.start()
        rq = self.dul.receive(WAIT)
        assert isinstance(rq, AAssociateRqPDU)
        ac, _ = negotiate(rq, max_operations_performed=grant)
        self.dul.send(ac)
        self._command: CommandSet | None = None
        self.context_id = 0

    def next_request(self, timeout: float = WAIT) -> CommandSet:
        """The next whole C-STORE-RQ (command and data set received)."""
        while True:
            pdu = self.dul.receive(timeout)
            assert isinstance(pdu, PDataTfPDU), pdu
            for item in pdu.data_value_items:
                self.context_id = item.context_id
                if item.is_command:
                    assert item.is_last, "the test's commands fit one fragment"
                    self._command = decode_command(item.fragment)
                elif item.is_last:
                    command, self._command = self._command, None
                    assert command is not None, "a data set without its command"
                    return command

    def answer(self, request: CommandSet, status: int, *, responded: int | None = None) -> None:
        """Send the C-STORE-RSP of `request` (naming another message ID if told to)."""
        response = c_store_rsp(request, status)
        if responded is not None:
            response.elements[0x0120] = responded
        pdv = PresentationDataValueItem(self.context_id, 0x03, encode_command(response))
        self.dul.send(PDataTfPDU([pdv]))

    def release(self) -> None:
        """Answer the requestor's A-RELEASE-RQ and stop."""
        assert isinstance(self.dul.receive(WAIT), AReleaseRqPDU)
        self.dul.send(AReleaseRpPDU())
        self.dul.kill()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(WAIT)
        yield sock


def _run_store(
    listener: socket.socket, files: list[Path], max_operations: int
) -> Callable[[], object]:
    """store() in a thread; call the result for its statuses or the exception it raised."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(
                store(listener.getsockname(), files, max_operations=max_operations, timeout=WAIT)
            )
        except Exception as exc:  # handed to the test
            result.append(exc)

    def outcome() -> object:
        thread.join(WAIT)
        assert not thread.is_alive(), "store() did not return"
        return result[0]

    thread = threading.Thread(target=run)
    thread.start()
    return outcome


def test_store_keeps_to_the_window_and_matches_responses_by_message_id(
    listener: socket.socket, files: list[Path]
) -> None:
    statuses = [0x0000, 0xB000, 0xB007, 0x0000, 0xA700, 0xB006, 0x0000]
    outcome = _run_store(listener, files, max_operations=8)
    peer = ScriptedAcceptor(listener, grant=3)  # the requestor proposed 8: 3 are granted
    sent = 0
    while sent < len(files):
        batch = [peer.next_request() for _ in range(min(3, len(files) - sent))]
        assert [r.message_id for r in batch] == list(range(sent + 1, sent + len(batch) + 1))
        if sent + len(batch) < len(files):
            with pytest.raises(TimeoutError):  # the window is full: nothing more comes
                peer.dul.receive(QUIET)
        for request in reversed(batch):  # answered newest first
            peer.answer(request, statuses[request.message_id - 1])
        sent += len(batch)
    peer.release()
    assert outcome() == statuses  # in the order of the files, not of the answers


def test_store_waits_for_each_response_without_a_window(
    listener: socket.socket, files: list[Path]
) -> None:
    outcome = _run_store(listener, files[:2], max_operations=8)
    peer = ScriptedAcceptor(listener, grant=1)
    first = peer.next_request()
    with pytest.raises(TimeoutError):
        peer.dul.receive(QUIET)
    peer.answer(first, 0)
    peer.answer(peer.next_request(), 0)
    peer.release()
    assert outcome() == [0, 0]


def test_a_response_to_no_outstanding_request_aborts_the_store(
    listener: socket.socket, files: list[Path]
) -> None:
    outcome = _run_store(listener, files[:2], max_operations=2)
    peer = ScriptedAcceptor(listener, grant=2)
    request = peer.next_request()
    peer.next_request()
    peer.answer(request, 0, responded=99)
    aborted = peer.dul.receive(WAIT)  # the requestor's A-ABORT (Evt15 → AA-1)
    assert aborted.pdu_type == 0x07
    peer.dul.kill()
    error = outcome()
    assert isinstance(error, AssociationError)
    assert "message 99" in str(error)
