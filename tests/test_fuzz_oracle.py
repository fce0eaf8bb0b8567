"""The fuzz oracles themselves: the table transcription, the judge, the Table 9-10 matcher."""

from __future__ import annotations

import struct

import pytest

from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.check import receiver_frames
from netdicom2.fuzz.oracle import Frame, Observed, Policy, match, wire_kind
from netdicom2.fuzz.spec import csv_path, load_table, parse_csv, parse_embedded
from netdicom2.fuzz.strategies import setup_rq
from netdicom2.fuzz.validate import EITHER, INVALID, VALID, judge
from tests.shared import STATE_TABLE, require_shared

ABORT_USER = t.abort(0, 0).encode()
RELEASE_RQ = t.release_rq().encode()


def test_embedded_table_equals_the_projects_state_table_csv() -> None:
    path = csv_path() or require_shared(STATE_TABLE)  # csv_path honours NETDICOM2_STATE_TABLE
    assert parse_embedded() == parse_csv(path)
    assert len(load_table()) == 123  # PS3.8 Table 9-10: 123 defined cells


@pytest.mark.parametrize(
    ("data", "level"),
    [
        (setup_rq().encode(), VALID),
        (setup_rq(version=3).encode(), VALID),  # §9.3.2: only bit 0 is tested
        (RELEASE_RQ, VALID),
        (b"\x05\x00\x00\x00\x00\x06" + bytes(6), EITHER),  # Table 9-24: 4, no receiver rule
        (b"\x09\x00\x00\x00\x00\x04" + bytes(4), INVALID),  # §9.3.1: unknown PDU type
        (b"\x04\x00\x00\x00\x00\x00", INVALID),  # Table 9-22: no PDV
        (b"\x04\x00\x00\x00\x00\x05\x00\x00\x00\x01\x01", INVALID),  # PDV length < 2
        (b"\x07\x00\x00\x00\x00\x04\x00\x00\x05\x00", EITHER),  # Table 9-26: source 5
    ],
)
def test_the_judge_sorts_pdus_by_ps38(data: bytes, level: str) -> None:
    assert judge(data).level == level


def test_missing_user_information_is_invalid_and_unknown_items_are_valid() -> None:
    rq = setup_rq()
    rq.children = [c for c in rq.children if c.tag != 0x50]
    assert judge(rq.encode()).level == INVALID
    rq = setup_rq()
    rq.children.insert(1, t.sub_item(0x77, b"abc"))  # §9.3.1: skipped by its length
    assert judge(rq.encode()).level == VALID


def test_protocol_version_without_bit_0_requires_the_ae6_reject() -> None:
    frames = receiver_frames(
        [("rq", setup_rq(version=0).encode())], None, accepted=None, peer_max=None
    )
    rj = t.rj(1, 2, 2).encode()
    ok = Observed([wire_kind(rj)], "close", None, None)
    assert match("Sta2", frames, ok, Policy()).ok
    ac_instead = Observed(["AC"], "open", None, None)
    assert not match("Sta2", frames, ac_instead, Policy()).ok


def test_invalid_pdu_in_sta6_needs_a_provider_abort_and_an_a_p_abort() -> None:
    frames = [Frame(("Evt19",), "junk")]
    good = Observed(["ABORT(2,1)"], "close", ["A-P-ABORT"], "fin")
    assert match("Sta6", frames, good, Policy()).ok
    user_source = Observed(["ABORT(0,0)"], "close", ["A-P-ABORT"], "fin")
    assert not match("Sta6", frames, user_source, Policy()).ok
    silent_close = Observed([], "close", None, None)
    assert not match("Sta6", frames, silent_close, Policy()).ok


def test_sta2_unexpected_pdu_is_aa1_with_source_0_then_artim() -> None:
    frames = [Frame(("Evt12",), "release")]
    result = match("Sta2", frames, Observed(["ABORT(0,0)"], "close", None, None), Policy())
    assert result.ok and result.artim_close_state == "Sta13" and result.artim_ref == 0
    assert ("Evt12", "Sta2", "AA-1") in result.cells


def test_open_in_an_artim_state_after_the_deadline_is_a_hang() -> None:
    observed = Observed([], "open", None, None, artim_expired=True)
    assert not match("Sta2", [], observed, Policy()).ok
    observed.artim_expired = False
    assert match("Sta2", [], observed, Policy()).ok


def test_a_lying_length_swallows_the_next_pdu() -> None:
    release = bytearray(RELEASE_RQ)
    struct.pack_into(">I", release, 2, 14)  # swallows the A-ABORT that follows
    frames = receiver_frames(
        [("long", bytes(release)), ("abort", ABORT_USER)], None, accepted=None, peer_max=None
    )
    assert len(frames) == 1  # one 24-byte A-RELEASE-RQ: length not 4, either reading conforms
    assert set(frames[0].events) == {"Evt12", "Evt19"}


def test_incomplete_body_may_wait_or_be_refused_at_the_header() -> None:
    frames = receiver_frames(
        [("huge", b"\x04\x00\xff\xff\xff\xff")], None, accepted=None, peer_max=None
    )
    assert frames[0].events == ("-", "Evt19")


def test_a_target_open_past_its_artim_did_not_expire_it() -> None:
    # We lingered past ARTIM, then closed (Evt17): the close cannot be an ARTIM expiry.
    lingered = Observed([], "close", None, "fin", artim_expired=True)
    assert not match("Sta2", [], lingered, Policy()).ok
    assert match("Sta6", [], lingered, Policy()).ok  # no ARTIM in Sta6: waiting is right


def test_rejecting_a_version_1_request_as_protocol_version_not_supported_deviates() -> None:
    frames = [Frame(("Evt6",), "rq")]  # bit 0 set
    for rj, ok in (("RJ(1,2,2)", False), ("RJ(1,1,7)", True), ("RJ(2,3,1)", True)):
        assert match("Sta2", frames, Observed([rj], "close", None, "fin"), Policy()).ok is ok, rj
