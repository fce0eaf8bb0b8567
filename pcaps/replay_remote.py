"""`--against HOST:PORT`: play the recorded requestor against a live acceptor and compare.

The scripted requestor sends the recorded requestor's bytes in recorded order (pipelining and
malformed PDUs included: that is what the recording holds). After each of its steps it reads
the live acceptor's answers and compares them with the recorded ones field by field
(``pcaps.compare``): A-ASSOCIATE-AC/RJ, A-ABORT and A-RELEASE PDU by PDU, P-DATA message by
message (fragmentation is the peer's business, PS3.8 Annex E). Differences at or after a
recorded deviation from PS3.8 (``pcaps.model``) are excused: a conforming peer may answer a
non-conforming request otherwise than the recorded peer did.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from netdicom2.cli import connect_error
from netdicom2.exceptions import PDUDecodeError
from netdicom2.pcaps.compare import MessageAssembler, compare_messages, compare_pdus
from netdicom2.pcaps.describe import PDU_NAMES
from netdicom2.pcaps.flows import DicomConnection, Event
from netdicom2.pcaps.ignore import apply_ignores
from netdicom2.pcaps.model import judge
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.plan import Difference, ReplayResult, Wire, describe_bytes
from netdicom2.pcaps.reassembly import Stream
from netdicom2.pcaps.refragment import capture_lost, fill_hole, refragment
from netdicom2.pdu import AAssociateAcPDU, PDataTfPDU, decode

_WIRE_LIMIT = 64 * 1024 * 1024  # largest PDU rebuilt from a capture with a hole

__all__ = ["Connector", "replay_remote"]

Connector = Callable[[tuple[str, int]], socket.socket]


@dataclass
class _Item:
    """One step: "send", "close", "expect" (one PDU), "pdata" (a block of P-DATA), "eof"."""

    kind: str
    step: int
    time: float
    records: list[PduRecord] = field(default_factory=list)
    how: str = ""
    flexible: bool = False


def _items(timeline: list[Event]) -> list[_Item]:
    """The recorded timeline as requestor actions and acceptor expectations."""
    items: list[_Item] = []
    last_acceptor_pdu = 0
    for index, event in enumerate(timeline):
        record = event.record
        if event.side == "acceptor" and record is not None:
            last_acceptor_pdu = record.pdu_type
        if event.side == "requestor":
            if record is not None:
                items.append(_Item("send", index, event.time, [record]))
            else:
                items.append(_Item("close", index, event.time, how=event.kind))
        elif record is None:
            # After its RJ, RELEASE-RP or A-ABORT the acceptor is in Sta13 and may close
            # first (ARTIM) or wait for the requestor: either order conforms.
            flexible = last_acceptor_pdu in (0x03, 0x06, 0x07)
            items.append(_Item("eof", index, event.time, flexible=flexible))
        elif record.status == "ok" and isinstance(record.pdu, PDataTfPDU):
            if items and items[-1].kind == "pdata":
                items[-1].records.append(record)
            else:
                items.append(_Item("pdata", index, event.time, [record]))
        elif record.status == "ok":
            items.append(_Item("expect", index, event.time, [record]))
    return items


class _Remote:
    """Runs the items against the live peer and fills the result."""

    def __init__(
        self,
        wire: Wire,
        result: ReplayResult,
        timeout: float,
        timing: str,
        first: float,
        strict_datasets: bool,
    ) -> None:
        self.wire = wire
        self.result = result
        self.timeout = timeout
        self.timing = timing
        self.first = first
        self.started = time.monotonic()
        self.strict = strict_datasets
        self.recorded = MessageAssembler()
        self.live = MessageAssembler()
        self.diverged = False
        self.stopped = False  # stopped before a PDU the capture lacks bytes of
        self.verbatim = False
        self.fill_holes = False
        self.stream: Stream | None = None
        self.ended = False  # the recorded connection was closed (FIN/RST) by either side
        self.live_max: int | None = None  # Maximum Length of the live A-ASSOCIATE-AC
        self.refragmented = 0
        self.filled_at: int | None = None

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
        """The next live PDU; None on close; TimeoutError."""
        pdu = self.wire.read_pdu(self.timeout if timeout is None else timeout, time.monotonic)
        if pdu is not None:
            self.result.received.append(describe_bytes(pdu))
        return pdu

    def run(self, items: list[_Item], settle: float) -> None:
        """Walk the items; after a divergence, stop sending and only drain."""
        index = 0
        while index < len(items) and not self.diverged:  # bounded by len(items)
            item = items[index]
            after = items[index + 1] if index + 1 < len(items) else None
            if item.kind == "eof" and item.flexible and after is not None and after.kind == "close":
                items[index], items[index + 1] = after, item  # Sta13: our close may go first
                continue
            getattr(self, f"_do_{item.kind}")(item)
            index += 1
        if self.stopped:
            return  # nothing after the missing bytes can be compared
        complete = any(i.kind in ("eof", "close") for i in items)
        deadline = time.monotonic() + settle
        try:
            # Bounded by one overall deadline, however much the peer keeps sending.
            while (pdu := self.next_pdu(max(0.0, deadline - time.monotonic()))) is not None:
                if complete:
                    self.diff(None, "extra", "nothing", describe_bytes(pdu))
                else:  # the capture ends before the association did: nothing to compare
                    self.result.notes.append(f"after the end of the capture: {describe_bytes(pdu)}")
        except TimeoutError:
            pass

    def _stop(self, step: int, record: PduRecord, why: str) -> None:
        """Stop before a PDU with missing bytes: sending it would desynchronise the stream."""
        length = record.length
        declared = "" if length is None else f" of PDU-length {length}"
        self.result.incomplete = (
            f"step {step}: the capture holds {len(record.data)} bytes of this "
            f"{PDU_NAMES.get(record.pdu_type, 'PDU')}{declared}: {why}"
        )
        self.stopped = self.diverged = True

    def _lost(self, record: PduRecord) -> bool:
        """The capture lost bytes of this PDU: a hole in it, or the capture ends inside it."""
        return self.stream is None or capture_lost(self.stream, record, self.ended)

    def _payload(self, item: _Item) -> list[bytes] | None:
        """What to send for a recorded requestor PDU (None: stop here)."""
        record = item.records[0]
        data = record.data
        if record.status == "incomplete" and not self._lost(record):
            # The connection ended with these bytes and no hole: the sender sent no more
            # (a malformed or cut PDU is what the recording holds): send it as recorded.
            return [data]
        if record.status == "incomplete":
            if not self.fill_holes or self.stream is None:
                self._stop(item.step, record, "the replay stops before it (--fill-holes sends it)")
                return None
            filled = fill_hole(self.stream, record, _WIRE_LIMIT)
            if filled is None:
                self._stop(item.step, record, "it cannot be rebuilt, the replay stops before it")
                return None
            data, missing = filled
            self.filled_at = item.step if self.filled_at is None else self.filled_at
            self.result.notes.append(
                f"step {item.step}: {missing} missing bytes sent as zeros (--fill-holes); "
                "later comparisons are marked"
            )
        if self.verbatim or not self.live_max or data[:1] != b"\x04":
            return [data]
        if len(data) - 6 <= self.live_max:
            return [data]
        try:
            pdu = decode(data)
        except PDUDecodeError:
            return [data]  # malformed as recorded: sent as recorded
        assert isinstance(pdu, PDataTfPDU)
        self.refragmented += 1
        return refragment(pdu, self.live_max)

    def _do_send(self, item: _Item) -> None:
        """Write the recorded requestor bytes (re-fragmented to the live Maximum Length)."""
        payload = self._payload(item)
        if payload is None:
            return
        self.wait(item.time)
        for data in payload:
            if not self.wire.send(data, self.timeout):
                self.result.notes.append(f"step {item.step}: the peer had closed; not sent")
                return
        self.result.sent += 1

    def _do_close(self, item: _Item) -> None:
        """Close or reset as the recorded requestor did."""
        self.wait(item.time)
        self.wire.close(item.how)

    def _do_eof(self, item: _Item) -> None:
        """The recorded acceptor closed here: the live one must close too."""
        if self.wire.eof and self.wire.reset:
            return
        try:
            pdu = self.next_pdu()
            while pdu is not None:  # bounded by the peer's output before its close
                self.diff(item.step, "extra", "transport close", describe_bytes(pdu))
                pdu = self.next_pdu()
        except TimeoutError:
            self.diff(item.step, "close", "transport closed", "still open")
            self.diverged = True

    def _do_expect(self, item: _Item) -> None:
        """One non-P-DATA PDU, compared field by field."""
        record = item.records[0]
        assert record.pdu is not None
        try:
            got = self.next_pdu()
        except TimeoutError:
            got = b""
        if not got:
            self.diff(
                item.step,
                "pdu",
                describe_bytes(record.data),
                "connection closed" if got is None else "nothing (timeout)",
            )
            self.diverged = True
            return
        try:
            live = decode(got)
        except PDUDecodeError as exc:
            self.diff(item.step, "pdu", describe_bytes(record.data), f"undecodable: {exc}")
            self.diverged = True
            return
        if isinstance(live, AAssociateAcPDU):
            self.live_max = live.max_length or 0  # PS3.8 Annex D.1: 0 (or absent) is no limit
        for name, want, have in compare_pdus(record.pdu, live):
            self.diff(item.step, name, want, have)
        if type(live) is not type(record.pdu):
            self.diverged = True

    def _do_pdata(self, item: _Item) -> None:
        """A block of recorded P-DATA: read live P-DATA until as many messages completed."""
        done = len(self.recorded.messages)
        self.recorded.add(r.pdu for r in item.records if r.pdu is not None)
        target = len(self.recorded.messages)
        while len(self.live.messages) < target:  # bounded by timeouts and the peer's output
            try:
                got = self.next_pdu()
            except TimeoutError:
                got = b""
            if not got:
                self.diff(
                    item.step,
                    "P-DATA",
                    f"{target - len(self.live.messages)} more messages",
                    "connection closed" if got is None else "nothing (timeout)",
                )
                self.diverged = True
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
            for name, a, b in compare_messages(want, have, strict_datasets=self.strict):
                self.diff(item.step, name, a, b)


def replay_remote(
    conn: DicomConnection,
    address: tuple[str, int],
    *,
    connect: Connector | None = None,
    timing: str = "asap",
    step_timeout: float = 10.0,
    settle: float = 0.1,
    strict_datasets: bool = False,
    verbatim: bool = False,
    fill_holes: bool = False,
    ignore: Sequence[str] = (),
) -> ReplayResult:
    """Play ``conn``'s requestor against the live acceptor at ``address``.

    P-DATA-TF longer than the live acceptor's Maximum Length are re-fragmented (PS3.8 Annex
    D.1) unless ``verbatim``; a PDU the capture lacks bytes of stops the replay before it
    unless ``fill_holes`` (then it is sent with zeros and later differences are marked).
    """
    result = ReplayResult(conn.label, f"against {address[0]}:{address[1]}")
    started = time.monotonic()
    judgement = judge(conn)
    result.findings = list(judgement.findings)
    timeline = conn.timeline()
    if not timeline:
        result.skipped = "the recording holds no PDU and no close"
        return result
    try:
        sock = connect(address) if connect else socket.create_connection(address, step_timeout)
    except OSError as exc:
        # Peer down is not peer different: no connection, nothing to compare.
        result.unreachable = connect_error(exc, *address)
        result.elapsed = time.monotonic() - started
        return result
    wire = Wire(sock)
    first = timeline[0].time if timeline else 0.0
    remote = _Remote(wire, result, step_timeout, timing, first, strict_datasets)
    remote.verbatim, remote.fill_holes, remote.stream = verbatim, fill_holes, conn.rq.stream
    remote.ended = conn.rq.stream.closed_time is not None or conn.ac.stream.closed_time is not None
    try:
        remote.run(_items(timeline), settle)
    finally:
        wire.shutdown()
    if remote.refragmented:
        result.notes.append(
            f"{remote.refragmented} recorded P-DATA-TF longer than the live acceptor's Maximum "
            f"Length {remote.live_max} were re-fragmented (PS3.8 Annex D.1; PDV boundaries and "
            "control headers kept; --verbatim sends them as recorded)"
        )
    if wire.reset and not result.received and conn.ac.pdus:
        # Reset before the peer said anything: a closed service or a filter, not a behaviour.
        result.unreachable = f"{address[0]}:{address[1]} reset the connection before answering"
        result.differences.clear()
    for errors, side in ((remote.recorded.errors, "recorded"), (remote.live.errors, "live")):
        result.notes += [f"{side} P-DATA does not reassemble: {e}" for e in errors]
    if judgement.findings:
        first_time = min(f.time for f in judgement.findings)
        for diff in result.differences:
            step_time = timeline[diff.step].time if diff.step is not None else float("inf")
            if step_time >= first_time:
                diff.excused_by = next(f.text for f in judgement.findings if f.time == first_time)
    apply_ignores(result.differences, ignore)
    result.elapsed = time.monotonic() - started
    return result
