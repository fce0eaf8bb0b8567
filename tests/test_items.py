"""Items and sub-items: golden byte layouts from PS3.8 §9.3 / PS3.7 D.3.3, errors, fidelity."""

from __future__ import annotations

import pytest

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.items import (
    AbstractSyntaxSubItem,
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    TransferSyntaxSubItem,
    UnknownItem,
    UserInformationItem,
    decode_item,
    strip_uid,
)

VERIFICATION = b"1.2.840.10008.1.1"  # 17 bytes (11H)
IMPLICIT_LE = b"1.2.840.10008.1.2"  # 17 bytes (11H)
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"  # 21 bytes (15H)


def test_application_context_item_golden() -> None:
    # PS3.8 Table 9-12: type 10H, reserved, item-length 0015H, name.
    data = bytes.fromhex("10 00 0015") + APP_CONTEXT
    item = decode_item(data)
    assert item == ApplicationContextItem("1.2.840.10008.3.1.1.1")
    assert item.encode() == data
    assert ApplicationContextItem().encode() == data  # the DICOM context is the default


def test_presentation_context_rq_golden() -> None:
    # PS3.8 Table 9-13: 20H, reserved, length 002EH, PCID 01, 3 reserved bytes, then the
    # abstract syntax sub-item (Table 9-14) and one transfer syntax sub-item (Table 9-15).
    data = (
        bytes.fromhex("20 00 002E  01 00 00 00")
        + bytes.fromhex("30 00 0011") + VERIFICATION
        + bytes.fromhex("40 00 0011") + IMPLICIT_LE
    )  # fmt: skip
    item = decode_item(data)
    assert item == PresentationContextItemRQ(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])
    assert item.sub_items is None  # canonical layout
    assert item.encode() == data


def test_presentation_context_rq_keeps_reserved_bytes_and_unknown_sub_items() -> None:
    # Reserved bytes are not tested (PS3.8 §9.3.1); an unknown sub-item is skipped, and kept.
    data = (
        bytes.fromhex("20 07 0033  03 AA BB CC")
        + bytes.fromhex("30 01 0011") + VERIFICATION
        + bytes.fromhex("99 00 0001 FF")
        + bytes.fromhex("40 02 0011") + IMPLICIT_LE
    )  # fmt: skip
    item = decode_item(data)
    assert isinstance(item, PresentationContextItemRQ)
    assert (item.context_id, item.reserved, item.reserved_6_8) == (3, 7, 0xAABBCC)
    assert item.abstract_syntax == "1.2.840.10008.1.1"
    assert item.transfer_syntaxes == ["1.2.840.10008.1.2"]
    assert item.sub_items == [
        AbstractSyntaxSubItem("1.2.840.10008.1.1", 1),
        UnknownItem(0x99, b"\xff"),
        TransferSyntaxSubItem("1.2.840.10008.1.2", 2),
    ]
    assert item.encode() == data


def test_presentation_context_rq_transfer_syntax_before_abstract_syntax_is_kept() -> None:
    data = (
        bytes.fromhex("20 00 002E  01 00 00 00")
        + bytes.fromhex("40 00 0011") + IMPLICIT_LE
        + bytes.fromhex("30 00 0011") + VERIFICATION
    )  # fmt: skip
    item = decode_item(data)
    assert isinstance(item, PresentationContextItemRQ)
    assert item.sub_items is not None
    assert item.encode() == data


def test_padded_uids_are_kept_raw_and_offered_stripped() -> None:
    # Real peers pad odd UIDs with NUL or space although PS3.5 §9.1 excludes network
    # negotiation from padding; the codec keeps the bytes and strips on request.
    data = (
        bytes.fromhex("20 00 0030  01 00 00 00")
        + bytes.fromhex("30 00 0012") + VERIFICATION + b"\x00"
        + bytes.fromhex("40 00 0012") + IMPLICIT_LE + b" "
    )  # fmt: skip
    item = decode_item(data)
    assert isinstance(item, PresentationContextItemRQ)
    assert item.abstract_syntax == "1.2.840.10008.1.1\x00"
    assert item.abstract_syntax_stripped == "1.2.840.10008.1.1"
    assert item.transfer_syntaxes_stripped == ["1.2.840.10008.1.2"]
    assert item.encode() == data
    assert strip_uid("1.2.3\x00") == strip_uid("1.2.3 ") == "1.2.3"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # PS3.8 Table 9-13: exactly one abstract syntax and one or more transfer syntaxes.
        (bytes.fromhex("40 00 0011") + IMPLICIT_LE, "abstract syntax sub-item"),
        (bytes.fromhex("30 00 0011") + VERIFICATION, "transfer syntax sub-item"),
        (
            bytes.fromhex("30 00 0011")
            + VERIFICATION
            + bytes.fromhex("30 00 0011")
            + VERIFICATION
            + bytes.fromhex("40 00 0011")
            + IMPLICIT_LE,
            "abstract syntax sub-item",
        ),
        (bytes.fromhex("30 00 0011") + VERIFICATION[:5], "item-length"),  # overrun
        (bytes.fromhex("30 00 0005") + VERIFICATION[:5] + b"\x40", "sub-item header"),
    ],
)
def test_presentation_context_rq_malformed(body: bytes, field: str) -> None:
    data = bytes.fromhex("20 00") + (4 + len(body)).to_bytes(2, "big") + b"\x01\x00\x00\x00" + body
    with pytest.raises(PDUDecodeError) as info:
        decode_item(data)
    assert info.value.field == field
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_presentation_context_item_shorter_than_fixed_fields() -> None:
    with pytest.raises(PDUDecodeError, match="shorter than 4 bytes"):
        decode_item(bytes.fromhex("20 00 0003 01 00 00"))


def test_presentation_context_ac_golden() -> None:
    # PS3.8 Table 9-18: 21H, reserved, length 0019H, PCID 01, reserved, result 00, reserved,
    # one transfer syntax sub-item (Table 9-19).
    data = bytes.fromhex("21 00 0019  01 00 00 00  40 00 0011") + IMPLICIT_LE
    item = decode_item(data)
    assert item == PresentationContextItemAC(1, 0, "1.2.840.10008.1.2")
    assert item.encode() == data


def test_presentation_context_ac_rejected_without_transfer_syntax() -> None:
    # PS3.8 Table 9-18: when result != 0 the transfer syntax is not significant; a peer that
    # leaves the sub-item out is accepted and the field is None.
    data = bytes.fromhex("21 00 0004  05 00 03 00")
    item = decode_item(data)
    assert item == PresentationContextItemAC(5, 3, None)
    assert isinstance(item, PresentationContextItemAC)
    assert item.transfer_syntax_stripped is None
    assert item.encode() == data


def test_presentation_context_ac_reserved_bytes() -> None:
    data = bytes.fromhex("21 11 0019  01 22 00 33  40 44 0011") + IMPLICIT_LE
    item = decode_item(data)
    assert isinstance(item, PresentationContextItemAC)
    assert (item.reserved, item.reserved_6, item.reserved_8) == (0x11, 0x22, 0x33)
    assert item.sub_items == [TransferSyntaxSubItem("1.2.840.10008.1.2", 0x44)]
    assert item.encode() == data


@pytest.mark.parametrize(
    "body",
    [
        bytes.fromhex("40 00 0011") + IMPLICIT_LE + bytes.fromhex("40 00 0011") + IMPLICIT_LE,
        bytes.fromhex("30 00 0011") + VERIFICATION,
    ],
)
def test_presentation_context_ac_unexpected_sub_items(body: bytes) -> None:
    data = bytes.fromhex("21 00") + (4 + len(body)).to_bytes(2, "big") + bytes(4) + body
    with pytest.raises(PDUDecodeError) as info:
        decode_item(data)
    assert info.value.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER


def test_inconsistent_layout_is_refused_and_canonical_layout_dropped() -> None:
    with pytest.raises(ValueError, match="disagree"):
        PresentationContextItemRQ(1, "1.2", ["1.3"], sub_items=[AbstractSyntaxSubItem("9")])
    with pytest.raises(ValueError, match="disagree"):
        PresentationContextItemAC(1, 0, "1.3", sub_items=[])
    item = PresentationContextItemRQ(
        1, "1.2", ["1.3"], sub_items=[AbstractSyntaxSubItem("1.2"), TransferSyntaxSubItem("1.3")]
    )
    assert item.sub_items is None
    assert PresentationContextItemAC(1, 0, None, sub_items=[]).sub_items is None


def test_item_overrunning_its_container_and_truncated_header() -> None:
    with pytest.raises(PDUDecodeError, match="overruns") as info:
        decode_item(bytes.fromhex("52 00 0010 31"))
    assert info.value.offset == 2
    with pytest.raises(PDUDecodeError, match="truncated item header"):
        decode_item(bytes.fromhex("52 00 00"))
    with pytest.raises(PDUDecodeError, match="exactly one"):
        decode_item(b"")


def test_user_information_item_with_unknown_sub_item_and_any_order() -> None:
    # PS3.8 §9.3.2.3: sub-items in any order; Annex D.2: unknown sub-items are ignored (kept).
    data = (
        bytes.fromhex("50 00 0021")
        + bytes.fromhex("52 00 0008") + b"1.2.3.4\x00"
        + bytes.fromhex("A0 05 0003 010203")
        + bytes.fromhex("51 00 0004 00008000")
        + bytes.fromhex("55 00 0002") + b"V "
    )  # fmt: skip
    item = decode_item(data)
    assert item == UserInformationItem(
        [
            ImplementationClassUIDSubItem("1.2.3.4\x00"),
            UnknownItem(0xA0, b"\x01\x02\x03", reserved=5),
            MaximumLengthSubItem(0x8000),
            ImplementationVersionNameSubItem("V "),
        ]
    )
    assert isinstance(item, UserInformationItem)
    assert item.maximum_length == 0x8000
    assert item.implementation_class_uid == "1.2.3.4"
    assert item.implementation_version_name == "V"
    assert item.first(AsynchronousOperationsWindowSubItem) is None
    assert item.all(MaximumLengthSubItem) == [MaximumLengthSubItem(0x8000)]
    assert item.encode() == data


def test_empty_user_information_item() -> None:
    item = decode_item(bytes.fromhex("50 00 0000"))
    assert item == UserInformationItem([])
    assert isinstance(item, UserInformationItem)
    assert item.maximum_length is None
    assert item.implementation_class_uid is None


def test_unknown_top_level_type_decodes_as_unknown_item() -> None:
    data = bytes.fromhex("FF 01 0002 ABCD")
    assert decode_item(data) == UnknownItem(0xFF, b"\xab\xcd", 1)


@pytest.mark.parametrize(
    ("control", "is_command", "is_last"),
    [(0x00, False, False), (0x01, True, False), (0x02, False, True), (0x03, True, True),
     (0xFC, False, False), (0xFF, True, True)],
)  # fmt: skip
def test_pdv_message_control_header_bits(control: int, is_command: bool, is_last: bool) -> None:
    # PS3.8 Annex E.2: bit 0 command, bit 1 last; bits 2-7 are not tested.
    pdv = PresentationDataValueItem(1, control, b"\x00\x00")
    assert (pdv.is_command, pdv.is_last) == (is_command, is_last)
    # PS3.8 Table 9-23: item-length 00000004H (PCID + control + 2 bytes).
    assert pdv.encode() == bytes.fromhex("00000004 01") + bytes([control]) + b"\x00\x00"
