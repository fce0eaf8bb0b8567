"""The seven PDUs: golden vectors from the byte layouts of PS3.8 §9.3, errors, fidelity."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.framing import PDUFramer
from netdicom2.items import (
    ApplicationContextItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    Item,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    UnknownItem,
    UserInformationItem,
)
from netdicom2.pdu import (
    PDU,
    PDU_DECODERS,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
    decode,
)

VERIFICATION = b"1.2.840.10008.1.1"  # 17 bytes
IMPLICIT_LE = b"1.2.840.10008.1.2"  # 17 bytes
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"  # 21 bytes

# A-ASSOCIATE-RQ, PS3.8 Table 9-11: 68 fixed bytes after the header + 108 bytes of items.
RQ = b"".join(
    [
        bytes.fromhex("01 00 000000B0"),  # type 01H, reserved, PDU-length 176
        bytes.fromhex("0001 0000"),  # protocol version 1 (bit 0), reserved
        b"ANY-SCP         ",  # called AE title (bytes 11-26), space padded
        b"ECHOSCU         ",  # calling AE title (bytes 27-42)
        bytes(32),  # reserved (bytes 43-74)
        bytes.fromhex("10 00 0015") + APP_CONTEXT,  # Application Context item (Table 9-12)
        bytes.fromhex("20 00 002E 01 000000"),  # Presentation Context 1 (Table 9-13)
        bytes.fromhex("30 00 0011") + VERIFICATION,  # abstract syntax (Table 9-14)
        bytes.fromhex("40 00 0011") + IMPLICIT_LE,  # transfer syntax (Table 9-15)
        bytes.fromhex("50 00 001D"),  # User Information (Table 9-16)
        bytes.fromhex("51 00 0004 00004000"),  # maximum length 16384 (Table D.1-1)
        bytes.fromhex("52 00 0007") + b"1.2.3.4",  # implementation class UID (D.3-1)
        bytes.fromhex("55 00 0006") + b"ECHO_1",  # implementation version name (D.3-3)
    ]
)
RQ_PDU = AAssociateRqPDU(
    "ANY-SCP",
    "ECHOSCU",
    [
        ApplicationContextItem("1.2.840.10008.3.1.1.1"),
        PresentationContextItemRQ(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
        UserInformationItem(
            [
                MaximumLengthSubItem(16384),
                ImplementationClassUIDSubItem("1.2.3.4"),
                ImplementationVersionNameSubItem("ECHO_1"),
            ]
        ),
    ],
)

# A-ASSOCIATE-AC, PS3.8 Table 9-17: bytes 11-74 echo the RQ; 77 bytes of items.
AC = b"".join(
    [
        bytes.fromhex("02 00 00000091"),  # type 02H, PDU-length 145
        bytes.fromhex("0001 0000"),
        b"ANY-SCP         ECHOSCU         ",  # reserved, echo of RQ bytes 11-42
        bytes(32),
        bytes.fromhex("10 00 0015") + APP_CONTEXT,
        bytes.fromhex("21 00 0019 01 00 00 00"),  # context 1, result 0 acceptance (9-18)
        bytes.fromhex("40 00 0011") + IMPLICIT_LE,  # transfer syntax (Table 9-19)
        bytes.fromhex("50 00 0013"),
        bytes.fromhex("51 00 0004 00008000"),  # maximum length 32768
        bytes.fromhex("52 00 0007") + b"1.2.3.4",
    ]
)
AC_PDU = AAssociateAcPDU(
    "ANY-SCP",
    "ECHOSCU",
    [
        ApplicationContextItem(),
        PresentationContextItemAC(1, 0, "1.2.840.10008.1.2"),
        UserInformationItem(
            [MaximumLengthSubItem(32768), ImplementationClassUIDSubItem("1.2.3.4")]
        ),
    ],
)

# A-ASSOCIATE-RJ, PS3.8 Table 9-21: reserved, result 1 permanent, source 1 user, reason 7
# called-AE-title-not-recognized.
RJ = bytes.fromhex("03 00 00000004 00 01 01 07")
# P-DATA-TF, PS3.8 Tables 9-22/9-23: one PDV, item-length 8 = PCID + control + 6 bytes.
PDATA = bytes.fromhex("04 00 0000000C  00000008 01 03  0000 0400 0000")
# P-DATA-TF with two PDVs (data set, more; data set, last) on context 3.
PDATA2 = bytes.fromhex("04 00 00000010  00000004 03 00 AABB  00000004 03 02 CCDD")
RELEASE_RQ = bytes.fromhex("05 00 00000004 00000000")  # Table 9-24
RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")  # Table 9-25
# A-ABORT, Table 9-26: two reserved bytes, source 2 provider, reason 6 invalid parameter.
ABORT = bytes.fromhex("07 00 00000004 00 00 02 06")

GOLDEN: list[tuple[bytes, PDU]] = [
    (RQ, RQ_PDU),
    (AC, AC_PDU),
    (RJ, AAssociateRjPDU(1, 1, 7)),
    (PDATA, PDataTfPDU([PresentationDataValueItem(1, 3, bytes.fromhex("0000 0400 0000"))])),
    (
        PDATA2,
        PDataTfPDU(
            [
                PresentationDataValueItem(3, 0, b"\xaa\xbb"),
                PresentationDataValueItem(3, 2, b"\xcc\xdd"),
            ]
        ),
    ),
    (RELEASE_RQ, AReleaseRqPDU()),
    (RELEASE_RP, AReleaseRpPDU()),
    (ABORT, AAbortPDU(2, 6)),
]
IDS = ["rq", "ac", "rj", "pdata", "pdata2", "release-rq", "release-rp", "abort"]


@pytest.mark.parametrize(("data", "expected"), GOLDEN, ids=IDS)
def test_golden_decodes_and_encodes(data: bytes, expected: PDU) -> None:
    assert decode(data) == expected
    assert type(expected).decode(data) == expected
    assert expected.encode() == data


def test_golden_stream_byte_at_a_time_through_the_framer() -> None:
    stream = b"".join(data for data, _ in GOLDEN)
    framer = PDUFramer()
    out = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert [decode(raw) for raw in out] == [pdu for _, pdu in GOLDEN]
    assert framer.pending == 0


@pytest.mark.parametrize(("data", "expected"), GOLDEN, ids=IDS)
def test_golden_with_trailing_next_pdu_in_the_same_chunk(data: bytes, expected: PDU) -> None:
    framer = PDUFramer()
    first = framer.feed(data + RELEASE_RQ[:3])  # the next PDU's first bytes ride along
    assert [decode(raw) for raw in first] == [expected]
    assert framer.pending == 3
    assert [bytes(raw) for raw in framer.feed(RELEASE_RQ[3:] + ABORT)] == [RELEASE_RQ, ABORT]
    # decode() itself takes exactly one PDU: trailing bytes break PDU-length (PS3.8 §9.3.1).
    with pytest.raises(PDUDecodeError) as info:
        decode(data + RELEASE_RQ)
    assert (info.value.field, info.value.offset) == ("PDU-length", 2)


def test_registry_holds_the_seven_pdu_types() -> None:
    assert sorted(PDU_DECODERS) == [1, 2, 3, 4, 5, 6, 7]


def test_associate_rq_properties() -> None:
    pdu = decode(RQ)
    assert isinstance(pdu, AAssociateRqPDU)
    assert pdu.called_ae_title == "ANY-SCP         "
    assert pdu.called_ae_title_stripped == "ANY-SCP"
    assert pdu.calling_ae_title_stripped == "ECHOSCU"
    assert pdu.application_context_name == "1.2.840.10008.3.1.1.1"
    assert pdu.presentation_context_items == [RQ_PDU.variable_items[1]]
    assert pdu.user_information == RQ_PDU.variable_items[2]
    assert pdu.max_length == 16384
    assert pdu.implementation_class_uid == "1.2.3.4"
    assert pdu.implementation_version_name == "ECHO_1"
    ac = decode(AC)
    assert isinstance(ac, AAssociateAcPDU)
    assert ac.presentation_context_items == [PresentationContextItemAC(1, 0, "1.2.840.10008.1.2")]
    assert ac.implementation_version_name is None


def test_properties_are_none_without_items() -> None:
    pdu = AAssociateRqPDU("A", "B")
    assert pdu.application_context_name is None
    assert pdu.user_information is None
    assert pdu.max_length is None
    assert pdu.implementation_class_uid is None
    assert pdu.implementation_version_name is None
    assert pdu.presentation_context_items == []


def test_ae_titles_are_padded_to_16_characters() -> None:
    # PS3.8 Table 9-11: 16 characters, space padded; decode(encode(p)) == p needs the padding.
    pdu = AAssociateRqPDU("SCP", "SCU", RQ_PDU.variable_items)
    assert pdu.called_ae_title == "SCP" + " " * 13
    assert decode(pdu.encode()) == pdu
    with pytest.raises(ValueError, match="longer than 16"):
        AAssociateRqPDU("X" * 17, "SCU")
    with pytest.raises(ValueError, match="32 bytes"):
        AAssociateAcPDU("A", "B", reserved=b"\x00")


def test_nul_padded_ae_titles_are_kept_verbatim() -> None:
    data = RQ[:10] + b"ANY-SCP\x00\x00\x00\x00\x00\x00\x00\x00\x00" + RQ[26:]
    pdu = decode(data)
    assert isinstance(pdu, AAssociateRqPDU)
    assert pdu.called_ae_title == "ANY-SCP" + "\x00" * 9
    assert pdu.called_ae_title_stripped == "ANY-SCP"
    assert pdu.encode() == data


def _with_length(data: bytes) -> bytes:
    """data with its PDU-length field set to match the bytes after the header."""
    return data[:2] + struct.pack(">I", len(data) - 6) + data[6:]


def test_reserved_fields_and_protocol_version_are_not_tested() -> None:
    # PS3.8 §9.3.1: reserved fields are not tested; §9.3.2: protocol version bits other than
    # bit 0 are ignored, and bit 0 is AE-6's check, not the decoder's (version 0 decodes).
    for version in (0x0000, 0x0003, 0xFFFF):
        data = RQ[:1] + b"\x5a" + RQ[2:6] + struct.pack(">HH", version, 0xBEEF) + RQ[10:42]
        data += bytes(range(32)) + RQ[74:]
        pdu = decode(data)
        assert isinstance(pdu, AAssociateRqPDU)
        assert (pdu.protocol_version, pdu.reserved_9_10, pdu.reserved_2) == (version, 0xBEEF, 0x5A)
        assert pdu.reserved == bytes(range(32))
        assert pdu.encode() == data
    for data, expected in [
        (bytes.fromhex("03 01 00000004 09 01 01 07"), AAssociateRjPDU(1, 1, 7, 9, 1)),
        (bytes.fromhex("05 FF 00000004 DEADBEEF"), AReleaseRqPDU(0xDEADBEEF, 0xFF)),
        (bytes.fromhex("06 01 00000004 00000001"), AReleaseRpPDU(1, 1)),
        (bytes.fromhex("07 02 00000004 AB CD 00 09"), AAbortPDU(0, 9, 0xABCD, 2)),
        (bytes.fromhex("04 07 00000006 00000002 01 FC"), None),
    ]:
        pdu = decode(data)
        if expected is not None:
            assert pdu == expected
        assert pdu.encode() == data


def test_ac_bytes_11_to_74_may_hold_anything() -> None:
    # PS3.8 Table 9-17: bytes 11-74 are reserved, "not tested".
    data = AC[:10] + bytes(range(200, 232)) + bytes(range(32)) + AC[74:]
    pdu = decode(data)
    assert pdu.encode() == data


def test_unknown_items_are_kept_where_they_appear() -> None:
    # PS3.8 §9.3.1: items of unknown type are skipped using their length (here: kept).
    extra = bytes.fromhex("F0 00 0003 010203")
    data = _with_length(RQ[:74] + extra + RQ[74:] + bytes.fromhex("21 00 0000"))
    pdu = decode(data)
    assert isinstance(pdu, AAssociateRqPDU)
    assert pdu.variable_items[0] == UnknownItem(0xF0, b"\x01\x02\x03")
    # A 21H item is not defined in an RQ: unknown there, kept too.
    assert pdu.variable_items[-1] == UnknownItem(0x21, b"")
    assert pdu.encode() == data


def test_unknown_pdu_type_is_unrecognized_pdu() -> None:
    for pdu_type in (0x00, 0x08, 0x10, 0xFF):
        with pytest.raises(PDUDecodeError) as info:
            decode(bytes([pdu_type]) + bytes.fromhex("00 00000004 00000000"))
        assert info.value.pdu_type == pdu_type
        assert info.value.abort_reason == AbortReason.UNRECOGNIZED_PDU
        assert (info.value.offset, info.value.field) == (0, "PDU-type")


def test_class_decoder_refuses_another_type() -> None:
    with pytest.raises(PDUDecodeError) as info:
        AAbortPDU.decode(RELEASE_RQ)
    assert info.value.abort_reason == AbortReason.UNEXPECTED_PDU


@pytest.mark.parametrize(
    ("data", "field", "offset"),
    [
        (b"", "PDU-type", 0),
        (b"\x05", "PDU header", 1),
        (bytes.fromhex("05 00 000000"), "PDU header", 5),
        (RELEASE_RQ[:-1], "PDU-length", 2),  # truncated body
        (bytes.fromhex("05 00 FFFFFFF0 00000000"), "PDU-length", 2),  # hostile length
        (RQ[:60], "PDU-length", 2),
        (_with_length(RQ[:60]), "PDU-length", 2),  # shorter than the fixed 68 bytes
        (_with_length(bytes.fromhex("04 00 00000000")), "PDV item", 6),  # no PDV item
        (bytes.fromhex("04 00 00000005 00000001 01"), "PDV item-length", 6),  # PDV < 2
        (bytes.fromhex("04 00 00000006 00000000 0101"), "PDV item-length", 6),
        (bytes.fromhex("04 00 00000006 00000003 0101"), "PDV item-length", 6),  # overrun
        (bytes.fromhex("04 00 0000000A 00000002 0103 00000000"), "PDV item-length", 12),
    ],
)
def test_malformed_pdus(data: bytes, field: str, offset: int) -> None:
    with pytest.raises(PDUDecodeError) as info:
        decode(data)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


@pytest.mark.parametrize("pdu_type", [3, 5, 6, 7])
@pytest.mark.parametrize("length", [0, 3, 5, 16])
def test_fixed_size_pdus_with_length_other_than_4_are_invalid(pdu_type: int, length: int) -> None:
    # PS3.8 Tables 9-21, 9-24..9-26 fix PDU-length at 4; spec notes §7.6 [interp]: the framer
    # reads exactly PDU-length bytes, decode then reports an invalid PDU (Evt19).
    data = bytes([pdu_type, 0]) + struct.pack(">I", length) + bytes(length)
    assert [bytes(v) for v in PDUFramer().feed(data)] == [data]
    with pytest.raises(PDUDecodeError) as info:
        decode(data)
    assert (info.value.pdu_type, info.value.field) == (pdu_type, "PDU-length")


def _rq_with_items(items: list[bytes], pdu_type: int = 1) -> bytes:
    """An RQ/AC made of the fixed fields of RQ and the given encoded items."""
    return _with_length(bytes([pdu_type]) + RQ[1:74] + b"".join(items))


APP = bytes.fromhex("10 00 0015") + APP_CONTEXT
PC = RQ[99:149]
UI = RQ[149:]
PC_AC = AC[99:128]


def test_item_slices_are_the_items() -> None:
    assert _rq_with_items([APP, PC, UI]) == RQ
    assert _rq_with_items([APP, PC_AC, AC[128:]], pdu_type=2)[74:] == AC[74:]


@pytest.mark.parametrize(
    ("items", "pdu_type", "field", "abort_reason"),
    [
        ([PC, UI], 1, "application context item", AbortReason.INVALID_PDU_PARAMETER_VALUE),
        ([APP, UI], 1, "presentation context item", AbortReason.INVALID_PDU_PARAMETER_VALUE),
        ([APP, PC], 1, "user information item", AbortReason.INVALID_PDU_PARAMETER_VALUE),
        ([APP, APP, PC, UI], 1, "application context item", AbortReason.UNEXPECTED_PDU_PARAMETER),
        ([APP, PC, UI, UI], 1, "user information item", AbortReason.UNEXPECTED_PDU_PARAMETER),
        # An RQ presentation context (20H) is not an AC one (21H): the AC has none.
        ([APP, PC, UI], 2, "presentation context item", AbortReason.INVALID_PDU_PARAMETER_VALUE),
        ([APP, PC_AC, UI], 1, "presentation context item", AbortReason.INVALID_PDU_PARAMETER_VALUE),
    ],
)
def test_associate_mandatory_items(
    items: list[bytes], pdu_type: int, field: str, abort_reason: int
) -> None:
    # PS3.8 Tables 9-11/9-17: one application context, 1+ presentation contexts, one user info.
    with pytest.raises(PDUDecodeError) as info:
        decode(_rq_with_items(items, pdu_type))
    assert (info.value.pdu_type, info.value.field) == (pdu_type, field)
    assert info.value.abort_reason == abort_reason


def test_item_overrun_reports_pdu_type_and_offset() -> None:
    data = _rq_with_items([APP, PC, UI[:4]])  # user information item claims 29 bytes, has 0
    with pytest.raises(PDUDecodeError) as info:
        decode(data)
    assert info.value.pdu_type == 1
    assert info.value.offset == 74 + len(APP) + len(PC) + 2
    assert info.value.field == "item-length"
    with pytest.raises(PDUDecodeError, match="truncated item header"):
        decode(_rq_with_items([APP, PC, UI, b"\x10\x00"]))


def test_pdv_fragments_are_zero_copy_slices() -> None:
    pdu = decode(PDATA2)
    assert isinstance(pdu, PDataTfPDU)
    first = pdu.data_value_items[0].fragment
    assert isinstance(first, memoryview)
    assert first.obj is PDATA2
    assert (pdu.data_value_items[0].is_last, pdu.data_value_items[1].is_last) == (False, True)
    # A memoryview of another format is read as its bytes.
    assert decode(memoryview(PDATA2).cast("c")) == pdu  # type: ignore[arg-type]


def test_decode_under_python_dash_o_raises_only_decode_errors() -> None:
    # No validation may rely on assert: the same inputs fail the same way with -O.
    bad = [
        b"",
        b"\x04",
        RQ[:80],
        _rq_with_items([APP, UI]),
        PDATA[:-1],
        b"\x09" + RJ[1:],
        bytes.fromhex("04 00 00000005 00000001 01"),
        _rq_with_items([APP, PC, UI[:4]]),
    ]
    code = (
        "import sys\n"
        "from netdicom2.pdu import decode\n"
        "from netdicom2.exceptions import PDUDecodeError\n"
        f"for data in {bad!r}:\n"
        "    try:\n"
        "        decode(data)\n"
        "    except PDUDecodeError:\n"
        "        continue\n"
        "    sys.exit(1)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_encode_uses_the_list_order_of_items() -> None:
    items: list[Item] = list(reversed(RQ_PDU.variable_items))
    pdu = AAssociateRqPDU("A", "B", items)
    assert decode(pdu.encode()) == pdu
