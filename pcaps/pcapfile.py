"""pcap and pcapng files read frame by frame, whole, with bounds on what a hostile file costs.

No scapy: every record is read at its captured length (``caplen``), whatever the file's
snaplen, so frames longer than 65,535 bytes (loopback, TSO/GRO captures) keep every byte.
Formats: pcap (microsecond and nanosecond, both byte orders, the 24-byte-record "modified"
variant), pcapng (SHB, IDB with ``if_tsresol``, EPB, SPB, obsolete PB; several sections), each
plain or gzip-compressed.

Bounds (``Limits``): packets, bytes read from the (expanded) file, wall time, and a ratio of
expanded to compressed size for gzip input. A record or block whose length lies (beyond the
file, above ``MAX_FRAME``, a pcapng block length that does not match its trailer) is a warning
naming the last whole packet; reading stops there, or skips the record when the rest of the
file can still be read. A run of all-zero records (a sparse or zero-filled file) stops early.
"""

from __future__ import annotations

import gzip
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = ["MAX_FRAME", "FileStats", "Frame", "Limits", "NotACapture", "read_frames"]

#: Largest captured frame accepted (a BIG TCP loopback GSO frame is at most 512 KiB).
MAX_FRAME = 16 * 1024 * 1024
#: Largest pcapng block that is not a packet block (options, names, statistics).
_MAX_BLOCK = MAX_FRAME + 4096
#: Records without a captured byte in a row after which the file is taken as damaged.
_EMPTY_RUN = 1024
_CHECK_EVERY = 256  # packets between two looks at the clock

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),  # Kuznetzov's modified pcap: 8 more header bytes
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_GZIP = b"\x1f\x8b"


class NotACapture(ValueError):
    """The file is not a pcap or pcapng capture (or not one this reader understands)."""


@dataclass(frozen=True)
class Limits:
    """What one capture may cost; 0 means no limit."""

    max_packets: int = 2_000_000
    max_bytes: int = 4 * 1024**3
    time_limit: float = 600.0
    gzip_ratio: int = 100  # expanded bytes per compressed byte beyond which gzip is a bomb
    gzip_floor: int = 64 * 1024 * 1024  # ... once this many bytes are expanded
    clock: Callable[[], float] = time.monotonic


@dataclass
class Frame:
    """One captured frame: its 0-based position, time, link type and every captured byte."""

    index: int
    time: float
    linktype: int
    data: bytes
    wirelen: int


@dataclass
class FileStats:
    """What reading the file met: format, sizes, warnings, and why it stopped early."""

    format: str = ""
    compressed: bool = False
    file_size: int = 0
    bytes_read: int = 0
    packets: int = 0
    snapped: int = 0  # frames captured shorter than they were on the wire
    warnings: list[str] = field(default_factory=list)
    stopped: str | None = None
    last_time: float | None = None

    def last_whole(self) -> str:
        """ "packet N (t=...)" for the last whole packet read, or "none"."""
        if not self.packets:
            return "no whole packet"
        return f"last whole packet: #{self.packets} at t={self.last_time:.6f}"


class _Source:
    """The file's bytes (expanded when gzip), counted and bounded."""

    def __init__(self, raw: BinaryIO, stats: FileStats, limits: Limits) -> None:
        self.stats = stats
        self.limits = limits
        size = os.fstat(raw.fileno()).st_size if hasattr(raw, "fileno") else 0
        stats.file_size = size
        head = raw.read(2)
        raw.seek(0)
        self.handle: BinaryIO = raw
        self.expanded_cap = limits.max_bytes or 0
        if head == _GZIP:
            stats.compressed = True
            self.handle = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
            if limits.gzip_ratio:
                ratio_cap = max(limits.gzip_floor, size * limits.gzip_ratio)
                self.expanded_cap = min(self.expanded_cap or ratio_cap, ratio_cap)
        self.position = 0

    def remaining(self) -> int | None:
        """Bytes left in an uncompressed file (None when unknown: gzip)."""
        return None if self.stats.compressed else self.stats.file_size - self.position

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; raises _Stop when the byte budget is spent."""
        if self.expanded_cap and self.position + size > self.expanded_cap:
            if self.stats.compressed and self.expanded_cap != self.limits.max_bytes:
                what = (
                    f"expands past {self.expanded_cap:,} bytes from {self.stats.file_size:,} "
                    f"compressed (over {self.limits.gzip_ratio}x: a gzip bomb?)"
                )
            else:
                what = f"is longer than --max-bytes {self.expanded_cap:,}"
            raise _Stop(
                f"stopped reading: the capture {what}; give --max-bytes to read more "
                f"({self.stats.last_whole()})"
            )
        try:
            data = self.handle.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise _Stop(
                f"the compressed data is damaged at byte {self.position:,} ({exc})"
            ) from None
        self.position += len(data)
        self.stats.bytes_read = self.position
        return data

    def skip(self, size: int) -> bool:
        """Skip ``size`` bytes (seek when uncompressed); False at the end of the file."""
        if not self.stats.compressed:
            left = self.remaining()
            if left is not None and size > left:
                return False
            self.handle.seek(size, os.SEEK_CUR)
            self.position += size
            return True
        while size > 0:  # bounded by the byte budget: every read counts against it
            got = self.read(min(size, 1 << 20))
            if not got:
                return False
            size -= len(got)
        return True


class _Stop(Exception):
    """Reading ends here, for the reason given."""


def _budget(stats: FileStats, limits: Limits, started: float) -> None:
    """Raise _Stop when the packet count or the wall time is spent."""
    if limits.max_packets and stats.packets >= limits.max_packets:
        raise _Stop(f"stopped after --max-packets {limits.max_packets:,} packets")
    tick = stats.packets % _CHECK_EVERY == 0 and limits.time_limit
    if tick and limits.clock() - started > limits.time_limit:
        raise _Stop(f"stopped after --time-limit {limits.time_limit:g} s of reading")


def _pcap(src: _Source, stats: FileStats, limits: Limits, started: float) -> Iterator[Frame]:
    """Records of a pcap file (tcpdump's format), each read at its caplen."""
    header = src.read(24)
    endian, unit, record_size = _PCAP_MAGIC[header[:4]]
    linktype = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF  # bits 28-31: FCS
    stats.format = "pcap"
    record = struct.Struct(endian + "IIII")
    empty = 0
    while True:  # bounded by the file, --max-packets, --max-bytes and --time-limit
        _budget(stats, limits, started)
        head = src.read(record_size)
        if not head:
            return
        if len(head) < record_size:
            raise _Stop(f"the file ends inside a record header ({stats.last_whole()})")
        sec, frac, caplen, wirelen = record.unpack_from(head)
        if caplen == 0:
            # No real capture holds long runs of records without a byte (libpcap never
            # writes one); a sparse, zero-filled or forged file does: stop early.
            empty += 1
            if empty >= _EMPTY_RUN:
                what = "all-zero" if not (sec or frac or wirelen) else "empty"
                raise _Stop(
                    f"{empty} {what} records in a row up to byte {src.position:,}: the file is "
                    f"sparse, zero-filled or damaged ({stats.last_whole()})"
                )
            continue
        empty = 0
        if caplen > MAX_FRAME:
            left = src.remaining()
            if left is not None and caplen > left:
                raise _Stop(
                    f"record #{stats.packets + 1} claims {caplen:,} bytes, more than the "
                    f"{left:,} left in the file ({stats.last_whole()})"
                )
            stats.warnings.append(
                f"record #{stats.packets + 1} claims {caplen:,} bytes (above {MAX_FRAME:,}): "
                "skipped"
            )
            if not src.skip(caplen):
                raise _Stop(f"the file ends inside record #{stats.packets + 1}")
            continue
        data = src.read(caplen)
        if len(data) < caplen:
            raise _Stop(
                f"the file ends inside record #{stats.packets + 1} ({len(data):,} of "
                f"{caplen:,} bytes; {stats.last_whole()})"
            )
        stats.packets += 1
        stats.last_time = sec + frac * unit
        if caplen < wirelen:
            stats.snapped += 1
        yield Frame(stats.packets - 1, stats.last_time, linktype, data, wirelen)


def _tsresol(options: bytes, endian: str) -> float:
    """The if_tsresol option of an IDB (pcapng §4.2): 10^-v, or 2^-v with bit 7 set."""
    pos = 0
    while pos + 4 <= len(options):  # bounded by the options' length
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0**-value
        pos += 4 + length + (-length % 4)
    return 1e-6


def _pcapng(src: _Source, stats: FileStats, limits: Limits, started: float) -> Iterator[Frame]:
    """Packet blocks of a pcapng file, each block length checked against the file."""
    stats.format = "pcapng"
    endian = "<"
    interfaces: list[tuple[int, int, float]] = []  # linktype, snaplen, seconds per tick
    while True:  # bounded by the file, --max-packets, --max-bytes and --time-limit
        _budget(stats, limits, started)
        start = src.position
        head = src.read(8)
        if not head:
            return
        if len(head) < 8:
            raise _Stop(f"the file ends inside a block header ({stats.last_whole()})")
        if head[:4] == _PCAPNG_SHB:
            magic = src.read(4)
            if magic == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise _Stop(f"section header at byte {start:,} has no byte-order magic")
            interfaces = []
            length = struct.unpack(endian + "I", head[4:8])[0]
            body_size = length - 12
            already = 4
        else:
            kind, length = struct.unpack(endian + "II", head)
            body_size = length - 12
            already = 0
        left = src.remaining()
        beyond = left is not None and length - 8 - already > left
        smallest = 28 if already else 12  # pcapng §4.1: a section header is at least 28 bytes
        if length < smallest or length % 4 or length > _MAX_BLOCK or beyond:
            where = f"block at byte {start:,} has length {length:,}"
            why = "beyond the end of the file" if beyond else "not a valid block length"
            raise _Stop(f"{where}: {why} ({stats.last_whole()})")
        body = src.read(body_size - already)
        tail = src.read(4)
        if len(body) < body_size - already or len(tail) < 4:
            raise _Stop(f"the file ends inside the block at byte {start:,} ({stats.last_whole()})")
        if struct.unpack(endian + "I", tail)[0] != length:
            raise _Stop(
                f"block at byte {start:,}: trailing length differs from {length:,} "
                f"({stats.last_whole()})"
            )
        if head[:4] == _PCAPNG_SHB:
            continue
        frame = _ng_block(kind, body, endian, interfaces, stats)
        if frame is not None:
            yield frame


def _ng_block(
    kind: int,
    body: bytes,
    endian: str,
    interfaces: list[tuple[int, int, float]],
    stats: FileStats,
) -> Frame | None:
    """One pcapng block: remember interfaces, return the frame of a packet block."""
    if kind == 1 and len(body) >= 8:  # Interface Description Block
        linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
        interfaces.append((linktype, snaplen, _tsresol(body[8:], endian)))
        return None
    if kind in (2, 6) and len(body) >= 20:  # (obsolete) Packet Block, Enhanced Packet Block
        if kind == 6:
            iface, high, low, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
        else:
            iface, _, high, low, caplen, wirelen = struct.unpack_from(endian + "HHIIII", body)
        data_start = 20
    elif kind == 3 and len(body) >= 4:  # Simple Packet Block: interface 0, no time
        iface, high, low = 0, 0, 0
        wirelen = struct.unpack_from(endian + "I", body)[0]
        snaplen = interfaces[0][1] if interfaces else 0
        caplen = min(wirelen, snaplen or wirelen, len(body) - 4)
        data_start = 4
    else:
        return None
    number = stats.packets + 1
    if iface >= len(interfaces):
        stats.warnings.append(f"packet #{number}: unknown interface {iface}; skipped")
        return None
    if data_start + caplen > len(body):
        stats.warnings.append(
            f"packet #{number}: captured length {caplen:,} exceeds its block; skipped"
        )
        return None
    linktype, _, unit = interfaces[iface]
    stats.packets += 1
    stats.last_time = ((high << 32) | low) * unit
    if caplen < wirelen:
        stats.snapped += 1
    return Frame(
        number - 1, stats.last_time, linktype, body[data_start : data_start + caplen], wirelen
    )


def read_frames(
    handle: BinaryIO, stats: FileStats, limits: Limits | None = None
) -> Iterator[Frame]:
    """Every frame of an opened capture file; problems end up in ``stats``, never raised.

    Raises ``NotACapture`` only when the first bytes are no pcap/pcapng header.
    """
    limits = limits or Limits()
    src = _Source(handle, stats, limits)
    started = limits.clock()
    try:
        magic = src.read(4)
    except _Stop as exc:
        raise NotACapture(str(exc)) from None
    if magic in _PCAP_MAGIC:
        reader = _pcap
    elif magic == _PCAPNG_SHB:
        reader = _pcapng
    else:
        raise NotACapture(f"not a pcap or pcapng capture (first bytes {magic.hex() or 'none'})")
    src = _rewind(handle, src, stats, limits)
    try:
        yield from reader(src, stats, limits, started)
    except _Stop as exc:
        stats.stopped = str(exc)
        stats.warnings.append(str(exc))


def _rewind(handle: BinaryIO, src: _Source, stats: FileStats, limits: Limits) -> _Source:
    """A fresh source at the start of the file (gzip streams cannot seek cheaply back)."""
    handle.seek(0)
    fresh = _Source(handle, stats, limits)
    stats.bytes_read = 0
    return fresh
