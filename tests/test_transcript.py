"""A bounded transcript: one transition per PDU must not grow memory for a whole association."""

from __future__ import annotations

import socket
import struct

import pytest
from linkpair import make_ac, make_pdata, make_rq

from netdicom2.acse import negotiate
from netdicom2.app_scp import StorageSCP
from netdicom2.connection import Connection
from netdicom2.dimse import decode_command
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.fsm import Action, Event, State
from netdicom2.pdu import AAssociateRqPDU, AReleaseRqPDU, PDataTfPDU, decode
from netdicom2.transport import TRANSCRIPT_LIMIT
from tests.hostile import association_rq, echo_pdata, read_pdu

WAIT = 10.0
# PS3.8 Table 9-23: a PDV of item-length 2 carries no data; 12 bytes per P-DATA-TF, each an
# empty command fragment, not the last (Annex E.2: 01H).
TINY = struct.pack(">BxIIBB", 0x04, 6, 2, 1, 0x01)


def _drive(connection: Connection, pdus: int) -> None:
    """Accept, associate, then receive `pdus` P-DATA-TF PDUs (Sta6 + Evt10 → DT-2 each)."""
    connection.transport_accepted(0.0)
    connection.receive_bytes(make_rq().encode(), 0.0)
    connection.send(make_ac(), 0.0)
    data = make_pdata(2).encode() * pdus
    connection.receive_bytes(data, 0.0)


@pytest.mark.parametrize("pdus", [0, 3, 9, 10, 11, 250])
def test_a_bounded_transcript_keeps_the_latest_transitions(pdus: int) -> None:
    full, bounded = Connection(), Connection(transcript_limit=5)
    _drive(full, pdus)
    _drive(bounded, pdus)
    kept = bounded.transcript
    assert len(kept) <= 10  # at most twice the limit
    assert len(kept) >= min(5, len(full.transcript))  # at least the limit, once reached
    assert kept == full.transcript[len(full.transcript) - len(kept) :]
    assert bounded.transcript_dropped == len(full.transcript) - len(kept)
    assert full.transcript_dropped == 0
    assert kept[-1].next_state is State.Sta6
    assert kept[-1].action is (Action.DT_2 if pdus else Action.AE_7)


def test_the_last_transition_is_kept_whatever_the_limit() -> None:
    connection = Connection(transcript_limit=1)
    _drive(connection, 7)
    assert [t.action for t in connection.transcript][-1:] == [Action.DT_2]
    assert connection.transcript[-1].event is Event.Evt10
    assert 1 <= len(connection.transcript) <= 2


def test_a_transcript_limit_below_one_is_refused() -> None:
    for bad in (0, -3):
        with pytest.raises(ValueError, match="transcript_limit"):
            Connection(transcript_limit=bad)


def test_a_served_association_of_tiny_pdus_keeps_a_bounded_transcript() -> None:
    # The SCP answers the C-ECHO that follows them only after handling all of them.
    pdus = 3 * TRANSCRIPT_LIMIT
    with StorageSCP("127.0.0.1", 0, idle_timeout=None) as scp:
        sock = socket.create_connection(scp.address)
        try:
            sock.sendall(association_rq())
            assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC: Sta6
            sock.sendall(TINY * pdus + echo_pdata(message_id=7))
            response = decode(read_pdu(sock))
            assert isinstance(response, PDataTfPDU)
            rsp = decode_command(response.data_value_items[0].fragment)
            assert rsp.message_id_being_responded_to == 7 and rsp.status == 0
            (channel,) = scp._channels.values()  # the loop is idle: it answered the last PDU
            connection = channel.connection
            assert len(connection.transcript) <= 2 * TRANSCRIPT_LIMIT
            assert connection.transcript_dropped + len(connection.transcript) >= pdus
            sock.sendall(AReleaseRqPDU().encode())
            assert read_pdu(sock)[0] == 0x06  # A-RELEASE-RP: the association ends normally
        finally:
            sock.close()
        assert scp.wait_idle(WAIT)


def test_a_provider_association_of_tiny_pdus_keeps_a_bounded_transcript() -> None:
    pdus = 3 * TRANSCRIPT_LIMIT
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    provider = DULServiceProvider(accepted)  # acceptor: Evt5 → AE-5
    provider.start()
    try:
        peer.sendall(association_rq())
        rq = provider.receive(WAIT)
        assert isinstance(rq, AAssociateRqPDU)
        answer, _ = negotiate(rq)
        provider.send(answer)
        assert read_pdu(peer)[0] == 0x02
        peer.sendall(TINY * pdus)
        for _ in range(pdus):
            assert isinstance(provider.receive(WAIT), PDataTfPDU)
        connection = provider.connection
        assert len(connection.transcript) <= 2 * TRANSCRIPT_LIMIT
        assert connection.transcript_dropped + len(connection.transcript) >= pdus
    finally:
        provider.kill()
        peer.close()
