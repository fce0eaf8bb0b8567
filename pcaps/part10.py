"""A minimal, valid DICOM Part 10 file for the corpus: a Secondary Capture image.

PS3.10 §7.1 file meta information (``netdicom2.dimse.part10_header``), then an Explicit VR
Little Endian data set (PS3.5 §7.1.2) with the Patient, General Study, General Series, SC
Equipment, General Image, Image Pixel and SOP Common attributes that PS3.3 A.8.1 requires,
and deterministic 8-bit pixel data. UIDs are derived from the name (PS3.5 §B.2: 2.25 + an
integer), so the same call always writes the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from netdicom2.dimse import part10_header

__all__ = ["SECONDARY_CAPTURE", "secondary_capture", "uid_for"]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"}


def uid_for(name: str) -> str:
    """A UID under the 2.25 root derived from ``name`` (PS3.5 §B.2)."""
    return "2.25." + str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:15], "big"))


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR LE element, value padded to even length (PS3.5 §7.1.2, §6.2)."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _us(value: int) -> bytes:
    """An unsigned short value."""
    return struct.pack("<H", value)


def secondary_capture(
    path: Path, name: str = "netdicom2-corpus", rows: int = 32, columns: int = 32
) -> Path:
    """Write a Secondary Capture Part 10 file of ``rows`` x ``columns`` 8-bit pixels."""
    instance = uid_for(name + ".instance")
    pixels = bytes((r * 7 + c * 3) & 0xFF for r in range(rows) for c in range(columns))
    elements = [
        (0x0008, 0x0016, b"UI", SECONDARY_CAPTURE.encode()),
        (0x0008, 0x0018, b"UI", instance.encode()),
        (0x0008, 0x0020, b"DA", b"20240101"),
        (0x0008, 0x0030, b"TM", b"120000"),
        (0x0008, 0x0050, b"SH", b"ACC0001"),
        (0x0008, 0x0060, b"CS", b"OT"),
        (0x0008, 0x0064, b"CS", b"WSD"),
        (0x0008, 0x0090, b"PN", b""),
        (0x0010, 0x0010, b"PN", b"NETDICOM2^CORPUS"),
        (0x0010, 0x0020, b"LO", b"CORPUS-0001"),
        (0x0010, 0x0030, b"DA", b""),
        (0x0010, 0x0040, b"CS", b"O"),
        (0x0020, 0x000D, b"UI", uid_for(name + ".study").encode()),
        (0x0020, 0x000E, b"UI", uid_for(name + ".series").encode()),
        (0x0020, 0x0010, b"SH", b"1"),
        (0x0020, 0x0011, b"IS", b"1"),
        (0x0020, 0x0013, b"IS", b"1"),
        (0x0020, 0x0020, b"CS", b""),
        (0x0028, 0x0002, b"US", _us(1)),
        (0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        (0x0028, 0x0010, b"US", _us(rows)),
        (0x0028, 0x0011, b"US", _us(columns)),
        (0x0028, 0x0100, b"US", _us(8)),
        (0x0028, 0x0101, b"US", _us(8)),
        (0x0028, 0x0102, b"US", _us(7)),
        (0x0028, 0x0103, b"US", _us(0)),
        (0x7FE0, 0x0010, b"OB", pixels),
    ]
    body = b"".join(_element(*e) for e in elements)
    path.write_bytes(part10_header(SECONDARY_CAPTURE, instance, EXPLICIT_VR_LITTLE_ENDIAN) + body)
    return path
