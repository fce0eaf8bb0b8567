"""A requestor and an acceptor under adversarial schedules (Hypothesis RuleBasedStateMachine).

Rules: user primitives in any order on either side (misuse must raise LocalProtocolError and
nothing else), partial deliveries, garbage, truncated, corrupted and out-of-order PDUs on the
wire, clock jumps, refused connects and network failures. Invariants: every step either side
takes is a cell of Table 9-10 (the shared CSV oracle) with its next state; ARTIM runs exactly
in Sta2 and Sta13; no transport in Sta1/Sta4. Teardown drives both sides to Sta1 with the
transport closed, which every association must reach.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from linkpair import (
    Endpoint,
    LinkPair,
    Side,
    make_abort,
    make_ac,
    make_pdata,
    make_rj,
    make_rq,
)

from netdicom2.exceptions import LocalProtocolError
from netdicom2.fsm import TRANSITIONS, Action, Event, State
from netdicom2.pdu import PDU, AReleaseRpPDU, AReleaseRqPDU

ARTIM = 30.0
STATE_TABLE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "state_table.csv"


def _oracle() -> dict[tuple[State, Event], tuple[Action, frozenset[State]]]:
    """Table 9-10 from the shared CSV (the fsm module's table only if the CSV is absent)."""
    if not STATE_TABLE.is_file():
        from netdicom2.fsm import NEXT_STATE

        return {k: (a, frozenset(NEXT_STATE[a])) for k, a in TRANSITIONS.items()}
    with STATE_TABLE.open(newline="") as f:
        return {
            (State(r["state"]), Event(r["event"])): (
                Action(r["action"]),
                frozenset(State(s) for s in r["next_state"].split("|")),
            )
            for r in csv.DictReader(f)
            if r["action"] != "-"
        }


ORACLE = _oracle()

sides = st.sampled_from(["requestor", "acceptor"])
max_lengths = st.sampled_from([None, 0, 100, 16384])


@st.composite
def primitives(draw: st.DrawFn) -> PDU:
    """Any of the seven user primitives, with plausible and edge-case fields."""
    kind = draw(st.sampled_from(["rq", "ac", "rj", "pdata", "rel-rq", "rel-rp", "abort"]))
    if kind == "rq":
        version = draw(st.sampled_from([1, 1, 1, 0, 2, 3]))
        return make_rq(max_length=draw(max_lengths), protocol_version=version)
    if kind == "ac":
        return make_ac(max_length=draw(max_lengths))
    if kind == "rj":
        return make_rj(
            draw(st.sampled_from([1, 2])),
            draw(st.sampled_from([1, 2, 3])),
            draw(st.integers(0, 7)),
        )
    if kind == "pdata":
        return make_pdata(draw(st.integers(0, 300)))
    if kind == "rel-rq":
        return AReleaseRqPDU()
    if kind == "rel-rp":
        return AReleaseRpPDU()
    return make_abort(draw(st.sampled_from([0, 1, 2])), draw(st.integers(0, 6)))


# What a well-behaved user issues in each state (PS3.8 §7.1 … §7.3).
SENSIBLE: dict[State, list[Callable[[], st.SearchStrategy[PDU]]]] = {
    State.Sta1: [lambda: st.builds(make_rq, max_length=max_lengths)],
    State.Sta3: [lambda: st.builds(make_ac, max_length=max_lengths), lambda: st.just(make_rj())],
    State.Sta5: [lambda: st.just(make_abort())],
    State.Sta6: [
        lambda: st.builds(make_pdata, st.integers(0, 300)),
        lambda: st.just(AReleaseRqPDU()),
        lambda: st.just(make_abort()),
    ],
    State.Sta7: [lambda: st.just(make_abort())],
    State.Sta8: [lambda: st.just(AReleaseRpPDU()), lambda: st.builds(make_pdata)],
    State.Sta9: [lambda: st.just(AReleaseRpPDU())],
    State.Sta12: [lambda: st.just(AReleaseRpPDU())],
}


@st.composite
def wire_faults(draw: st.DrawFn) -> bytes:
    """What a broken peer writes: garbage, or a PDU cut short or with one byte changed."""
    kind = draw(st.sampled_from(["garbage", "truncated", "corrupted"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=40))
    data = draw(primitives()).encode()
    if kind == "truncated":
        return data[: draw(st.integers(1, len(data) - 1))]
    damaged = bytearray(data)
    damaged[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(damaged)


def _rq(pair: LinkPair) -> None:
    pair.send("requestor", make_rq())


def _connect(pair: LinkPair) -> None:
    pair.complete_connect()


def _pump(pair: LinkPair) -> None:
    pair.pump()


def _by(side: Side, make: Callable[[], PDU]) -> Callable[[LinkPair], object]:
    return lambda pair: pair.send(side, make())


def _associate(pair: LinkPair) -> None:
    pair.associate()


REL_RQ = AReleaseRqPDU
REL_RP = AReleaseRpPDU

# Well-behaved scripts to the places worth attacking (requestor state / acceptor state).
STARTS: dict[str, list[Callable[[LinkPair], object]]] = {
    "Sta1/Sta1": [],
    "Sta5/Sta2, RQ in flight": [_rq, _connect],
    "Sta5/Sta3": [_rq, _pump],
    "Sta5/Sta13, RJ in flight": [_rq, _pump, _by("acceptor", make_rj)],
    "Sta6/Sta6": [_associate],
    "Sta7/Sta8": [_associate, _by("requestor", REL_RQ), _pump],
    "Sta8/Sta7": [_associate, _by("acceptor", REL_RQ), _pump],
    "Sta9/Sta10": [_associate, _by("requestor", REL_RQ), _by("acceptor", REL_RQ), _pump],
    "Sta11/Sta12": [
        _associate,
        _by("requestor", REL_RQ),
        _by("acceptor", REL_RQ),
        _pump,
        _by("requestor", REL_RP),
        _pump,
    ],
    "Sta13/Sta6, A-ABORT in flight": [_associate, _by("requestor", make_abort)],
    "Sta7/Sta13, RP in flight": [
        _associate,
        _by("requestor", REL_RQ),
        _pump,
        _by("acceptor", REL_RP),
    ],
}


class LinkMachine(RuleBasedStateMachine):
    """Two Connections over a LinkPair, driven by adversarial rules."""

    start: ClassVar[str] = "Sta1/Sta1"

    def __init__(self) -> None:
        super().__init__()
        self.pair = LinkPair(artim_timeout=ARTIM)
        self.checked = {"requestor": 0, "acceptor": 0}

    @initialize(
        association_timeout=st.none() | st.floats(1.0, 60.0),
        release_timeout=st.none() | st.floats(1.0, 60.0),
    )
    def build(self, association_timeout: float | None, release_timeout: float | None) -> None:
        """A fresh pair, moved by a well-behaved script to this machine's starting place."""
        self.pair = LinkPair(
            artim_timeout=ARTIM,
            association_timeout=association_timeout,
            release_timeout=release_timeout,
        )
        for step in STARTS[self.start]:
            step(self.pair)

    # ----------------------------------------------------------------- the users

    @rule(side=sides, primitive=primitives())
    def user_sends(self, side: Side, primitive: PDU) -> None:
        """A user primitive in whatever state: allowed, or LocalProtocolError and no change."""
        endpoint = self.pair.side(side)
        before = (endpoint.state, len(endpoint.conn.transcript))
        try:
            self.pair.send(side, primitive)
        except LocalProtocolError:
            assert (endpoint.state, len(endpoint.conn.transcript)) == before

    @rule(side=sides, data=st.data(), deliver=st.booleans())
    def protocol_step(self, side: Side, data: st.DataObject, deliver: bool) -> None:
        """What a well-behaved side does next, then maybe deliver it: reaches deep states."""
        if self.pair.connect_pending and self._listener_ready():
            self.pair.complete_connect()
        else:
            self.user_follows_protocol(side, data)
        if deliver:
            self.pair.pump(connect=False)

    @rule(side=sides, data=st.data())
    def user_follows_protocol(self, side: Side, data: st.DataObject) -> None:
        """A user primitive that its state expects (drives the pair into the deeper states)."""
        endpoint = self.pair.side(side)
        options = SENSIBLE.get(endpoint.state, [])
        if endpoint.state is State.Sta1 and side == "acceptor":
            options = []  # a listener does not issue A-ASSOCIATE requests
        if options:
            primitive = data.draw(data.draw(st.sampled_from(options))())
            # A P-DATA-TF may exceed the peer's maximum length (PDUTooLargeError).
            with contextlib.suppress(LocalProtocolError):
                self.pair.send(side, primitive)

    @precondition(lambda self: self.pair.requestor.state is self.pair.acceptor.state is State.Sta6)
    @rule()
    def release_collision(self) -> None:
        """PS3.8 §7.2.2: both users ask to release at once."""
        self.pair.send("requestor", AReleaseRqPDU())
        self.pair.send("acceptor", AReleaseRqPDU())

    @rule()
    def associate_cleanly(self) -> None:
        """A whole A-ASSOCIATE exchange when the link is idle."""
        if self.pair.idle():
            self.pair.associate()

    # ----------------------------------------------------------------- the transport

    @precondition(lambda self: self.pair.connect_pending)
    @rule(refuse=st.booleans())
    def transport_connect(self, refuse: bool) -> None:
        """AE-1's TRANSPORT CONNECT completes (once the old acceptor is done) or fails."""
        if refuse:
            self.pair.refuse_connect()
        elif self._listener_ready():
            self.pair.complete_connect()

    @rule(to=sides, max_bytes=st.none() | st.integers(1, 80))
    def deliver(self, to: Side, max_bytes: int | None) -> None:
        """Deliver the next chunk (maybe only its first bytes) or the peer's close."""
        self.pair.deliver(to, max_bytes)

    @rule(to=sides, primitive=primitives(), first=st.booleans())
    def hostile_pdu(self, to: Side, primitive: PDU, first: bool) -> None:
        """A well-formed PDU the peer had no business sending now, read at once.

        With ``first`` it overtakes what the well-behaved side has in flight.
        """
        self.pair.inject(to, primitive.encode(), first=first)
        while self.pair.deliver(to):
            pass

    @rule(to=sides, data=wire_faults(), deliver=st.booleans())
    def damaged_bytes(self, to: Side, data: bytes, deliver: bool) -> None:
        """Garbage, a truncated PDU or a corrupted one; read at once or left in flight."""
        self.pair.inject(to, data)
        if deliver:
            while self.pair.deliver(to):
                pass

    @rule(side=sides, data=st.binary(max_size=20))
    def stray_bytes_without_transport(self, side: Side, data: bytes) -> None:
        """Bytes reported while no transport is open (late, after close) change nothing."""
        endpoint = self.pair.side(side)
        if not endpoint.open:
            before = len(endpoint.conn.transcript)
            assert endpoint.conn.receive_bytes(data, self.pair.clock.now) == []
            assert len(endpoint.conn.transcript) == before

    @rule()
    def network_failure(self) -> None:
        self.pair.drop()

    @rule(seconds=st.sampled_from([0.0, 0.5, ARTIM - 0.001, ARTIM, 1e6]) | st.floats(0, 100))
    def clock_jump(self, seconds: float) -> None:
        """Time passes; every deadline that passed fires (ARTIM, application timeouts)."""
        self.pair.advance(seconds)

    # ----------------------------------------------------------------- invariants

    @invariant()
    def only_table_transitions(self) -> None:
        for endpoint in self.pair.endpoints:
            transcript = endpoint.conn.transcript
            for step in transcript[self.checked[endpoint.name] :]:
                action, next_states = ORACLE[(step.state, step.event)]
                assert step.action is action, step
                assert step.next_state in next_states, step
            for earlier, later in itertools.pairwise(transcript):
                assert earlier.next_state is later.state
            if transcript:
                assert transcript[-1].next_state is endpoint.state
            self.checked[endpoint.name] = len(transcript)

    @invariant()
    def artim_runs_only_in_sta2_and_sta13(self) -> None:
        for endpoint in self.pair.endpoints:
            running = endpoint.conn.artim_deadline is not None
            assert running is (endpoint.state in {State.Sta2, State.Sta13}), endpoint.state

    @invariant()
    def no_transport_in_sta1_or_sta4(self) -> None:
        for endpoint in self.pair.endpoints:
            if endpoint.state in {State.Sta1, State.Sta4}:
                assert not endpoint.conn.transport_open and not endpoint.open

    @invariant()
    def the_nearest_deadline_is_reported(self) -> None:
        for endpoint in self.pair.endpoints:
            conn = endpoint.conn
            deadlines = [
                d for d in (conn.artim_deadline, conn.application_deadline) if d is not None
            ]
            assert conn.timer_deadline == min(deadlines, default=None)

    # ----------------------------------------------------------------- teardown

    def _listener_ready(self) -> bool:
        """A new TCP connection gets the acceptor once its previous one is finished."""
        acceptor = self.pair.acceptor
        pipes = self.pair.pipes.values()
        return (
            acceptor.state is State.Sta1
            and not acceptor.open
            and not any(p.chunks or p.fin for p in pipes)
        )

    def teardown(self) -> None:
        """Drive to completion: every association ends in Sta1 with the transport closed."""
        pair = self.pair
        for _ in range(20):
            self._settle()
            if pair.idle():
                break
            for endpoint in pair.endpoints:
                self._abort(endpoint)
            self._settle()
            pair.advance(ARTIM + 100)
        self.only_table_transitions()
        assert pair.idle(), [(e.name, e.state, e.open) for e in pair.endpoints]

    def _settle(self) -> None:
        """Deliver everything; complete a pending connect once the listener is free."""
        pair = self.pair
        pair.pump(connect=False)
        if pair.connect_pending and self._listener_ready():
            pair.complete_connect()
            pair.pump(connect=False)

    def _abort(self, endpoint: Endpoint) -> None:
        """The user's A-ABORT where Table 9-10 allows it (not Sta1, Sta2, Sta13)."""
        try:
            self.pair.send(endpoint.name, make_abort())
        except LocalProtocolError:
            assert endpoint.state in {State.Sta1, State.Sta2, State.Sta13}


def _test_case(start: str) -> type[unittest.TestCase]:
    """The machine started at ``start``, with its share of the Hypothesis profile's budget."""
    machine: type[LinkMachine] = type(
        f"LinkMachineFrom{_slug(start)}", (LinkMachine,), {"start": start}
    )
    case: type[unittest.TestCase] = machine.TestCase
    profile = settings()  # the profile loaded by conftest ("dev", "ci" or "long")
    case.settings = settings(  # type: ignore[attr-defined]
        profile,
        max_examples=max(10, profile.max_examples // 8),
        stateful_step_count=50,
    )
    return case


def _slug(start: str) -> str:
    """A class-name-friendly form of a start's name: "Sta9Sta10"."""
    return "".join(ch for ch in start.split(",")[0] if ch.isalnum())


# One test per starting place, e.g. tests/test_connection_stateful.py::TestFromSta9Sta10.
for _start in STARTS:
    globals()[f"TestFrom{_slug(_start)}"] = _test_case(_start)
del _start


def test_oracle_loaded() -> None:
    assert len(ORACLE) == 123
