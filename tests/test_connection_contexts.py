"""P-DATA on a presentation context the A-ASSOCIATE-AC did not accept (PS3.8 §9.3.5)."""

from __future__ import annotations

import pytest

from netdicom2.connection import Connection, Indicate, SendPDU
from netdicom2.fsm import Action, Event, State
from netdicom2.pdu import AAbortPDU, PDataTfPDU
from tests.linkpair import make_ac, make_pdata, make_rq


def acceptor_in_sta6() -> Connection:
    """An acceptor that accepted context 1 only (make_ac) and is in Sta6."""
    conn = Connection(artim_timeout=5.0)
    conn.transport_accepted(0.0)
    conn.receive_bytes(make_rq().encode(), 0.0)
    conn.send(make_ac(), 0.0)
    assert conn.state is State.Sta6 and conn.accepted_contexts == frozenset({1})
    return conn


def test_pdv_on_an_accepted_context_is_a_p_data_indication() -> None:
    conn = acceptor_in_sta6()
    effects = conn.receive_bytes(make_pdata(context_id=1).encode(), 1.0)
    assert conn.transcript[-1].action is Action.DT_2
    assert isinstance(effects[0], Indicate) and isinstance(effects[0].primitive, PDataTfPDU)


@pytest.mark.parametrize("context_id", [3, 7, 255])
def test_pdv_on_a_context_not_accepted_is_evt19_and_aa8(context_id: int) -> None:
    conn = acceptor_in_sta6()
    effects = conn.receive_bytes(make_pdata(context_id=context_id).encode(), 1.0)
    last = conn.transcript[-1]
    assert (last.state, last.event, last.action) == (State.Sta6, Event.Evt19, Action.AA_8)
    sent = [e.pdu for e in effects if isinstance(e, SendPDU)]
    assert sent == [AAbortPDU(source=2, reason_diag=6)]  # invalid PDU parameter value
    assert conn.state is State.Sta13


def test_requestor_learns_the_accepted_contexts_from_the_ac() -> None:
    conn = Connection(artim_timeout=5.0)
    conn.send(make_rq(), 0.0)
    conn.transport_connected(0.0)
    conn.receive_bytes(make_ac().encode(), 0.0)
    assert conn.state is State.Sta6 and conn.accepted_contexts == frozenset({1})
    conn.receive_bytes(make_pdata(context_id=5).encode(), 1.0)
    assert conn.transcript[-1].action is Action.AA_8
