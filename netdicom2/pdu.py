"""The seven PDUs of the DICOM Upper Layer: dataclasses with encode()/decode() (PS3.8 §9.3).

Round trips are exact both ways: ``encode(decode(b)) == b`` for every ``b`` that ``decode``
accepts (reserved fields, unknown items, padding are all kept), and ``decode(encode(p)) == p``
for every PDU object whose items sit where PS3.8 defines them.

``decode`` raises only ``PDUDecodeError``, with the A-ABORT reason the state machine sends for
Evt19 (PS3.8 §9.3.8, Table 9-26): 1 for an unrecognized PDU type, 2 when a class is handed
another type, 5/6 for unexpected/invalid parameters. It never tests reserved bytes or the
protocol version (PS3.8 §9.3.2: only bit 0 matters, and that is AE-6's decision).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn, Self, TypeAlias, cast

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.items import (
    AC_ITEM_DECODERS,
    RQ_ITEM_DECODERS,
    AnyItem,
    ApplicationContextItem,
    Decoder,
    Item,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    UserInformationItem,
    decode_item_list,
    strip_uid,
)

__all__ = [
    "PDU",
    "PDU_DECODERS",
    "AAbortPDU",
    "AAssociateAcPDU",
    "AAssociateRjPDU",
    "AAssociateRqPDU",
    "AReleaseRpPDU",
    "AReleaseRqPDU",
    "Buffer",
    "PDataTfPDU",
    "decode",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

# PDU header: PDU-type, reserved, PDU-length (PS3.8 §9.3.1).
_HEADER = struct.Struct(">BBI")
# A-ASSOCIATE-RQ/AC fixed part, bytes 1-74 (PS3.8 Tables 9-11, 9-17).
_ASSOCIATE = struct.Struct(">BBIHH16s16s32s")
# A-ASSOCIATE-RJ and A-ABORT: header then four single bytes (PS3.8 Tables 9-21, 9-26).
_FOUR_BYTES = struct.Struct(">BBIBBBB")
# A-RELEASE-RQ/RP: header then a 4-byte reserved field (PS3.8 Tables 9-24, 9-25).
_RELEASE = struct.Struct(">BBII")
# PDV item header: item-length, presentation-context-ID, control header (PS3.8 Table 9-23).
_PDV = struct.Struct(">IBB")

_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


def _fail(
    reason: str, pdu_type: int | None, offset: int, fld: str, abort_reason: int = _INVALID
) -> NoReturn:
    """Raise the decode error the framing layer turns into Evt19 (PS3.8 §9.2, Table 9-10)."""
    raise PDUDecodeError(
        reason, pdu_type=pdu_type, offset=offset, field=fld, abort_reason=abort_reason
    )


def _normalise(data: Buffer) -> Buffer:
    """A buffer whose items are bytes: memoryviews of other formats are copied once."""
    if type(data) is memoryview and (data.format != "B" or data.ndim != 1):
        return data.tobytes()
    return data


def _check_header(data: Buffer, pdu_type: int) -> int:
    """Validate type and PDU-length == bytes given minus 6 (PS3.8 §9.3.1); return the size."""
    size = len(data)
    if size < 6:
        _fail(f"{size} bytes, shorter than the 6-byte PDU header", pdu_type, size, "PDU header")
    if data[0] != pdu_type:
        _fail(
            f"PDU type 0x{data[0]:02X} given to the 0x{pdu_type:02X} decoder",
            pdu_type,
            0,
            "PDU-type",
            AbortReason.UNEXPECTED_PDU,
        )
    length = _HEADER.unpack_from(data)[2]
    if length != size - 6:
        _fail(
            f"PDU-length {length} but {size - 6} bytes follow the header", pdu_type, 2, "PDU-length"
        )
    return size


def _check_fixed(data: Buffer, pdu_type: int) -> None:
    """RJ/RELEASE/ABORT PDU-length must be 4 (PS3.8 Tables 9-21, 9-24..9-26).

    PS3.8 §9.3.4-9.3.8 fix the length at 00000004H without a receiver rule ([interp], spec
    notes §7.6). The framer reads exactly PDU-length bytes, so the stream stays in sync; a
    length other than 4 is then an invalid PDU (Evt19), which keeps these PDUs byte-exact
    without an extra field.
    """
    size = _check_header(data, pdu_type)
    if size != 10:
        _fail(f"PDU-length {size - 6} (must be 4)", pdu_type, 2, "PDU-length")


def _ae_title(value: str, name: str) -> str:
    """An AE title padded with spaces to its 16 characters (PS3.8 Table 9-11, bytes 11-42)."""
    if len(value) > 16:
        raise ValueError(f"{name} {value!r} is longer than 16 characters")
    return value.ljust(16)


# --------------------------------------------------------------------------------------------
# A-ASSOCIATE-RQ and A-ASSOCIATE-AC (PS3.8 §9.3.2, §9.3.3)


class _AssociateMixin:
    """Fields and convenience properties shared by A-ASSOCIATE-RQ and -AC (Tables 9-11, 9-17)."""

    __slots__ = ()
    pdu_type: ClassVar[int]
    called_ae_title: str
    calling_ae_title: str
    variable_items: list[Item]
    protocol_version: int
    reserved: bytes
    reserved_9_10: int
    reserved_2: int

    @property
    def called_ae_title_stripped(self) -> str:
        """Called AE title without leading/trailing spaces or NULs (PS3.8 Table 9-11)."""
        return self.called_ae_title.strip(" \x00")

    @property
    def calling_ae_title_stripped(self) -> str:
        """Calling AE title without leading/trailing spaces or NULs (PS3.8 Table 9-11)."""
        return self.calling_ae_title.strip(" \x00")

    @property
    def application_context_name(self) -> str | None:
        """Name of the first Application Context item, unpadded (PS3.8 §9.3.2.1)."""
        for item in self.variable_items:
            if type(item) is ApplicationContextItem:
                return strip_uid(item.name)
        return None

    @property
    def user_information(self) -> UserInformationItem | None:
        """The User Information item (PS3.8 §9.3.2.3), None when absent."""
        for item in self.variable_items:
            if type(item) is UserInformationItem:
                return item
        return None

    @property
    def max_length(self) -> int | None:
        """Maximum-length-received of sub-item 51H, None when absent (PS3.8 Annex D.1)."""
        info = self.user_information
        return None if info is None else info.maximum_length

    @property
    def implementation_class_uid(self) -> str | None:
        """Implementation class UID of sub-item 52H, unpadded (PS3.7 D.3.3.2)."""
        info = self.user_information
        return None if info is None else info.implementation_class_uid

    @property
    def implementation_version_name(self) -> str | None:
        """Implementation version name of sub-item 55H, unpadded (PS3.7 D.3.3.2)."""
        info = self.user_information
        return None if info is None else info.implementation_version_name

    def encode(self) -> bytes:
        """Fixed 74 bytes then the variable items in list order (PS3.8 Tables 9-11, 9-17)."""
        body = b"".join([item.encode() for item in self.variable_items])
        head = _ASSOCIATE.pack(
            self.pdu_type,
            self.reserved_2,
            68 + len(body),
            self.protocol_version,
            self.reserved_9_10,
            self.called_ae_title.encode("latin-1"),
            self.calling_ae_title.encode("latin-1"),
            self.reserved,
        )
        return head + body


def _normalise_associate(pdu: AAssociateRqPDU | AAssociateAcPDU) -> None:
    """AE titles to 16 characters, 32 reserved bytes (PS3.8 Tables 9-11, 9-17)."""
    if len(pdu.called_ae_title) != 16:
        pdu.called_ae_title = _ae_title(pdu.called_ae_title, "called_ae_title")
    if len(pdu.calling_ae_title) != 16:
        pdu.calling_ae_title = _ae_title(pdu.calling_ae_title, "calling_ae_title")
    if len(pdu.reserved) != 32:
        raise ValueError("reserved (bytes 43-74) must be 32 bytes")


def _decode_associate(
    data: Buffer, pdu_type: int, decoders: dict[int, Decoder], pc_class: type[AnyItem]
) -> tuple[str, str, list[Item], int, bytes, int, int]:
    """Fields of an A-ASSOCIATE-RQ/AC in constructor order (PS3.8 Tables 9-11, 9-17)."""
    buf = data if type(data) is bytes else bytes(data)
    size = _check_header(buf, pdu_type)
    if size < 74:
        _fail(
            f"PDU-length {size - 6}, shorter than the 68 bytes of fixed fields",
            pdu_type,
            2,
            "PDU-length",
        )
    text = buf.decode("latin-1")
    try:
        items = decode_item_list(buf, text, 74, size, decoders)
    except PDUDecodeError as error:
        _fail(error.reason, pdu_type, error.offset, error.field, error.abort_reason)
    # PS3.8 Tables 9-11/9-17: exactly one Application Context item, one or more Presentation
    # Context items, exactly one User Information item (missing: invalid; repeated: unexpected).
    kinds = [type(item) for item in items]
    app = kinds.count(ApplicationContextItem)
    info = kinds.count(UserInformationItem)
    for count, name in ((app, "application context"), (info, "user information")):
        if count != 1:
            reason = _INVALID if count == 0 else AbortReason.UNEXPECTED_PDU_PARAMETER
            _fail(
                f"{count} {name} items (exactly one required)", pdu_type, 74, f"{name} item", reason
            )
    if pc_class not in kinds:
        _fail(
            "no presentation context item (one or more required)",
            pdu_type,
            74,
            "presentation context item",
        )
    head = _ASSOCIATE.unpack_from(buf)
    fields = cast("list[Item]", items)  # a str: no alias object built per PDU
    return (text[10:26], text[26:42], fields, head[3], head[7], head[4], head[1])


@dataclass(slots=True)
class AAssociateRqPDU(_AssociateMixin):
    """A-ASSOCIATE-RQ, type 01H (PS3.8 §9.3.2, Table 9-11). Called title comes first."""

    pdu_type: ClassVar[int] = 0x01
    called_ae_title: str
    calling_ae_title: str
    variable_items: list[Item] = field(default_factory=list)
    protocol_version: int = 1
    reserved: bytes = bytes(32)
    reserved_9_10: int = 0
    reserved_2: int = 0

    def __post_init__(self) -> None:
        """Pad AE titles to 16 characters so that decode(encode(p)) == p (Table 9-11)."""
        _normalise_associate(self)

    @property
    def presentation_context_items(self) -> list[PresentationContextItemRQ]:
        """Presentation Context items 20H in received order (PS3.8 §9.3.2.2)."""
        return [item for item in self.variable_items if type(item) is PresentationContextItemRQ]

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-ASSOCIATE-RQ (PS3.8 Table 9-11); raises PDUDecodeError."""
        data = _normalise(data)
        return cls(*_decode_associate(data, 0x01, RQ_ITEM_DECODERS, PresentationContextItemRQ))


@dataclass(slots=True)
class AAssociateAcPDU(_AssociateMixin):
    """A-ASSOCIATE-AC, type 02H (PS3.8 §9.3.3, Table 9-17); bytes 11-74 echo the RQ, untested."""

    pdu_type: ClassVar[int] = 0x02
    called_ae_title: str
    calling_ae_title: str
    variable_items: list[Item] = field(default_factory=list)
    protocol_version: int = 1
    reserved: bytes = bytes(32)
    reserved_9_10: int = 0
    reserved_2: int = 0

    def __post_init__(self) -> None:
        """Pad AE titles to 16 characters so that decode(encode(p)) == p (Table 9-17)."""
        _normalise_associate(self)

    @property
    def presentation_context_items(self) -> list[PresentationContextItemAC]:
        """Presentation Context items 21H in received order (PS3.8 §9.3.3.2)."""
        return [item for item in self.variable_items if type(item) is PresentationContextItemAC]

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-ASSOCIATE-AC (PS3.8 Table 9-17); raises PDUDecodeError."""
        data = _normalise(data)
        return cls(*_decode_associate(data, 0x02, AC_ITEM_DECODERS, PresentationContextItemAC))


# --------------------------------------------------------------------------------------------
# A-ASSOCIATE-RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT (PS3.8 §9.3.4-9.3.8)


@dataclass(slots=True)
class AAssociateRjPDU:
    """A-ASSOCIATE-RJ, type 03H: result, source, reason/diag (PS3.8 §9.3.4, Table 9-21)."""

    pdu_type: ClassVar[int] = 0x03
    result: int
    source: int
    reason_diag: int
    reserved: int = 0
    reserved_2: int = 0

    def encode(self) -> bytes:
        """10 bytes: header, reserved, result, source, reason/diag (PS3.8 Table 9-21)."""
        return _FOUR_BYTES.pack(
            0x03, self.reserved_2, 4, self.reserved, self.result, self.source, self.reason_diag
        )

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-ASSOCIATE-RJ (PS3.8 Table 9-21); raises PDUDecodeError."""
        data = _normalise(data)
        _check_fixed(data, 0x03)
        _, reserved_2, _, reserved, result, source, reason = _FOUR_BYTES.unpack_from(data)
        return cls(result, source, reason, reserved, reserved_2)


@dataclass(slots=True)
class PDataTfPDU:
    """P-DATA-TF, type 04H: one or more PDV items (PS3.8 §9.3.5, Tables 9-22, 9-23)."""

    pdu_type: ClassVar[int] = 0x04
    data_value_items: list[PresentationDataValueItem] = field(default_factory=list)
    reserved_2: int = 0

    def encode(self) -> bytes:
        """Header, then each PDV item (4-byte length, context ID, control, fragment) (9-22)."""
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes | memoryview]:
        """The encoding in pieces, each fragment uncopied (PS3.8 Tables 9-22, 9-23)."""
        parts: list[bytes | memoryview] = []
        length = 0
        for pdv in self.data_value_items:
            head, fragment = pdv.encoded_parts()
            parts.append(head)
            parts.append(fragment)
            length += 6 + len(fragment)
        header = _HEADER.pack(0x04, self.reserved_2, length)
        if not parts:
            return [header]
        parts[0] = header + parts[0]  # 6 + 6 header bytes in one piece (a PDV head is bytes)
        return parts

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode one P-DATA-TF; fragments are memoryview slices of data (PS3.8 Table 9-23)."""
        view = data if type(data) is memoryview else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = memoryview(view.tobytes())
        size = len(view)
        # The header checks of _check_header, inlined on the data-transfer hot path (§9.3.1).
        if size < 6 or view[0] != 0x04 or _HEADER.unpack_from(view)[2] != size - 6:
            _check_header(view, 0x04)
        items = []
        off = 6
        unpack = _PDV.unpack_from
        while off < size:
            # PS3.8 Table 9-23: 4-byte item-length, then PCID and the control header (E.2), so
            # an item-length below 2 is invalid; the item must end inside the PDU.
            if size - off < 6:
                _fail("truncated PDV item header", 0x04, off, "PDV item-length")
            length, context_id, control = unpack(view, off)
            if length < 2:
                _fail(f"PDV item-length {length} (at least 2)", 0x04, off, "PDV item-length")
            end = off + 4 + length
            if end > size:
                _fail(f"PDV item-length {length} overruns the PDU", 0x04, off, "PDV item-length")
            items.append(PresentationDataValueItem(context_id, control, view[off + 6 : end]))
            off = end
        if not items:
            # PS3.8 Table 9-22: one or more PDV items.
            _fail("P-DATA-TF without PDV items", 0x04, 6, "PDV item")
        return cls(items, view[1])


@dataclass(slots=True)
class AReleaseRqPDU:
    """A-RELEASE-RQ, type 05H (PS3.8 §9.3.6, Table 9-24); bytes 7-10 reserved."""

    pdu_type: ClassVar[int] = 0x05
    reserved: int = 0
    reserved_2: int = 0

    def encode(self) -> bytes:
        """10 bytes: header with length 4, 4 reserved bytes (PS3.8 Table 9-24)."""
        return _RELEASE.pack(self.pdu_type, self.reserved_2, 4, self.reserved)

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-RELEASE-RQ (PS3.8 Table 9-24); raises PDUDecodeError."""
        data = _normalise(data)
        _check_fixed(data, cls.pdu_type)
        _, reserved_2, _, reserved = _RELEASE.unpack_from(data)
        return cls(reserved, reserved_2)


@dataclass(slots=True)
class AReleaseRpPDU:
    """A-RELEASE-RP, type 06H (PS3.8 §9.3.7, Table 9-25); bytes 7-10 reserved."""

    pdu_type: ClassVar[int] = 0x06
    reserved: int = 0
    reserved_2: int = 0

    def encode(self) -> bytes:
        """10 bytes: header with length 4, 4 reserved bytes (PS3.8 Table 9-25)."""
        return _RELEASE.pack(self.pdu_type, self.reserved_2, 4, self.reserved)

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-RELEASE-RP (PS3.8 Table 9-25); raises PDUDecodeError."""
        data = _normalise(data)
        _check_fixed(data, cls.pdu_type)
        _, reserved_2, _, reserved = _RELEASE.unpack_from(data)
        return cls(reserved, reserved_2)


@dataclass(slots=True)
class AAbortPDU:
    """A-ABORT, type 07H: source 0 user / 2 provider, reason (PS3.8 §9.3.8, Table 9-26).

    ``reserved`` is bytes 7-8 as one 16-bit value.
    """

    pdu_type: ClassVar[int] = 0x07
    source: int = 0
    reason_diag: int = 0
    reserved: int = 0
    reserved_2: int = 0

    def encode(self) -> bytes:
        """10 bytes: header, 2 reserved bytes, source, reason/diag (PS3.8 Table 9-26)."""
        return _FOUR_BYTES.pack(
            0x07,
            self.reserved_2,
            4,
            self.reserved >> 8,
            self.reserved & 0xFF,
            self.source,
            self.reason_diag,
        )

    @classmethod
    def decode(cls, data: Buffer) -> Self:
        """Decode exactly one A-ABORT (PS3.8 Table 9-26); raises PDUDecodeError."""
        data = _normalise(data)
        _check_fixed(data, 0x07)
        _, reserved_2, _, high, low, source, reason = _FOUR_BYTES.unpack_from(data)
        return cls(source, reason, (high << 8) | low, reserved_2)


PDU: TypeAlias = (
    AAssociateRqPDU
    | AAssociateAcPDU
    | AAssociateRjPDU
    | PDataTfPDU
    | AReleaseRqPDU
    | AReleaseRpPDU
    | AAbortPDU
)

#: Decoder of each PDU class by PDU-type byte (PS3.8 §9.3.1; other values are Evt19).
PDU_DECODERS: dict[int, Callable[[Buffer], PDU]] = {
    cls.pdu_type: cls.decode
    for cls in (
        AAssociateRqPDU,
        AAssociateAcPDU,
        AAssociateRjPDU,
        PDataTfPDU,
        AReleaseRqPDU,
        AReleaseRpPDU,
        AAbortPDU,
    )
}


def decode(data: Buffer) -> PDU:
    """Decode one whole PDU by its type byte; unknown types raise reason 1 (PS3.8 §9.3.8)."""
    data = _normalise(data)
    if not len(data):
        _fail("no bytes", None, 0, "PDU-type")
    decoder = PDU_DECODERS.get(data[0])
    if decoder is None:
        _fail(
            f"unrecognized PDU type 0x{data[0]:02X}",
            data[0],
            0,
            "PDU-type",
            AbortReason.UNRECOGNIZED_PDU,
        )
    return decoder(data)
