"""What a replay does at each judged step, and the results it reports.

A replay puts a scripted peer on one side of a real TCP connection. It sends the recorded
bytes of its side (``PeerSend``/``PeerClose``) and waits for, and compares, what the other side
puts on the wire (``ExpectPDU``/``ExpectEOF``). In a local replay a netdicom2 service user
drives the other side (``UserSend``/``UserAwait``). Steps where the recorded other side
deviated from PS3.8 are not copied: they are dropped, or replaced by the conforming way to do
the same thing (an A-ABORT, PS3.8 §7.3, instead of a bare transport close).
"""

from __future__ import annotations

import selectors
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from netdicom2.conformance.table import INDICATING
from netdicom2.exceptions import PDUDecodeError
from netdicom2.pcaps.model import Finding, Judgement, Step
from netdicom2.pdu import PDU, AAbortPDU, decode

__all__ = [
    "INDICATING",
    "Difference",
    "ExpectEOF",
    "ExpectPDU",
    "PeerClose",
    "PeerSend",
    "ReplayResult",
    "UserAwait",
    "UserSend",
    "Wire",
    "build_plan",
]

# Table 9-10 actions that hand the local user a primitive (PS3.8 §5.5 of the spec notes).
_HEADER = struct.Struct(">BBI")
_WIRE_LIMIT = 64 * 1024 * 1024


@dataclass
class PeerSend:
    """The scripted peer writes recorded bytes."""

    step: int
    data: bytes
    time: float


@dataclass
class PeerClose:
    """The scripted peer closes: "fin" (orderly) or "rst" (reset)."""

    step: int
    how: str
    time: float


@dataclass
class ExpectPDU:
    """The side under test must now send this PDU (``source`` set: any A-ABORT from it)."""

    step: int
    data: bytes
    provider: bool = False
    source: int | None = None
    substitute: bool = False


@dataclass
class ExpectEOF:
    """The side under test must now close; ``flexible``: it may wait for our close first."""

    step: int
    flexible: bool = False


@dataclass
class UserSend:
    """The local service user issues this primitive."""

    step: int
    pdu: PDU
    time: float


@dataclass
class UserAwait:
    """The local service user waits for the indication caused by this step (PDU type, 0=abort)."""

    step: int
    pdu_type: int


Item = PeerSend | PeerClose | ExpectPDU | ExpectEOF | UserSend | UserAwait


@dataclass
class Difference:
    """Where the side under test differed from the recording; ``excused_by`` a finding."""

    step: int | None
    what: str
    expected: str
    actual: str
    excused_by: str | None = None
    marked: str | None = None  # e.g. compared after a hole was filled with zeros

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "step": self.step,
            "what": self.what,
            "expected": self.expected,
            "actual": self.actual,
            "excused_by": self.excused_by,
            "marked": self.marked,
        }


@dataclass
class ReplayResult:
    """The outcome of replaying one connection."""

    connection: str
    mode: str
    findings: list[Finding] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    not_copied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sent: int = 0
    received: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    skipped: str | None = None
    unreachable: str | None = None  # the live peer could not be reached: not a difference
    incomplete: str | None = None  # the replay stopped before a PDU the capture lacks bytes of

    @property
    def ok(self) -> bool:
        """No difference outside the excused ones (and neither skipped nor unreachable)."""
        return (
            self.skipped is None
            and self.unreachable is None
            and all(d.excused_by for d in self.differences)
        )

    @property
    def verdict(self) -> str:
        """ "OK", "INCOMPLETE", "DIFFERENT", "SKIPPED" or "UNREACHABLE"."""
        if self.unreachable is not None:
            return "UNREACHABLE"
        if self.skipped is not None:
            return "SKIPPED"
        if not self.ok:
            return "DIFFERENT"
        return "INCOMPLETE" if self.incomplete is not None else "OK"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "connection": self.connection,
            "mode": self.mode,
            "ok": self.ok,
            "verdict": self.verdict,
            "skipped": self.skipped,
            "unreachable": self.unreachable,
            "incomplete": self.incomplete,
            "findings": [
                {"side": f.side, "cell": f.cell, "text": f.text, "time": f.time}
                for f in self.findings
            ],
            "differences": [d.as_dict() for d in self.differences],
            "not_copied": self.not_copied,
            "notes": self.notes,
            "pdus_sent": self.sent,
            "received": self.received,
            "transcript": self.transcript,
            "elapsed": round(self.elapsed, 4),
        }


def build_plan(judgement: Judgement, tested: str) -> tuple[list[Item], list[str]]:
    """The replay script when ``tested`` ("requestor"/"acceptor") is the side under test."""
    items: list[Item] = []
    not_copied: list[str] = []
    for index, step in enumerate(judgement.steps):
        event = step.event
        record = event.record
        if step.side != tested:
            if event.kind == "pdu" and record is not None:
                items.append(PeerSend(index, record.data, step.time))
            else:
                items.append(PeerClose(index, event.kind, step.time))
            if step.peer_action in INDICATING:
                await_type = 0 if step.peer_action in ("AA-4", "AA-8") else record_type(step)
                items.append(UserAwait(index, await_type))
            continue
        items.extend(_tested_items(index, step, not_copied))
    return items, not_copied


def record_type(step: Step) -> int:
    """PDU type of a step's record (0 for a close)."""
    record = step.event.record
    return record.pdu_type if record is not None else 0


def _tested_items(index: int, step: Step, not_copied: list[str]) -> list[Item]:
    """Items for a recorded step of the side under test."""
    event = step.event
    record = event.record
    why = step.finding.text if step.finding else "not a PS3.8 PDU"
    if event.kind != "pdu" or record is None:
        if step.close == "violation":
            # PS3.8 §7.3: the conforming way to end an association unilaterally is A-ABORT.
            not_copied.append(f"step {index}: bare transport close replaced by A-ABORT ({why})")
            abort = AAbortPDU(source=0, reason_diag=0)
            return [
                UserSend(index, abort, step.time),
                ExpectPDU(index, abort.encode(), source=0, substitute=True),
            ]
        return [ExpectEOF(index, flexible=step.close == "timer")]
    if step.origin == "provider":
        return [ExpectPDU(index, record.data, provider=True, source=step.expected_abort_source)]
    if not step.conforming and not step.deferred:
        not_copied.append(f"step {index}: {why}")
        return []
    assert record.pdu is not None
    return [UserSend(index, record.pdu, step.time), ExpectPDU(index, record.data)]


class Wire:
    """A scripted peer's socket: frame incoming PDUs, bounded waits, no polling."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False
        self.reset = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)

    def _fill(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False on timeout."""
        if self.eof:
            return False
        if not self._selector.select(max(0.0, timeout)):
            return False
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.eof = self.reset = True
            return True
        if not data:
            self.eof = True
        self.buffer += data
        return True

    def read_pdu(self, timeout: float, clock: Any) -> bytes | None:
        """The next whole PDU; None on EOF; TimeoutError when nothing completes in time."""
        deadline = clock() + timeout
        while True:  # bounded by the deadline: every wait is at most what is left of it
            if len(self.buffer) >= 6:
                length = _HEADER.unpack_from(self.buffer)[2]
                size = 6 + min(length, _WIRE_LIMIT)
                if len(self.buffer) >= size:
                    pdu = bytes(self.buffer[:size])
                    del self.buffer[:size]
                    return pdu
            if self.eof:
                if self.buffer:
                    tail = bytes(self.buffer)
                    self.buffer.clear()
                    return tail
                return None
            left = deadline - clock()
            if left <= 0 or not self._fill(left):
                raise TimeoutError("no PDU in time")

    def wait_eof(self, timeout: float, clock: Any) -> list[bytes]:
        """PDUs that arrive before EOF (normally none); TimeoutError if it does not close."""
        extra: list[bytes] = []
        deadline = clock() + timeout
        while True:  # bounded by one overall deadline
            pdu = self.read_pdu(max(0.0, deadline - clock()), clock)
            if pdu is None:
                return extra
            extra.append(pdu)

    def send(self, data: bytes, timeout: float) -> bool:
        """Write all of ``data``; False if the other side is gone or it does not drain."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        finally:
            self.sock.setblocking(False)
        return True

    def close(self, how: str) -> None:
        """Half-close (FIN) or reset (RST, SO_LINGER 0) our side."""
        try:
            if how == "rst":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.close()
                self.eof = True
            else:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def shutdown(self) -> None:
        """Release the socket and selector."""
        self._selector.close()
        self.sock.close()


def describe_bytes(data: bytes) -> str:
    """A PDU's one-line summary, or why it does not decode."""
    from netdicom2.pcaps.describe import describe

    try:
        return describe(decode(data))
    except PDUDecodeError as exc:
        return f"undecodable {len(data)} bytes ({exc.reason})"
