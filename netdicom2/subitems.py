"""User Information sub-items (PS3.8 Annex D.1; PS3.7 Annex D.3.3): dataclasses and decoders.

The sub-items of the User Information item (50H) of an A-ASSOCIATE-RQ/AC, each a dataclass that
encodes itself, and ``USER_INFO_DECODERS``, the decoder of each by type byte; ``UnknownItem``
keeps an item or sub-item of a type not defined where it appears. The wire helpers at the top
(item header, decode errors) are shared with ``netdicom2.items``, which re-exports every public
name here and holds the fidelity rules (reserved fields kept, UIDs as received).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn, TypeAlias

from netdicom2.exceptions import AbortReason, PDUDecodeError

__all__ = [
    "USER_INFO_DECODERS",
    "AsynchronousOperationsWindowSubItem",
    "ImplementationClassUIDSubItem",
    "ImplementationVersionNameSubItem",
    "MaximumLengthSubItem",
    "SCPSCURoleSelectionSubItem",
    "SOPClassCommonExtendedNegotiationSubItem",
    "SOPClassExtendedNegotiationSubItem",
    "SubItem",
    "SubItemDecoder",
    "UnknownItem",
    "UserIdentityACSubItem",
    "UserIdentityRQSubItem",
    "strip_uid",
]

# Item header: item-type, reserved, item-length (PS3.8 §9.3.1, every table of §9.3.2-9.3.3).
_HDR = struct.Struct(">BBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U16X2 = struct.Struct(">HH")

_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
_UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER


def strip_uid(value: str) -> str:
    """A received UID or name without trailing NUL/space padding (PS3.8 Annex F [interp])."""
    return value.rstrip("\x00 ")


def _fail(reason: str, offset: int, fld: str, abort_reason: int = _INVALID) -> NoReturn:
    """Raise the decode error for a malformed item (PS3.8 §9.3.1; A-ABORT reasons §9.3.8)."""
    raise PDUDecodeError(reason, offset=offset, field=fld, abort_reason=abort_reason)


def _item(item_type: int, reserved: int, value: bytes) -> bytes:
    """Item header plus value: type, reserved, 2-byte length (PS3.8 §9.3.1)."""
    return _HDR.pack(item_type, reserved, len(value)) + value


def _latin1(value: str) -> bytes:
    """Bytes of a UID/name field; the string holds the wire bytes as latin-1 (PS3.8 §9.3.1)."""
    return value.encode("latin-1")


@dataclass(slots=True)
class UnknownItem:
    """An item/sub-item of a type not defined where it appears, kept verbatim (PS3.8 §9.3.1)."""

    item_type: int
    data: bytes
    reserved: int = 0

    def encode(self) -> bytes:
        """Header (type, reserved, length) then the data unchanged (PS3.8 §9.3.1)."""
        return _item(self.item_type, self.reserved, self.data)


# --------------------------------------------------------------------------------------------
# User information sub-items (PS3.8 Annex D.1; PS3.7 Annex D.3.3)


@dataclass(slots=True)
class MaximumLengthSubItem:
    """Maximum Length sub-item 51H: largest P-DATA-TF PDU-length received, 0 = none (D.1)."""

    item_type: ClassVar[int] = 0x51
    maximum_length: int
    reserved: int = 0

    def encode(self) -> bytes:
        """Type 51H, length 4, 4-byte maximum (PS3.8 Tables D.1-1, D.1-2)."""
        return _HDR.pack(0x51, self.reserved, 4) + _U32.pack(self.maximum_length)


@dataclass(slots=True)
class ImplementationClassUIDSubItem:
    """Implementation Class UID sub-item 52H (PS3.7 D.3.3.2, Tables D.3-1, D.3-2)."""

    item_type: ClassVar[int] = 0x52
    uid: str
    reserved: int = 0

    @property
    def uid_stripped(self) -> str:
        """Implementation class UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.uid)

    def encode(self) -> bytes:
        """Type 52H, length, the UID (PS3.7 Table D.3-1)."""
        return _item(0x52, self.reserved, _latin1(self.uid))


@dataclass(slots=True)
class AsynchronousOperationsWindowSubItem:
    """Asynchronous Operations Window sub-item 53H (PS3.7 D.3.3.3, Tables D.3-7, D.3-8)."""

    item_type: ClassVar[int] = 0x53
    invoked: int
    performed: int
    reserved: int = 0

    def encode(self) -> bytes:
        """Type 53H, length 4, invoked and performed as uint16 (PS3.7 Table D.3-7)."""
        return _HDR.pack(0x53, self.reserved, 4) + _U16X2.pack(self.invoked, self.performed)


@dataclass(slots=True)
class SCPSCURoleSelectionSubItem:
    """SCP/SCU Role Selection sub-item 54H (PS3.7 D.3.3.4, Tables D.3-9, D.3-10)."""

    item_type: ClassVar[int] = 0x54
    sop_class_uid: str
    scu_role: int
    scp_role: int
    reserved: int = 0

    @property
    def sop_class_uid_stripped(self) -> str:
        """SOP class UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.sop_class_uid)

    def encode(self) -> bytes:
        """UID-length, UID, SCU-role byte, SCP-role byte (PS3.7 Table D.3-9)."""
        uid = _latin1(self.sop_class_uid)
        value = _U16.pack(len(uid)) + uid + bytes((self.scu_role, self.scp_role))
        return _item(0x54, self.reserved, value)


@dataclass(slots=True)
class ImplementationVersionNameSubItem:
    """Implementation Version Name sub-item 55H, 1-16 characters (PS3.7 D.3.3.2, Table D.3-3)."""

    item_type: ClassVar[int] = 0x55
    name: str
    reserved: int = 0

    @property
    def name_stripped(self) -> str:
        """Version name without trailing NUL/space padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.name)

    def encode(self) -> bytes:
        """Type 55H, length, the name (PS3.7 Table D.3-3)."""
        return _item(0x55, self.reserved, _latin1(self.name))


@dataclass(slots=True)
class SOPClassExtendedNegotiationSubItem:
    """SOP Class Extended Negotiation sub-item 56H (PS3.7 D.3.3.5, Table D.3-11)."""

    item_type: ClassVar[int] = 0x56
    sop_class_uid: str
    service_class_application_information: bytes = b""
    reserved: int = 0

    @property
    def sop_class_uid_stripped(self) -> str:
        """SOP class UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.sop_class_uid)

    def encode(self) -> bytes:
        """UID-length, UID, then the opaque application information (PS3.7 Table D.3-11)."""
        uid = _latin1(self.sop_class_uid)
        info = bytes(self.service_class_application_information)
        return _item(0x56, self.reserved, _U16.pack(len(uid)) + uid + info)


@dataclass(slots=True)
class SOPClassCommonExtendedNegotiationSubItem:
    """SOP Class Common Extended Negotiation sub-item 57H (PS3.7 D.3.3.6, Table D.3-12).

    Byte 2 is the sub-item version (``version``), not a reserved byte.
    """

    item_type: ClassVar[int] = 0x57
    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: list[str] = field(default_factory=list)
    version: int = 0

    @property
    def sop_class_uid_stripped(self) -> str:
        """SOP class UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.sop_class_uid)

    @property
    def service_class_uid_stripped(self) -> str:
        """Service class UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.service_class_uid)

    def encode(self) -> bytes:
        """Three length-prefixed parts; the last is a list of length-prefixed UIDs (D.3-12)."""
        sop = _latin1(self.sop_class_uid)
        svc = _latin1(self.service_class_uid)
        related = b"".join(
            [_U16.pack(len(uid)) + uid for uid in map(_latin1, self.related_general_sop_class_uids)]
        )
        value = b"".join(
            (_U16.pack(len(sop)), sop, _U16.pack(len(svc)), svc, _U16.pack(len(related)), related)
        )
        return _item(0x57, self.version, value)


@dataclass(slots=True)
class UserIdentityRQSubItem:
    """User Identity sub-item 58H of the A-ASSOCIATE-RQ (PS3.7 D.3.3.7, Table D.3-14)."""

    item_type: ClassVar[int] = 0x58
    user_identity_type: int
    positive_response_requested: int
    primary_field: bytes
    secondary_field: bytes = b""
    reserved: int = 0

    def encode(self) -> bytes:
        """Type, response flag, primary field and secondary field, each length-prefixed (D.3-14)."""
        primary = bytes(self.primary_field)
        secondary = bytes(self.secondary_field)
        head = bytes((self.user_identity_type, self.positive_response_requested))
        value = b"".join(
            (head, _U16.pack(len(primary)), primary, _U16.pack(len(secondary)), secondary)
        )
        return _item(0x58, self.reserved, value)


@dataclass(slots=True)
class UserIdentityACSubItem:
    """User Identity sub-item 59H of the A-ASSOCIATE-AC (PS3.7 D.3.3.7, Table D.3-15)."""

    item_type: ClassVar[int] = 0x59
    server_response: bytes
    reserved: int = 0

    def encode(self) -> bytes:
        """Server-response-length then the server response (PS3.7 Table D.3-15)."""
        response = bytes(self.server_response)
        return _item(0x59, self.reserved, _U16.pack(len(response)) + response)


SubItem: TypeAlias = (
    MaximumLengthSubItem
    | ImplementationClassUIDSubItem
    | AsynchronousOperationsWindowSubItem
    | SCPSCURoleSelectionSubItem
    | ImplementationVersionNameSubItem
    | SOPClassExtendedNegotiationSubItem
    | SOPClassCommonExtendedNegotiationSubItem
    | UserIdentityRQSubItem
    | UserIdentityACSubItem
    | UnknownItem
)

# --------------------------------------------------------------------------------------------
# Decoding: (buf, text, start, end, reserved) as for every item decoder (netdicom2.items).

SubItemDecoder: TypeAlias = Callable[[bytes, str, int, int, int], SubItem]


def _decode_max_length(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """Maximum Length sub-item 51H, item-length fixed 4 (PS3.8 Table D.1-1)."""
    if end - start != 4:
        _fail(f"maximum length item-length {end - start}, not 4", start - 2, "item-length")
    maximum: int = _U32.unpack_from(buf, start)[0]
    return MaximumLengthSubItem(maximum, reserved)


def _decode_impl_uid(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """Implementation Class UID sub-item 52H (PS3.7 Table D.3-1)."""
    return ImplementationClassUIDSubItem(text[start:end], reserved)


def _decode_async_window(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """Asynchronous Operations Window sub-item 53H, item-length fixed 4 (PS3.7 Table D.3-7)."""
    if end - start != 4:
        _fail(f"operations window item-length {end - start}, not 4", start - 2, "item-length")
    invoked, performed = _U16X2.unpack_from(buf, start)
    return AsynchronousOperationsWindowSubItem(invoked, performed, reserved)


def _length_prefixed(buf: bytes, off: int, end: int, fld: str) -> int:
    """End offset of a 2-byte-length-prefixed field starting at off, checked against end."""
    if end - off < 2:
        _fail(f"truncated {fld}-length", off, f"{fld}-length")
    stop: int = off + 2 + _U16.unpack_from(buf, off)[0]
    if stop > end:
        _fail(f"{fld}-length overruns the sub-item", off, f"{fld}-length")
    return stop


def _decode_role(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """SCP/SCU Role Selection sub-item 54H: lengths must nest exactly (PS3.7 Table D.3-9)."""
    stop = _length_prefixed(buf, start, end, "UID")
    if end - stop != 2:
        _fail("the two role bytes do not end the sub-item", stop, "SCU-role/SCP-role")
    return SCPSCURoleSelectionSubItem(text[start + 2 : stop], buf[stop], buf[stop + 1], reserved)


def _decode_version_name(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """Implementation Version Name sub-item 55H (PS3.7 Table D.3-3)."""
    return ImplementationVersionNameSubItem(text[start:end], reserved)


def _decode_ext_neg(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """SOP Class Extended Negotiation sub-item 56H (PS3.7 Table D.3-11)."""
    stop = _length_prefixed(buf, start, end, "SOP-class-uid")
    return SOPClassExtendedNegotiationSubItem(text[start + 2 : stop], buf[stop:end], reserved)


def _decode_common_ext_neg(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """SOP Class Common Extended Negotiation sub-item 57H (PS3.7 Tables D.3-12, D.3-13)."""
    sop_end = _length_prefixed(buf, start, end, "SOP-class-uid")
    svc_end = _length_prefixed(buf, sop_end, end, "service-class-uid")
    rel_end = _length_prefixed(buf, svc_end, end, "related-general-sop-class-identification")
    if rel_end != end:
        _fail("trailing bytes after the related SOP classes", rel_end, "item-length")
    related = []
    off = svc_end + 2
    while off < end:
        uid_end = _length_prefixed(buf, off, end, "related-general-sop-class-uid")
        related.append(text[off + 2 : uid_end])
        off = uid_end
    return SOPClassCommonExtendedNegotiationSubItem(
        text[start + 2 : sop_end], text[sop_end + 2 : svc_end], related, reserved
    )


def _decode_identity_rq(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """User Identity sub-item 58H: both length-prefixed fields always present (D.3-14)."""
    if end - start < 2:
        _fail("user identity sub-item shorter than 2 bytes", start - 2, "item-length")
    primary_end = _length_prefixed(buf, start + 2, end, "primary-field")
    secondary_end = _length_prefixed(buf, primary_end, end, "secondary-field")
    if secondary_end != end:
        _fail("trailing bytes after the secondary field", secondary_end, "item-length")
    return UserIdentityRQSubItem(
        buf[start],
        buf[start + 1],
        buf[start + 4 : primary_end],
        buf[primary_end + 2 : end],
        reserved,
    )


def _decode_identity_ac(buf: bytes, text: str, start: int, end: int, reserved: int) -> SubItem:
    """User Identity sub-item 59H (PS3.7 Table D.3-15)."""
    stop = _length_prefixed(buf, start, end, "server-response")
    if stop != end:
        _fail("trailing bytes after the server response", stop, "item-length")
    return UserIdentityACSubItem(buf[start + 2 : end], reserved)


#: Sub-item decoders by type byte inside a User Information item (PS3.8 Table 9-16, 9-20).
USER_INFO_DECODERS: dict[int, SubItemDecoder] = {
    0x51: _decode_max_length,
    0x52: _decode_impl_uid,
    0x53: _decode_async_window,
    0x54: _decode_role,
    0x55: _decode_version_name,
    0x56: _decode_ext_neg,
    0x57: _decode_common_ext_neg,
    0x58: _decode_identity_rq,
    0x59: _decode_identity_ac,
}
