"""Fuzz targets (the protocol), the target's scripted user, and the sans-I/O core on a fake clock.

Each target runs one ``Case``: reach the scenario's start state, deliver the stream, observe the
reaction, and judge it with ``fuzz.check``. White-box targets also report their user's
indications and the Table 9-10 cells their transcript went through. The network targets (our
provider, a remote peer) are in ``fuzz.nettargets``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from netdicom2.acse import build_rq, negotiate
from netdicom2.connection import CloseTransport, Connection, Effect, Indicate, SendPDU
from netdicom2.exceptions import LocalProtocolError
from netdicom2.fuzz.check import Facts, Judgement, evaluate
from netdicom2.fuzz.interp import NETDICOM2
from netdicom2.fuzz.oracle import Observed, wire_kind
from netdicom2.fuzz.scenarios import PIPELINE_PREFIX, SCENARIOS, Scenario, UserScript
from netdicom2.fuzz.strategies import Case
from netdicom2.fuzz.validate import judge
from netdicom2.fuzz.wire import accept_all, setup_pdu
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

__all__ = ["LocalTarget", "Result", "Target", "first_ac", "indication_kind"]

_VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class Result:
    """One executed case: the judgement, the outcome class, the cells reached."""

    case: Case
    judgement: Judgement
    outcome: str
    cells: list[tuple[str, str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    raw: list[str] = field(default_factory=list)  # what the target sent, hex, per PDU


class Target(Protocol):
    """What a campaign needs from a target."""

    name: str
    scenarios: list[str]
    pipelinable: frozenset[str]
    max_delay: float
    ends: tuple[str, ...]
    deadline: float | None  # the campaign's end (monotonic); network targets stop there

    def run(self, case: Case) -> Result: ...

    def close(self) -> None: ...


def indication_kind(primitive: PDU) -> str:
    """The primitive a user receives, named as the oracle names it (PS3.8 §7)."""
    if isinstance(primitive, AAbortPDU):
        return "A-ABORT" if primitive.source == 0 else "A-P-ABORT"
    names: dict[type, str] = {
        AAssociateRqPDU: "A-ASSOCIATE-RQ",
        AAssociateAcPDU: "A-ASSOCIATE-AC",
        AAssociateRjPDU: "A-ASSOCIATE-RJ",
        PDataTfPDU: "P-DATA",
        AReleaseRqPDU: "A-RELEASE-RQ",
        AReleaseRpPDU: "A-RELEASE-RP",
    }
    return names[type(primitive)]


def first_ac(outputs: list[bytes]) -> bytes | None:
    """The first A-ASSOCIATE-AC among PDUs a target sent (it says which contexts it accepted)."""
    return next((data for data in outputs if data[:1] == b"\x02"), None)


def _requestor_rq() -> AAssociateRqPDU:
    """The A-ASSOCIATE-RQ a white-box requestor target sends (Verification)."""
    return build_rq("FUZZ-SCP", "TARGET-SCU", [(_VERIFICATION, ["1.2.840.10008.1.2"])])


class _User:
    """The target's local user, following a ``UserScript`` (PS3.8 §7 primitives)."""

    def __init__(self, script: UserScript, send: Callable[[PDU], None]) -> None:
        self.script = script
        self.send = send
        self.indications: list[str] = []
        self.pending_release = False
        self.changed = threading.Condition()

    def _try(self, primitive: PDU) -> bool:
        """Issue a primitive; a blank cell (the state moved on meanwhile) is not an error."""
        try:
            self.send(primitive)
        except LocalProtocolError:
            return False
        return True

    def react(self, primitive: PDU) -> None:
        """Record an indication and answer it as the script says."""
        with self.changed:
            self.indications.append(indication_kind(primitive))
            self.changed.notify_all()
        script = self.script
        if isinstance(primitive, AAssociateRqPDU) and not script.hold_associate:
            answer, _ = negotiate(primitive)
            if self._try(answer) and isinstance(answer, AAssociateAcPDU):
                self._after_association()
        elif isinstance(primitive, AAssociateAcPDU):
            self._after_association()
        elif isinstance(primitive, AReleaseRqPDU) and not script.hold_release:
            # Evt14 is defined in Sta8/Sta9; in Sta10 the user waits for AR-10 (Sta12).
            self.pending_release = not self._try(AReleaseRpPDU())
        elif isinstance(primitive, AReleaseRpPDU) and self.pending_release:
            self.pending_release = not self._try(AReleaseRpPDU())

    def _after_association(self) -> None:
        """The script's own release (Evt11) or abort (Evt15) once associated."""
        if self.script.after_association == "release":
            self._try(AReleaseRqPDU())
        elif self.script.after_association == "abort":
            self._try(AAbortPDU(source=0))


def _prefix(case: Case) -> list[tuple[str, bytes]]:
    """The setup PDUs sent along with the stream in a pipelined case."""
    if not case.pipelined:
        return []
    return [(f"setup:{name}", setup_pdu(name)) for name in PIPELINE_PREFIX[case.scenario]]


# ------------------------------------------------------------------------------- local


class LocalTarget:
    """The sans-I/O ``Connection`` on a fake clock: exact, deterministic, fast."""

    name = "local"
    max_delay = 0.05
    ends: tuple[str, ...] = ("fin", "fin", "quiet", "linger")

    def __init__(
        self, artim: float = 30.0, *, readings: Mapping[str, str] | None = NETDICOM2
    ) -> None:
        self.artim = artim
        self.readings = readings  # the [interp] readings held to (None: black-box judging)
        self.deadline: float | None = None  # a local case takes microseconds: not used
        self.scenarios = list(SCENARIOS)
        self.pipelinable = frozenset(PIPELINE_PREFIX)

    def close(self) -> None:
        """Nothing to release."""

    def run(self, case: Case) -> Result:
        """Run a case against a fresh Connection; time moves only by the case's delays."""
        began = time.perf_counter()
        scenario = SCENARIOS[case.scenario]
        sim = _Sim(self.artim, scenario.user)
        facts = Facts(start="Sta2" if case.pipelined else scenario.start, artim=self.artim)
        facts.prefix = _prefix(case)
        facts.setup_error = sim.setup(scenario, facts, case.pipelined)
        base_out, base_ind = len(sim.outputs), len(sim.user.indications)
        facts.t_start = sim.times[base_out - 1] if base_out else 0.0
        delivered = sim.deliver(case, b"".join(d for _, d in facts.prefix))
        facts.delivered = delivered if case.delivery.close_at is not None else None
        our_close = "fin" if case.delivery.close_at is not None else None
        if not sim.closed and our_close is None:
            if case.end == "linger" and sim.conn.artim_deadline is not None:
                sim.advance(sim.conn.artim_deadline - sim.clock)
            if not sim.closed:
                our_close = "fin"
                sim.peer_closed()
        outputs = sim.outputs[base_out:]
        facts.t_outputs = sim.times[base_out:]
        facts.t_close = sim.t_close
        facts.target_ac = first_ac(sim.outputs)
        observed = Observed(
            [wire_kind(d) for d in outputs],
            "close" if sim.closed else "open",
            sim.user.indications[base_ind:],
            our_close,
        )
        policy = scenario.user.policy()
        judgement = evaluate(
            [*case.pdus], observed, facts, policy, tolerance=(0.0, 0.0), readings=self.readings
        )
        cells = [(t.event.value, t.state.value, t.action.value) for t in sim.conn.transcript]
        return Result(case, judgement, observed.outcome(), cells, time.perf_counter() - began)


class _Sim:
    """A Connection driven by a scripted user on a fake clock; performs its effects."""

    def __init__(self, artim: float, script: UserScript) -> None:
        self.conn = Connection(artim_timeout=artim, max_pdu_length=16384)
        self.clock = 0.0
        self.outputs: list[bytes] = []
        self.times: list[float] = []
        self.closed = False
        self.t_close: float | None = None
        self.queue: list[PDU] = []
        self.user = _User(script, self._user_send)

    def _user_send(self, primitive: PDU) -> None:
        self.perform(self.conn.send(primitive, self.clock))

    def perform(self, effects: list[Effect]) -> None:
        """Carry out effects, then let the user react to the indications among them."""
        for effect in effects:
            if isinstance(effect, SendPDU):
                self.outputs.append(effect.data)
                self.times.append(self.clock)
            elif isinstance(effect, Indicate):
                self.queue.append(effect.primitive)
            elif isinstance(effect, CloseTransport) and not self.closed:
                self.closed = True
                self.t_close = self.clock
        while self.queue:
            self.user.react(self.queue.pop(0))

    def feed(self, data: bytes) -> None:
        """Bytes from the fuzzing peer (ignored once the core closed the transport)."""
        if data and not self.closed:
            self.perform(self.conn.receive_bytes(data, self.clock))

    def advance(self, delay: float) -> None:
        """Move the fake clock, firing the timer exactly at its deadline (Evt18)."""
        target = self.clock + max(0.0, delay)
        deadline = self.conn.timer_deadline
        while deadline is not None and deadline <= target and not self.closed:
            self.clock = deadline
            self.perform(self.conn.handle_timer(self.clock))
            if self.conn.timer_deadline == deadline:
                break
            deadline = self.conn.timer_deadline
        self.clock = max(self.clock, target)

    def setup(self, scenario: Scenario, facts: Facts, pipelined: bool) -> str:
        """Open the transport and take the setup steps; "" on success."""
        if scenario.requestor:
            self.user._try(_requestor_rq())
            self.perform(self.conn.transport_connected(self.clock))
        else:
            self.perform(self.conn.transport_accepted(self.clock))
        if pipelined:
            return ""
        seen = 0
        target_rq = b""
        for step in scenario.steps:
            verb, _, what = step.partition(":")
            if verb == "send":
                if what == "AC":
                    data, facts.accepted = accept_all(target_rq)
                    facts.peer_max = judge(target_rq).max_length
                else:
                    data = setup_pdu(what)
                self.feed(data)
            elif verb == "expect":
                if seen >= len(self.outputs) or not wire_kind(self.outputs[seen]).startswith(what):
                    return f"{step}: got {[wire_kind(d) for d in self.outputs[seen:]]}"
                got = self.outputs[seen]
                seen += 1
                if what == "AC":
                    verdict = judge(got)
                    facts.accepted = frozenset(verdict.context_ids)
                    facts.peer_max = verdict.max_length
                elif what == "RQ":
                    target_rq = got
            elif verb == "sync" and self.conn.state.value != what:
                return f"{step}: target in {self.conn.state.value}"
        return ""

    def deliver(self, case: Case, prefix: bytes) -> int:
        """Feed the stream segment by segment, the clock moving by each delay."""
        stream = case.stream
        plan = case.delivery
        limit = len(stream) if plan.close_at is None else min(plan.close_at, len(stream))
        bounds = [0, *[c for c in plan.cuts if 0 < c < limit], limit]
        for index in range(len(bounds) - 1):
            if index < len(plan.delays):
                self.advance(plan.delays[index])
            chunk = stream[bounds[index] : bounds[index + 1]]
            self.feed(prefix + chunk if index == 0 else chunk)
        if plan.close_at is not None and not self.closed:
            self.peer_closed()
        return limit

    def peer_closed(self) -> None:
        """Evt17: the fuzzing peer closed; the transport is gone for the target too."""
        self.perform(self.conn.transport_closed(self.clock))
        if not self.closed:
            self.closed = True
            self.t_close = self.clock
