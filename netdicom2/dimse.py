"""Just enough DIMSE (PS3.7 §9.3, §E) for the example SCP/SCU: C-ECHO and C-STORE command sets.

Command sets are always Implicit VR Little Endian (PS3.7 §6.3.1). This module also reads the
File Meta Information of a Part 10 file (PS3.10 §7.1) so that `netdicom2 store` can send it
without pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "COMMAND_FIELDS",
    "ERROR_COMMENT",
    "MAX_COMMAND_LENGTH",
    "NO_DATA_SET",
    "VERIFICATION_SOP_CLASS",
    "CommandFragments",
    "CommandSet",
    "DimseError",
    "FileMeta",
    "c_echo_rq",
    "c_echo_rsp",
    "c_store_rq",
    "c_store_rsp",
    "decode_command",
    "encode_command",
    "is_storage_class",
    "part10_header",
    "read_part10",
]

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
# PS3.7 Table E.1-1: (0000,0800) Command Data Set Type 0101H means "no data set".
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0000
# The longest command set the example programs collect from fragments. PS3.7 sets no limit;
# real command sets are a few hundred bytes. Without one, a peer sending command fragments
# that are never the last (PS3.8 Annex E.2) would grow memory for as long as it sends.
MAX_COMMAND_LENGTH = 1 << 16

# PS3.7 §9.3 / §E: command field values.
COMMAND_FIELDS = {
    "C-STORE-RQ": 0x0001,
    "C-STORE-RSP": 0x8001,
    "C-ECHO-RQ": 0x0030,
    "C-ECHO-RSP": 0x8030,
}

# PS3.7 Table E.1-1: the command elements this module knows and their VR class.
_UID_TAGS = {0x0002, 0x0003, 0x1000, 0x1001}
_US_TAGS = {0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1020, 0x1021, 0x1022, 0x1023}
_UL_TAGS = {0x0000}
_AE_TAGS = {0x0600, 0x1030}
# (0000,0902) Error Comment, LO: at most 64 characters (PS3.7 Annex C, PS3.5 Table 6.2-1).
ERROR_COMMENT = 0x0902
_LO_TAGS = {ERROR_COMMENT}
_LO_LENGTH = 64
_TEXT_TAGS = _UID_TAGS | _AE_TAGS | _LO_TAGS

# Standard SOP classes (root 1.2.840.10008, PS3.6 Annex A) that are not Storage SOP classes
# (PS3.4 Annex B): a C-STORE on a presentation context for one of them is refused.
_NOT_STORAGE_PREFIXES = (
    "1.2.840.10008.1.",  # Verification, Storage Commitment, Procedural Event Logging, ...
    "1.2.840.10008.3.",  # detached management, MPPS
    "1.2.840.10008.5.1.1.",  # print management
    "1.2.840.10008.5.1.4.1.2.",  # Query/Retrieve information models
    "1.2.840.10008.5.1.4.20.",  # Composite Instance Root Retrieve
    "1.2.840.10008.5.1.4.31",  # Modality Worklist
    "1.2.840.10008.5.1.4.32.",  # General Purpose Worklist
    "1.2.840.10008.5.1.4.33",  # Instance Availability Notification
    "1.2.840.10008.5.1.4.34.6.",  # UPS push/watch/pull/event/query
    "1.2.840.10008.5.1.4.37.",  # Relevant Patient Information Query
    "1.2.840.10008.5.1.4.38.2",  # Hanging Protocol find/move/get
    "1.2.840.10008.5.1.4.38.3",
    "1.2.840.10008.5.1.4.38.4",
    "1.2.840.10008.5.1.4.39.2",  # Color Palette find/move/get
    "1.2.840.10008.5.1.4.39.3",
    "1.2.840.10008.5.1.4.39.4",
    "1.2.840.10008.5.1.4.41",  # Product Characteristics Query
    "1.2.840.10008.5.1.4.42",  # Substance Approval Query
)
_VERIFICATION = "1.2.840.10008.1.1"


def is_storage_class(sop_class_uid: str) -> bool:
    """False for a standard SOP class that is not a Storage SOP class (PS3.4 Annex B).

    UIDs outside the DICOM root (private SOP classes) are taken as storage classes.
    """
    uid = sop_class_uid.rstrip("\0 ")
    if uid == _VERIFICATION:
        return False
    return not any(uid == p.rstrip(".") or uid.startswith(p) for p in _NOT_STORAGE_PREFIXES)


# Implicit VR LE element header: group, element, value length (PS3.5 §7.1.3).
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
# A whole US element: header (length 2) and value.
_US_ELEMENT = struct.Struct("<HHIH")
_UL = struct.Struct("<I")
# (0000,0000) Command Group Length, UL, then its 4-byte value (PS3.7 §6.3.1).
_GROUP_LENGTH = struct.Struct("<HHII")


class DimseError(ValueError):
    """A command set or Part 10 file this module cannot read."""


@dataclass
class CommandSet:
    """A DIMSE command set: element number in group 0000 -> value (str for UI/AE, int for US)."""

    elements: dict[int, str | int] = field(default_factory=dict)

    @property
    def command_field(self) -> int:
        """(0000,0100) Command Field."""
        return int(self.elements.get(0x0100, -1))

    @property
    def message_id(self) -> int:
        """(0000,0110) Message ID."""
        return int(self.elements.get(0x0110, 0))

    @property
    def message_id_being_responded_to(self) -> int:
        """(0000,0120) Message ID Being Responded To (a response names its request)."""
        return int(self.elements.get(0x0120, 0))

    @property
    def has_data_set(self) -> bool:
        """(0000,0800) other than 0101H means a data set follows (PS3.7 Table E.1-1)."""
        return int(self.elements.get(0x0800, NO_DATA_SET)) != NO_DATA_SET

    @property
    def status(self) -> int | None:
        """(0000,0900) Status of a response."""
        value = self.elements.get(0x0900)
        return None if value is None else int(value)

    def get_uid(self, element: int) -> str:
        """A UI or AE value as text, "" when absent."""
        return str(self.elements.get(element, ""))


def _pad_even(raw: bytes, pad: bytes) -> bytes:
    """PS3.5 §7.1: values have even length; UI pads with NUL, AE with space."""
    return raw + pad if len(raw) % 2 else raw


def encode_command(command: CommandSet) -> bytes:
    """Implicit VR LE encoding with a correct (0000,0000) group length (PS3.7 §6.3.1)."""
    parts: list[bytes] = [b""]  # the group length, once the body's length is known
    elements = command.elements
    for element in sorted(elements):
        if element == 0x0000:
            continue
        value = elements[element]
        if element in _US_TAGS:
            parts.append(_US_ELEMENT.pack(0x0000, element, 2, int(value)))
            continue
        if element in _UID_TAGS:
            raw = _pad_even(str(value).encode("ascii"), b"\x00")
        elif element in _AE_TAGS:
            raw = _pad_even(str(value).encode("ascii"), b" ")
        elif element in _LO_TAGS:
            text = str(value)[:_LO_LENGTH].replace("\\", "/")
            raw = _pad_even(text.encode("ascii", "replace"), b" ")
        else:
            raise DimseError(f"element (0000,{element:04X}) is not supported")
        parts.append(_ELEMENT.pack(0x0000, element, len(raw)))
        parts.append(raw)
    body = b"".join(parts)
    return _GROUP_LENGTH.pack(0x0000, 0x0000, 4, len(body)) + body


class CommandFragments:
    """One command set joined from its fragments (PS3.8 Annex E.2), MAX_COMMAND_LENGTH at most."""

    __slots__ = ("_joined",)

    def __init__(self) -> None:
        self._joined = bytearray()

    def add(self, fragment: bytes | memoryview, last: bool) -> bytes | memoryview | None:
        """The whole command set once its last fragment came, else None; DimseError past the limit.

        A command set in one fragment is returned as it is, without a join.
        """
        joined = self._joined
        if last and not joined:
            return fragment
        joined += fragment
        if len(joined) > MAX_COMMAND_LENGTH:
            joined.clear()
            raise DimseError(f"command set longer than {MAX_COMMAND_LENGTH} bytes")
        if not last:
            return None
        data = bytes(joined)
        joined.clear()
        return data


def decode_command(data: bytes | bytearray | memoryview) -> CommandSet:
    """Decode an Implicit VR LE command set; unknown group-0000 elements are skipped."""
    buf = data if type(data) is bytes else memoryview(data).tobytes()
    size = len(buf)
    offset = 0
    elements: dict[int, str | int] = {}
    unpack = _ELEMENT.unpack_from
    while offset < size:
        if offset + 8 > size:
            raise DimseError(f"truncated element header at offset {offset}")
        group, element, length = unpack(buf, offset)
        start = offset + 8
        offset = start + length
        if group != 0x0000 or offset > size:
            raise DimseError(f"bad element ({group:04X},{element:04X}) at offset {start - 8}")
        if element in _TEXT_TAGS:
            elements[element] = buf[start:offset].rstrip(b"\x00 ").decode("ascii", "replace")
        elif length == 2 and element in _US_TAGS:
            elements[element] = _US.unpack_from(buf, start)[0]
        elif length == 4 and element in _UL_TAGS:
            elements[element] = _UL.unpack_from(buf, start)[0]
    return CommandSet(elements)


def c_echo_rq(message_id: int) -> CommandSet:
    """C-ECHO-RQ (PS3.7 §9.3.5.1)."""
    return CommandSet(
        {0x0002: VERIFICATION_SOP_CLASS, 0x0100: 0x0030, 0x0110: message_id, 0x0800: NO_DATA_SET}
    )


def c_echo_rsp(request: CommandSet, status: int = 0x0000) -> CommandSet:
    """C-ECHO-RSP answering `request` (PS3.7 §9.3.5.2)."""
    return CommandSet(
        {
            0x0002: request.get_uid(0x0002) or VERIFICATION_SOP_CLASS,
            0x0100: 0x8030,
            0x0120: request.message_id,
            0x0800: NO_DATA_SET,
            0x0900: status,
        }
    )


def c_store_rq(message_id: int, sop_class: str, sop_instance: str, priority: int = 0) -> CommandSet:
    """C-STORE-RQ (PS3.7 §9.3.1.1); a data set always follows."""
    return CommandSet(
        {
            0x0002: sop_class,
            0x0100: 0x0001,
            0x0110: message_id,
            0x0700: priority,
            0x0800: DATA_SET_PRESENT,
            0x1000: sop_instance,
        }
    )


def c_store_rsp(request: CommandSet, status: int = 0x0000, comment: str = "") -> CommandSet:
    """C-STORE-RSP answering `request` (PS3.7 §9.3.1.2), an Error Comment with a failure."""
    elements: dict[int, str | int] = {
        0x0002: request.get_uid(0x0002),
        0x0100: 0x8001,
        0x0120: request.message_id,
        0x0800: NO_DATA_SET,
        0x0900: status,
        0x1000: request.get_uid(0x1000),
    }
    if comment:
        elements[ERROR_COMMENT] = comment  # PS3.7 Annex C: (0000,0902) with a failure
    return CommandSet(elements)


@dataclass(frozen=True)
class FileMeta:
    """What `store` needs from a Part 10 file: SOP class/instance, transfer syntax, data set."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


def read_part10(data: bytes | memoryview) -> FileMeta:
    """Read the File Meta group (Explicit VR LE) after the 128-byte preamble (PS3.10 §7.1)."""
    view = memoryview(data)
    if len(view) < 132 or bytes(view[128:132]) != b"DICM":
        raise DimseError("not a DICOM Part 10 file (no DICM prefix at offset 128)")
    offset = 132
    values: dict[int, str] = {}
    while offset + 8 <= len(view):
        group, element = struct.unpack_from("<HH", view, offset)
        if group != 0x0002:
            break
        vr = bytes(view[offset + 4 : offset + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            if offset + 12 > len(view):
                raise DimseError(f"file meta element (0002,{element:04X}) is truncated")
            (length,) = struct.unpack_from("<I", view, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", view, offset + 6)
            start = offset + 8
        if start + length > len(view):
            raise DimseError(f"file meta element (0002,{element:04X}) overruns the file")
        values[element] = (
            bytes(view[start : start + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        )
        offset = start + length
    missing = [e for e in (0x0002, 0x0003, 0x0010) if e not in values]
    if missing:
        raise DimseError(f"file meta lacks (0002,{missing[0]:04X})")
    return FileMeta(values[0x0002], values[0x0003], values[0x0010], offset)


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, DICM prefix and File Meta group in Explicit VR LE (PS3.10 §7.1, PS3.10 §7.5)."""
    from netdicom2.acse import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    def element(number: int, vr: bytes, raw: bytes) -> bytes:
        if vr == b"OB":
            return struct.pack("<HH2s2xI", 0x0002, number, vr, len(raw)) + raw
        return struct.pack("<HH2sH", 0x0002, number, vr, len(raw)) + raw

    def ui(value: str) -> bytes:
        return _pad_even(value.encode("ascii"), b"\x00")

    body = b"".join(
        [
            element(0x0001, b"OB", b"\x00\x01"),
            element(0x0002, b"UI", ui(sop_class_uid)),
            element(0x0003, b"UI", ui(sop_instance_uid)),
            element(0x0010, b"UI", ui(transfer_syntax_uid)),
            element(0x0012, b"UI", ui(IMPLEMENTATION_CLASS_UID)),
            element(0x0013, b"SH", _pad_even(IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" ")),
        ]
    )
    group_length = element(0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body
