"""`--check codec`: every captured PDU decodes and re-encodes to the same bytes.

netdicom2's round-trip promise (``netdicom2.pdu``): ``encode(decode(b)) == b`` for every ``b``
that ``decode`` accepts, reserved fields and unknown items included. A PDU that ``decode``
refuses is reported with the codec's reason (PS3.8 §9.3: it would be Evt19 on a live
association); a PDU the capture holds only part of is reported, not judged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from netdicom2.exceptions import PDUDecodeError
from netdicom2.pcaps.describe import PDU_NAMES, describe
from netdicom2.pcaps.flows import Capture
from netdicom2.pdu import decode

__all__ = ["CodecIssue", "CodecReport", "check_codec"]


@dataclass(frozen=True)
class CodecIssue:
    """A PDU that did not round-trip: "mismatch", "invalid" or "incomplete"."""

    connection: str
    side: str
    index: int
    offset: int
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "connection": self.connection,
            "side": self.side,
            "index": self.index,
            "offset": self.offset,
            "kind": self.kind,
            "detail": self.detail,
        }


@dataclass
class CodecReport:
    """Round-trip results of a whole capture."""

    pdus: int = 0  # complete PDUs, decoded and re-encoded
    exact: int = 0
    incomplete: int = 0  # PDUs the capture holds only part of: not checked
    issues: list[CodecIssue] = field(default_factory=list)
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)

    def ok(self, allow_invalid: bool = False) -> bool:
        """True when every complete PDU round-trips (invalid ones tolerated if allowed)."""
        bad = {"mismatch"} if allow_invalid else {"mismatch", "invalid"}
        return not any(issue.kind in bad for issue in self.issues)

    @property
    def total(self) -> int:
        """Every PDU framed in the capture, checked or not."""
        return self.pdus + self.incomplete

    def summary(self) -> str:
        """ "301 of 385 PDUs checked, 301 round-trip byte-exactly, 84 incomplete (not checked)"."""
        text = f"{self.pdus} of {self.total} PDUs checked, {self.exact} round-trip byte-exactly"
        if self.incomplete:
            text += f", {self.incomplete} incomplete (not checked)"
        return text

    @property
    def rate(self) -> float:
        """PDUs decoded and re-encoded per second."""
        return self.pdus / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "pdus": self.pdus,
            "exact": self.exact,
            "incomplete": self.incomplete,
            "total": self.total,
            "seconds": round(self.seconds, 6),
            "pdus_per_second": round(self.rate),
            "issues": [i.as_dict() for i in self.issues],
        }


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first differing byte (or the shorter length)."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def check_codec(capture: Capture) -> CodecReport:
    """Decode and re-encode every PDU of every DICOM connection of the capture."""
    report = CodecReport()
    for conn in capture.connections:
        timeline = conn.timeline()
        start = timeline[0].time if timeline else 0.0
        when = datetime.fromtimestamp(start, UTC).isoformat(timespec="microseconds")
        report.lines.append(
            f"{conn.label}  (selected by {conn.selected_by}; roles by {conn.roles_from}; "
            f"first event {when}; times below are seconds after it)"
        )
        report.lines += [f"  note: {note}" for note in conn.notes]
        for event in timeline:
            if event.record is None:
                report.lines.append(
                    f"  +{event.time - start:<9.6f} {event.side:>9} closes ({event.kind.upper()})"
                )
                continue
            record = event.record
            arrow = ">" if event.side == "requestor" else "<"
            name = PDU_NAMES.get(record.pdu_type, f"type 0x{record.pdu_type:02X}")
            head = f"  +{record.time - start:<9.6f} {event.side:>9} {arrow} @{record.offset:<7}"
            if record.status == "incomplete":
                report.incomplete += 1
                report.issues.append(
                    CodecIssue(
                        conn.label,
                        event.side,
                        record.index,
                        record.offset,
                        "incomplete",
                        record.error or "",
                    )
                )
                report.lines.append(
                    f"{head} {name} INCOMPLETE: {record.error} {' '.join(record.notes)}"
                )
                continue
            report.pdus += 1
            started = time.perf_counter()
            try:
                again = decode(record.data).encode()
            except PDUDecodeError as exc:
                report.seconds += time.perf_counter() - started
                report.issues.append(
                    CodecIssue(
                        conn.label, event.side, record.index, record.offset, "invalid", str(exc)
                    )
                )
                report.lines.append(f"{head} {name} {len(record.data)} B INVALID: {exc}")
                continue
            report.seconds += time.perf_counter() - started
            if again == record.data:
                report.exact += 1
                assert record.pdu is not None
                extra = f"  {'; '.join(record.notes)}" if record.notes else ""
                report.lines.append(f"{head} {len(record.data):>6} B {describe(record.pdu)}{extra}")
            else:
                at = _first_difference(again, record.data)
                detail = (
                    f"re-encoded {len(again)} bytes, captured {len(record.data)}, "
                    f"first difference at byte {at}"
                )
                report.issues.append(
                    CodecIssue(
                        conn.label, event.side, record.index, record.offset, "mismatch", detail
                    )
                )
                report.lines.append(f"{head} {name} MISMATCH: {detail}")
    return report
