"""Command sets collected from fragments are bounded (MAX_COMMAND_LENGTH) on both sides."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from netdicom2.acse import negotiate
from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import AssociationError, echo
from netdicom2.dimse import (
    MAX_COMMAND_LENGTH,
    c_echo_rq,
    c_store_rq,
    decode_command,
    encode_command,
)
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAssociateRqPDU, PDataTfPDU, decode
from tests.hostile import association_rq, read_pdu

WAIT = 10.0


def _command_fragments(command: bytes, pieces: int) -> bytes:
    """One P-DATA-TF per piece of `command`: 01H, and 03H for the last (PS3.8 Annex E.2)."""
    size = -(-len(command) // pieces)
    chunks = [command[i : i + size] for i in range(0, len(command), size)]
    return b"".join(
        PDataTfPDU(
            [PresentationDataValueItem(1, 0x03 if n == len(chunks) - 1 else 0x01, chunk)]
        ).encode()
        for n, chunk in enumerate(chunks)
    )


Associated = tuple[StorageSCP, socket.socket]


@pytest.fixture
def associated() -> Iterator[Associated]:
    """(StorageSCP, a socket in Sta6 with it) over loopback."""
    with StorageSCP("127.0.0.1", 0, idle_timeout=None, max_pdu_length=1 << 20) as scp:
        sock = socket.create_connection(scp.address)
        sock.sendall(association_rq())
        assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
        yield scp, sock
        sock.close()


def test_a_command_set_in_several_fragments_is_answered(associated: Associated) -> None:
    _, sock = associated
    sock.sendall(_command_fragments(encode_command(c_echo_rq(5)), pieces=3))
    response = decode(read_pdu(sock))
    assert isinstance(response, PDataTfPDU)
    rsp = decode_command(response.data_value_items[0].fragment)
    assert rsp.message_id_being_responded_to == 5 and rsp.status == 0


def test_a_command_set_longer_than_the_limit_is_aborted(associated: Associated) -> None:
    scp, sock = associated
    # Fragments that are never the last: the SCP stops collecting past MAX_COMMAND_LENGTH.
    fragment = b"\0" * 16384
    pdu = PDataTfPDU([PresentationDataValueItem(1, 0x01, fragment)]).encode()
    count = MAX_COMMAND_LENGTH // len(fragment) + 1
    sock.sendall(pdu * count)
    answer = read_pdu(sock)
    assert answer[0] == 0x07  # A-ABORT (AA-1), source 0: the service user
    assert answer[8] == 0
    assert scp.stats.echoes == 0


def test_a_response_command_set_longer_than_the_limit_ends_the_requestor() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        result: list[object] = []

        def run() -> None:
            try:
                result.append(echo(listener.getsockname(), timeout=WAIT))
            except Exception as exc:  # handed to the test
                result.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        sock, _ = listener.accept()
        peer = DULServiceProvider(sock)
        peer.start()
        try:
            rq = peer.receive(WAIT)
            assert isinstance(rq, AAssociateRqPDU)
            peer.send(negotiate(rq)[0])
            assert isinstance(peer.receive(WAIT), PDataTfPDU)  # the C-ECHO-RQ
            fragment = b"\0" * 8192
            for _ in range(MAX_COMMAND_LENGTH // len(fragment) + 1):
                peer.send(PDataTfPDU([PresentationDataValueItem(1, 0x01, fragment)]))
            assert peer.receive(WAIT).pdu_type == 0x07  # the requestor's A-ABORT
        finally:
            peer.kill()
            thread.join(WAIT)
    assert not thread.is_alive()
    (error,) = result
    assert isinstance(error, AssociationError)
    assert f"longer than {MAX_COMMAND_LENGTH} bytes" in str(error)


def test_a_command_while_a_data_set_is_expected_is_aborted(associated: Associated) -> None:
    scp, sock = associated
    store_rq = c_store_rq(1, "1.2.840.10008.5.1.4.1.1.7", "1.2.826.0.1.3680043.9.3811.91")
    sock.sendall(_command_fragments(encode_command(store_rq), pieces=1))
    # The data set never comes: another command instead (PS3.8 Annex E.2 [interp]).
    sock.sendall(_command_fragments(encode_command(c_echo_rq(2)), pieces=1))
    answer = read_pdu(sock)
    assert answer[0] == 0x07  # A-ABORT, not a C-ECHO-RSP
    assert scp.stats.echoes == 0 and scp.stats.stores == 0
