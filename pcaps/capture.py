"""Read pcap/pcapng files whole and group their TCP segments into connections.

Link types: whatever scapy dissects (Ethernet, Linux cooked SLL and SLL2, BSD loopback/NULL,
raw IP), plus a fallback for link layers scapy leaves as raw bytes (OpenBSD loopback, raw
IPv4/IPv6 link types): the IP header is looked for at the link type's fixed offset. IPv4 and
IPv6 both work. Only TCP matters here; everything else in the capture is counted and skipped.

A connection is identified by its two endpoints; a new SYN with another initial sequence number
on the same endpoints starts a new connection (port reuse).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdicom2.pcaps.dissect import UNKNOWN, TcpSegment, tcp_segment
from netdicom2.pcaps.pcapfile import FileStats, Limits, NotACapture, read_frames
from netdicom2.pcaps.reassembly import FIN, RST, SYN, Segment

__all__ = ["Endpoint", "TcpConnection", "read_connections"]

Endpoint = tuple[str, int]

# Offset of the IP header for link types scapy does not dissect (tcpdump's LINKTYPE_ list).
_IP_OFFSETS = {0: 4, 12: 0, 14: 0, 101: 0, 108: 4, 228: 0, 229: 0}
_TCP_ACK = 0x10


@dataclass
class TcpConnection:
    """The segments of one TCP connection, per sending endpoint, in capture order."""

    index: int
    a: Endpoint
    b: Endpoint
    segments: dict[Endpoint, list[Segment]] = field(default_factory=dict)
    client: Endpoint | None = None  # the sender of the first SYN, when captured
    client_isn: int | None = None
    ended: bool = False
    first_time: float = 0.0

    def add(self, sender: Endpoint, segment: Segment) -> None:
        """Append a segment sent by ``sender``."""
        self.segments.setdefault(sender, []).append(segment)

    def other(self, endpoint: Endpoint) -> Endpoint:
        """The endpoint at the other end."""
        return self.b if endpoint == self.a else self.a


@dataclass
class CaptureStats:
    """What the reader saw besides TCP."""

    packets: int = 0
    tcp_segments: int = 0
    skipped: int = 0
    linktype: int | None = None
    file: FileStats = field(default_factory=FileStats)


def _layers() -> tuple[Any, Any, Any, Any, Any]:
    """scapy's IP, IPv6, TCP, Padding and link-type table (imported lazily: scapy is slow)."""
    from scapy.config import conf
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Padding

    return IP, IPv6, TCP, Padding, conf.l2types.num2layer


def _ip_layer(packet: Any, data: bytes, linktype: int | None) -> Any:
    """The IPv4/IPv6 layer of a packet, dissecting raw link payloads scapy did not."""
    ip_cls, ipv6_cls, _, _, _ = _layers()
    for cls in (ip_cls, ipv6_cls):
        if cls in packet:
            return packet[cls]
    offset = _IP_OFFSETS.get(linktype if linktype is not None else -1)
    if offset is None:
        return None
    data = data[offset:]
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return ip_cls(data)
    if version == 6:
        return ipv6_cls(data)
    return None


def _tcp_payload(tcp: Any, padding_cls: Any) -> bytes:
    """The TCP payload as captured, whatever scapy dissected on top of it.

    The TCP layer's ``original`` bytes stop where the IP length says (link-layer padding is
    not in them). Upper-layer dissection is not trusted: with ``scapy.contrib.dicom`` loaded,
    ports 104 and 11112 are dissected as DICOM and a second PDU in a segment lands in Padding.
    """
    original = getattr(tcp, "original", None)
    if original:
        return bytes(original[int(tcp.dataofs) * 4 :])
    payload = bytes(tcp.payload)
    if padding_cls in tcp:
        pad = len(bytes(tcp[padding_cls]))
        if pad:
            payload = payload[:-pad]
    return payload


def _scapy_segment(linktype: int, data: bytes) -> TcpSegment | None:
    """The TCP segment of a frame as scapy dissects it (link types the fast path skips)."""
    from scapy.packet import Raw

    _, _, tcp_cls, padding_cls, link_classes = _layers()
    try:
        packet = link_classes.get(linktype, Raw)(data)
        ip = _ip_layer(packet, data, linktype)
    except Exception:  # scapy on hostile bytes: the frame is not TCP for us
        return None
    if ip is None or tcp_cls not in ip:
        return None
    tcp = ip[tcp_cls]
    return TcpSegment(
        (str(ip.src), int(tcp.sport)),
        (str(ip.dst), int(tcp.dport)),
        int(tcp.seq),
        int(tcp.ack),
        int(tcp.flags),
        _tcp_payload(tcp, padding_cls),
    )


def _packets(
    path: Path, stats: CaptureStats, limits: Limits | None
) -> Iterator[tuple[int, float, TcpSegment]]:
    """(index, time, segment) of every TCP segment in the file.

    Frames come whole from ``pcaps.pcapfile`` (any caplen, over 65,535 bytes too); their
    headers are read by ``pcaps.dissect``, or by scapy for the link types it leaves.
    """
    with path.open("rb") as handle:
        try:
            for frame in read_frames(handle, stats.file, limits):
                stats.packets += 1
                stats.linktype = frame.linktype if stats.linktype is None else stats.linktype
                fast = tcp_segment(frame.linktype, frame.data)
                segment = (
                    _scapy_segment(frame.linktype, frame.data)
                    if fast is UNKNOWN
                    else fast
                    if isinstance(fast, TcpSegment)
                    else None
                )
                if segment is None:
                    stats.skipped += 1
                    continue
                yield frame.index, frame.time, segment
        except NotACapture as exc:
            raise ValueError(f"{path}: {exc}") from exc


def read_connections(
    path: Path, limits: Limits | None = None
) -> tuple[list[TcpConnection], CaptureStats]:
    """Every TCP connection in a capture, with its segments in capture order."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    stats = CaptureStats()
    current: dict[frozenset[Endpoint], TcpConnection] = {}
    connections: list[TcpConnection] = []
    for number, time, segment in _packets(path, stats, limits):
        stats.tcp_segments += 1
        src, dst = segment.src, segment.dst
        flags = segment.flags
        seq = segment.seq
        key = frozenset((src, dst))
        conn = current.get(key)
        is_syn = bool(flags & SYN) and not flags & _TCP_ACK
        if conn is not None and is_syn and conn.client_isn is not None and seq != conn.client_isn:
            conn = None  # RFC 9293 §3.4: a new incarnation of the same endpoints
        if conn is not None and is_syn and conn.client_isn is None and conn.ended:
            conn = None
        if conn is None:
            conn = TcpConnection(len(connections), src, dst, first_time=time)
            current[key] = conn
            connections.append(conn)
        if is_syn and conn.client is None:
            conn.client, conn.client_isn = src, seq
        elif flags & SYN and flags & _TCP_ACK and conn.client is None:
            conn.client = dst
        if flags & (FIN | RST):
            conn.ended = True
        if not segment.payload and not flags & (SYN | FIN | RST) and conn.segments.get(src):
            continue  # a pure ACK carries nothing to reassemble: memory follows data only
        ack = segment.ack if flags & _TCP_ACK else None
        conn.add(src, Segment(time, seq, segment.payload, flags & 0x3F, ack, number))
    return connections, stats
