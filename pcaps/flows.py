"""DICOM connections of a capture: flow selection, roles, both directions cut into PDUs.

A TCP connection is kept when one of its ports is a DICOM port (PS3.8 §9.1.2: 104, 11112;
Orthanc's 4242; plus any given) or when a direction starts with an A-ASSOCIATE-RQ. The
association requestor is the side that sent the A-ASSOCIATE-RQ (PS3.8 §7.1); failing that the
side that answered with an AC/RJ is the acceptor, then the SYN's sender is the requestor, then
the side not on a DICOM port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from netdicom2.pcaps.capture import CaptureStats, Endpoint, TcpConnection, read_connections
from netdicom2.pcaps.describe import describe_command, parse_command
from netdicom2.pcaps.pcapfile import Limits
from netdicom2.pcaps.pdus import PduRecord, Skip, split_stream
from netdicom2.pcaps.reassembly import Stream, reassemble
from netdicom2.pdu import AAssociateAcPDU, AAssociateRjPDU, AAssociateRqPDU, PDataTfPDU

__all__ = ["DICOM_PORTS", "Capture", "DicomConnection", "Direction", "Event", "load_capture"]

#: PS3.8 §9.1.2: 104 (well-known) and 11112 (registered); 4242 is Orthanc's default.
DICOM_PORTS = frozenset({104, 11112, 4242})


@dataclass
class Direction:
    """One direction of a connection: its reassembled stream and its PDUs."""

    sender: Endpoint
    receiver: Endpoint
    stream: Stream
    pdus: list[PduRecord]
    skips: list[Skip]


@dataclass(frozen=True)
class Event:
    """A step of a connection's timeline: a PDU ("pdu") or a side closing ("fin", "rst")."""

    time: float
    side: str  # "requestor" or "acceptor"
    kind: str
    record: PduRecord | None = None


@dataclass
class DicomConnection:
    """One DICOM TCP connection, requestor and acceptor directions."""

    index: int
    requestor: Endpoint
    acceptor: Endpoint
    rq: Direction  # requestor -> acceptor
    ac: Direction  # acceptor -> requestor
    selected_by: str
    roles_from: str
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """ "#0 10.0.0.1:50000 -> 10.0.0.2:104"."""
        (rh, rp), (ah, ap) = self.requestor, self.acceptor
        return f"#{self.index} {rh}:{rp} -> {ah}:{ap}"

    def direction(self, side: str) -> Direction:
        """The direction sent by "requestor" or "acceptor"."""
        return self.rq if side == "requestor" else self.ac

    def timeline(self) -> list[Event]:
        """PDUs of both sides and their closes, in capture order.

        A PDU takes the place of the packet that completed it; a close, of its FIN or RST
        packet, after any PDU that same packet completed.
        """
        keyed: list[tuple[int, int, int, Event]] = []
        for side, direction in (("requestor", self.rq), ("acceptor", self.ac)):
            for record in direction.pdus:
                keyed.append(
                    (record.packet, 0, record.offset, Event(record.time, side, "pdu", record))
                )
            stream = direction.stream
            for when, packet, kind in (
                (stream.fin_time, stream.fin_index, "fin"),
                (stream.rst_time, stream.rst_index, "rst"),
            ):
                if when is not None and packet is not None:
                    keyed.append((packet, 1, 0, Event(when, side, kind)))
        keyed.sort(key=lambda k: k[:3])
        return [k[3] for k in keyed]

    @property
    def pdu_count(self) -> int:
        """PDUs of both directions (complete or not)."""
        return len(self.rq.pdus) + len(self.ac.pdus)


@dataclass
class Capture:
    """The DICOM connections of one capture file."""

    path: Path
    connections: list[DicomConnection]
    stats: CaptureStats
    ignored: int = 0


def _annotate_commands(records: list[PduRecord]) -> None:
    """Name the DIMSE command each P-DATA-TF completes (PS3.8 Annex E; PS3.7 §9.3)."""
    pending: dict[int, bytearray] = {}
    for record in records:
        if not isinstance(record.pdu, PDataTfPDU):
            continue
        for pdv in record.pdu.data_value_items:
            if not pdv.is_command:
                continue
            buffer = pending.setdefault(pdv.context_id, bytearray())
            buffer += pdv.fragment
            if pdv.is_last:
                elements = parse_command(bytes(buffer))
                record.notes.append(
                    "undecodable command set" if elements is None else describe_command(elements)
                )
                del pending[pdv.context_id]


def _direction(conn: TcpConnection, sender: Endpoint) -> Direction:
    """Reassemble and split what ``sender`` sent."""
    stream = reassemble(conn.segments.get(sender, []))
    records, skips = split_stream(stream)
    _annotate_commands(records)
    return Direction(sender, conn.other(sender), stream, records, skips)


def _first_ok(direction: Direction) -> PduRecord | None:
    """The first decoded PDU of a direction."""
    return next((r for r in direction.pdus if r.status == "ok"), None)


def _roles(
    conn: TcpConnection, one: Direction, two: Direction, ports: frozenset[int]
) -> tuple[Direction, Direction, str]:
    """(requestor direction, acceptor direction, how the roles were decided)."""
    for first, second in ((one, two), (two, one)):
        head = _first_ok(first)
        if head is not None and isinstance(head.pdu, AAssociateRqPDU):
            return first, second, "A-ASSOCIATE-RQ"
    for first, second in ((one, two), (two, one)):
        head = _first_ok(first)
        if head is not None and isinstance(head.pdu, AAssociateAcPDU | AAssociateRjPDU):
            return second, first, "A-ASSOCIATE-AC/RJ"
    if conn.client is not None:
        return (one, two, "SYN") if one.sender == conn.client else (two, one, "SYN")
    if one.receiver[1] in ports and one.sender[1] not in ports:
        return one, two, "port"
    if two.receiver[1] in ports and two.sender[1] not in ports:
        return two, one, "port"
    return (one, two, "port") if one.sender[1] >= two.sender[1] else (two, one, "port")


def load_capture(path: Path, ports: Iterable[int] = (), limits: Limits | None = None) -> Capture:
    """Read a capture and return its DICOM connections, both directions cut into PDUs."""
    dicom_ports = DICOM_PORTS | frozenset(ports)
    tcp_connections, stats = read_connections(path, limits)
    selected: list[DicomConnection] = []
    ignored = 0
    for conn in tcp_connections:
        one, two = _direction(conn, conn.a), _direction(conn, conn.b)
        by_port = conn.a[1] in dicom_ports or conn.b[1] in dicom_ports
        rq_dir, ac_dir, how = _roles(conn, one, two, dicom_ports)
        head = _first_ok(rq_dir)
        starts_with_rq = head is not None and isinstance(head.pdu, AAssociateRqPDU)
        if not by_port and not starts_with_rq:
            ignored += 1
            continue
        port = ac_dir.sender[1]
        selected_by = f"port {port}" if by_port else "A-ASSOCIATE-RQ at stream start"
        dicom = DicomConnection(
            len(selected), rq_dir.sender, ac_dir.sender, rq_dir, ac_dir, selected_by, how
        )
        for direction, name in ((rq_dir, "requestor"), (ac_dir, "acceptor")):
            stream = direction.stream
            if stream.gaps:
                lost = sum(g.size for g in stream.gaps)
                dicom.notes.append(f"{name}: {lost} bytes missing in {len(stream.gaps)} holes")
            if stream.retransmitted_segments:
                dicom.notes.append(
                    f"{name}: {stream.retransmitted_segments} retransmitted segments "
                    f"({stream.retransmitted_bytes} bytes)"
                )
            if stream.out_of_order_segments:
                dicom.notes.append(f"{name}: {stream.out_of_order_segments} segments out of order")
            if stream.conflicts:
                dicom.notes.append(f"{name}: {len(stream.conflicts)} overlaps with different bytes")
            if stream.segments and not stream.start_known:
                dicom.notes.append(f"{name}: SYN not captured (stream may start mid-PDU)")
            for skip in direction.skips:
                dicom.notes.append(
                    f"{name}: skipped {skip.size} bytes at {skip.offset}: {skip.reason}"
                )
        selected.append(dicom)
    return Capture(path, selected, stats, ignored)
