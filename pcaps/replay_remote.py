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
import time
from collections.abc import Callable, Sequence

from netdicom2.cli import connect_error
from netdicom2.exceptions import PDUDecodeError
from netdicom2.pcaps.flows import DicomConnection
from netdicom2.pcaps.model import judge
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.plan import ReplayResult, Wire, describe_bytes
from netdicom2.pcaps.reassembly import Stream
from netdicom2.pcaps.refragment import capture_lost, fill_hole, refragment
from netdicom2.pcaps.scripted import Item, ScriptedPeer, excuse, plan
from netdicom2.pdu import AAssociateAcPDU, PDataTfPDU, decode

_WIRE_LIMIT = 64 * 1024 * 1024  # largest PDU rebuilt from a capture with a hole

__all__ = ["Connector", "replay_remote"]

Connector = Callable[[tuple[str, int]], socket.socket]


class _Remote(ScriptedPeer):
    """Plays the recorded requestor; the live acceptor is compared."""

    live_associate = AAssociateAcPDU

    def __init__(
        self, wire: Wire, result: ReplayResult, timeout: float, timing: str, first: float
    ) -> None:
        super().__init__(result, timeout, timing=timing, first=first)
        self.wire = wire
        self.stopped = False  # stopped before a PDU the capture lacks bytes of
        self.verbatim = False
        self.fill_holes = False
        self.stream: Stream | None = None
        self.ended = False  # the recorded connection was closed (FIN/RST) by either side
        self.refragmented = 0

    def run(self, items: list[Item], settle: float) -> None:
        """Walk the items; after a divergence, stop sending and only drain."""
        self.walk(items)
        if self.stopped:
            return  # nothing after the missing bytes can be compared
        complete = any(i.kind in ("eof", "close") for i in items)
        deadline = time.monotonic() + settle
        # Bounded by one overall deadline, however much the peer keeps sending.
        while pdu := self.next_pdu(max(0.0, deadline - time.monotonic())):
            if complete:
                self.diff(None, "extra", "nothing", describe_bytes(pdu))
            else:  # the capture ends before the association did: nothing to compare
                self.result.notes.append(f"after the end of the capture: {describe_bytes(pdu)}")

    def stop(self, step: int, record: PduRecord, why: str) -> None:
        """Stop before a PDU with missing bytes; nothing after it is compared."""
        super().stop(step, record, why)
        self.stopped = True

    def _lost(self, record: PduRecord) -> bool:
        """The capture lost bytes of this PDU: a hole in it, or the capture ends inside it."""
        return self.stream is None or capture_lost(self.stream, record, self.ended)

    def _payload(self, item: Item) -> list[bytes] | None:
        """What to send for a recorded requestor PDU (None: stop here)."""
        record = item.records[0]
        data = record.data
        if record.status == "incomplete" and not self._lost(record):
            # The connection ended with these bytes and no hole: the sender sent no more
            # (a malformed or cut PDU is what the recording holds): send it as recorded.
            return [data]
        if record.status == "incomplete":
            if not self.fill_holes or self.stream is None:
                self.stop(item.step, record, "the replay stops before it (--fill-holes sends it)")
                return None
            filled = fill_hole(self.stream, record, _WIRE_LIMIT)
            if filled is None:
                self.stop(item.step, record, "it cannot be rebuilt, the replay stops before it")
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

    def _do_send(self, item: Item) -> None:
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
    remote = _Remote(wire, result, step_timeout, timing, first)
    remote.strict = strict_datasets
    remote.verbatim, remote.fill_holes, remote.stream = verbatim, fill_holes, conn.rq.stream
    remote.ended = conn.rq.stream.closed_time is not None or conn.ac.stream.closed_time is not None
    try:
        remote.run(plan(timeline, "requestor"), settle)
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
    excuse(result.differences, timeline, judgement.findings, ignore)
    result.elapsed = time.monotonic() - started
    return result
