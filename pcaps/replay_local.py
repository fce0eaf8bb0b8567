"""Replay a recorded connection against a fresh netdicom2 DULServiceProvider on 127.0.0.1.

``--as scp``: netdicom2 is the association acceptor; a scripted peer replays the recorded
requestor. ``--as scu``: netdicom2 is the requestor; the scripted peer replays the recorded
acceptor. The provider's service user issues the recorded primitives of its side, in order,
each after the indications that preceded it in the recording; the scripted peer compares what
netdicom2 writes, and when it closes, with the recording (the plan in ``pcaps.plan``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import NetDicomError
from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.flows import DicomConnection
from netdicom2.pcaps.model import Judgement, judge
from netdicom2.pcaps.plan import (
    Difference,
    ExpectEOF,
    ExpectPDU,
    Item,
    PeerClose,
    PeerSend,
    ReplayResult,
    UserAwait,
    UserSend,
    Wire,
    build_plan,
    describe_bytes,
)
from netdicom2.pcaps.refragment import capture_lost
from netdicom2.pdu import AAbortPDU, PDataTfPDU, decode

__all__ = ["replay_local"]

# PS3.8 §9.3.8 (Table 9-26): the reasons a provider may give with source 2.
PROVIDER_REASONS = frozenset({0, 1, 2, 4, 5, 6})
_DEFAULT_MAX = 16384


class _Clock:
    """Maps recorded capture times onto the wall clock for ``--timing recorded``."""

    def __init__(self, first: float, timing: str) -> None:
        self.first = first
        self.start = time.monotonic()
        self.timing = timing

    def wait_until(self, recorded: float, stop: threading.Event) -> None:
        """Sleep-free wait until the recorded time (an Event wait: timing, not sync)."""
        if self.timing != "recorded":
            return
        delay = (recorded - self.first) - (time.monotonic() - self.start)
        if delay > 0:
            stop.wait(delay)


def _announced(conn: DicomConnection, side: str) -> int:
    """The Maximum Length the recorded ``side`` announced (Annex D.1), for the local provider."""
    direction = conn.direction(side)
    for record in direction.pdus:
        if record.pdu is not None and record.pdu.pdu_type in (0x01, 0x02):
            value = getattr(record.pdu, "max_length", None)
            return _DEFAULT_MAX if value is None else int(value)
    return _DEFAULT_MAX


class _User(threading.Thread):
    """The netdicom2 service user: recorded primitives, in order, after their indications."""

    def __init__(
        self,
        dul: DULServiceProvider,
        items: list[Item],
        clock: _Clock,
        timeout: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="replay-user", daemon=True)
        self.dul = dul
        self.items = [i for i in items if isinstance(i, UserSend | UserAwait)]
        self.clock = clock
        self.timeout = timeout
        self.stop = stop
        self.differences: list[Difference] = []

    def run(self) -> None:
        """Walk the user's part of the plan; stop at the first surprise."""
        for item in self.items:
            if self.stop.is_set():
                return
            try:
                if isinstance(item, UserAwait):
                    if not self._await(item):
                        return
                else:
                    self.clock.wait_until(item.time, self.stop)
                    self.dul.send(item.pdu)
            except NetDicomError as exc:
                if self.stop.is_set():
                    return  # the replay is over: the provider was stopped under us
                self.differences.append(
                    Difference(
                        item.step, "user", "primitive accepted", f"{type(exc).__name__}: {exc}"
                    )
                )
                return

    def _await(self, item: UserAwait) -> bool:
        """Receive the indication the step should cause; False ends the user's script."""
        primitive = self.dul.receive(self.timeout)
        got = primitive.pdu_type
        want = 0x07 if item.pdu_type == 0 else item.pdu_type
        if got == want:
            return not isinstance(primitive, AAbortPDU)
        name = type(primitive).__name__
        self.differences.append(Difference(item.step, "indication", f"PDU type 0x{want:02X}", name))
        return False


class _Peer:
    """The scripted peer: sends its recorded side, checks what netdicom2 sends."""

    def __init__(
        self,
        wire: Wire,
        items: list[Item],
        clock: _Clock,
        timeout: float,
        stop: threading.Event,
        result: ReplayResult,
    ) -> None:
        self.wire = wire
        self.items = [i for i in items if not isinstance(i, UserSend | UserAwait)]
        self.clock = clock
        self.timeout = timeout
        self.stop = stop
        self.result = result
        self.diverged = False
        self.complete = any(isinstance(i, PeerClose | ExpectEOF) for i in items)

    def run(self, settle: float) -> None:
        """Walk the peer's part of the plan, then watch ``settle`` seconds for extra output."""
        index = 0
        items = self.items
        while index < len(items) and not self.diverged:
            item = items[index]
            if isinstance(item, ExpectEOF) and item.flexible and index + 1 < len(items):
                after = items[index + 1]
                if isinstance(after, PeerClose):  # ARTIM close: let our close go first
                    items[index], items[index + 1] = after, item
                    continue
            self._do(item)
            index += 1
        if not self.wire.eof:
            try:
                for pdu in self.wire.wait_eof(settle, time.monotonic):
                    self._extra(pdu)
            except TimeoutError:
                pass

    def _extra(self, pdu: bytes) -> None:
        """netdicom2 wrote a PDU the recording does not have (or ends before: a note)."""
        text = describe_bytes(pdu)
        self.result.received.append(text)
        if self.complete:
            self.result.differences.append(Difference(None, "extra", "nothing", text))
        else:
            self.result.notes.append(f"after the end of the capture: {text}")

    def _do(self, item: Item) -> None:
        """Perform or check one item."""
        if isinstance(item, PeerSend):
            self.clock.wait_until(item.time, self.stop)
            if self.wire.eof and self.wire.reset:
                self.result.notes.append(f"step {item.step}: connection reset before our send")
                return
            if not self.wire.send(item.data, self.timeout):
                self.result.notes.append(f"step {item.step}: netdicom2 had closed; not sent")
                return
            self.result.sent += 1
        elif isinstance(item, PeerClose):
            self.clock.wait_until(item.time, self.stop)
            self.wire.close(item.how)
        elif isinstance(item, ExpectEOF):
            self._expect_eof(item)
        elif isinstance(item, ExpectPDU):
            self._expect_pdu(item)

    def _expect_eof(self, item: ExpectEOF) -> None:
        """netdicom2 must close here."""
        if self.wire.eof and self.wire.reset:
            return  # we reset the connection: its close is not observable
        try:
            extra = self.wire.wait_eof(self.timeout, time.monotonic)
        except TimeoutError:
            self.result.differences.append(
                Difference(item.step, "close", "transport closed", "still open")
            )
            self.diverged = True
            return
        for pdu in extra:
            self._extra(pdu)

    def _expect_pdu(self, item: ExpectPDU) -> None:
        """netdicom2 must send this PDU now (P-DATA may come cut to the peer's maximum)."""
        try:
            got = self.wire.read_pdu(self.timeout, time.monotonic)
        except TimeoutError:
            got = b""
        if got is None or not got:
            actual = "connection closed" if got is None else "nothing (timeout)"
            self.result.differences.append(
                Difference(item.step, "pdu", describe_bytes(item.data), actual)
            )
            self.diverged = True
            return
        self.result.received.append(describe_bytes(got))
        if got == item.data or self._same_abort(item, got) or self._split(item, got):
            return
        self.result.differences.append(
            Difference(item.step, "pdu", describe_bytes(item.data), describe_bytes(got))
        )
        self.diverged = got[0] != item.data[0]

    @staticmethod
    def _same_abort(item: ExpectPDU, got: bytes) -> bool:
        """An A-ABORT from the provider: the source must match; reasons are not prescribed."""
        if item.source is None and not item.provider:
            return False
        try:
            pdu = decode(got)
        except NetDicomError:
            return False
        if not isinstance(pdu, AAbortPDU):
            return False
        if item.source is None:
            return True  # PS3.8 AA-7: source and reason are not specified
        # PS3.8 §9.3.8: the reason is not significant for source 0; any provider reason for 2.
        return pdu.source == item.source and (
            pdu.source != 2 or pdu.reason_diag in PROVIDER_REASONS
        )

    def _split(self, item: ExpectPDU, got: bytes) -> bool:
        """A P-DATA-TF the provider cut to the peer's maximum (PS3.8 Annex D.1): same payload."""
        if item.data[0] != 0x04 or got[0] != 0x04:
            return False
        want = b"".join(bytes(p.fragment) for p in _pdvs(item.data))
        have = b"".join(bytes(p.fragment) for p in _pdvs(got))
        while want.startswith(have) and len(have) < len(want):  # bounded by len(want)
            try:
                more = self.wire.read_pdu(self.timeout, time.monotonic)
            except TimeoutError:
                return False
            if more is None or more[0] != 0x04:
                return False
            have += b"".join(bytes(p.fragment) for p in _pdvs(more))
        if have == want:
            self.result.notes.append(f"step {item.step}: P-DATA-TF cut to the peer's maximum")
            return True
        return False


def _pdvs(data: bytes) -> list[PresentationDataValueItem]:
    """PDV items of an encoded P-DATA-TF ([] when it does not decode)."""
    try:
        pdu = decode(data)
    except NetDicomError:
        return []
    return list(pdu.data_value_items) if isinstance(pdu, PDataTfPDU) else []


def _starts_with_rq(judgement: Judgement) -> bool:
    """The recorded requestor's first step is a decoded A-ASSOCIATE-RQ."""
    for step in judgement.steps:
        if step.side == "requestor":
            record = step.event.record
            return record is not None and record.pdu is not None and record.pdu.pdu_type == 1
    return False


def _first_lost(conn: DicomConnection, judgement: Judgement, tested: str) -> tuple[int, str] | None:
    """The first step where the scripted peer would send a PDU the capture lost bytes of."""
    ended = conn.rq.stream.closed_time is not None or conn.ac.stream.closed_time is not None
    for index, step in enumerate(judgement.steps):
        record = step.event.record
        if step.side == tested or record is None or record.status != "incomplete":
            continue
        if capture_lost(conn.direction(step.side).stream, record, ended):
            return index, (
                f"step {index}: the capture holds {len(record.data)} bytes of this "
                f"{step.side} PDU of PDU-length {record.length}: the replay stops before it"
            )
    return None


def _excuse(result: ReplayResult, judgement: Judgement, tested: str) -> None:
    """Excuse differences at or after a step where the recorded tested side left PS3.8."""
    first_bad: int | None = None
    for index, step in enumerate(judgement.steps):
        if step.side == tested and not step.conforming and not step.deferred:
            first_bad = index
            break
    for diff in result.differences:
        if first_bad is None:
            continue
        if diff.step is None or diff.step >= first_bad:
            finding = judgement.steps[first_bad].finding
            diff.excused_by = finding.text if finding else f"step {first_bad} not conforming"


def replay_local(
    conn: DicomConnection,
    role: str,
    *,
    timing: str = "asap",
    step_timeout: float = 5.0,
    artim: float = 1.0,
    settle: float = 0.1,
    judgement: Judgement | None = None,
    observer: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Replay ``conn`` with netdicom2 as "scp" (acceptor) or "scu" (requestor)."""
    tested = "acceptor" if role == "scp" else "requestor"
    result = ReplayResult(conn.label, f"local --as {role}")
    started = time.monotonic()
    judgement = judgement or judge(conn)
    result.findings = list(judgement.findings)
    if not judgement.judged:
        result.skipped = judgement.reason
        return result
    if role == "scu" and not _starts_with_rq(judgement):
        # PS3.8 §9.1.2, AE-1/AE-2: a requestor opens the transport to send its A-ASSOCIATE-RQ;
        # without one in the recording there is nothing for netdicom2 to request.
        result.skipped = "the recorded requestor sent no A-ASSOCIATE-RQ: nothing to request"
        return result
    items, result.not_copied = build_plan(judgement, tested)
    cut = _first_lost(conn, judgement, tested)
    if cut is not None:
        # A PDU the capture lost bytes of is never sent (it would desynchronise the stream):
        # the replay ends before it and says so.
        step, result.incomplete = cut
        items = [item for item in items if item.step < step]
    first = judgement.steps[0].time if judgement.steps else 0.0
    clock = _Clock(first, timing)
    stop = threading.Event()
    max_pdu = _announced(conn, tested)
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.settimeout(step_timeout)
        wire: Wire | None = None
        if role == "scp":
            # PS3.8 §9.1.2: the acceptor's provider starts with an accepted connection (Evt5).
            client = socket.create_connection(listener.getsockname()[:2], timeout=step_timeout)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stalls
            wire = Wire(client)
            dul = DULServiceProvider(
                listener.accept()[0], artim_timeout=artim, max_pdu_length=max_pdu, name="replay-dul"
            )
        else:
            # The requestor's provider connects when its user issues the A-ASSOCIATE (AE-1).
            dul = DULServiceProvider(
                address=listener.getsockname()[:2],
                artim_timeout=artim,
                max_pdu_length=max_pdu,
                name="replay-dul",
            )
        if observer is not None:
            dul.add_observer(lambda t: observer(str(t)))
        dul.start()
        user = _User(dul, items, clock, step_timeout, stop)
        user.start()
        try:
            if wire is None:
                try:
                    wire = Wire(listener.accept()[0])
                except TimeoutError:
                    result.differences.append(Difference(0, "connect", "TCP connect", "none"))
            if wire is not None:
                _Peer(wire, items, clock, step_timeout, stop, result).run(settle)
        finally:
            stop.set()
            dul.kill()
            user.join(step_timeout)
            if wire is not None:
                wire.shutdown()
    result.differences = [*user.differences, *result.differences]
    result.transcript = [str(t) for t in dul.connection.transcript]
    _excuse(result, judgement, tested)
    result.elapsed = time.monotonic() - started
    return result
