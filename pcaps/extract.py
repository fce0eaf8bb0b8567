"""``--extract DIR``: every C-STORE data set of a capture as a DICOM Part 10 file.

Wireshark's "Export Objects" for DICOM, done from the reassembled streams: each direction's
P-DATA-TF are joined into DIMSE messages (PS3.8 Annex E); a C-STORE-RQ (PS3.7 §9.3.1.1,
Command Field 0001H) with a data set is written as ``<SOP Instance UID>.dcm`` with a File Meta
group (PS3.10 §7.1) from the command's Affected SOP Class/Instance UIDs and the transfer
syntax the A-ASSOCIATE-AC accepted for the message's presentation context (PS3.8 §9.3.3.2).
Both directions are read, so C-GET sub-operations (the acceptor stores) are extracted too.

A message the capture lost bytes of (an incomplete or undecodable PDU, or skipped bytes, since
the previous message of the direction) is not written: a damaged file would look whole.
Names come from the UID with anything but digits and dots replaced, so no path leaves DIR.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from netdicom2.dimse import part10_header
from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import Message, Reassembler
from netdicom2.pcaps.describe import parse_command
from netdicom2.pcaps.flows import DicomConnection, Direction
from netdicom2.pdu import AAssociateAcPDU, PDataTfPDU

__all__ = ["Extracted", "extract_datasets"]

_US = struct.Struct("<H")
_C_STORE_RQ = 0x0001
_UNSAFE = re.compile(r"[^0-9.]")


@dataclass
class Extracted:
    """What one connection gave: files written and data sets left out (with why)."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _text(raw: bytes | None) -> str:
    """A UI value without padding."""
    return "" if raw is None else raw.decode("ascii", "replace").strip(" \x00")


def _syntaxes(conn: DicomConnection) -> dict[int, str]:
    """Presentation context ID -> accepted transfer syntax, from the recorded AC."""
    for record in conn.ac.pdus:
        if isinstance(record.pdu, AAssociateAcPDU):
            return {
                item.context_id: item.transfer_syntax.strip(" \x00")
                for item in record.pdu.presentation_context_items
                if item.result == 0 and item.transfer_syntax
            }
    return {}


def _messages(direction: Direction) -> list[tuple[Message, bool]]:
    """The direction's DIMSE messages, each with "bytes were lost since the previous one"."""
    reassembler = Reassembler()
    out: list[tuple[Message, bool]] = []
    lost = direction.stream.start_known is False and bool(direction.stream.segments)
    skips = sorted((s.offset, s.offset + s.size) for s in direction.skips)
    previous_end = 0
    for record in direction.pdus:
        if any(start < record.end and end > previous_end for start, end in skips):
            lost = True
        if record.status != "ok":
            lost = lost or record.pdu_type == 0x04 or record.status == "incomplete"
            continue
        if not isinstance(record.pdu, PDataTfPDU):
            continue
        try:
            done = reassembler.add(record.pdu)
        except PDUDecodeError:
            lost = True
            continue
        for message in done:
            out.append((message, lost))
            lost = False
        previous_end = record.end
    return out


def _name(folder: Path, instance: str, taken: set[Path]) -> Path:
    """``<UID>.dcm`` in folder, made safe and unique."""
    stem = _UNSAFE.sub("_", instance)[:64] or "unnamed"
    path = folder / f"{stem}.dcm"
    counter = 2
    while path in taken or path.exists():  # bounded by the files already written
        path = folder / f"{stem}-{counter}.dcm"
        counter += 1
    taken.add(path)
    return path


def extract_datasets(conn: DicomConnection, folder: Path, taken: set[Path]) -> Extracted:
    """Write every complete C-STORE data set of ``conn`` to ``folder``."""
    result = Extracted()
    syntaxes = _syntaxes(conn)
    for side in ("requestor", "acceptor"):
        for message, lost in _messages(conn.direction(side)):
            elements = parse_command(message.command) or {}
            field_raw = elements.get(0x0100)
            if field_raw is None or len(field_raw) != 2 or _US.unpack(field_raw)[0] != _C_STORE_RQ:
                continue
            instance = _text(elements.get(0x1000))
            sop_class = _text(elements.get(0x0002))
            where = f"{conn.label} {side} C-STORE-RQ {instance or '(no instance UID)'}"
            syntax = syntaxes.get(message.context_id)
            if message.dataset is None:
                result.skipped.append(f"{where}: no data set")
            elif lost:
                result.skipped.append(f"{where}: the capture lost bytes of this message")
            elif syntax is None:
                result.skipped.append(
                    f"{where}: context {message.context_id} has no accepted transfer syntax "
                    "in the capture (no A-ASSOCIATE-AC)"
                )
            elif not instance or not sop_class:
                result.skipped.append(f"{where}: the command lacks (0000,0002) or (0000,1000)")
            else:
                path = _name(folder, instance, taken)
                path.write_bytes(part10_header(sop_class, instance, syntax) + message.dataset)
                result.files.append(path)
    return result
