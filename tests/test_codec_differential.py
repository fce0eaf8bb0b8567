"""Differential tests: the same bytes through netdicom2, pynetdicom and scapy; real captures.

pynetdicom and scapy are test dependencies (installed in CI), imported plainly. Where one of
them disagrees with PS3.8/PS3.7, the standard decides and the test says why.
"""

from __future__ import annotations

import struct
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom import pdu as pn
from pynetdicom import pdu_items as pni
from scapy.contrib.dicom import DICOM
from scapy.layers.inet import TCP
from scapy.packet import Raw
from scapy.utils import rdpcap
from strategies_codec import clean_uids

from netdicom2.framing import PDUFramer
from netdicom2.items import (
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    Item,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    SCPSCURoleSelectionSubItem,
    SubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
    strip_uid,
)
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
    decode,
)

PYNETDICOM = {
    1: pn.A_ASSOCIATE_RQ,
    2: pn.A_ASSOCIATE_AC,
    3: pn.A_ASSOCIATE_RJ,
    4: pn.P_DATA_TF,
    5: pn.A_RELEASE_RQ,
    6: pn.A_RELEASE_RP,
    7: pn.A_ABORT_RQ,
}


# Normalised views: what each library says the fields are --------------------------------------


def ours_summary(pdu: PDU) -> dict[str, Any]:
    """Our fields in the shape pynetdicom reports them (titles and UIDs unpadded)."""
    if isinstance(pdu, AAssociateRqPDU | AAssociateAcPDU):
        info = pdu.user_information
        assert info is not None
        window = info.first(AsynchronousOperationsWindowSubItem)
        identity = info.first(UserIdentityRQSubItem)
        contexts: list[tuple[Any, ...]] = []
        for pc in pdu.presentation_context_items:
            if isinstance(pc, PresentationContextItemRQ):
                contexts.append(
                    (pc.context_id, pc.abstract_syntax_stripped, pc.transfer_syntaxes_stripped)
                )
            else:
                ts = pc.transfer_syntax_stripped if pc.result == 0 else None
                contexts.append((pc.context_id, pc.result, ts))
        return {
            "called": pdu.called_ae_title_stripped,
            "calling": pdu.calling_ae_title_stripped,
            "version": pdu.protocol_version,
            "app": pdu.application_context_name,
            "contexts": contexts,
            "max": pdu.max_length,
            "impl_uid": pdu.implementation_class_uid,
            "impl_version": pdu.implementation_version_name,
            "roles": [
                (r.sop_class_uid_stripped, r.scu_role, r.scp_role)
                for r in info.all(SCPSCURoleSelectionSubItem)
            ],
            "window": None if window is None else (window.invoked, window.performed),
            "identity": None
            if identity is None
            else (
                identity.user_identity_type,
                identity.positive_response_requested,
                identity.primary_field,
                identity.secondary_field,
            ),
        }
    if isinstance(pdu, PDataTfPDU):
        return {
            "pdvs": [
                (v.context_id, bytes([v.control_header]) + bytes(v.fragment))
                for v in pdu.data_value_items
            ]
        }
    if isinstance(pdu, AAssociateRjPDU):
        return {"rj": (pdu.result, pdu.source, pdu.reason_diag)}
    if isinstance(pdu, AAbortPDU):
        return {"abort": (pdu.source, pdu.reason_diag)}
    return {}


def pynetdicom_summary(data: bytes) -> dict[str, Any]:
    """pynetdicom's fields for the same bytes."""
    theirs = PYNETDICOM[data[0]]()
    theirs.decode(data)
    if isinstance(theirs, pn.A_ASSOCIATE_RQ | pn.A_ASSOCIATE_AC):
        info = theirs.user_information
        assert info is not None
        window = info.async_ops_window
        identity = info.user_identity
        contexts: list[tuple[Any, ...]] = []
        for pc in theirs.presentation_context:
            if isinstance(pc, pni.PresentationContextItemRQ):
                contexts.append((pc.context_id, pc.abstract_syntax, list(pc.transfer_syntax)))
            else:
                ts = pc.transfer_syntax if pc.result == 0 else None
                contexts.append((pc.context_id, pc.result, ts))
        roles = [
            item for item in info.user_data if isinstance(item, pni.SCP_SCU_RoleSelectionSubItem)
        ]
        return {
            "called": theirs.called_ae_title,
            "calling": theirs.calling_ae_title,
            "version": theirs.protocol_version,
            "app": theirs.application_context_name,
            "contexts": contexts,
            "max": info.maximum_length,
            "impl_uid": info.implementation_class_uid,
            "impl_version": info.implementation_version_name,
            "roles": [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles],
            "window": None
            if window is None
            else (window.max_operations_invoked, window.max_operations_performed),
            "identity": None
            if not isinstance(identity, pni.UserIdentitySubItemRQ)
            else (
                identity.user_identity_type,
                identity.positive_response_requested,
                identity.primary_field,
                identity.secondary_field,
            ),
        }
    if isinstance(theirs, pn.P_DATA_TF):
        return {
            "pdvs": [
                (v.presentation_context_id, v.presentation_data_value)
                for v in theirs.presentation_data_value_items
            ]
        }
    if isinstance(theirs, pn.A_ASSOCIATE_RJ):
        return {"rj": (theirs.result, theirs.source, theirs.reason_diagnostic)}
    if isinstance(theirs, pn.A_ABORT_RQ):
        return {"abort": (theirs.source, theirs.reason_diagnostic)}
    return {}


_SCAPY_LENGTH_FIELDS = {
    "uid_length",
    "sop_class_uid_length",
    "service_class_uid_length",
    "related_sop_class_uid_length",
    "primary_field_length",
    "secondary_field_length",
    "response_length",
}


def _scapy_sub_item(item: Any) -> tuple[Any, ...]:
    """(type, reserved, raw fields) of one scapy variable item."""
    body = item.payload
    if isinstance(body, Raw):
        return (item.item_type, item.reserved, "raw", body.load)
    fields = tuple(
        tuple(_scapy_sub_item(sub) for sub in value) if isinstance(value, list) else value
        for name, value in body.fields.items()
        if name not in _SCAPY_LENGTH_FIELDS
    )
    return (item.item_type, item.reserved, *fields)


def scapy_summary(data: bytes) -> dict[str, Any]:
    """scapy's raw fields for the same bytes (scapy keeps padding and reserved bytes)."""
    packet = DICOM(data)
    body = packet.payload
    out: dict[str, Any] = {"type": packet.pdu_type, "reserved": packet.reserved1}
    if data[0] in (1, 2):
        out.update(
            called=body.called_ae_title,
            calling=body.calling_ae_title,
            version=body.protocol_version,
            reserved_9_10=body.reserved1,
            reserved=body.reserved2,
            items=[_scapy_sub_item(item) for item in body.variable_items],
        )
    elif data[0] == 4:
        out["pdvs"] = [
            (v.context_id, v.is_command, v.is_last, v.reserved_bits, v.data) for v in body.pdv_items
        ]
    elif data[0] == 3:
        out["rj"] = (body.reserved1, body.result, body.source, body.reason_diag)
    elif data[0] == 7:
        out["abort"] = ((body.reserved1 << 8) | body.reserved2, body.source, body.reason_diag)
    else:
        out["release"] = body.reserved1
    return out


def _our_sub_item(item: Item | SubItem) -> tuple[Any, ...]:
    """Our item in scapy's shape: (type, reserved, raw field values...)."""
    raw = item.encode()
    kind = raw[0]
    if isinstance(item, ApplicationContextItem | ImplementationClassUIDSubItem):
        return (kind, raw[1], raw[4:])
    if isinstance(item, ImplementationVersionNameSubItem):
        return (kind, raw[1], raw[4:])
    if isinstance(item, MaximumLengthSubItem):
        return (kind, raw[1], item.maximum_length)
    if isinstance(item, AsynchronousOperationsWindowSubItem):
        return (kind, raw[1], item.invoked, item.performed)
    if isinstance(item, SCPSCURoleSelectionSubItem):
        return (kind, raw[1], item.sop_class_uid.encode("latin-1"), item.scu_role, item.scp_role)
    if isinstance(item, UserIdentityRQSubItem):
        return (
            kind,
            raw[1],
            item.user_identity_type,
            item.positive_response_requested,
            item.primary_field,
            item.secondary_field,
        )
    if isinstance(item, PresentationContextItemRQ | PresentationContextItemAC):
        subs = []
        off = 8
        while off < len(raw):
            length = struct.unpack_from(">H", raw, off + 2)[0]
            subs.append((raw[off], raw[off + 1], raw[off + 4 : off + 4 + length]))
            off += 4 + length
        return (kind, raw[1], raw[4], raw[5], raw[6], raw[7], tuple(subs))
    if isinstance(item, UserInformationItem):
        if len(item.sub_items) > 32:
            # scapy caps user-information sub-items at 32 (PacketListField max_count) and falls
            # back to Raw; PS3.7 D.3.3.4 allows one role selection per SOP class, without a
            # limit. The standard decides: we decode them all; compare the raw bytes here.
            return (kind, raw[1], "raw", raw[4:])
        return (kind, raw[1], tuple(_our_sub_item(sub) for sub in item.sub_items))
    raise AssertionError(f"no scapy comparison for {item!r}")


def ours_scapy_summary(pdu: PDU) -> dict[str, Any]:
    """Our raw fields in scapy's shape."""
    out: dict[str, Any] = {"type": pdu.pdu_type, "reserved": pdu.reserved_2}
    if isinstance(pdu, AAssociateRqPDU | AAssociateAcPDU):
        out.update(
            called=pdu.called_ae_title.encode("latin-1"),
            calling=pdu.calling_ae_title.encode("latin-1"),
            version=pdu.protocol_version,
            reserved_9_10=pdu.reserved_9_10,
            reserved=pdu.reserved,
            items=[_our_sub_item(item) for item in pdu.variable_items],
        )
    elif isinstance(pdu, PDataTfPDU):
        out["pdvs"] = [
            (
                v.context_id,
                v.control_header & 1,
                (v.control_header >> 1) & 1,
                v.control_header >> 2,
                bytes(v.fragment),
            )
            for v in pdu.data_value_items
        ]
    elif isinstance(pdu, AAssociateRjPDU):
        out["rj"] = (pdu.reserved, pdu.result, pdu.source, pdu.reason_diag)
    elif isinstance(pdu, AAbortPDU):
        out["abort"] = (pdu.reserved, pdu.source, pdu.reason_diag)
    else:
        out["release"] = pdu.reserved
    return out


def _scapy_items_fixup(summary: dict[str, Any]) -> dict[str, Any]:
    """scapy's user information item body is a list: flatten it like ours."""
    for index, item in enumerate(summary.get("items", [])):
        if item[0] == 0x50 and item[2] != "raw":
            summary["items"][index] = (item[0], item[1], item[2])
        elif item[0] in (0x20, 0x21):
            summary["items"][index] = (*item[:6], item[6])
    return summary


def assert_agree(data: bytes) -> PDU:
    """netdicom2, pynetdicom and scapy read the same fields from data."""
    ours = decode(data)
    assert ours.encode() == data
    assert ours_summary(ours) == pynetdicom_summary(data)
    assert ours_scapy_summary(ours) == _scapy_items_fixup(scapy_summary(data))
    return ours


# Hypothesis: valid PDUs that all three can read -----------------------------------------------

# pynetdicom validates AE titles (no backslash, not all spaces) and UIDs (pydicom warns on a
# trailing space); titles and UIDs here stay in what all three accept. NUL padding is covered.
ae = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=16,
)
uid = st.one_of(clean_uids, clean_uids.map(lambda u: u + "\x00"))
byte = st.integers(0, 255)
sub_items = st.lists(
    st.one_of(
        st.builds(SCPSCURoleSelectionSubItem, clean_uids, st.integers(0, 1), st.integers(0, 1)),
        st.builds(
            AsynchronousOperationsWindowSubItem, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)
        ),
        st.builds(
            UserIdentityRQSubItem,
            st.just(2),
            st.integers(0, 1),
            st.binary(min_size=1, max_size=8),
            st.binary(min_size=1, max_size=8),
        ),
    ),
    max_size=3,
)


@st.composite
def associate(draw: st.DrawFn, ac: bool) -> AAssociateRqPDU | AAssociateAcPDU:
    """RQ/AC with the sub-items pynetdicom and scapy both model."""
    ids = draw(
        st.lists(st.integers(0, 127).map(lambda i: 2 * i + 1), min_size=1, max_size=4, unique=True)
    )
    if ac:
        contexts: list[Item] = [
            PresentationContextItemAC(i, draw(st.integers(0, 4)), draw(uid)) for i in ids
        ]
    else:
        contexts = [
            PresentationContextItemRQ(i, draw(uid), draw(st.lists(uid, min_size=1, max_size=3)))
            for i in ids
        ]
    version = draw(st.one_of(st.none(), st.text("ABCXYZ_0123456789.", min_size=1, max_size=16)))
    info: list[SubItem] = [
        MaximumLengthSubItem(draw(st.integers(0, 0xFFFFFFFF))),
        ImplementationClassUIDSubItem(draw(clean_uids)),
    ]
    if version is not None:
        info.append(ImplementationVersionNameSubItem(version))
    info += draw(sub_items)
    items = [ApplicationContextItem(), *contexts, UserInformationItem(info)]
    cls = AAssociateAcPDU if ac else AAssociateRqPDU
    return cls(draw(ae), draw(ae), items, draw(st.sampled_from([1, 3])))


simple_pdus = st.one_of(
    st.builds(AAssociateRjPDU, st.integers(1, 2), st.integers(1, 3), st.integers(0, 10)),
    st.builds(
        PDataTfPDU,
        st.lists(
            st.builds(PresentationDataValueItem, byte, st.integers(0, 3), st.binary(max_size=32)),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(AReleaseRqPDU),
    st.builds(AReleaseRpPDU),
    st.builds(AAbortPDU, st.sampled_from([0, 2]), st.integers(0, 6)),
)


@given(st.one_of(associate(ac=False), associate(ac=True), simple_pdus))
def test_three_decoders_agree_on_valid_pdus(pdu: PDU) -> None:
    assert assert_agree(pdu.encode()) == pdu


def test_user_identity_secondary_length_is_always_present() -> None:
    # PS3.7 Table D.3-14 always carries the secondary-field-length (0000H unless type 2);
    # scapy 2.8 reads it only for type 2, so for type 1 it stops two bytes early. pynetdicom and
    # netdicom2 follow the standard.
    data = UserInformationItem([UserIdentityRQSubItem(1, 0, b"user")]).encode()
    assert data[4:] == bytes.fromhex("58 00 000A 01 00 0004") + b"user" + bytes.fromhex("0000")
    sub = pni.UserInformationItem()
    sub.decode(data)
    identity = sub.user_identity
    assert isinstance(identity, pni.UserIdentitySubItemRQ)
    assert (identity.primary_field, identity.secondary_field) == (b"user", b"")
    from scapy.contrib.dicom import DICOMVariableItem

    theirs = DICOMVariableItem(data[4:]).payload
    assert theirs.primary_field == b"user"
    assert "secondary_field_length" not in theirs.fields  # the standard's field is skipped


def test_space_padded_uid_is_kept_by_us_and_stripped_by_pynetdicom() -> None:
    # PS3.5 §9.1 forbids padding in network negotiation; peers still send it. We keep the wire
    # value and strip on request (PS3.8 Annex F [interp]); pynetdicom/pydicom warn about it.
    data = PresentationContextItemRQ(1, "1.2.3 ", ["1.2.4\x00"]).encode()
    theirs = pni.PresentationContextItemRQ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: invalid value for VR UI
        theirs.decode(data)
    assert (theirs.abstract_syntax, theirs.transfer_syntax) == ("1.2.3", ["1.2.4"])
    assert (strip_uid("1.2.3 "), strip_uid("1.2.4\x00")) == ("1.2.3", "1.2.4")


# Real captures (../shared/external-captures) ---------------------------------------------------

DICOM_PORTS = {104, 5158, 11112}


def _frame(stream: bytes) -> list[bytes]:
    """Whole PDUs of a stream; nothing may be left over."""
    framer = PDUFramer(max_pdata_length=0, max_other_length=0)
    pdus = [bytes(raw) for raw in framer.feed(stream)]
    assert framer.pending == 0
    return pdus


def _check_round_trip(pdus: list[bytes]) -> None:
    """Every PDU decodes, re-encodes byte for byte, and pynetdicom agrees on its fields."""
    assert pdus
    for data in pdus:
        pdu = decode(data)
        assert pdu.encode() == data
        assert decode(pdu.encode()) == pdu
        assert ours_summary(pdu) == pynetdicom_summary(data)


def test_profuzzbench_plain_seeds(external: Path) -> None:
    files = sorted((external / "seeds/profuzzbench/in-dicom").glob("*.raw"))
    assert len(files) == 4
    for path in files:
        pdus = _frame(path.read_bytes())
        _check_round_trip(pdus)
        assert [p[0] for p in pdus][-1] == 0x05  # each session ends with A-RELEASE-RQ
        # scapy can dissect these too (user information > 32 sub-items falls back to Raw).
        for data in pdus:
            assert ours_scapy_summary(decode(data)) == _scapy_items_fixup(scapy_summary(data))


def test_profuzzbench_replay_seeds(external: Path) -> None:
    # StateAFL format: 4-byte little-endian length, then that chunk of the TCP stream.
    for path in sorted((external / "seeds/profuzzbench/in-dicom-replay").glob("*.raw")):
        raw = path.read_bytes()
        framer = PDUFramer(max_pdata_length=0, max_other_length=0)
        pdus: list[bytes] = []
        off = 0
        while off < len(raw):
            (length,) = struct.unpack_from("<I", raw, off)
            pdus += [bytes(v) for v in framer.feed(raw[off + 4 : off + 4 + length])]
            off += 4 + length
        assert framer.pending == 0
        _check_round_trip(pdus)
        plain = (external / "seeds/profuzzbench/in-dicom" / path.name).read_bytes()
        assert b"".join(pdus) == plain


def test_dcm4che_associate_ac(external: Path) -> None:
    (path,) = sorted((external / "seeds/dcm4che").glob("*.bin"))
    data = path.read_bytes()
    pdu = assert_agree(data)
    assert isinstance(pdu, AAssociateAcPDU)
    # Two accepted contexts (1 and 3), 32768 max, syngo.via (seeds/README.md).
    assert [(pc.context_id, pc.result) for pc in pdu.presentation_context_items] == [(1, 0), (3, 0)]
    assert (pdu.max_length, pdu.implementation_version_name) == (32768, "syngo.via")
    assert pdu.implementation_class_uid == "1.3.12.2.1107.5.8.15.10.20090701"


def _tcp_streams(path: Path) -> dict[tuple[int, int], bytes]:
    """Naive reassembly: payloads of each DICOM-port direction, by sequence number, deduplicated."""
    segments: dict[tuple[int, int], dict[int, bytes]] = defaultdict(dict)
    for packet in rdpcap(str(path)):
        if TCP not in packet:
            continue
        tcp = packet[TCP]
        payload = bytes(tcp.payload)
        if payload and {tcp.sport, tcp.dport} & DICOM_PORTS:
            segments[(tcp.sport, tcp.dport)].setdefault(tcp.seq, payload)
    return {flow: b"".join(seg[s] for s in sorted(seg)) for flow, seg in segments.items()}


def test_pcaps(external: Path) -> None:
    paths = sorted((external / "pcaps").glob("*.pcap"))
    assert len(paths) == 10
    counts = {}
    for path in paths:
        total = 0
        for stream in _tcp_streams(path).values():
            pdus = _frame(stream)
            _check_round_trip(pdus)
            total += len(pdus)
        counts[path.name] = total
    # PDU counts per file from pcaps/MANIFEST.md (both directions).
    assert counts["profuzzbench_dicom_echo.pcap"] == 6
    assert counts["profuzzbench_dicom_get.pcap"] == 6
    assert counts["tapirx_dicom_arq_2_get_testclient.pcap"] == 1
    assert counts["tapirxl_synthetic_philips_demo.pcap"] == 5


@pytest.mark.parametrize("name", ["tapirx_dicom_arq_2_get_testclient.pcap"])
def test_rq_split_across_segments_has_492_transfer_syntaxes(external: Path, name: str) -> None:
    (stream,) = _tcp_streams(external / "pcaps" / name).values()
    (data,) = _frame(stream)
    pdu = decode(data)
    assert isinstance(pdu, AAssociateRqPDU)
    contexts = pdu.presentation_context_items
    assert (len(contexts), sum(len(pc.transfer_syntaxes) for pc in contexts)) == (123, 492)
