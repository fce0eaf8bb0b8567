"""Items, sub-items and PDV items of the DICOM Upper Layer (PS3.8 §9.3, Annex D; PS3.7 D.3.3).

Every item is a dataclass that encodes itself (``encode() -> bytes``) and is decoded by the
functions at the bottom of this module, which the PDU classes of ``netdicom2.pdu`` call.

Fidelity rules, shared by all items:

* Reserved bytes are kept as fields (default 0) and never tested (PS3.8 §9.3.1); the field
  ``reserved`` is always byte 2 of the item header, other reserved fields are named after their
  1-based byte positions in the standard's tables (``reserved_6_8``).
* Items and sub-items of an unknown type are kept verbatim as ``UnknownItem`` (PS3.8 §9.3.1:
  skip them using their length; PS3.8 Annex D.2 note: unknown user-information sub-items are
  ignored, the association is not rejected because of them).
* UIDs and names are ``str`` holding the received bytes as latin-1, unaltered (peers pad with
  NUL or space although PS3.5 §9.1 forbids padding in network negotiation); the ``*_stripped``
  properties give the value without trailing NUL/space padding (PS3.8 Annex F [interp]).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn, TypeAlias, TypeVar, cast

from netdicom2.exceptions import AbortReason, PDUDecodeError

__all__ = [
    "DICOM_APPLICATION_CONTEXT",
    "AbstractSyntaxSubItem",
    "AnyItem",
    "ApplicationContextItem",
    "AsynchronousOperationsWindowSubItem",
    "ImplementationClassUIDSubItem",
    "ImplementationVersionNameSubItem",
    "Item",
    "MaximumLengthSubItem",
    "PresentationContextItemAC",
    "PresentationContextItemRQ",
    "PresentationDataValueItem",
    "SCPSCURoleSelectionSubItem",
    "SOPClassCommonExtendedNegotiationSubItem",
    "SOPClassExtendedNegotiationSubItem",
    "SubItem",
    "SyntaxSubItem",
    "TransferSyntaxSubItem",
    "UnknownItem",
    "UserIdentityACSubItem",
    "UserIdentityRQSubItem",
    "UserInformationItem",
    "decode_item",
    "strip_uid",
]

#: The DICOM application context name (PS3.7 Annex A.2.1).
DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# Item header: item-type, reserved, item-length (PS3.8 §9.3.1, every table of §9.3.2-9.3.3).
_HDR = struct.Struct(">BBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U16X2 = struct.Struct(">HH")
# PDV item header: item-length (4 bytes), presentation-context-ID, control header (Table 9-23).
_PDV_HDR = struct.Struct(">IBB")

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


# --------------------------------------------------------------------------------------------
# Unknown items and the application context (PS3.8 §9.3.1, §9.3.2.1, Table 9-12)


@dataclass(slots=True)
class UnknownItem:
    """An item/sub-item of a type not defined where it appears, kept verbatim (PS3.8 §9.3.1)."""

    item_type: int
    data: bytes
    reserved: int = 0

    def encode(self) -> bytes:
        """Header (type, reserved, length) then the data unchanged (PS3.8 §9.3.1)."""
        return _item(self.item_type, self.reserved, self.data)


@dataclass(slots=True)
class ApplicationContextItem:
    """Application Context item 10H; one per A-ASSOCIATE-RQ/AC (PS3.8 §9.3.2.1, Table 9-12)."""

    item_type: ClassVar[int] = 0x10
    name: str = DICOM_APPLICATION_CONTEXT
    reserved: int = 0

    @property
    def name_stripped(self) -> str:
        """Application context name without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.name)

    def encode(self) -> bytes:
        """Type 10H, reserved, length, the name (PS3.8 Table 9-12)."""
        return _item(0x10, self.reserved, _latin1(self.name))


# --------------------------------------------------------------------------------------------
# Presentation context items and their syntax sub-items (PS3.8 §9.3.2.2, §9.3.3.2)


@dataclass(slots=True)
class AbstractSyntaxSubItem:
    """Abstract Syntax sub-item 30H (PS3.8 Table 9-14); used only in a non-canonical layout."""

    item_type: ClassVar[int] = 0x30
    name: str
    reserved: int = 0

    def encode(self) -> bytes:
        """Type 30H, reserved, length, the UID (PS3.8 Table 9-14)."""
        return _item(0x30, self.reserved, _latin1(self.name))


@dataclass(slots=True)
class TransferSyntaxSubItem:
    """Transfer Syntax sub-item 40H (PS3.8 Tables 9-15, 9-19); only in a non-canonical layout."""

    item_type: ClassVar[int] = 0x40
    name: str
    reserved: int = 0

    def encode(self) -> bytes:
        """Type 40H, reserved, length, the UID (PS3.8 Tables 9-15, 9-19)."""
        return _item(0x40, self.reserved, _latin1(self.name))


SyntaxSubItem: TypeAlias = AbstractSyntaxSubItem | TransferSyntaxSubItem | UnknownItem


def _syntax_names(sub_items: list[SyntaxSubItem]) -> tuple[list[str], list[str]]:
    """Abstract and transfer syntax names found in a sub-item list, in order."""
    abstract = [s.name for s in sub_items if isinstance(s, AbstractSyntaxSubItem)]
    transfer = [s.name for s in sub_items if isinstance(s, TransferSyntaxSubItem)]
    return abstract, transfer


def _is_canonical(sub_items: list[SyntaxSubItem], first_abstract: bool) -> bool:
    """True when the layout is what the plain fields encode to (reserved 0, no unknown items)."""
    for index, sub in enumerate(sub_items):
        if isinstance(sub, UnknownItem) or sub.reserved:
            return False
        if isinstance(sub, AbstractSyntaxSubItem) != (first_abstract and index == 0):
            return False
    return True


@dataclass(slots=True)
class PresentationContextItemRQ:
    """Presentation Context item 20H: one abstract syntax, 1+ transfer syntaxes (PS3.8 Table 9-13).

    ``sub_items`` is ``None`` for the canonical layout (abstract syntax first, reserved bytes 0,
    no unknown sub-items); otherwise it holds the sub-items verbatim and ``encode`` uses it.
    """

    item_type: ClassVar[int] = 0x20
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]
    reserved: int = 0
    reserved_6_8: int = 0
    sub_items: list[SyntaxSubItem] | None = None

    def __post_init__(self) -> None:
        """Check a verbatim layout against the names; drop it when canonical (PS3.8 Table 9-13)."""
        if self.sub_items is not None:
            abstract, transfer = _syntax_names(self.sub_items)
            if abstract != [self.abstract_syntax] or transfer != self.transfer_syntaxes:
                raise ValueError("sub_items disagree with abstract_syntax/transfer_syntaxes")
            if _is_canonical(self.sub_items, first_abstract=True):
                self.sub_items = None

    @property
    def abstract_syntax_stripped(self) -> str:
        """Abstract syntax UID without padding (PS3.8 Annex F [interp])."""
        return strip_uid(self.abstract_syntax)

    @property
    def transfer_syntaxes_stripped(self) -> list[str]:
        """Transfer syntax UIDs without padding (PS3.8 Annex F [interp])."""
        return [strip_uid(name) for name in self.transfer_syntaxes]

    def encode(self) -> bytes:
        """Header, context ID, 3 reserved bytes, then the sub-items (PS3.8 Table 9-13)."""
        if self.sub_items is not None:
            parts = [sub.encode() for sub in self.sub_items]
        else:
            parts = [_item(0x30, 0, _latin1(self.abstract_syntax))]
            parts += [_item(0x40, 0, _latin1(name)) for name in self.transfer_syntaxes]
        body = b"".join(parts)
        head = _HDR.pack(0x20, self.reserved, 4 + len(body))
        return head + _U32.pack((self.context_id << 24) | self.reserved_6_8) + body


@dataclass(slots=True)
class PresentationContextItemAC:
    """Presentation Context item 21H: result and one transfer syntax (PS3.8 Table 9-18).

    ``transfer_syntax`` is ``None`` when the sub-item is absent (its value is not significant
    when result != 0 and must not be tested). ``sub_items`` as for the RQ item.
    """

    item_type: ClassVar[int] = 0x21
    context_id: int
    result: int
    transfer_syntax: str | None
    reserved: int = 0
    reserved_6: int = 0
    reserved_8: int = 0
    sub_items: list[SyntaxSubItem] | None = None

    def __post_init__(self) -> None:
        """Check a verbatim layout against the name; drop it when canonical (PS3.8 Table 9-18)."""
        if self.sub_items is not None:
            abstract, transfer = _syntax_names(self.sub_items)
            expected = [] if self.transfer_syntax is None else [self.transfer_syntax]
            if abstract or transfer != expected:
                raise ValueError("sub_items disagree with transfer_syntax")
            if _is_canonical(self.sub_items, first_abstract=False):
                self.sub_items = None

    @property
    def transfer_syntax_stripped(self) -> str | None:
        """Transfer syntax UID without padding (PS3.8 Annex F [interp])."""
        return None if self.transfer_syntax is None else strip_uid(self.transfer_syntax)

    def encode(self) -> bytes:
        """Header, context ID, reserved, result, reserved, sub-item (PS3.8 Table 9-18)."""
        if self.sub_items is not None:
            body = b"".join([sub.encode() for sub in self.sub_items])
        elif self.transfer_syntax is None:
            body = b""
        else:
            body = _item(0x40, 0, _latin1(self.transfer_syntax))
        head = _HDR.pack(0x21, self.reserved, 4 + len(body))
        fixed = bytes((self.context_id, self.reserved_6, self.result, self.reserved_8))
        return head + fixed + body


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

_S = TypeVar("_S")


@dataclass(slots=True)
class UserInformationItem:
    """User Information item 50H: sub-items in any order (PS3.8 §9.3.2.3, Tables 9-16, 9-20)."""

    item_type: ClassVar[int] = 0x50
    sub_items: list[SubItem] = field(default_factory=list)
    reserved: int = 0

    def first(self, kind: type[_S]) -> _S | None:
        """The first sub-item of a class, None when absent (order not significant, §9.3.2.3)."""
        for sub in self.sub_items:
            if isinstance(sub, kind):
                return sub
        return None

    def all(self, kind: type[_S]) -> list[_S]:
        """Every sub-item of a class, in received order (PS3.7 D.3.3)."""
        return [sub for sub in self.sub_items if isinstance(sub, kind)]

    @property
    def maximum_length(self) -> int | None:
        """Maximum-length-received of sub-item 51H, None when absent (PS3.8 D.1)."""
        sub = self.first(MaximumLengthSubItem)
        return None if sub is None else sub.maximum_length

    @property
    def implementation_class_uid(self) -> str | None:
        """Implementation class UID of sub-item 52H, unpadded (PS3.7 D.3.3.2)."""
        sub = self.first(ImplementationClassUIDSubItem)
        return None if sub is None else sub.uid_stripped

    @property
    def implementation_version_name(self) -> str | None:
        """Implementation version name of sub-item 55H, unpadded (PS3.7 D.3.3.2)."""
        sub = self.first(ImplementationVersionNameSubItem)
        return None if sub is None else sub.name_stripped

    def encode(self) -> bytes:
        """Type 50H, length, the sub-items in list order (PS3.8 Table 9-16)."""
        return _item(0x50, self.reserved, b"".join([sub.encode() for sub in self.sub_items]))


Item: TypeAlias = (
    ApplicationContextItem
    | PresentationContextItemRQ
    | PresentationContextItemAC
    | UserInformationItem
    | UnknownItem
)
AnyItem: TypeAlias = Item | SubItem | AbstractSyntaxSubItem | TransferSyntaxSubItem


# --------------------------------------------------------------------------------------------
# Presentation data value item (PS3.8 §9.3.5.1, Table 9-23; Annex E.2)


@dataclass(slots=True)
class PresentationDataValueItem:
    """PDV item: context ID, message control header, one fragment (PS3.8 Table 9-23, E.2).

    After decode, ``fragment`` is a memoryview slice of the received buffer (no copy).
    """

    context_id: int
    control_header: int
    fragment: bytes | memoryview

    @property
    def is_command(self) -> bool:
        """Bit 0 of the control header: command (1) or data set (0) fragment (PS3.8 E.2)."""
        return bool(self.control_header & 1)

    @property
    def is_last(self) -> bool:
        """Bit 1 of the control header: last fragment of the command/data set (PS3.8 E.2)."""
        return bool(self.control_header & 2)

    def encoded_parts(self) -> tuple[bytes, bytes | memoryview]:
        """Header (length, context ID, control header) and the fragment (PS3.8 Table 9-23)."""
        return _PDV_HDR.pack(len(self.fragment) + 2, self.context_id, self.control_header), (
            self.fragment
        )

    def encode(self) -> bytes:
        """Item-length (4 bytes), context ID, control header, fragment (PS3.8 Table 9-23)."""
        head, fragment = self.encoded_parts()
        return head + fragment


# --------------------------------------------------------------------------------------------
# Decoding. Every decoder takes (buf, text, start, end, reserved): the whole PDU as bytes, the
# same bytes as a latin-1 str (one decode per PDU, then UIDs are plain slices), the bounds of the
# item value and header byte 2. Offsets in errors are relative to the start of ``buf``.

Decoder: TypeAlias = Callable[[bytes, str, int, int, int], AnyItem]


def _syntax_list(
    buf: bytes, text: str, start: int, end: int
) -> tuple[list[str], list[str], list[SyntaxSubItem] | None]:
    """Abstract/transfer syntax names of a presentation context and, if needed, the layout."""
    abstract: list[str] = []
    transfer: list[str] = []
    raw: list[tuple[int, int, int, int]] = []
    plain = True
    off = start
    unpack = _HDR.unpack_from
    while off < end:
        if end - off < 4:
            _fail("truncated sub-item header", off, "sub-item header")
        sub_type, reserved, length = unpack(buf, off)
        value = off + 4
        off = value + length
        if off > end:
            _fail(f"sub-item 0x{sub_type:02X} overruns its item", value - 2, "item-length")
        if sub_type == 0x40:
            transfer.append(text[value:off])
        elif sub_type == 0x30:
            abstract.append(text[value:off])
            plain = plain and not transfer
        else:
            plain = False
        plain = plain and not reserved
        raw.append((sub_type, reserved, value, off))
    if plain:
        return abstract, transfer, None
    layout: list[SyntaxSubItem] = []
    for sub_type, reserved, value, stop in raw:
        if sub_type == 0x30:
            layout.append(AbstractSyntaxSubItem(text[value:stop], reserved))
        elif sub_type == 0x40:
            layout.append(TransferSyntaxSubItem(text[value:stop], reserved))
        else:
            layout.append(UnknownItem(sub_type, buf[value:stop], reserved))
    return abstract, transfer, layout


def _decode_pc_rq(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Presentation Context item 20H (PS3.8 §9.3.2.2, Table 9-13)."""
    if end - start < 4:
        _fail("presentation context item shorter than 4 bytes", start - 2, "item-length")
    abstract, transfer, layout = _syntax_list(buf, text, start + 4, end)
    # PS3.8 Table 9-13: exactly one abstract syntax sub-item and one or more transfer syntaxes.
    if len(abstract) != 1:
        _fail(f"{len(abstract)} abstract syntax sub-items", start, "abstract syntax sub-item")
    if not transfer:
        _fail("no transfer syntax sub-item", start, "transfer syntax sub-item")
    reserved_6_8 = (buf[start + 1] << 16) | (buf[start + 2] << 8) | buf[start + 3]
    return PresentationContextItemRQ(
        buf[start], abstract[0], transfer, reserved, reserved_6_8, layout
    )


def _decode_pc_ac(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Presentation Context item 21H (PS3.8 §9.3.3.2, Table 9-18)."""
    if end - start < 4:
        _fail("presentation context item shorter than 4 bytes", start - 2, "item-length")
    abstract, transfer, layout = _syntax_list(buf, text, start + 4, end)
    # PS3.8 Table 9-18: one transfer syntax sub-item, not significant (so absent is accepted)
    # when the result is not acceptance; an abstract syntax or a second transfer syntax is not
    # defined for this item.
    if abstract:
        _fail("abstract syntax sub-item in an AC", start, "abstract syntax sub-item", _UNEXPECTED)
    if len(transfer) > 1:
        _fail(f"{len(transfer)} transfer syntaxes", start, "transfer syntax sub-item", _UNEXPECTED)
    return PresentationContextItemAC(
        buf[start],
        buf[start + 2],
        transfer[0] if transfer else None,
        reserved,
        buf[start + 1],
        buf[start + 3],
        layout,
    )


def _decode_app_context(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Application Context item 10H (PS3.8 Table 9-12)."""
    return ApplicationContextItem(text[start:end], reserved)


def _decode_max_length(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Maximum Length sub-item 51H, item-length fixed 4 (PS3.8 Table D.1-1)."""
    if end - start != 4:
        _fail(f"maximum length item-length {end - start}, not 4", start - 2, "item-length")
    maximum: int = _U32.unpack_from(buf, start)[0]
    return MaximumLengthSubItem(maximum, reserved)


def _decode_impl_uid(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Implementation Class UID sub-item 52H (PS3.7 Table D.3-1)."""
    return ImplementationClassUIDSubItem(text[start:end], reserved)


def _decode_async_window(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
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


def _decode_role(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """SCP/SCU Role Selection sub-item 54H: lengths must nest exactly (PS3.7 Table D.3-9)."""
    stop = _length_prefixed(buf, start, end, "UID")
    if end - stop != 2:
        _fail("the two role bytes do not end the sub-item", stop, "SCU-role/SCP-role")
    return SCPSCURoleSelectionSubItem(text[start + 2 : stop], buf[stop], buf[stop + 1], reserved)


def _decode_version_name(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """Implementation Version Name sub-item 55H (PS3.7 Table D.3-3)."""
    return ImplementationVersionNameSubItem(text[start:end], reserved)


def _decode_ext_neg(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """SOP Class Extended Negotiation sub-item 56H (PS3.7 Table D.3-11)."""
    stop = _length_prefixed(buf, start, end, "SOP-class-uid")
    return SOPClassExtendedNegotiationSubItem(text[start + 2 : stop], buf[stop:end], reserved)


def _decode_common_ext_neg(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
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


def _decode_identity_rq(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
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


def _decode_identity_ac(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """User Identity sub-item 59H (PS3.7 Table D.3-15)."""
    stop = _length_prefixed(buf, start, end, "server-response")
    if stop != end:
        _fail("trailing bytes after the server response", stop, "item-length")
    return UserIdentityACSubItem(buf[start + 2 : end], reserved)


_USER_INFO_DECODERS: dict[int, Decoder] = {
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


def decode_item_list(
    buf: bytes, text: str, start: int, end: int, decoders: dict[int, Decoder]
) -> list[AnyItem]:
    """Items from start to end; lengths must nest exactly, unknown types kept (PS3.8 §9.3.1)."""
    items: list[AnyItem] = []
    off = start
    unpack = _HDR.unpack_from
    get = decoders.get
    while off < end:
        if end - off < 4:
            _fail("truncated item header", off, "item header")
        item_type, reserved, length = unpack(buf, off)
        value = off + 4
        off = value + length
        if off > end:
            _fail(f"item 0x{item_type:02X} overruns its container", value - 2, "item-length")
        decoder = get(item_type)
        if decoder is None:
            items.append(UnknownItem(item_type, buf[value:off], reserved))
        else:
            items.append(decoder(buf, text, value, off, reserved))
    return items


def _decode_user_info(buf: bytes, text: str, start: int, end: int, reserved: int) -> AnyItem:
    """User Information item 50H and its sub-items (PS3.8 §9.3.2.3, Annex D)."""
    subs = decode_item_list(buf, text, start, end, _USER_INFO_DECODERS)
    return UserInformationItem(cast("list[SubItem]", subs), reserved)  # a str: no alias built


#: Item decoders by type byte inside an A-ASSOCIATE-RQ (PS3.8 Table 9-11).
RQ_ITEM_DECODERS: dict[int, Decoder] = {
    0x10: _decode_app_context,
    0x20: _decode_pc_rq,
    0x50: _decode_user_info,
}
#: Item decoders by type byte inside an A-ASSOCIATE-AC (PS3.8 Table 9-17).
AC_ITEM_DECODERS: dict[int, Decoder] = {
    0x10: _decode_app_context,
    0x21: _decode_pc_ac,
    0x50: _decode_user_info,
}

_ALL_DECODERS: dict[int, Decoder] = {
    **RQ_ITEM_DECODERS,
    **AC_ITEM_DECODERS,
    **_USER_INFO_DECODERS,
    0x30: lambda b, t, s, e, r: AbstractSyntaxSubItem(t[s:e], r),
    0x40: lambda b, t, s, e, r: TransferSyntaxSubItem(t[s:e], r),
}


def decode_item(data: bytes | bytearray | memoryview) -> AnyItem:
    """One whole item or sub-item of any type defined in PS3.8 §9.3 / PS3.7 D.3.3 (for tools).

    Syntax sub-items (30H/40H) decode as themselves; types defined nowhere as ``UnknownItem``.
    Raises only ``PDUDecodeError`` (offsets relative to ``data``).
    """
    buf = bytes(data)
    items = decode_item_list(buf, buf.decode("latin-1"), 0, len(buf), _ALL_DECODERS)
    if len(items) != 1:
        _fail(f"{len(items)} items where exactly one was expected", 0, "item")
    return items[0]
