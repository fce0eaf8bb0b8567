"""Synthetic DICOM conversations as scapy packets, for the pcaps tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from netdicom2.acse import build_rq, negotiate
from netdicom2.dimse import c_echo_rq, c_echo_rsp, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU

VERIFICATION = "1.2.840.10008.1.1"


def ether() -> Any:
    """An Ethernet header with fixed addresses (scapy would otherwise resolve them: traffic)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def echo_pdus() -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """RQ, AC, C-ECHO-RQ, C-ECHO-RSP, RELEASE-RQ, RELEASE-RP, encoded with netdicom2's codec."""
    rq = build_rq("ANY-SCP", "ECHOSCU", [(VERIFICATION, ["1.2.840.10008.1.2"])])
    ac, _ = negotiate(rq)
    command = c_echo_rq(1)
    echo = PDataTfPDU([PresentationDataValueItem(1, 3, encode_command(command))])
    answer = PDataTfPDU([PresentationDataValueItem(1, 3, encode_command(c_echo_rsp(command)))])
    return (
        rq.encode(),
        ac.encode(),
        echo.encode(),
        answer.encode(),
        AReleaseRqPDU().encode(),
        AReleaseRpPDU().encode(),
    )


@dataclass
class Conversation:
    """Builds the packets of one TCP connection with consistent sequence numbers."""

    client: tuple[str, int] = ("10.0.0.1", 50000)
    server: tuple[str, int] = ("10.0.0.2", 104)
    isn: tuple[int, int] = (1000, 5000)
    time: float = 1000.0
    packets: list[Any] = field(default_factory=list)
    nxt: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nxt = [self.isn[0], self.isn[1]]

    def _ip(self, side: int) -> Any:
        src, dst = (self.client, self.server) if side == 0 else (self.server, self.client)
        if ":" in src[0]:
            return IPv6(src=src[0], dst=dst[0])
        return IP(src=src[0], dst=dst[0])

    def packet(self, side: int, flags: str, seq: int, payload: bytes = b"") -> Any:
        """One segment from ``side`` (0 client, 1 server) at the next time step."""
        src, dst = (self.client, self.server) if side == 0 else (self.server, self.client)
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            flags=flags,
            seq=seq % (1 << 32),
            ack=self.nxt[1 - side] % (1 << 32),
        )
        pkt = ether() / self._ip(side) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        self.time += 0.001
        pkt.time = self.time
        return pkt

    def handshake(self) -> list[Any]:
        """SYN, SYN-ACK, ACK."""
        out = [self.packet(0, "S", self.nxt[0])]
        self.nxt[0] += 1
        out.append(self.packet(1, "SA", self.nxt[1]))
        self.nxt[1] += 1
        out.append(self.packet(0, "A", self.nxt[0]))
        self.packets += out
        return out

    def send(self, side: int, data: bytes, cuts: Iterable[int] = ()) -> list[Any]:
        """``data`` from ``side`` as segments cut at the given offsets."""
        bounds = [0, *sorted(cuts), len(data)]
        out = []
        for start, end in itertools.pairwise(bounds):
            out.append(self.packet(side, "PA", self.nxt[side] + start, data[start:end]))
        self.nxt[side] += len(data)
        self.packets += out
        return out

    def fin(self, side: int) -> list[Any]:
        """FIN from ``side``."""
        out = [self.packet(side, "FA", self.nxt[side])]
        self.nxt[side] += 1
        self.packets += out
        return out

    def echo_session(self) -> list[Any]:
        """A whole C-ECHO association: handshake, six PDUs, FINs."""
        rq, ac, echo, answer, rel_rq, rel_rp = echo_pdus()
        self.handshake()
        self.send(0, rq)
        self.send(1, ac)
        self.send(0, echo)
        self.send(1, answer)
        self.send(0, rel_rq)
        self.send(1, rel_rp)
        self.fin(0)
        self.fin(1)
        return self.packets


def write(path: Path, packets: list[Any], linktype: int | None = None) -> Path:
    """Write packets as a pcap file."""
    if linktype is None:
        wrpcap(str(path), packets)
    else:
        wrpcap(str(path), packets, linktype=linktype)
    return path
