"""A reassembled direction cut into PDUs with netdicom2's framer, re-synchronising after holes.

PS3.8 §9.1.3 / §9.3.1: a PDU is a 6-byte header (type, reserved, 4-byte PDU-length) and
PDU-length more bytes. When the capture starts in the middle of a stream, or after bytes the
capture lost, the next PDU boundary is unknown: the bytes are skipped up to the first offset
where a plausible PDU header sits (``plausible_header``), and the skip is reported. After a
hole inside a PDU whose header was seen, its declared length says where the next PDU starts.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import PDUFramer
from netdicom2.pcaps.reassembly import Chunk, Stream
from netdicom2.pdu import PDU, decode

__all__ = ["PduRecord", "Skip", "plausible_header", "split_stream"]

_U32 = struct.Struct(">I")
# Plausibility bounds used only to find a PDU boundary again (not limits on valid PDUs).
_MAX_ASSOCIATE = 4 * 1024 * 1024
_MAX_PDATA = 64 * 1024 * 1024
_DECODE_LIMIT = 1024  # PDUs up to this size are decoded while looking for a boundary
_WALK = 16  # items walked in a larger one
_FIXED_TEN = (0x03, 0x05, 0x06, 0x07)  # RJ, RELEASE-RQ/RP, ABORT: PDU-length 4 (Tables 9-21..9-26)


@dataclass
class PduRecord:
    """One PDU of one direction: where and when it was on the wire, and what it decodes to.

    ``status`` is "ok" (decoded), "invalid" (framed but ``decode`` raised: ``error`` says why)
    or "incomplete" (the stream ended, or the capture lost bytes, before PDU-length was met).
    ``time`` and ``packet`` are the capture time and position of the segment that completed it
    (the last of its segments in capture order).
    """

    offset: int
    time: float
    data: bytes
    status: str
    pdu: PDU | None = None
    error: str | None = None
    index: int = 0
    notes: list[str] = field(default_factory=list)
    packet: int = 0

    @property
    def pdu_type(self) -> int:
        """Byte 1 of the header (PS3.8 §9.3.1)."""
        return self.data[0] if self.data else -1

    @property
    def length(self) -> int | None:
        """The PDU-length field, None when fewer than 6 bytes were captured."""
        return _U32.unpack_from(self.data, 2)[0] if len(self.data) >= 6 else None

    @property
    def end(self) -> int:
        """Stream offset just past the captured bytes of this PDU."""
        return self.offset + len(self.data)


@dataclass(frozen=True)
class Skip:
    """Stream bytes that could not be framed: before the first plausible header, or lost."""

    offset: int
    size: int
    reason: str


def _shallow(data: bytes | memoryview, pos: int) -> bool:
    """Type, reserved byte and PDU-length look like a PDU header (PS3.8 §9.3.1, [interp])."""
    if len(data) - pos < 6:
        return False
    pdu_type = data[pos]
    if not 1 <= pdu_type <= 7 or data[pos + 1] != 0:
        return False
    length: int = _U32.unpack_from(data, pos + 2)[0]
    if pdu_type in _FIXED_TEN:
        return length == 4
    if pdu_type in (0x01, 0x02):
        if not 68 <= length <= _MAX_ASSOCIATE:
            return False
        # PS3.8 Table 9-11: protocol version bit 0; the first item is the application context.
        if len(data) - pos >= 8 and not data[pos + 7] & 1:
            return False
        return len(data) - pos < 75 or data[pos + 74] == 0x10
    if not 6 <= length <= _MAX_PDATA:
        return False
    if len(data) - pos >= 11:
        # PS3.8 Table 9-23: first PDV item length within the PDU, odd presentation context ID.
        item: int = _U32.unpack_from(data, pos + 6)[0]
        return 2 <= item <= length - 4 and bool(data[pos + 10] & 1)
    return True


def _items_fit(data: bytes | memoryview, pos: int, end: int) -> bool:
    """The first ``_WALK`` items of the PDU at ``pos`` chain within its length (bounded work).

    P-DATA-TF: PDV items, a 4-byte length each (PS3.8 Table 9-23); A-ASSOCIATE-RQ/AC:
    variable items, type + reserved + 2-byte length each, after the 68-byte fixed part
    (Tables 9-11, 9-17).
    """
    pdu_type = data[pos]
    cursor = pos + (6 if pdu_type == 0x04 else 74)
    stop = min(end, len(data))
    for _ in range(_WALK):  # bounded: constant work per candidate keeps resync linear
        if cursor == end or cursor + 4 > stop:
            return cursor <= end
        if pdu_type == 0x04:
            size = 4 + _U32.unpack_from(data, cursor)[0]
            if size < 6 or not data[cursor + 4] & 1:
                return False  # a PDV holds at least context ID and header; IDs are odd
        else:
            size = 4 + ((data[cursor + 2] << 8) | data[cursor + 3])
        cursor += size
        if cursor > end:
            return False
    return True


def plausible_header(data: bytes | memoryview, pos: int) -> bool:
    """A PDU can start at ``pos``: sane header, sane next header, items that fit.

    The work is bounded whatever the PDU-length says: small PDUs are decoded, larger ones
    have their first items walked. A PDU accepted here is still decoded once when framed.
    """
    if not _shallow(data, pos):
        return False
    end = pos + 6 + _U32.unpack_from(data, pos + 2)[0]
    if end > len(data):
        return _items_fit(data, pos, end)  # cut by the end of the captured bytes
    if not (end == len(data) or len(data) - end < 6 or _shallow(data, end)):
        return False
    if end - pos > _DECODE_LIMIT:
        return _items_fit(data, pos, end)
    try:
        decode(bytes(data[pos:end]))
    except PDUDecodeError:
        return False
    return True


# Cheap filter, run in C: type 01H-07H, reserved 00H, PDU-length below 16 MiB. Two matches
# cannot overlap (a match's second and third bytes are 00H, never a type), so finditer sees all.
_CANDIDATE = re.compile(rb"[\x01-\x07]\x00\x00", re.DOTALL)


def _resync(data: bytes, start: int) -> int | None:
    """The first offset >= start where ``plausible_header`` holds, None if there is none.

    Linear in the run: candidates are found by a regular expression and each costs bounded
    work (``plausible_header``), however many fake headers the bytes hold.
    """
    for match in _CANDIDATE.finditer(data, start, max(start, len(data) - 3)):
        pos = match.start()
        if plausible_header(data, pos):
            return pos
    return None


def _completion(chunks: list[Chunk], spans: list[tuple[int, int]]) -> list[Chunk]:
    """For each [start, end) span, the covering chunk that arrived last in capture order."""
    out: list[Chunk] = []
    first = 0
    for start, end in spans:
        while first < len(chunks) and chunks[first].end <= start:
            first += 1
        latest = chunks[min(first, len(chunks) - 1)]
        index = first
        while index < len(chunks) and chunks[index].offset < end:  # bounded by len(chunks)
            if chunks[index].index > latest.index:
                latest = chunks[index]
            index += 1
        out.append(latest)
    return out


def _decode(frame: bytes) -> tuple[str, PDU | None, str | None]:
    """Status, PDU and error text of one framed PDU."""
    try:
        return "ok", decode(frame), None
    except PDUDecodeError as exc:
        return "invalid", None, str(exc)


def split_stream(stream: Stream) -> tuple[list[PduRecord], list[Skip]]:
    """Cut a reassembled direction into PDUs; report the bytes that could not be framed."""
    records: list[PduRecord] = []
    skips: list[Skip] = []
    expected_next: int | None = 0 if stream.start_known else None
    for run in stream.runs():
        run_start = run[0].offset
        data = b"".join(c.data for c in run)
        pos: int | None
        reason = "resynchronised after a hole" if records else "stream starts mid-PDU"
        if expected_next is not None and run_start <= expected_next < run_start + len(data):
            pos = expected_next - run_start
            if pos:
                reason = "tail of a PDU cut by a hole"
                if not _shallow(data, pos):
                    pos, reason = _resync(data, 0), "resynchronised after a hole"
        elif expected_next is not None and expected_next >= run_start + len(data):
            continue  # the whole run lies inside a PDU cut by an earlier hole
        else:
            if expected_next is not None:
                skips.append(
                    Skip(expected_next, run_start - expected_next, "bytes missing from capture")
                )
            pos = _resync(data, 0)
        if pos is None:
            skips.append(Skip(run_start, len(data), "no plausible PDU header"))
            expected_next = None
            continue
        if pos:
            skips.append(Skip(run_start, pos, reason))
        framer = PDUFramer(max_pdata_length=0, max_other_length=0)
        frames = framer.feed(data[pos:])
        spans: list[tuple[int, int]] = []
        cursor = run_start + pos
        for frame in frames:
            spans.append((cursor, cursor + len(frame)))
            cursor += len(frame)
        for (start, end), last in zip(spans, _completion(run, spans), strict=True):
            whole = data[start - run_start : end - run_start]
            status, pdu, error = _decode(whole)
            records.append(
                PduRecord(start, last.time, whole, status, pdu, error, len(records), [], last.index)
            )
        if framer.pending:
            tail = data[cursor - run_start :]
            last = _completion(run, [(cursor, run_start + len(data))])[0]
            record = PduRecord(
                cursor, last.time, tail, "incomplete", None, None, len(records), [], last.index
            )
            length = record.length
            if length is None:
                record.error = f"{len(tail)} bytes, shorter than a PDU header"
                expected_next = None
            else:
                record.error = f"PDU-length {length} but only {len(tail) - 6} bytes captured"
                expected_next = cursor + 6 + length
            records.append(record)
        else:
            expected_next = cursor
    cut = stream.fin_offset is not None and expected_next is not None
    if cut and records and records[-1].status == "incomplete":
        assert expected_next is not None and stream.fin_offset is not None
        if expected_next > stream.fin_offset:
            records[-1].notes.append("the sender closed its side before the PDU was complete")
    return records, skips
