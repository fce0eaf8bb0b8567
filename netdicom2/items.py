"""Items, sub-items and PDV items of the DICOM Upper Layer (PS3.8 §9.3, Annex D; PS3.7 D.3.3).

Every item is a dataclass that encodes itself (``encode() -> bytes``) and is decoded by the
functions at the bottom of this module, which the PDU classes of ``netdicom2.pdu`` call. The
User Information sub-items (PS3.8 Annex D.1, PS3.7 D.3.3) and ``UnknownItem`` are defined with
their decoders in ``netdicom2.subitems`` and re-exported here.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias, TypeVar, cast

from netdicom2.subitems import (
    _HDR,
    _U32,
    _UNEXPECTED,
    USER_INFO_DECODERS,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    SubItem,
    UnknownItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    _fail,
    _item,
    _latin1,
    strip_uid,
)

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

# PDV item header: item-length (4 bytes), presentation-context-ID, control header (Table 9-23).
_PDV_HDR = struct.Struct(">IBB")


# --------------------------------------------------------------------------------------------
# The application context (PS3.8 §9.3.2.1, Table 9-12); unknown items: netdicom2.subitems


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


def decode_item_list(
    buf: bytes, text: str, start: int, end: int, decoders: Mapping[int, Decoder]
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
    subs = decode_item_list(buf, text, start, end, USER_INFO_DECODERS)
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
    **USER_INFO_DECODERS,
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
