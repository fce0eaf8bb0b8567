"""Judge a recorded connection against PS3.8 Table 9-10 and derive the order to replay it in.

Each side of the recording runs through its own state machine, driven by what it sent (its
user's primitives, or what its provider owed) and what it received. The table below is an
independent transcription of PS3.8 Table 9-10 (ARCHITECTURE §3: never ``netdicom2.fsm``, a
table must not be checked against itself). A step the table does not allow is a *finding*:
the recorded peer deviated from PS3.8, and a replay must not copy it.

One deviation is replayed in a conforming order instead of as recorded: a requestor that sends
P-DATA-TF or A-RELEASE-RQ before the A-ASSOCIATE-AC arrived (pipelining; Evt9/Evt11 in Sta5 are
blank cells, §7.1.2: only A-ABORT may follow an A-ASSOCIATE request before its confirmation).
Those PDUs, and whatever that side did after them, are held until its state allows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netdicom2.conformance.table import cells
from netdicom2.pcaps.flows import DicomConnection, Event
from netdicom2.pdu import AAbortPDU, AAssociateAcPDU, AAssociateRjPDU, AAssociateRqPDU

__all__ = ["TABLE_9_10", "Finding", "Judgement", "Step", "judge"]

# PS3.8 Table 9-10 as {(event number, state number): action}, from the harness' independent
# transcription (conformance/table.py, checked there against state_table.csv).
TABLE_9_10: dict[tuple[int, int], str] = {
    (int(spec.event[3:]), int(spec.state[3:])): spec.action
    for spec in cells()
    if spec.action is not None
}

# Next state of each action (PS3.8 Tables 9-6..9-9); AE-6 and AR-8 branch (handled below).
_NEXT = {
    "AE-1": 4, "AE-2": 5, "AE-3": 6, "AE-4": 1, "AE-5": 2, "AE-6": 3, "AE-7": 6, "AE-8": 13,
    "DT-1": 6, "DT-2": 6, "AR-1": 7, "AR-2": 8, "AR-3": 1, "AR-4": 13, "AR-5": 1, "AR-6": 7,
    "AR-7": 8, "AR-8": 9, "AR-9": 11, "AR-10": 12, "AA-1": 13, "AA-2": 1, "AA-3": 1,
    "AA-4": 1, "AA-5": 1, "AA-6": 13, "AA-7": 13, "AA-8": 13,
}  # fmt: skip
_SENDS_ABORT = {"AA-1": 0, "AA-7": None, "AA-8": 2}  # action -> A-ABORT source it sends
_CLOSES = {"AE-4", "AR-3", "AA-2", "AA-3"}  # actions that close the transport (§5.5)
# PDU type -> event when the user asks to send it / when it is received (PS3.8 §9.2, Table 9-10).
_USER_EVENT = {0x01: 1, 0x02: 7, 0x03: 8, 0x04: 9, 0x05: 11, 0x06: 14, 0x07: 15}
_RECEIVE_EVENT = {0x01: 6, 0x02: 3, 0x03: 4, 0x04: 10, 0x05: 12, 0x06: 13, 0x07: 16}
_PIPELINED = (0x04, 0x05)


@dataclass(frozen=True)
class Finding:
    """A step of the recorded ``side`` that PS3.8 does not allow, with the cell or rule."""

    side: str
    time: float
    cell: str
    text: str


@dataclass
class Step:
    """One timeline event, judged: who, what, and how a replay should treat it.

    ``origin``: "user" (a primitive the side's user issued), "provider" (a PDU the side's
    provider owed after a received event: AA-1/AA-7/AA-8 aborts, AE-6 rejection), "transport"
    (a close). ``close`` for closes: "owed" (AE-4, AR-3, AA-2, AA-3), "timer" (ARTIM, Sta2 or
    Sta13), "reaction" (after the peer closed), or "violation".
    """

    event: Event
    origin: str
    conforming: bool
    state_before: int
    state_after: int
    deferred: bool = False
    close: str | None = None
    expected_abort_source: int | None = None
    finding: Finding | None = None
    peer_action: str | None = None  # the receiving side's Table 9-10 action for this event

    @property
    def side(self) -> str:
        """ "requestor" or "acceptor"."""
        return self.event.side

    @property
    def time(self) -> float:
        """Capture time of the event."""
        return self.event.time


@dataclass
class Judgement:
    """The judged steps (replay order), the findings, and whether judging was possible."""

    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    judged: bool = True
    reason: str = ""


@dataclass
class _Side:
    """One recorded peer's state machine."""

    name: str
    requestor: bool
    state: int
    owed_abort: list[tuple[int | None, str]] = field(default_factory=list)
    owed_close: str | None = None
    owed_reject: bool = False
    deferred: list[Event] = field(default_factory=list)
    closed: bool = False
    announced_max: int | None = None


class _Judge:
    """Runs both sides through Table 9-10 along the recorded timeline."""

    def __init__(self) -> None:
        self.requestor = _Side("requestor", True, 1)
        self.acceptor = _Side("acceptor", False, 2)  # AE-5 ran when the connection was accepted
        self.out = Judgement()
        self.clock = 0.0
        self.held: dict[int, Finding] = {}  # id(event) -> why it was held
        self.sent_any = False  # the requestor put bytes on the wire

    def side(self, name: str) -> tuple[_Side, _Side]:
        """(the named side, the other side)."""
        if name == "requestor":
            return self.requestor, self.acceptor
        return self.acceptor, self.requestor

    def finding(self, side: _Side, cell: str, text: str) -> Finding:
        """Record a deviation of ``side``."""
        found = Finding(side.name, self.clock, cell, text)
        self.out.findings.append(found)
        return found

    def run(self, event: Event) -> None:
        """Process one recorded event (or hold it behind earlier held ones)."""
        self.clock = max(self.clock, event.time)
        sender, peer = self.side(event.side)
        if event.kind == "pdu" and sender.requestor:
            self.sent_any = True
        if sender.deferred:
            sender.deferred.append(event)
            return
        if event.kind == "pdu":
            self.send(sender, peer, event)
        else:
            self.close(sender, peer, event)

    def _step(self, event: Event, sender: _Side, before: int, **kw: object) -> Step:
        """Append a step to the replay order."""
        moved = Event(max(event.time, self.clock), event.side, event.kind, event.record)
        step = Step(moved, state_before=before, state_after=sender.state, **kw)  # type: ignore[arg-type]
        held = self.held.pop(id(event), None)
        if held is not None:
            step.deferred = True
            step.finding = step.finding or held
        self.out.steps.append(step)
        return step

    def send(self, sender: _Side, peer: _Side, event: Event, deferred: bool = False) -> None:
        """``sender`` put a PDU on the wire; judge it, then let ``peer`` receive it."""
        record = event.record
        assert record is not None
        before = sender.state
        pdu = record.pdu
        if record.status != "ok" or pdu is None:
            self._send_broken(sender, peer, event, before)
            return
        name = type(pdu).__name__
        if isinstance(pdu, AAbortPDU) and sender.owed_abort:
            source, cell = sender.owed_abort.pop(0)
            found = None
            if source is not None and pdu.source != source:
                found = self.finding(
                    sender,
                    cell,
                    f"A-ABORT source {pdu.source}; {cell[-4:]} sends source "
                    f"{source} (PS3.8 Table 9-9)",
                )
            self._step(
                event,
                sender,
                before,
                origin="provider",
                conforming=found is None,
                expected_abort_source=source,
                finding=found,
            )
            self.receive(peer, 16, pdu)
            return
        if isinstance(pdu, AAssociateRjPDU) and sender.owed_reject:
            sender.owed_reject = False
            self._step(event, sender, before, origin="provider", conforming=True)
            self.receive(peer, 4, pdu)
            return
        if sender.owed_abort:
            source, cell = sender.owed_abort[0]
            found = self.finding(
                sender, cell, f"sent {name} where Table 9-10 {cell} requires an A-ABORT"
            )
            self._step(event, sender, before, origin="user", conforming=False, finding=found)
            self.receive(peer, _RECEIVE_EVENT[pdu.pdu_type], pdu)
            return
        event_number = _USER_EVENT[pdu.pdu_type]
        if event_number == 1 and sender.state == 1:
            sender.state = 4  # Evt1/Sta1 -> AE-1 (transport connect) then Evt2/Sta4 -> AE-2
            event_number = 2
        action = TABLE_9_10.get((event_number, sender.state))
        cell = f"Evt{event_number}/Sta{sender.state}"
        if action is None:
            if sender.requestor and sender.state == 5 and pdu.pdu_type in _PIPELINED:
                self.held[id(event)] = self.finding(
                    sender,
                    cell,
                    f"sent {name} before the A-ASSOCIATE-AC (pipelining): {cell} "
                    "is a blank cell of Table 9-10; §7.1.2 allows only A-ABORT here",
                )
                sender.deferred.append(event)
                return
            found = self.finding(
                sender,
                cell,
                f"sent {name} in Sta{sender.state}: {cell} is a blank cell of Table 9-10",
            )
            self._step(event, sender, before, origin="user", conforming=False, finding=found)
            self.receive(peer, _RECEIVE_EVENT[pdu.pdu_type], pdu)
            return
        found = None
        if isinstance(pdu, AAbortPDU) and pdu.source != 0:
            found = self.finding(
                sender,
                f"{cell} {action}",
                f"A-ABORT source {pdu.source} with "
                f"no received event calling for a provider abort; {action} "
                "sends source 0 (PS3.8 Table 9-9)",
            )
        limit = peer.announced_max
        if pdu.pdu_type == 0x04 and limit and (record.length or 0) > limit:
            found = self.finding(
                sender,
                "Annex D.1",
                f"P-DATA-TF PDU-length {record.length} exceeds the peer's Maximum Length {limit}",
            )
        if isinstance(pdu, AAssociateRqPDU | AAssociateAcPDU):
            sender.announced_max = pdu.max_length
        sender.state = _NEXT[action]
        if action in _CLOSES:
            sender.owed_close = f"{cell} {action}"
        self._step(
            event,
            sender,
            before,
            origin="user",
            conforming=found is None,
            deferred=deferred,
            finding=found,
            expected_abort_source=0 if action == "AA-1" else None,
        )
        oversize = pdu.pdu_type == 0x04 and limit and (record.length or 0) > limit
        # PS3.8 Annex D.1: more than the announced maximum is a protocol error ([interp] Evt19).
        self.receive(peer, 19 if oversize else _RECEIVE_EVENT[pdu.pdu_type], pdu)

    def _send_broken(self, sender: _Side, peer: _Side, event: Event, before: int) -> None:
        """Bytes that are not a whole valid PDU: undecodable, or cut short."""
        record = event.record
        assert record is not None
        limit = peer.announced_max
        oversize = (
            record.status == "incomplete"
            and record.pdu_type == 0x04
            and bool(limit)
            and (record.length or 0) > (limit or 0)
        )
        found = None
        if oversize:
            found = self.finding(
                sender,
                "Annex D.1",
                f"P-DATA-TF header declares PDU-length "
                f"{record.length}, over the peer's Maximum Length {limit}",
            )
        elif record.status == "invalid" or record.notes:
            found = self.finding(
                sender,
                "§9.3",
                f"sent {record.status} bytes at offset "
                f"{record.offset} ({record.error}): not a PS3.8 PDU",
            )
        self._step(event, sender, before, origin="user", conforming=False, finding=found)
        if record.status == "invalid" or oversize:
            # PS3.8 §9.2.2: an unrecognized or invalid PDU is Evt19 for the receiver; a
            # P-DATA-TF over the announced maximum is a protocol error (Annex D.1 [interp]).
            self.receive(peer, 19, None)

    def receive(self, side: _Side, event_number: int, pdu: object) -> None:
        """``side`` receives an event from the network (Evt3/4/6/10/12/13/16/19, Evt17)."""
        if side.closed:
            return
        action = TABLE_9_10.get((event_number, side.state))
        if action is None:
            return  # e.g. a PDU reaching a side that already closed (Sta1): nothing happens
        cell = f"Evt{event_number}/Sta{side.state} {action}"
        next_state = _NEXT[action]
        label = action
        if action == "AE-6":
            # PS3.8 AE-6: the provider rejects (RJ 1/2/2) when bit 0 of the version is clear;
            # then no A-ASSOCIATE indication reaches the user (§7.1.2.6).
            if isinstance(pdu, AAssociateRqPDU) and not pdu.protocol_version & 1:
                next_state = 13
                side.owed_reject = True
                label = "AE-6 reject"
        elif action == "AR-8":
            next_state = 9 if side.requestor else 10
        elif action in _SENDS_ABORT:
            side.owed_abort.append((_SENDS_ABORT[action], cell))
        if action in _CLOSES:
            side.owed_close = cell
        if self.out.steps and self.out.steps[-1].side != side.name:
            self.out.steps[-1].peer_action = label
        side.state = next_state
        if side.deferred and side.state != 5:
            self.flush(side)

    def flush(self, side: _Side) -> None:
        """Replay a side's held events now that its state changed (bounded by their number)."""
        held, side.deferred = side.deferred, []
        for index, event in enumerate(held):
            sender, peer = self.side(event.side)
            if event.kind == "pdu":
                self.send(sender, peer, event, deferred=True)
            else:
                self.close(sender, peer, event)
            if sender.deferred:  # held again: keep the rest behind it, in order
                sender.deferred.extend(held[index + 1 :])
                return

    def close(self, sender: _Side, peer: _Side, event: Event) -> None:
        """``sender`` closed (FIN) or reset (RST) the connection."""
        if sender.closed:
            return  # a RST after a FIN: the close already happened
        before = sender.state
        found = None
        if sender.owed_close is not None:
            kind = "owed"
        elif sender.state in (2, 13):
            kind = "timer"  # PS3.8 Evt18 (ARTIM expired) in Sta2/Sta13 -> AA-2
        elif sender.state == 1:
            kind = "reaction"
        else:
            kind = "violation"
            if sender.owed_abort:
                cell = sender.owed_abort[0][1]
                text = f"closed the transport instead of sending the A-ABORT of {cell}"
            else:
                text = (
                    f"closed the transport in Sta{sender.state} without A-RELEASE or "
                    "A-ABORT: no Table 9-10 action of this state closes it (PS3.8 §9.1.4, "
                    "§7.3); the peer sees Evt17 (AA-4, A-P-ABORT)"
                )
            found = self.finding(sender, f"Sta{sender.state}", text)
        if sender.requestor and before == 1 and not self.sent_any:
            # PS3.8 §9.1.2: once the transport is confirmed, AE-2 sends the A-ASSOCIATE-RQ.
            found = self.finding(
                sender,
                "Evt2/Sta4 AE-2",
                "opened the transport and closed it without sending an A-ASSOCIATE-RQ",
            )
            kind = "violation"
        sender.state = 1
        sender.closed = True
        sender.owed_close = None
        self._step(
            event,
            sender,
            before,
            origin="transport",
            conforming=found is None,
            close=kind,
            finding=found,
        )
        if peer.state != 1:
            self.receive(peer, 17, None)


def judge(conn: DicomConnection) -> Judgement:
    """Judge a recorded connection and give the order a conforming replay follows."""
    timeline = conn.timeline()
    first = next((e for e in timeline if e.kind == "pdu"), None)
    starts_with_rq = (
        first is not None
        and first.side == "requestor"
        and isinstance(first.record.pdu if first.record else None, AAssociateRqPDU)
    )
    if not starts_with_rq and not conn.rq.stream.start_known:
        out = Judgement(judged=False, reason="the capture does not start with an A-ASSOCIATE-RQ")
        out.steps = [
            Step(e, "user" if e.kind == "pdu" else "transport", True, 0, 0) for e in timeline
        ]
        return out
    judge_ = _Judge()
    for event in timeline:
        judge_.run(event)
    for side in (judge_.requestor, judge_.acceptor):
        if side.deferred:
            judge_.finding(
                side,
                "Sta5",
                f"{len(side.deferred)} events held for a state that never came (no A-ASSOCIATE-AC)",
            )
            for event in side.deferred:
                judge_._step(
                    event, side, side.state, origin="user", conforming=False, deferred=True
                )
            side.deferred = []
    return judge_.out
