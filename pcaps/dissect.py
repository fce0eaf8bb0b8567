"""TCP segments out of link-layer frames, without scapy for the common link types.

Ethernet (with up to two VLAN tags), Linux cooked SLL/SLL2, BSD NULL/LOOP and raw IP frames
carrying IPv4 (RFC 791) or IPv6 (RFC 8200, no extension header) and TCP (RFC 9293 §3.1) are
read here directly: a capture of a few million segments reads in seconds. Anything else
(another link type or ethertype, IPv6 extension headers) returns ``UNKNOWN`` and the caller
lets scapy dissect it. The IP length field bounds the TCP payload (link padding is not data);
a zero IPv4 total length (segmentation offload) or IPv6 payload length (jumbogram) means "the
rest of the frame".
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["UNKNOWN", "TcpSegment", "tcp_segment"]

_U16 = struct.Struct(">H")
_TCP = struct.Struct(">HHIIBB")


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """The fields of one TCP segment the reassembly needs."""

    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: bytes


class _Unknown:
    """Marker: this frame needs a full dissector."""


UNKNOWN: Final = _Unknown()

_ETHERNET = 1
_VLAN = (0x8100, 0x88A8, 0x9100)
_IPV4, _IPV6, _ARP = 0x0800, 0x86DD, 0x0806
_RAW = {12: 0, 14: 0, 101: 0, 228: 0, 229: 0, 0: 4, 108: 4}  # link type -> IP offset
_SLL, _SLL2 = 113, 276


def _ip_offset(linktype: int, data: bytes) -> int | _Unknown | None:
    """Where the IP header starts in a frame; None when the frame is not IP."""
    if linktype == _ETHERNET:
        pos = 12
        kind = _U16.unpack_from(data, pos)[0] if len(data) >= 14 else -1
        for _ in range(2):  # IEEE 802.1Q / 802.1ad tags
            if kind in _VLAN and len(data) >= pos + 8:
                pos += 4
                kind = _U16.unpack_from(data, pos)[0]
        if kind in (_IPV4, _IPV6):
            return pos + 2
        return None if kind == _ARP else UNKNOWN
    if linktype == _SLL and len(data) >= 16:
        kind = _U16.unpack_from(data, 14)[0]
        return 16 if kind in (_IPV4, _IPV6) else UNKNOWN
    if linktype == _SLL2 and len(data) >= 20:
        kind = _U16.unpack_from(data, 0)[0]
        return 20 if kind in (_IPV4, _IPV6) else UNKNOWN
    return _RAW.get(linktype, UNKNOWN)


def tcp_segment(linktype: int, data: bytes) -> TcpSegment | _Unknown | None:
    """The TCP segment of a frame, None if it carries none, UNKNOWN if scapy must look."""
    offset = _ip_offset(linktype, data)
    if offset is None or isinstance(offset, _Unknown):
        return offset
    if len(data) < offset + 20:
        return UNKNOWN
    version = data[offset] >> 4
    if version == 4:
        header = (data[offset] & 0x0F) * 4
        if data[offset + 9] != 6:
            return None  # not TCP
        if _U16.unpack_from(data, offset + 6)[0] & 0x1FFF:
            return None  # a later IP fragment: no TCP header in it
        total = _U16.unpack_from(data, offset + 2)[0]
        end = len(data) if total == 0 else min(len(data), offset + total)
        src = socket.inet_ntop(socket.AF_INET, data[offset + 12 : offset + 16])
        dst = socket.inet_ntop(socket.AF_INET, data[offset + 16 : offset + 20])
        start = offset + header
    elif version == 6:
        if len(data) < offset + 40:
            return UNKNOWN
        if data[offset + 6] != 6:
            return UNKNOWN  # extension headers, or not TCP: the full dissector decides
        length = _U16.unpack_from(data, offset + 4)[0]
        end = len(data) if length == 0 else min(len(data), offset + 40 + length)
        src = socket.inet_ntop(socket.AF_INET6, data[offset + 8 : offset + 24])
        dst = socket.inet_ntop(socket.AF_INET6, data[offset + 24 : offset + 40])
        start = offset + 40
    else:
        return UNKNOWN
    if end < start + 20:
        return UNKNOWN  # TCP header cut by the snaplen
    sport, dport, seq, ack, dataofs, flags = _TCP.unpack_from(data, start)
    payload = data[start + (dataofs >> 4) * 4 : end]
    return TcpSegment((src, sport), (dst, dport), seq, ack, flags, payload)
