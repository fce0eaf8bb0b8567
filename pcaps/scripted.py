"""The scripted peer both live replays share: one recorded side played, the other compared.

``--against`` plays the recorded requestor to a live acceptor (``pcaps.replay_remote``),
``--listen`` the recorded acceptor to a live requestor (``pcaps.replay_listen``). Both walk the
same plan of the recorded timeline: the played side's PDUs and closes are actions, the other
side's are expectations compared field by field (``pcaps.compare``): one PDU at a time for
A-ASSOCIATE, A-RELEASE and A-ABORT, P-DATA per DIMSE message (fragmentation is the peer's
business, PS3.8 Annex E), and its transport close. What is sent, and how it is adapted to the
live peer, is each side's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import Message
from netdicom2.pcaps.compare import MessageAssembler, compare_messages, compare_pdus
from netdicom2.pcaps.describe import PDU_NAMES
from netdicom2.pcaps.flows import Event
from netdicom2.pcaps.ignore import apply_ignores
from netdicom2.pcaps.model import Finding
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.plan import Difference, ReplayResult, Wire, describe_bytes
from netdicom2.pdu import AAssociateAcPDU, AAssociateRqPDU, PDataTfPDU, decode

__all__ = ["Item", "ScriptedPeer", "excuse", "plan"]


@dataclass
class Item:
    """One step of the plan.

    Played side: "send" (one PDU), "sendpdata" (a block of P-DATA, sent per DIMSE message),
    "close". Compared side: "expect" (one PDU), "pdata" (a block of P-DATA), "eof".
    """

    kind: str
    step: int
    time: float
    records: list[PduRecord] = field(default_factory=list)
    how: str = ""
    flexible: bool = False


def plan(timeline: list[Event], ours: str, *, pdata_messages: bool = False) -> list[Item]:
    """The recorded timeline as ``ours`` side's actions and the other side's expectations.

    With ``pdata_messages`` our consecutive P-DATA-TF form one "sendpdata" block (sent per DIMSE
    message); otherwise every recorded PDU of ours is sent as recorded. The other side's PDUs that
    did not decode are not expected (nothing to compare them with).
    """
    items: list[Item] = []
    last_theirs = 0
    for index, event in enumerate(timeline):
        record = event.record
        mine = event.side == ours
        if record is None:
            # After its RJ, RELEASE-RP or A-ABORT the other side is in Sta13 and may close
            # first (ARTIM) or wait for ours (PS3.8 Table 9-10 Sta13): either order conforms.
            kind = "close" if mine else "eof"
            flexible = not mine and last_theirs in (0x03, 0x06, 0x07)
            items.append(Item(kind, index, event.time, how=event.kind, flexible=flexible))
            continue
        if not mine:
            last_theirs = record.pdu_type
        pdata = record.status == "ok" and isinstance(record.pdu, PDataTfPDU)
        if mine:
            kind = "sendpdata" if pdata and pdata_messages else "send"
        else:
            kind = "pdata" if pdata else "expect"
        if kind in ("pdata", "sendpdata") and items and items[-1].kind == kind:
            items[-1].records.append(record)
        elif mine or record.status == "ok":
            items.append(Item(kind, index, event.time, [record]))
    return items


def excuse(
    differences: list[Difference],
    timeline: list[Event],
    findings: Sequence[Finding],
    ignore: Sequence[str],
) -> None:
    """Excuse differences at or after the recording's first deviation from PS3.8, then --ignore.

    A conforming peer may answer a non-conforming recording otherwise than the recorded peer did.
    """
    if findings:
        first = min(f.time for f in findings)
        text = next(f.text for f in findings if f.time == first)
        for diff in differences:
            when = timeline[diff.step].time if diff.step is not None else float("inf")
            if when >= first:
                diff.excused_by = text
    apply_ignores(differences, ignore)


class ScriptedPeer:
    """Walks a plan on a live connection: sends our side, compares the live peer's."""

    #: the A-ASSOCIATE PDU in which the live peer announces its Maximum Length (PS3.8 D.1)
    live_associate: type[AAssociateRqPDU] | type[AAssociateAcPDU]
    #: a close of the live peer (FIN or RST) before its recorded close ends the "eof" step
    #: (otherwise only a reset does, and PDUs still buffered after a FIN are extra)
    any_close_is_eof = False
    #: our recorded close may go before every recorded close of the peer (else only flexible ones)
    swap_any_eof = False
    wire: Wire

    def __init__(
        self,
        result: ReplayResult,
        timeout: float,
        *,
        timing: str = "asap",
        first: float = 0.0,
        strict_datasets: bool = False,
    ) -> None:
        self.result = result
        self.timeout = timeout
        self.timing = timing
        self.first = first
        self.started = time.monotonic()
        self.strict = strict_datasets
        self.recorded = MessageAssembler()  # the compared side's recorded messages
        self.live = MessageAssembler()
        self.diverged = False
        self.live_max = 0  # Maximum Length the live peer announced (0: none, no limit)
        self.filled_at: int | None = None  # step of a hole sent zero-filled

    def diff(self, step: int | None, what: str, expected: str, actual: str) -> None:
        """Record a difference (marked when compared after a zero-filled hole)."""
        marked = (
            None if self.filled_at is None else f"after the hole filled at step {self.filled_at}"
        )
        self.result.differences.append(Difference(step, what, expected, actual, marked=marked))

    def wait(self, recorded: float) -> None:
        """``--timing recorded``: keep the recorded spacing (an Event wait: timing, not sync)."""
        if self.timing == "recorded":
            delay = (recorded - self.first) - (time.monotonic() - self.started)
            if delay > 0:
                threading.Event().wait(delay)

    def next_pdu(self, timeout: float | None = None) -> bytes | None:
        """The live peer's next PDU; b"" on timeout; None on close."""
        try:
            pdu = self.wire.read_pdu(self.timeout if timeout is None else timeout, time.monotonic)
        except TimeoutError:
            return b""
        if pdu is not None:
            self.result.received.append(describe_bytes(pdu))
        return pdu

    def walk(self, items: list[Item]) -> None:
        """Run the items in order until one diverges."""
        index = 0
        while index < len(items) and not self.diverged:  # bounded by len(items)
            item = items[index]
            after = items[index + 1] if index + 1 < len(items) else None
            swap = item.flexible or self.swap_any_eof
            if item.kind == "eof" and swap and after is not None and after.kind == "close":
                items[index], items[index + 1] = after, item  # Sta13: our close may go first
                continue
            getattr(self, f"_do_{item.kind}")(item)
            index += 1

    def stop(self, step: int, record: PduRecord, why: str) -> None:
        """Stop before a PDU with missing bytes: sending it would desynchronise the stream."""
        length = record.length
        declared = "" if length is None else f" of PDU-length {length}"
        self.result.incomplete = (
            f"step {step}: the capture holds {len(record.data)} bytes of this "
            f"{PDU_NAMES.get(record.pdu_type, 'PDU')}{declared}: {why}"
        )
        self.diverged = True

    def _miss(self, step: int, what: str, expected: str, got: bytes | None) -> None:
        """Nothing came where the recording has a PDU: a difference, and the walk stops."""
        actual = "connection closed" if got is None else "nothing (timeout)"
        self.diff(step, what, expected, actual)
        self.diverged = True

    def _do_close(self, item: Item) -> None:
        """Close or reset as our recorded side did."""
        self.wait(item.time)
        self.wire.close(item.how)

    def _do_eof(self, item: Item) -> None:
        """The recorded peer closed here: the live one must close too."""
        if self.wire.eof and (self.wire.reset or self.any_close_is_eof):
            return
        pdu = self.next_pdu()
        while pdu:  # bounded by the peer's output before its close
            self.diff(item.step, "extra", "transport close", describe_bytes(pdu))
            pdu = self.next_pdu()
        if pdu == b"":
            self.diff(item.step, "close", "transport closed", "still open")
            self.diverged = True

    def _do_expect(self, item: Item) -> None:
        """One PDU other than P-DATA, compared field by field."""
        record = item.records[0]
        assert record.pdu is not None
        got = self.next_pdu()
        if not got:
            self._miss(item.step, "pdu", describe_bytes(record.data), got)
            return
        try:
            live = decode(got)
        except PDUDecodeError as exc:
            self.diff(item.step, "pdu", describe_bytes(record.data), f"undecodable: {exc}")
            self.diverged = True
            return
        if isinstance(live, self.live_associate):
            self.live_max = live.max_length or 0  # PS3.8 Annex D.1: 0 (or absent) is no limit
        for name, want, have in compare_pdus(record.pdu, live):
            self.diff(item.step, name, want, have)
        if type(live) is not type(record.pdu):
            self.diverged = True

    def _do_pdata(self, item: Item) -> None:
        """A block of recorded P-DATA: read live P-DATA until as many messages completed."""
        done = len(self.recorded.messages)
        self.recorded.add(r.pdu for r in item.records if r.pdu is not None)
        target = len(self.recorded.messages)
        while len(self.live.messages) < target:  # bounded by timeouts and the peer's output
            got = self.next_pdu()
            if not got:
                self._miss(
                    item.step, "P-DATA", f"{target - len(self.live.messages)} more messages", got
                )
                return
            try:
                live = decode(got)
            except PDUDecodeError as exc:
                self.diff(item.step, "P-DATA", "P-DATA-TF", f"undecodable: {exc}")
                self.diverged = True
                return
            if not isinstance(live, PDataTfPDU):
                self.diff(item.step, "P-DATA", "P-DATA-TF", describe_bytes(got))
                self.diverged = True
                return
            self.live.add([live])
        for want, have in zip(
            self.recorded.messages[done:target], self.live.messages[done:target], strict=True
        ):
            self.matched(want, have)
            for name, a, b in compare_messages(want, have, strict_datasets=self.strict):
                self.diff(item.step, name, a, b)

    def matched(self, recorded: Message, live: Message) -> None:
        """A recorded message of the peer and the live one in its place (a hook)."""
