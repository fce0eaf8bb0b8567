"""Judging recorded connections against PS3.8 Table 9-10 (pcaps.model)."""

from __future__ import annotations

import csv
from pathlib import Path

from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.flows import DicomConnection, load_capture
from netdicom2.pcaps.model import TABLE_9_10, judge
from netdicom2.pcaps.replay_local import replay_local
from netdicom2.pdu import AAbortPDU, AAssociateRjPDU, AAssociateRqPDU, PDataTfPDU
from tests.pcaps_helpers import Conversation, echo_pdus, write
from tests.shared import STATE_TABLE, require_shared

SPEC_CSV = STATE_TABLE
GARBAGE = bytes.fromhex("09000000000400000000")


def _connection(tmp_path: Path, conv: Conversation) -> DicomConnection:
    """The only DICOM connection of the conversation's packets."""
    return load_capture(write(tmp_path / "c.pcap", conv.packets)).connections[0]


def _cells(conn: DicomConnection) -> list[str]:
    """ "side cell" of each finding."""
    return [f"{f.side} {f.cell}" for f in judge(conn).findings]


def test_transcription_has_the_123_defined_cells() -> None:
    assert len(TABLE_9_10) == 123


def test_transcription_matches_the_shared_state_table() -> None:
    with require_shared(SPEC_CSV).open() as handle:
        rows = {
            (int(r["event"][3:]), int(r["state"][3:])): r["action"]
            for r in csv.DictReader(handle)
            if r["action"] != "-"
        }
    assert rows == TABLE_9_10


def test_conforming_session_has_no_finding_and_classifies_closes(tmp_path: Path) -> None:
    conv = Conversation()
    conv.echo_session()
    judgement = judge(_connection(tmp_path, conv))
    assert judgement.findings == []
    closes = [s.close for s in judgement.steps if s.close]
    assert closes == ["owed", "reaction"]  # AR-3 closes, then Evt17/Sta13 -> AR-5
    assert judgement.steps[0].peer_action == "AE-6"


def test_acceptor_closing_first_in_sta13_is_artim(tmp_path: Path) -> None:
    rq, ac, _, _, rel_rq, rel_rp = echo_pdus()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, rel_rq), (1, rel_rp)):
        conv.send(side, pdu)
    conv.fin(1)
    conv.fin(0)
    judgement = judge(_connection(tmp_path, conv))
    assert judgement.findings == []
    assert [s.close for s in judgement.steps if s.close] == ["timer", "owed"]


def test_pipelined_pdata_is_held_until_the_ac(tmp_path: Path) -> None:
    rq, ac, echo, answer, rel_rq, rel_rp = echo_pdus()
    conv = Conversation()
    conv.handshake()
    conv.send(0, rq + echo)  # the C-ECHO-RQ rides with the RQ, before the AC
    for side, pdu in ((1, ac), (1, answer), (0, rel_rq), (1, rel_rp)):
        conv.send(side, pdu)
    conv.fin(0)
    conv.fin(1)
    conn = _connection(tmp_path, conv)
    assert _cells(conn) == ["requestor Evt9/Sta5"]
    steps = judge(conn).steps
    order = [(s.side, s.event.record.pdu_type) for s in steps if s.event.record]
    assert order[:3] == [("requestor", 1), ("acceptor", 2), ("requestor", 4)]
    assert steps[2].deferred and steps[2].conforming


def test_closing_in_sta6_without_release_is_a_finding(tmp_path: Path) -> None:
    rq, ac, echo, answer, *_ = echo_pdus()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, echo), (1, answer)):
        conv.send(side, pdu)
    conv.fin(0)
    conv.fin(1)
    assert _cells(_connection(tmp_path, conv)) == ["requestor Sta6"]


def test_unknown_pdu_answered_by_a_user_abort_breaks_aa8(tmp_path: Path) -> None:
    rq, ac, *_ = echo_pdus()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, GARBAGE), (1, AAbortPDU(source=0).encode())):
        conv.send(side, pdu)
    conv.fin(1)
    conv.fin(0)
    assert _cells(_connection(tmp_path, conv)) == ["requestor §9.3", "acceptor Evt19/Sta6 AA-8"]


def test_unknown_pdu_answered_by_a_provider_abort_conforms(tmp_path: Path) -> None:
    rq, ac, *_ = echo_pdus()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, GARBAGE), (1, AAbortPDU(2, 1).encode())):
        conv.send(side, pdu)
    conv.fin(0)
    conv.fin(1)
    judgement = judge(_connection(tmp_path, conv))
    assert [f.side for f in judgement.findings] == ["requestor"]
    abort = judgement.steps[3]
    assert abort.origin == "provider" and abort.expected_abort_source == 2 and abort.conforming


def test_unprompted_provider_abort_source_is_a_finding(tmp_path: Path) -> None:
    rq, ac, *_ = echo_pdus()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, AAbortPDU(source=2).encode())):
        conv.send(side, pdu)
    conv.fin(1)
    conv.fin(0)
    assert _cells(_connection(tmp_path, conv)) == ["requestor Evt15/Sta6 AA-1"]


def test_pdata_over_the_announced_maximum_is_a_finding(tmp_path: Path) -> None:
    rq, ac, *_ = echo_pdus()  # both sides announce 16384
    big = PDataTfPDU([PresentationDataValueItem(1, 0, bytes(20000))]).encode()
    conv = Conversation()
    conv.handshake()
    for side, pdu in ((0, rq), (1, ac), (0, big), (1, AAbortPDU(2, 6).encode())):
        conv.send(side, pdu)
    conv.fin(0)
    conv.fin(1)
    assert _cells(_connection(tmp_path, conv)) == ["requestor Annex D.1"]


def test_capture_starting_mid_association_is_not_judged(tmp_path: Path) -> None:
    conv = Conversation()
    conv.echo_session()
    conv.packets = conv.packets[5:]  # no SYN, no RQ
    judgement = judge(_connection(tmp_path, conv))
    assert not judgement.judged and "A-ASSOCIATE-RQ" in judgement.reason


def test_protocol_version_rejection_is_the_providers_and_replays(tmp_path: Path) -> None:
    rq = AAssociateRqPDU.decode(echo_pdus()[0])
    rq.protocol_version = 0x0002  # bit 0 clear: AE-6 rejects, RJ 1/2/2, no indication
    conv = Conversation()
    conv.handshake()
    conv.send(0, rq.encode())
    conv.send(1, AAssociateRjPDU(result=1, source=2, reason_diag=2).encode())
    conv.fin(0)
    conv.fin(1)
    conn = _connection(tmp_path, conv)
    judgement = judge(conn)
    assert judgement.findings == []
    assert judgement.steps[0].peer_action == "AE-6 reject"
    assert judgement.steps[1].origin == "provider"
    for role in ("scp", "scu"):
        result = replay_local(conn, role, step_timeout=2.0)
        assert result.ok and result.differences == [], (role, result.differences)
