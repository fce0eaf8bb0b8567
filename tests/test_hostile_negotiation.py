"""Bounded negotiation: at most 128 presentation contexts, odd IDs used once (PS3.8 §9.3.2.2)."""

from __future__ import annotations

import struct
import time

from netdicom2.acse import MAX_PRESENTATION_CONTEXTS, build_rq, check_request, negotiate
from netdicom2.connection import Connection, Indicate, SendPDU
from netdicom2.framing import DEFAULT_MAX_ASSOCIATE_LENGTH
from netdicom2.fsm import Action, Event, State
from netdicom2.items import PresentationContextItemRQ
from netdicom2.pdu import AAbortPDU, AAssociateAcPDU, AAssociateRqPDU

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"


def request(ids: list[int]) -> AAssociateRqPDU:
    """An A-ASSOCIATE-RQ proposing Verification once per ID, in that order."""
    rq = build_rq("ANY-SCP", "HOSTILE", [(VERIFICATION, [IMPLICIT])])
    app, _, info = rq.variable_items
    contexts = [PresentationContextItemRQ(i, VERIFICATION, [IMPLICIT]) for i in ids]
    return AAssociateRqPDU("ANY-SCP", "HOSTILE", [app, *contexts, info])


def test_odd_unique_ids_up_to_128_are_a_valid_request() -> None:
    ids = list(range(1, 256, 2))
    assert len(ids) == MAX_PRESENTATION_CONTEXTS
    assert check_request(request(ids).encode()) is None


def test_even_repeated_or_129th_ids_are_invalid() -> None:
    assert "even" in str(check_request(request([1, 4]).encode()))
    assert "twice" in str(check_request(request([1, 3, 1]).encode()))
    # 129 contexts cannot all have distinct odd one-byte IDs: the 129th repeats one.
    assert "twice" in str(check_request(request([*range(1, 256, 2), 7]).encode()))


def test_a_request_of_many_small_items_is_refused_after_a_bounded_scan() -> None:
    # 256 KiB of empty unknown items would be 65,000 objects to decode: refused at item 257,
    # whatever the length (16 MiB here would take a full scan about a second).
    for size in (DEFAULT_MAX_ASSOCIATE_LENGTH, 16 << 20):
        data = struct.pack(">BBI", 1, 0, size) + bytes(size)
        start = time.perf_counter()
        assert "variable items" in str(check_request(data))
        assert time.perf_counter() - start < 0.05
    assert check_request(request([1, 3]).encode()) is None


def big_request_all_id_1() -> bytes:
    """The issue's attack within the length limit: thousands of contexts, all ID 1."""
    one = request([1]).encode()
    pc = request([1]).presentation_context_items[0].encode()
    count = (DEFAULT_MAX_ASSOCIATE_LENGTH - len(one)) // len(pc)
    data = request([1] * count).encode()
    assert len(data) <= DEFAULT_MAX_ASSOCIATE_LENGTH
    return data


def test_a_malformed_request_is_aborted_not_indicated_and_cheaply() -> None:
    # PS3.8 Table 9-10: Sta2 + Evt19 → AA-1 (A-ABORT), then Sta13: no
    # A-ASSOCIATE indication, so no A-ASSOCIATE-AC of thousands of contexts.
    data = big_request_all_id_1()
    conn = Connection(requestor=False)
    conn.transport_accepted(0.0)
    start = time.perf_counter()
    effects = conn.receive_bytes(data, 0.0)
    elapsed = time.perf_counter() - start
    assert not [e for e in effects if isinstance(e, Indicate)]
    [sent] = [e.pdu for e in effects if isinstance(e, SendPDU)]
    assert isinstance(sent, AAbortPDU)
    # AA-1 literally: source 0 (service-user), reason byte 00H (PS3.8 §9.2, Table 9-7).
    assert (sent.source, sent.reason_diag) == (0, 0)
    step = conn.transcript[-1]
    assert (step.event, step.action, conn.state) == (Event.Evt19, Action.AA_1, State.Sta13)
    assert elapsed < 0.05, f"{elapsed * 1000:.1f} ms to refuse one request"


def test_negotiate_answers_each_valid_id_once_so_the_ac_stays_bounded() -> None:
    rq = AAssociateRqPDU.decode(big_request_all_id_1())
    ac, accepted = negotiate(rq)
    assert isinstance(ac, AAssociateAcPDU)
    assert [c.context_id for c in ac.presentation_context_items] == [1]
    assert [c.context_id for c in accepted] == [1]
    ac, _ = negotiate(request([*range(1, 256, 2), 2, 3]))
    assert isinstance(ac, AAssociateAcPDU)
    assert len(ac.presentation_context_items) == MAX_PRESENTATION_CONTEXTS
    assert len(ac.encode()) < 16 * 1024


def test_thousands_of_transfer_syntaxes_cost_linear_time() -> None:
    rq = request([1])
    many = [f"1.2.3.{i}" for i in range(10_000)]
    rq.variable_items[1] = PresentationContextItemRQ(1, VERIFICATION, [*many, IMPLICIT])
    start = time.perf_counter()
    _, accepted = negotiate(rq)
    assert time.perf_counter() - start < 0.2
    assert [c.transfer_syntax for c in accepted] == [IMPLICIT]
