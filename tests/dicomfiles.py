"""Generate small valid Part 10 files (Secondary Capture, Explicit VR LE) for transfer tests."""

from __future__ import annotations

import struct
from pathlib import Path

from netdicom2.dimse import part10_header

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def _element(group: int, element: int, vr: bytes, raw: bytes) -> bytes:
    """One Explicit VR Little Endian element (PS3.5 §7.1.2)."""
    if len(raw) % 2:
        raw += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2s2xI", group, element, vr, len(raw)) + raw
    return struct.pack("<HH2sH", group, element, vr, len(raw)) + raw


def secondary_capture(instance_uid: str, pixel_bytes: int) -> bytes:
    """A Secondary Capture data set whose pixel data is `pixel_bytes` long (even)."""
    side = max(2, int(pixel_bytes**0.5) // 2 * 2)
    rows, cols = side, max(2, pixel_bytes // side // 2 * 2)

    def us(value: int) -> bytes:
        """A US value, little endian (PS3.5 §7.1.2)."""
        return struct.pack("<H", value)

    return b"".join(
        [
            _element(0x0008, 0x0016, b"UI", SECONDARY_CAPTURE.encode()),
            _element(0x0008, 0x0018, b"UI", instance_uid.encode()),
            _element(0x0008, 0x0060, b"CS", b"OT"),
            _element(0x0008, 0x0064, b"CS", b"WSD"),
            _element(0x0010, 0x0010, b"PN", b"TEST^NETDICOM2"),
            _element(0x0010, 0x0020, b"LO", b"ND2-0001"),
            _element(0x0020, 0x000D, b"UI", (instance_uid + ".1").encode()),
            _element(0x0020, 0x000E, b"UI", (instance_uid + ".2").encode()),
            _element(0x0028, 0x0002, b"US", us(1)),
            _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
            _element(0x0028, 0x0010, b"US", us(rows)),
            _element(0x0028, 0x0011, b"US", us(cols)),
            _element(0x0028, 0x0100, b"US", us(8)),
            _element(0x0028, 0x0101, b"US", us(8)),
            _element(0x0028, 0x0102, b"US", us(7)),
            _element(0x0028, 0x0103, b"US", us(0)),
            _element(
                0x7FE0,
                0x0010,
                b"OB",
                bytes(range(256)) * (rows * cols // 256) + b"\x00" * (rows * cols % 256),
            ),
        ]
    )


def write_part10(path: Path, instance_uid: str, pixel_bytes: int) -> Path:
    """Write a Part 10 Secondary Capture file and return its path."""
    dataset = secondary_capture(instance_uid, pixel_bytes)
    path.write_bytes(part10_header(SECONDARY_CAPTURE, instance_uid, EXPLICIT_VR_LE) + dataset)
    return path
