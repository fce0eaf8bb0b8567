"""User Information sub-items (PS3.8 Annex D.1, PS3.7 D.3.3): golden layouts and length rules."""

from __future__ import annotations

import pytest

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.items import AnyItem, decode_item
from netdicom2.subitems import (
    USER_INFO_DECODERS,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
)

VERIFICATION = b"1.2.840.10008.1.1"  # 17 bytes (11H)
CT_STORAGE = b"1.2.840.10008.5.1.4.1.1.2"  # 25 bytes (19H)

SUB_ITEM_VECTORS: list[tuple[bytes, AnyItem]] = [
    # 51H Maximum Length: length 4, 16384 (PS3.8 Table D.1-1).
    (bytes.fromhex("51 00 0004 00004000"), MaximumLengthSubItem(16384)),
    # 52H Implementation Class UID, odd length, no padding (PS3.7 Table D.3-1).
    (bytes.fromhex("52 00 0007") + b"1.2.3.4", ImplementationClassUIDSubItem("1.2.3.4")),
    # 53H Asynchronous Operations Window: invoked 1, performed 2 (PS3.7 Table D.3-7).
    (bytes.fromhex("53 00 0004 0001 0002"), AsynchronousOperationsWindowSubItem(1, 2)),
    # 54H Role Selection: UID-length 0019H, UID, SCU 01, SCP 00 (PS3.7 Table D.3-9).
    (
        bytes.fromhex("54 00 001D 0019") + CT_STORAGE + bytes.fromhex("01 00"),
        SCPSCURoleSelectionSubItem("1.2.840.10008.5.1.4.1.1.2", 1, 0),
    ),
    # 55H Implementation Version Name (PS3.7 Table D.3-3).
    (bytes.fromhex("55 00 0009") + b"syngo.via", ImplementationVersionNameSubItem("syngo.via")),
    # 56H SOP Class Extended Negotiation: UID-length, UID, opaque info (PS3.7 Table D.3-11).
    (
        bytes.fromhex("56 00 001E 0019") + CT_STORAGE + bytes.fromhex("01 02 03"),
        SOPClassExtendedNegotiationSubItem("1.2.840.10008.5.1.4.1.1.2", b"\x01\x02\x03"),
    ),
    # 57H Common Extended Negotiation, version byte 00, related list with one UID (D.3-12/13).
    (
        bytes.fromhex("57 00 0037 0019")
        + CT_STORAGE
        + bytes.fromhex("0005")
        + b"1.2.3"
        + bytes.fromhex("0013 0011")
        + VERIFICATION,
        SOPClassCommonExtendedNegotiationSubItem(
            "1.2.840.10008.5.1.4.1.1.2", "1.2.3", ["1.2.840.10008.1.1"]
        ),
    ),
    # 58H User Identity RQ: type 2, response requested, "user", "pass" (PS3.7 Table D.3-14).
    (
        bytes.fromhex("58 00 000E 02 01 0004") + b"user" + bytes.fromhex("0004") + b"pass",
        UserIdentityRQSubItem(2, 1, b"user", b"pass"),
    ),
    # 58H type 1 (username only): the secondary-field-length is still present, 0000H.
    (
        bytes.fromhex("58 00 000A 01 00 0004") + b"user" + bytes.fromhex("0000"),
        UserIdentityRQSubItem(1, 0, b"user"),
    ),
    # 59H User Identity AC: server-response-length, response (PS3.7 Table D.3-15).
    (bytes.fromhex("59 00 0005 0003") + b"jwt", UserIdentityACSubItem(b"jwt")),
    (bytes.fromhex("59 00 0002 0000"), UserIdentityACSubItem(b"")),
]


@pytest.mark.parametrize(("data", "expected"), SUB_ITEM_VECTORS)
def test_user_information_sub_item_golden(data: bytes, expected: AnyItem) -> None:
    assert decode_item(data) == expected
    assert expected.encode() == data


def test_common_extended_negotiation_byte_2_is_the_version() -> None:
    # PS3.7 Table D.3-12: byte 2 is the sub-item version, not a reserved byte.
    data = bytes.fromhex("57 03 0008 0001") + b"1" + bytes.fromhex("0001") + b"2" + bytes(2)
    item = decode_item(data)
    assert item == SOPClassCommonExtendedNegotiationSubItem("1", "2", [], version=3)
    assert item.encode() == data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (bytes.fromhex("51 00 0003 000040"), "item-length"),  # D.1-1: length fixed 4
        (bytes.fromhex("51 00 0005 0000400000"), "item-length"),
        (bytes.fromhex("53 00 0002 0001"), "item-length"),  # D.3-7: length fixed 4
        (bytes.fromhex("54 00 0004 0001 31 01"), "SCU-role/SCP-role"),  # role byte missing
        (bytes.fromhex("54 00 0006 0001 31 01 00 FF"), "SCU-role/SCP-role"),  # trailing byte
        (bytes.fromhex("54 00 0004 0009 3131"), "UID-length"),  # UID overruns
        (bytes.fromhex("54 00 0001 00"), "UID-length"),
        (bytes.fromhex("56 00 0003 0005 31"), "SOP-class-uid-length"),
        (bytes.fromhex("57 00 0004 0001 31 00"), "service-class-uid-length"),
        (bytes.fromhex("57 00 0009 0001 31 0001 32 0000 FF"), "item-length"),  # trailing
        (  # a related UID overrunning the related list
            bytes.fromhex("57 00 000A 0001 31 0001 32 0002 0005"),
            "related-general-sop-class-uid-length",
        ),
        (bytes.fromhex("58 00 0008 01 00 0004") + b"user", "secondary-field-length"),
        (bytes.fromhex("58 00 0001 01"), "item-length"),
        (bytes.fromhex("58 00 000B 01 00 0004") + b"user" + bytes(3), "item-length"),
        (bytes.fromhex("59 00 0003 0000 FF"), "item-length"),
        (bytes.fromhex("59 00 0001 00"), "server-response-length"),
    ],
)
def test_sub_item_lengths_must_nest_exactly(data: bytes, field: str) -> None:
    with pytest.raises(PDUDecodeError) as info:
        decode_item(data)
    assert info.value.field == field
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_every_sub_item_type_of_annex_d_has_a_decoder() -> None:
    # PS3.8 Annex D.1 (51H) and PS3.7 D.3.3 (52H-59H): each defined sub-item type is decoded as
    # its class; any other type inside a User Information item is kept as UnknownItem.
    assert sorted(USER_INFO_DECODERS) == list(range(0x51, 0x5A))
    decoded = {type(decode_item(data)) for data, _ in SUB_ITEM_VECTORS}
    assert len(decoded) == 9
