"""The sans-I/O Connection: one test per Table 9-10 cell, plus framing, lengths and timers.

The per-cell tests are generated from the shared oracle ``state_table.csv`` (never from
``netdicom2.fsm``). Each drives a Connection into the cell's state with a recipe of inputs,
injects the event, and checks the action, the effects in order (from an independent
transcription of Tables 9-6 … 9-9 below), the next state and whether ARTIM runs.
"""

from __future__ import annotations

import csv
from collections.abc import Callable

import pytest
from linkpair import (
    LinkPair,
    make_abort,
    make_ac,
    make_pdata,
    make_rj,
    make_rq,
)

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    OpenTransport,
    SendPDU,
    StartTimer,
    StopTimer,
    Transition,
)
from netdicom2.exceptions import LocalProtocolError, PDUTooLargeError
from netdicom2.fsm import Action, Event, State
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRjPDU, AReleaseRpPDU, AReleaseRqPDU
from tests.shared import STATE_TABLE, require_shared

ARTIM = 30.0
NOW = 10.0  # the injected event happens here; recipes run at t=0
RQ, AC, RJ = make_rq(), make_ac(), make_rj(1, 1, 7)
PDATA = make_pdata(8)
REL_RQ, REL_RP = AReleaseRqPDU(), AReleaseRpPDU()
USER_ABORT = make_abort(0, 0)
PEER_ABORT = make_abort(2, 4)
UNKNOWN_PDU = b"\x08\x00\x00\x00\x00\x02\x00\x00"  # PDU-type 08H: Evt19, unrecognized PDU

Step = Callable[[Connection], object]


def _send(pdu: PDU) -> Step:
    """Recipe step: the local user issues ``pdu``."""
    return lambda c: c.send(pdu, 0.0)


def _recv(pdu: PDU) -> Step:
    """Recipe step: the peer's ``pdu`` arrives."""
    return lambda c: c.receive_bytes(pdu.encode(), 0.0)


def _accept(c: Connection) -> object:
    return c.transport_accepted(0.0)


def _connected(c: Connection) -> object:
    return c.transport_connected(0.0)


REQ_STA6: list[Step] = [_send(RQ), _connected, _recv(AC)]
ACC_STA6: list[Step] = [_accept, _recv(RQ), _send(AC)]

# PS3.8 §9.2: for each state, the inputs that bring a requestor and/or acceptor there.
# The release-collision states exist for one role each: Sta9/Sta11 requestor, Sta10/Sta12
# acceptor; Sta6, Sta7, Sta8 and Sta13 are reached with both roles.
RECIPES: dict[State, dict[str, list[Step]]] = {
    State.Sta1: {"new": []},
    State.Sta2: {"acceptor": [_accept]},
    State.Sta3: {"acceptor": [_accept, _recv(RQ)]},
    State.Sta4: {"requestor": [_send(RQ)]},
    State.Sta5: {"requestor": [_send(RQ), _connected]},
    State.Sta6: {"requestor": REQ_STA6, "acceptor": ACC_STA6},
    State.Sta7: {"requestor": [*REQ_STA6, _send(REL_RQ)], "acceptor": [*ACC_STA6, _send(REL_RQ)]},
    State.Sta8: {"requestor": [*REQ_STA6, _recv(REL_RQ)], "acceptor": [*ACC_STA6, _recv(REL_RQ)]},
    State.Sta9: {"requestor": [*REQ_STA6, _send(REL_RQ), _recv(REL_RQ)]},
    State.Sta10: {"acceptor": [*ACC_STA6, _send(REL_RQ), _recv(REL_RQ)]},
    State.Sta11: {"requestor": [*REQ_STA6, _send(REL_RQ), _recv(REL_RQ), _send(REL_RP)]},
    State.Sta12: {"acceptor": [*ACC_STA6, _send(REL_RQ), _recv(REL_RQ), _recv(REL_RP)]},
    State.Sta13: {
        "requestor": [*REQ_STA6, _send(USER_ABORT)],  # AA-1
        "acceptor": [_accept, _recv(RQ), _send(RJ)],  # AE-8
    },
}


def reach(state: State, role: str, **kwargs: object) -> Connection:
    """A Connection driven into ``state`` by the recipe for ``role``."""
    conn = Connection(artim_timeout=ARTIM, **kwargs)  # type: ignore[arg-type]
    for step in RECIPES[state][role]:
        step(conn)
    assert conn.state is state, (state, role, conn.transcript)
    return conn


# How each event is injected (PS3.8 Table 9-10 rows) and the PDU it carries.
INJECT: dict[Event, tuple[Callable[[Connection, float], list[Effect]], PDU | None]] = {
    Event.Evt1: (lambda c, t: c.send(RQ, t), RQ),
    Event.Evt2: (lambda c, t: c.transport_connected(t), None),
    Event.Evt3: (lambda c, t: c.receive_bytes(AC.encode(), t), AC),
    Event.Evt4: (lambda c, t: c.receive_bytes(RJ.encode(), t), RJ),
    Event.Evt5: (lambda c, t: c.transport_accepted(t), None),
    Event.Evt6: (lambda c, t: c.receive_bytes(RQ.encode(), t), RQ),
    Event.Evt7: (lambda c, t: c.send(AC, t), AC),
    Event.Evt8: (lambda c, t: c.send(RJ, t), RJ),
    Event.Evt9: (lambda c, t: c.send(PDATA, t), PDATA),
    Event.Evt10: (lambda c, t: c.receive_bytes(PDATA.encode(), t), PDATA),
    Event.Evt11: (lambda c, t: c.send(REL_RQ, t), REL_RQ),
    Event.Evt12: (lambda c, t: c.receive_bytes(REL_RQ.encode(), t), REL_RQ),
    Event.Evt13: (lambda c, t: c.receive_bytes(REL_RP.encode(), t), REL_RP),
    Event.Evt14: (lambda c, t: c.send(REL_RP, t), REL_RP),
    Event.Evt15: (lambda c, t: c.send(USER_ABORT, t), USER_ABORT),
    Event.Evt16: (lambda c, t: c.receive_bytes(PEER_ABORT.encode(), t), PEER_ABORT),
    Event.Evt17: (lambda c, t: c.transport_closed(t), None),
    Event.Evt18: (lambda c, t: c.handle_timer(c.artim_deadline or t + 1e6), None),
    Event.Evt19: (lambda c, t: c.receive_bytes(UNKNOWN_PDU, t), None),
}
USER = {Event.Evt1, Event.Evt7, Event.Evt8, Event.Evt9, Event.Evt11, Event.Evt14, Event.Evt15}
NETWORK = {Event(f"Evt{i}") for i in (3, 4, 6, 10, 12, 13, 16, 19)}


def _sent(pdu: PDU) -> SendPDU:
    return SendPDU(pdu, pdu.encode())


def expected_effects(action: str, state: State, event: Event, pdu: PDU | None) -> list[Effect]:
    """PS3.8 Tables 9-6 … 9-9, transcribed independently of netdicom2.actions."""
    start = StartTimer(NOW + ARTIM)
    reason = 1 if event is Event.Evt19 else 2  # unrecognized PDU / unexpected PDU
    provider_abort = AAbortPDU(source=2, reason_diag=reason)
    assert pdu is not None or action in {"AE-1", "AE-2", "AE-5", "AR-5", "AA-1", "AA-2",
                                         "AA-4", "AA-5", "AA-6", "AA-7", "AA-8"}  # fmt: skip
    table: dict[str, Callable[[], list[Effect]]] = {
        "AE-1": lambda: [OpenTransport()],
        "AE-2": lambda: [_sent(RQ)],
        "AE-3": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AE-4": lambda: [Indicate(pdu), CloseTransport()],  # type: ignore[arg-type]
        "AE-5": lambda: [start],
        "AE-6": lambda: [StopTimer(), Indicate(pdu)],  # type: ignore[arg-type]
        "AE-7": lambda: [_sent(pdu)],  # type: ignore[arg-type]
        "AE-8": lambda: [_sent(pdu), start],  # type: ignore[arg-type]
        "DT-1": lambda: [_sent(pdu)],  # type: ignore[arg-type]
        "DT-2": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AR-1": lambda: [_sent(pdu)],  # type: ignore[arg-type]
        "AR-2": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AR-3": lambda: [Indicate(pdu), CloseTransport()],  # type: ignore[arg-type]
        "AR-4": lambda: [_sent(pdu), start],  # type: ignore[arg-type]
        "AR-5": lambda: [StopTimer()],
        "AR-6": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AR-7": lambda: [_sent(pdu)],  # type: ignore[arg-type]
        "AR-8": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AR-9": lambda: [_sent(pdu)],  # type: ignore[arg-type]
        "AR-10": lambda: [Indicate(pdu)],  # type: ignore[arg-type]
        "AA-1": lambda: [_sent(AAbortPDU(source=0, reason_diag=0)), start],
        "AA-2": lambda: (
            [StopTimer(), CloseTransport()]
            if state in {State.Sta2, State.Sta13}
            else [CloseTransport()]
        ),
        "AA-3": lambda: [Indicate(pdu), CloseTransport()],  # type: ignore[arg-type]
        "AA-4": lambda: [Indicate(AAbortPDU(source=2, reason_diag=0))],
        "AA-5": lambda: [StopTimer()],
        "AA-6": lambda: [],
        "AA-7": lambda: [_sent(provider_abort)],
        "AA-8": lambda: [_sent(provider_abort), Indicate(provider_abort), start],
    }
    return table[action]()


def _cell_action(row: dict[str, str]) -> str:
    """The cell's action as named in test ids: "DT-2", or "blank"."""
    return "blank" if row["action"] == "-" else row["action"]


def _oracle_cells() -> list[object]:
    """One pytest param per Table 9-10 cell, from the shared CSV."""
    if not STATE_TABLE.exists():
        return [pytest.param(None, id="oracle-absent")]  # test_cell says why (require_shared)
    with STATE_TABLE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 247
    return [
        pytest.param(row, id=f"{row['state']}-{row['event']}-{_cell_action(row)}") for row in rows
    ]


@pytest.mark.parametrize("row", _oracle_cells())
def test_cell(row: dict[str, str] | None) -> None:
    if row is None:
        require_shared(STATE_TABLE)
        return
    state, event, action = State(row["state"]), Event(row["event"]), row["action"]
    inject, pdu = INJECT[event]
    for role in RECIPES[state]:
        conn = reach(state, role)
        before = (conn.state, list(conn.transcript), conn.artim_deadline, conn.transport_open)
        if action == "-":
            _check_blank(conn, state, event, inject, before)
            continue
        effects = inject(conn, NOW)
        nxt = row["next_state"]
        if action == "AE-6":
            nxt = "Sta3"  # the request is acceptable; the reject branch is tested below
        elif action == "AR-8":
            nxt = "Sta9" if role == "requestor" else "Sta10"
        assert conn.transcript[len(before[1]) :] == [
            Transition(state, event, Action(action), State(nxt))
        ], role
        assert effects == expected_effects(action, state, event, pdu), role
        assert conn.state is State(nxt)
        artim_running = conn.state in {State.Sta2, State.Sta13}
        assert (conn.artim_deadline is not None) is artim_running, role


def _check_blank(
    conn: Connection,
    state: State,
    event: Event,
    inject: Callable[[Connection, float], list[Effect]],
    before: tuple[object, ...],
) -> None:
    """A blank cell: local inputs raise LocalProtocolError; the others cannot reach it."""
    if event in USER or event in {Event.Evt2, Event.Evt5}:
        # A local primitive (or a transport report) the state does not allow: misuse.
        with pytest.raises(LocalProtocolError) as info:
            inject(conn, NOW)
        assert (info.value.state, info.value.event) == (state, event)
    elif event is Event.Evt18:
        # ARTIM does not run here, so handle_timer can never produce Evt18.
        assert conn.artim_deadline is None
        assert inject(conn, NOW) == []
    else:
        # PDU events and Evt17 with no transport open (Sta1, Sta4): the bytes are ignored.
        assert event in NETWORK or event is Event.Evt17
        assert state in {State.Sta1, State.Sta4} and not conn.transport_open
        assert inject(conn, NOW) == []
    after = (conn.state, list(conn.transcript), conn.artim_deadline, conn.transport_open)
    assert after == before


def test_no_blank_cell_is_reachable_from_the_wire() -> None:
    # Every network event and Evt17, in every state (and role) with the transport open, runs
    # an action; the transport is open everywhere but in Sta1 and Sta4.
    for state, recipes in RECIPES.items():
        for role in recipes:
            assert reach(state, role).transport_open is (state not in {State.Sta1, State.Sta4})
            if state in {State.Sta1, State.Sta4}:
                continue
            for event in [*NETWORK, Event.Evt17]:
                conn = reach(state, role)
                INJECT[event][0](conn, NOW)
                assert len(conn.transcript) == len(recipes[role]) + 1, (state, role, event)


# --- AE-6 reject branch and max length -----------------------------------------------------


def test_ae6_rejects_protocol_version_without_bit_0_and_waits_in_sta13() -> None:
    conn = reach(State.Sta2, "acceptor")
    effects = conn.receive_bytes(make_rq(protocol_version=2).encode(), NOW)
    rj = AAssociateRjPDU(result=1, source=2, reason_diag=2)
    assert effects == [StopTimer(), _sent(rj), StartTimer(NOW + ARTIM)]
    assert conn.state is State.Sta13 and conn.artim_deadline == NOW + ARTIM
    assert conn.transcript[-1] == Transition(State.Sta2, Event.Evt6, Action.AE_6, State.Sta13)
    # PS3.8 Table 9-10, Sta13/Evt17 → AR-5: the peer closes after reading the RJ.
    assert conn.transport_closed(NOW + 1) == [StopTimer()]
    assert conn.transcript[-1].next_state is State.Sta1


def test_ae6_rejects_with_the_acceptable_policys_rj() -> None:
    limit = AAssociateRjPDU(result=2, source=3, reason_diag=2)
    conn = Connection(acceptable=lambda rq: limit)
    conn.transport_accepted(0.0)
    effects = conn.receive_bytes(RQ.encode(), NOW)
    assert _sent(limit) in effects and conn.state is State.Sta13
    assert not any(isinstance(e, Indicate) for e in effects)


def test_sta13_artim_expiry_closes_without_indication() -> None:
    conn = reach(State.Sta13, "acceptor")
    assert conn.handle_timer(ARTIM - 0.001) == []
    assert conn.handle_timer(ARTIM) == [StopTimer(), CloseTransport()]
    assert conn.state is State.Sta1 and conn.timer_deadline is None


def test_sta2_artim_expiry_closes_without_indication() -> None:
    conn = reach(State.Sta2, "acceptor")
    assert conn.timer_deadline == ARTIM
    assert conn.handle_timer(ARTIM + 5) == [StopTimer(), CloseTransport()]
    assert conn.transcript[-1] == Transition(State.Sta2, Event.Evt18, Action.AA_2, State.Sta1)


def test_peer_max_pdu_length_comes_from_the_rq_or_the_ac() -> None:
    acceptor = Connection()
    acceptor.transport_accepted(0.0)
    acceptor.receive_bytes(make_rq(max_length=4000).encode(), 0.0)
    assert acceptor.peer_max_pdu_length == 4000
    requestor = reach(State.Sta5, "requestor")
    assert requestor.peer_max_pdu_length is None
    requestor.receive_bytes(make_ac(max_length=0).encode(), 0.0)
    assert requestor.peer_max_pdu_length == 0  # no limit


def test_sending_a_pdata_over_the_peers_maximum_raises_and_changes_nothing() -> None:
    conn = Connection()
    for step in [_send(RQ), _connected]:
        step(conn)
    conn.receive_bytes(make_ac(max_length=100).encode(), 0.0)
    conn.send(make_pdata(94), NOW)  # PDU-length 100: fits exactly
    before = list(conn.transcript)
    with pytest.raises(PDUTooLargeError) as info:
        conn.send(make_pdata(96), NOW)  # PDU-length 102
    assert (info.value.length, info.value.maximum) == (102, 100)
    assert isinstance(info.value, LocalProtocolError)
    assert conn.transcript == before and conn.state is State.Sta6


def test_unlimited_peer_maximum_accepts_any_pdata() -> None:
    conn = Connection()
    for step in [_send(RQ), _connected]:
        step(conn)
    conn.receive_bytes(make_ac(max_length=0).encode(), 0.0)
    assert conn.send(make_pdata(100_000), NOW)[0] == _sent(make_pdata(100_000))


def test_receiving_a_pdata_over_our_announced_maximum_is_aa8_invalid_parameter() -> None:
    # PS3.8 Annex D.1: a P-DATA-TF longer than we announced is a protocol error → Evt19.
    conn = Connection(max_pdu_length=50_000)
    conn.send(make_rq(max_length=100), 0.0)  # the RQ announces 100: that is the limit
    conn.transport_connected(0.0)
    conn.receive_bytes(AC.encode(), 0.0)
    assert conn.max_pdu_length == 100
    assert conn.receive_bytes(make_pdata(94).encode(), NOW)[0] == Indicate(make_pdata(94))
    effects = conn.receive_bytes(make_pdata(96).encode(), NOW)
    abort = AAbortPDU(source=2, reason_diag=6)
    assert effects == [_sent(abort), Indicate(abort), StartTimer(NOW + ARTIM)]
    assert conn.transcript[-1].event is Event.Evt19


def test_acceptor_limit_follows_the_ac_it_sends() -> None:
    conn = Connection(max_pdu_length=50_000)
    conn.transport_accepted(0.0)
    conn.receive_bytes(RQ.encode(), 0.0)
    conn.send(make_ac(max_length=200), 0.0)
    assert conn.max_pdu_length == 200
    assert isinstance(conn.receive_bytes(make_pdata(194).encode(), NOW)[0], Indicate)
    assert conn.receive_bytes(make_pdata(196).encode(), NOW)[0] == _sent(
        AAbortPDU(source=2, reason_diag=6)
    )


# --- Evt19 and framing ---------------------------------------------------------------------


def test_malformed_pdu_of_a_known_type_aborts_with_the_decoders_reason() -> None:
    conn = reach(State.Sta6, "requestor")
    bad = b"\x05\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00"  # A-RELEASE-RQ with length 5
    effects = conn.receive_bytes(bad, NOW)
    sent = effects[0]
    assert isinstance(sent, SendPDU) and isinstance(sent.pdu, AAbortPDU)
    assert sent.pdu.source == 2 and sent.pdu.reason_diag in {4, 5, 6}
    assert conn.transcript[-1].event is Event.Evt19 and conn.state is State.Sta13


def test_unexpected_pdu_in_sta2_is_aa1_with_source_0() -> None:
    conn = reach(State.Sta2, "acceptor")
    assert conn.receive_bytes(UNKNOWN_PDU, NOW) == [
        _sent(AAbortPDU(source=0, reason_diag=0)),
        StartTimer(NOW + ARTIM),
    ]


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "with-trailing"])
def test_pdus_are_framed_whatever_the_chunking(chunking: str) -> None:
    conn = reach(State.Sta6, "requestor")
    stream = PDATA.encode() + REL_RQ.encode()
    if chunking == "whole":
        effects = conn.receive_bytes(stream, NOW)
    elif chunking == "bytewise":
        effects = [
            e for i in range(len(stream)) for e in conn.receive_bytes(stream[i : i + 1], NOW)
        ]
    else:
        effects = conn.receive_bytes(stream + REL_RQ.encode()[:3], NOW)
    assert effects == [Indicate(PDATA), Indicate(REL_RQ)]
    assert conn.state is State.Sta8


def test_bytes_after_we_closed_are_ignored() -> None:
    conn = reach(State.Sta5, "requestor")
    effects = conn.receive_bytes(RJ.encode() + PDATA.encode(), NOW)  # AE-4 closes
    assert effects == [Indicate(RJ), CloseTransport()]
    assert conn.state is State.Sta1 and conn.receive_bytes(PDATA.encode(), NOW) == []
    assert conn.transport_closed(NOW) == []  # no transport left to close


def test_bytes_in_sta1_and_sta4_are_ignored() -> None:
    for state, role in [(State.Sta1, "new"), (State.Sta4, "requestor")]:
        conn = reach(state, role)
        assert conn.receive_bytes(AC.encode(), NOW) == [] and conn.state is state


# --- local misuse --------------------------------------------------------------------------


def test_a_fixed_role_refuses_the_other_roles_opening() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(requestor=False).send(RQ, 0.0)
    with pytest.raises(LocalProtocolError):
        Connection(requestor=True).transport_accepted(0.0)
    assert Connection(requestor=True).send(RQ, 0.0) == [OpenTransport()]


def test_only_pdus_are_primitives() -> None:
    with pytest.raises(TypeError):
        Connection().send(b"\x01", 0.0)  # type: ignore[arg-type]


def test_the_role_comes_from_the_first_event_and_decides_ar8() -> None:
    assert reach(State.Sta6, "requestor").is_requestor is True
    assert reach(State.Sta6, "acceptor").is_requestor is False
    assert Connection().is_requestor is None


# --- application timeouts (PS3.8 §9.1.4 Note 2) ------------------------------------------


def test_association_timeout_in_sta5_is_a_user_abort_with_a_notice() -> None:
    conn = reach(State.Sta5, "requestor", association_timeout=5.0)
    assert conn.artim_deadline is None and conn.timer_deadline == 5.0
    assert conn.handle_timer(4.9) == []
    effects = conn.handle_timer(5.0)
    assert effects == [
        _sent(AAbortPDU(source=0, reason_diag=0)),
        StartTimer(5.0 + ARTIM),
        Indicate(AAbortPDU(source=2, reason_diag=0)),
    ]
    assert conn.transcript[-1] == Transition(State.Sta5, Event.Evt15, Action.AA_1, State.Sta13)
    assert conn.timed_out == "association" and conn.timer_deadline == 5.0 + ARTIM


def test_association_timeout_in_sta4_cancels_the_connect() -> None:
    conn = reach(State.Sta4, "requestor", association_timeout=5.0)
    effects = conn.handle_timer(6.0)
    assert effects == [CloseTransport(), Indicate(AAbortPDU(source=2, reason_diag=0))]
    assert conn.transcript[-1].action is Action.AA_2 and conn.state is State.Sta1


def test_association_timeout_stops_when_the_ac_arrives() -> None:
    conn = reach(State.Sta6, "requestor", association_timeout=5.0)
    assert conn.timer_deadline is None and conn.handle_timer(100.0) == []


def test_release_timeout_in_sta7() -> None:
    conn = reach(State.Sta7, "requestor", release_timeout=2.0)
    assert conn.timer_deadline == 2.0
    effects = conn.handle_timer(2.0)
    assert conn.transcript[-1] == Transition(State.Sta7, Event.Evt15, Action.AA_1, State.Sta13)
    assert effects[-1] == Indicate(AAbortPDU(source=2, reason_diag=0))
    assert conn.timed_out == "release"


def test_release_timeout_covers_the_collision_states() -> None:
    conn = reach(State.Sta10, "acceptor", release_timeout=2.0)
    assert conn.timer_deadline == 2.0  # armed at AR-1, kept through Sta10
    conn.receive_bytes(REL_RP.encode(), 1.0)
    assert conn.state is State.Sta12 and conn.timer_deadline == 2.0


def test_no_application_timeout_by_default() -> None:
    for state in (State.Sta5, State.Sta7):
        conn = reach(state, "requestor")
        assert conn.timer_deadline is None and conn.handle_timer(1e9) == []


# --- observer, transcript, the pair --------------------------------------------------------


def test_observer_sees_every_transition_as_a_log_line() -> None:
    seen: list[str] = []
    conn = Connection(observer=lambda t: seen.append(str(t)))
    conn.transport_accepted(0.0)
    conn.receive_bytes(RQ.encode(), 0.0)
    assert seen == ["Sta1 + Evt5 -> AE-5 -> Sta2", "Sta2 + Evt6 -> AE-6 -> Sta3"]


def test_a_connection_can_serve_a_second_association_after_sta1() -> None:
    pair = LinkPair(artim_timeout=ARTIM)
    for _ in range(2):
        pair.associate()
        assert pair.requestor.state is pair.acceptor.state is State.Sta6
        pair.release()
        pair.advance(ARTIM)
        assert pair.idle()


def test_pair_association_data_and_release() -> None:
    pair = LinkPair()
    pair.associate()
    assert pair.acceptor.indications == [RQ] and pair.requestor.indications == [AC]
    pair.send("requestor", PDATA)
    pair.pump()
    assert pair.acceptor.indications[-1] == PDATA
    pair.release()
    # The acceptor sent the RP (AR-4, Sta13); the requestor closed on it (AR-3); the acceptor
    # saw the close (AR-5).
    assert pair.idle()
    assert [t.action for t in pair.acceptor.conn.transcript][-2:] == [Action.AR_4, Action.AR_5]
    assert pair.requestor.conn.transcript[-1].action is Action.AR_3


def test_pair_release_collision_both_roles() -> None:
    # PS3.8 §7.2.2 and Table 9-10: both users ask to release at once.
    pair = LinkPair()
    pair.associate()
    pair.send("requestor", REL_RQ)
    pair.send("acceptor", REL_RQ)
    pair.pump()
    assert (pair.requestor.state, pair.acceptor.state) == (State.Sta9, State.Sta10)
    pair.send("requestor", REL_RP)  # AR-9: the association-requestor answers first
    pair.pump()
    assert (pair.requestor.state, pair.acceptor.state) == (State.Sta11, State.Sta12)
    pair.send("acceptor", REL_RP)  # AR-4
    pair.pump()
    assert pair.idle()
    assert [t.action for t in pair.requestor.conn.transcript][-3:] == [
        Action.AR_8,
        Action.AR_9,
        Action.AR_3,
    ]
    assert [t.action for t in pair.acceptor.conn.transcript][-4:] == [
        Action.AR_8,
        Action.AR_10,
        Action.AR_4,
        Action.AR_5,
    ]


def test_pair_silent_requestor_times_out_on_the_acceptor() -> None:
    pair = LinkPair(artim_timeout=ARTIM)
    pair.send("requestor", RQ)
    pair.complete_connect()
    pair.pipes["acceptor"].chunks.clear()  # the RQ is lost: the acceptor waits in Sta2
    pair.advance(ARTIM)
    assert pair.acceptor.state is State.Sta1
    assert pair.acceptor.conn.transcript[-1].action is Action.AA_2
    pair.pump()
    assert pair.requestor.state is State.Sta1
    assert pair.requestor.indications == [AAbortPDU(source=2, reason_diag=0)]  # AA-4


def test_pair_user_abort() -> None:
    pair = LinkPair()
    pair.associate()
    pair.send("acceptor", make_abort(2, 6))  # the primitive's fields are not echoed
    pair.pump()
    assert pair.requestor.indications[-1] == AAbortPDU(source=0, reason_diag=0)  # AA-3
    assert pair.idle()


def test_a_large_pdata_received_in_place_gives_the_same_dt2_as_receive_bytes() -> None:
    conn = Connection(max_pdu_length=1 << 20)
    conn.send(make_rq(max_length=1 << 20), 0.0)
    conn.transport_connected(0.0)
    conn.receive_bytes(AC.encode(), 0.0)
    data = make_pdata(500_000).encode()
    assert conn.receive_buffer() is None  # no PDU in progress
    assert conn.receive_bytes(data[:100_000], NOW) == []
    buffer = conn.receive_buffer()
    # The room offered grows with what arrived (PDUFramer.body_buffer), not with PDU-length.
    assert buffer is not None and len(buffer) == 100_000
    buffer[:] = data[100_000:200_000]  # as socket.recv_into would
    del buffer
    assert conn.receive_into(100_000, NOW) == []
    effects = conn.receive_bytes(data[200_000:], NOW)
    assert effects == [Indicate(make_pdata(500_000))]
    assert conn.transcript[-1] == Transition(State.Sta6, Event.Evt10, Action.DT_2, State.Sta6)
