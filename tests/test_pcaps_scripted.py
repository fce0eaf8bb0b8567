"""The scripted peer both live replays share: its plan, its excuses, the A-ASSOCIATE comparison."""

from __future__ import annotations

from pathlib import Path

from netdicom2.items import (
    ApplicationContextItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
)
from netdicom2.pcaps.compare import compare_pdus
from netdicom2.pcaps.corpus import corpus_entries
from netdicom2.pcaps.flows import DicomConnection, load_capture
from netdicom2.pcaps.model import Finding
from netdicom2.pcaps.plan import Difference
from netdicom2.pcaps.scripted import Item, excuse, plan
from netdicom2.pdu import AAssociateAcPDU, AAssociateRqPDU

BY_NAME = {Path(e["file"]).stem: e for e in corpus_entries()}
APP = ApplicationContextItem("1.2.840.10008.3.1.1.1")
REFUSED = PresentationContextItemAC(3, 3, None)  # abstract syntax not supported (Table 9-18)
CT, IMPLICIT, EXPLICIT = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def _connection(name: str) -> DicomConnection:
    entry = BY_NAME[name]
    return load_capture(entry["path"], [entry["port"]]).connections[0]


def _shape(items: list[Item]) -> list[tuple[str, int, bool]]:
    return [(i.kind, len(i.records), i.flexible) for i in items]


def test_plan_of_the_requestor_sends_every_pdu_and_expects_messages() -> None:
    # >RQ <AC >P >P >P <P >RELEASE-RQ <RELEASE-RP >FIN <FIN
    timeline = _connection("dcmtk_storescu_storescp_pdu4k").timeline()
    assert _shape(plan(timeline, "requestor")) == [
        ("send", 1, False),
        ("expect", 1, False),
        ("send", 1, False),
        ("send", 1, False),
        ("send", 1, False),
        ("pdata", 1, False),
        ("send", 1, False),
        ("expect", 1, False),
        ("close", 0, False),
        ("eof", 0, True),  # after its A-RELEASE-RP the acceptor may close first (Sta13)
    ]


def test_plan_of_the_acceptor_sends_p_data_per_block_and_expects_the_requestor() -> None:
    timeline = _connection("dcmtk_storescu_storescp_pdu4k").timeline()
    assert _shape(plan(timeline, "acceptor", pdata_messages=True)) == [
        ("expect", 1, False),
        ("send", 1, False),
        ("pdata", 3, False),
        ("sendpdata", 1, False),
        ("expect", 1, False),
        ("send", 1, False),
        ("eof", 0, False),
        ("close", 0, False),
    ]


def test_plan_does_not_expect_what_did_not_decode() -> None:
    # >0x09 <A-ABORT >FIN <FIN: the requestor's unknown PDU is sent as recorded; seen from
    # the acceptor's side it is not expected (nothing to compare it with)
    timeline = _connection("ugly_unknown_pdu_type_sta2").timeline()
    assert [i.kind for i in plan(timeline, "requestor")] == ["send", "expect", "close", "eof"]
    assert [i.kind for i in plan(timeline, "acceptor")] == ["send", "eof", "close"]


def test_a_finding_excuses_what_follows_it_before_any_ignore_rule() -> None:
    timeline = _connection("dcmtk_storescu_storescp_pdu4k").timeline()
    finding = Finding("requestor", timeline[2].time, "cell", "left PS3.8 here")
    before = Difference(1, "user information 51H", "a", "b")
    after = Difference(3, "user information 51H", "a", "b")
    other = Difference(1, "context 1 result", "0", "3")
    excuse([before, after, other], timeline, [finding], ["max-length"])
    assert after.excused_by == "left PS3.8 here"
    assert before.excused_by == "--ignore max-length"
    assert other.excused_by is None


def _rq(called: str, contexts: list[PresentationContextItemRQ]) -> AAssociateRqPDU:
    return AAssociateRqPDU(called, "SCU", [APP, *contexts])


def _ac(contexts: list[PresentationContextItemAC]) -> AAssociateAcPDU:
    return AAssociateAcPDU("ANY", "ECHOED", [APP, *contexts])


def test_request_fields_titles_and_proposed_syntaxes_in_order() -> None:
    recorded = _rq("PACS", [PresentationContextItemRQ(1, CT, [EXPLICIT, IMPLICIT])])
    live = _rq("PACS  ", [PresentationContextItemRQ(1, CT, [IMPLICIT, EXPLICIT])])
    assert [d[0] for d in compare_pdus(recorded, live)] == ["context 1 transfer syntax"]
    other = _rq("OTHER", [PresentationContextItemRQ(1, "1.2.3", [EXPLICIT, IMPLICIT])])
    assert [d[0] for d in compare_pdus(recorded, other)] == [
        "called AE title",
        "context 1 abstract syntax",
    ]


def test_accept_fields_result_and_only_an_accepted_transfer_syntax() -> None:
    recorded = _ac([PresentationContextItemAC(1, 0, EXPLICIT), REFUSED])
    echo = AAssociateAcPDU("OTHER", "TITLES", recorded.variable_items)
    assert compare_pdus(recorded, echo) == []  # AE titles of the AC echo the RQ: not compared
    live = _ac([PresentationContextItemAC(1, 0, IMPLICIT), PresentationContextItemAC(3, 3, CT)])
    assert [d[0] for d in compare_pdus(recorded, live)] == ["context 1 transfer syntax"]
    refused = _ac([PresentationContextItemAC(1, 4, IMPLICIT), REFUSED])
    assert compare_pdus(recorded, refused) == [("context 1 result", "0", "4")]
