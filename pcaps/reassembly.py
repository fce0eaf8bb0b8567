"""One direction of a TCP connection back into a byte stream, from captured segments.

Pure Python (no scapy): the capture reader hands over ``Segment`` objects in capture order and
``reassemble`` returns a ``Stream`` of disjoint, offset-sorted ``Chunk``s plus what went wrong
on the way: holes (``Gap``), retransmitted bytes, overlaps whose bytes disagree, segments that
arrived out of order. The rules are those of a TCP receiver (RFC 9293 §3.10.7.4):

* sequence numbers are unwrapped modulo 2**32 against the previous segment of the direction, so
  streams longer than 4 GiB stay ordered;
* the first copy of a byte to arrive (in capture order) is kept; later copies are
  retransmissions, counted, and compared so that a conflicting overlap is reported;
* offset 0 is the first byte after the SYN when the SYN was captured (``start_known``); else
  the lowest captured byte, and the stream may start in the middle of a PDU.

Each chunk keeps the capture time of the segment that delivered it, so the caller can time a
PDU by the segment that completed it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["FIN", "RST", "SYN", "Chunk", "Gap", "Segment", "Stream", "reassemble"]

# TCP header flag bits (RFC 9293 §3.1).
FIN = 0x01
SYN = 0x02
RST = 0x04

_MOD = 1 << 32
_HALF = 1 << 31


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment of one direction: capture time, sequence number, flags, data."""

    time: float
    seq: int
    payload: bytes
    flags: int = 0
    ack: int | None = None
    index: int = -1  # position in the capture file; -1: use the position in the list given


@dataclass(frozen=True, slots=True)
class Chunk:
    """Stream bytes [offset, offset + len(data)), the capture time and packet they came in."""

    offset: int
    data: bytes
    time: float
    index: int = 0

    @property
    def end(self) -> int:
        """Offset just past the last byte."""
        return self.offset + len(self.data)


@dataclass(frozen=True, slots=True)
class Gap:
    """Stream bytes [start, end) that no captured segment carried."""

    start: int
    end: int

    @property
    def size(self) -> int:
        """Number of missing bytes."""
        return self.end - self.start


@dataclass
class Stream:
    """A reassembled direction: chunks in offset order and the anomalies met on the way."""

    chunks: list[Chunk] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    start_known: bool = False
    syn_time: float | None = None
    fin_offset: int | None = None
    fin_time: float | None = None
    rst_time: float | None = None
    fin_index: int | None = None
    rst_index: int | None = None
    segments: int = 0
    retransmitted_bytes: int = 0
    retransmitted_segments: int = 0
    out_of_order_segments: int = 0
    conflicts: list[Gap] = field(default_factory=list)
    first_time: float | None = None

    @property
    def size(self) -> int:
        """Offset just past the last captured byte (0 when nothing was captured)."""
        return self.chunks[-1].end if self.chunks else 0

    @property
    def closed_time(self) -> float | None:
        """When this direction ended: its FIN or RST, whichever the capture shows first."""
        times = [t for t in (self.fin_time, self.rst_time) if t is not None]
        return min(times, default=None)

    def runs(self) -> list[list[Chunk]]:
        """Chunks grouped into runs of contiguous bytes (a new run after every gap)."""
        out: list[list[Chunk]] = []
        for chunk in self.chunks:
            if out and out[-1][-1].end == chunk.offset:
                out[-1].append(chunk)
            else:
                out.append([chunk])
        return out


def _signed(delta: int) -> int:
    """A 32-bit sequence-space difference as a signed integer (RFC 9293 §3.4)."""
    delta %= _MOD
    return delta - _MOD if delta >= _HALF else delta


class _Coverage:
    """Disjoint byte ranges received so far, sorted by offset, first arrival kept."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.starts: list[int] = []
        self.chunks: list[Chunk] = []
        self.highest = 0  # offset just past the highest byte seen so far

    def add(self, start: int, data: bytes, time: float, packet: int) -> None:
        """Insert the bytes not yet covered; count and compare the ones already covered."""
        end = start + len(data)
        chunks = self.chunks
        index = bisect.bisect_right(self.starts, start) - 1
        if index < 0 or chunks[index].end <= start:
            index += 1
        first = index
        fresh: list[Chunk] = []
        cursor = start
        repeated = 0
        # Bounded: every iteration advances the cursor or the index within the covered list.
        while cursor < end:
            if index < len(chunks) and chunks[index].offset <= cursor:
                old = chunks[index]
                stop = min(end, old.end)
                mine = data[cursor - start : stop - start]
                theirs = old.data[cursor - old.offset : stop - old.offset]
                if mine != theirs:
                    self.stream.conflicts.append(Gap(cursor, stop))
                repeated += stop - cursor
                cursor = stop
                index += 1
            else:
                limit = chunks[index].offset if index < len(chunks) else end
                stop = min(end, limit)
                fresh.append(Chunk(cursor, data[cursor - start : stop - start], time, packet))
                cursor = stop
        if repeated:
            self.stream.retransmitted_bytes += repeated
            self.stream.retransmitted_segments += 1
        if fresh:
            if start < self.highest:
                self.stream.out_of_order_segments += 1
            merged = sorted([*chunks[first:index], *fresh], key=lambda c: c.offset)
            chunks[first:index] = merged
            self.starts[first:index] = [c.offset for c in merged]
        self.highest = max(self.highest, end)


def reassemble(segments: Iterable[Segment]) -> Stream:
    """Reassemble one direction from its segments, given in capture order."""
    stream = Stream()
    placed: list[tuple[int, bytes, float, int]] = []
    isn_abs: int | None = None
    fin_abs: int | None = None
    prev_seq: int | None = None
    prev_abs = 0
    for position, seg in enumerate(segments):
        packet = seg.index if seg.index >= 0 else position
        stream.segments += 1
        if stream.first_time is None:
            stream.first_time = seg.time
        absolute = 0 if prev_seq is None else prev_abs + _signed(seg.seq - prev_seq)
        prev_seq, prev_abs = seg.seq, absolute
        data_start = absolute
        if seg.flags & SYN:
            # RFC 9293 §3.4: the SYN occupies one sequence number; data (if any) follows it.
            if isn_abs is None:
                isn_abs = absolute
                stream.syn_time = seg.time
            data_start = absolute + 1
        if seg.flags & RST:
            if stream.rst_time is None:
                stream.rst_time, stream.rst_index = seg.time, packet
            continue  # RFC 9293 §3.10.7.4: data on a RST is not delivered
        if seg.payload:
            placed.append((data_start, seg.payload, seg.time, packet))
        if seg.flags & FIN and fin_abs is None:
            fin_abs = data_start + len(seg.payload)
            stream.fin_time, stream.fin_index = seg.time, packet
    if isn_abs is not None:
        base = isn_abs + 1
        stream.start_known = True
    else:
        base = min((start for start, _, _, _ in placed), default=0)
    coverage = _Coverage(stream)
    for start, payload, time, packet in placed:
        offset = start - base
        if offset < 0:  # bytes before the SYN's sequence number: not part of this stream
            payload = payload[-offset:]
            offset = 0
        if payload:
            coverage.add(offset, payload, time, packet)
    stream.chunks = coverage.chunks
    if fin_abs is not None:
        stream.fin_offset = max(0, fin_abs - base)
    expected = 0 if stream.start_known else (stream.chunks[0].offset if stream.chunks else 0)
    for chunk in stream.chunks:
        if chunk.offset > expected:
            stream.gaps.append(Gap(expected, chunk.offset))
        expected = chunk.end
    if stream.fin_offset is not None and stream.fin_offset > expected:
        stream.gaps.append(Gap(expected, stream.fin_offset))
    return stream
