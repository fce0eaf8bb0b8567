"""Hostile length fields: memory follows the bytes received, never PDU-length (PS3.8 §9.3.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdicom2.connection import Connection, SendPDU
from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.framing import (
    DEFAULT_MAX_ASSOCIATE_LENGTH,
    MAX_FIXED_LENGTH,
    PDATA_STREAM_LENGTH,
    FramingError,
    PDUFramer,
)
from netdicom2.fsm import Action, Event, State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAbortPDU, PDataTfPDU, decode


def header(pdu_type: int, length: int) -> bytes:
    """A PDU header announcing ``length`` bytes (PS3.8 §9.3.1)."""
    return struct.pack(">BBI", pdu_type, 0, length)


def test_eight_bytes_do_not_buy_the_announced_body() -> None:
    # The attack: a header announcing (almost) the limit, then two bytes, on 1,000 connections.
    framers = [PDUFramer() for _ in range(1000)]
    for framer in framers:
        assert framer.feed(header(0x01, DEFAULT_MAX_ASSOCIATE_LENGTH) + b"\x00\x01") == []
    assert sum(f.reserved for f in framers) <= 1000 * 256  # not 1000 x 256 KiB
    assert all(f.pending == 8 for f in framers)


def test_a_body_sent_byte_at_a_time_holds_at_most_twice_what_arrived() -> None:
    framer = PDUFramer()
    data = header(0x01, 200_000) + bytes(200_000)
    for i in range(0, 150_000, 997):
        framer.feed(data[i : i + 997])
        assert framer.reserved <= max(2 * framer.pending, 256)


def test_an_associate_request_over_its_limit_is_refused_at_the_header() -> None:
    # Like DCMTK's "A-ASSOCIATE PDU too large": nothing of the body is kept (Evt19, reason 6).
    framer = PDUFramer()
    with pytest.raises(FramingError, match="PDU too large") as info:
        framer.feed(header(0x01, DEFAULT_MAX_ASSOCIATE_LENGTH + 1) + b"\x00\x01")
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert framer.reserved == 0


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
def test_fixed_length_pdus_are_bounded_by_their_own_small_limit(pdu_type: int) -> None:
    # PS3.8 Tables 9-21, 9-24..9-26: PDU-length 4. A little more is framed (decode refuses it,
    # keeping the stream in sync); past MAX_FIXED_LENGTH the header itself is refused.
    framed = header(pdu_type, 8) + bytes(8)
    assert [bytes(v) for v in PDUFramer().feed(framed)] == [framed]
    with pytest.raises(PDUDecodeError):
        PDUFramer().feed(header(pdu_type, MAX_FIXED_LENGTH + 1))


def test_an_unlimited_pdata_is_streamed_in_pieces_of_the_same_message() -> None:
    # max_pdata_length 0 (no maximum, PS3.8 Annex D.1): a 3 GB P-DATA-TF is not buffered whole.
    framer = PDUFramer(max_pdata_length=0, stream_length=PDATA_STREAM_LENGTH)
    announced = 3_000_000_000
    assert framer.feed(header(0x04, announced) + struct.pack(">IBB", announced - 4, 1, 0x02)) == []
    chunk = bytes(range(256)) * 256  # 64 KiB
    pieces: list[PDataTfPDU] = []
    peak = 0
    for _ in range(48):  # 3 MiB of the PDV
        for frame in framer.feed(chunk):
            pdu = decode(frame)
            assert isinstance(pdu, PDataTfPDU)
            pieces.append(pdu)
        peak = max(peak, framer.reserved)
    assert peak <= 2 * PDATA_STREAM_LENGTH
    assert len(pieces) == 3
    for pdu in pieces:
        [pdv] = pdu.data_value_items
        # PS3.8 E.2: the fragment continues: bit 1 (last) stays clear, bit 0 (data set) kept.
        assert (pdv.context_id, pdv.control_header) == (1, 0x00)
        assert len(pdv.fragment) == PDATA_STREAM_LENGTH
        assert bytes(pdv.fragment[:256]) == bytes(range(256))


def test_tools_get_every_pdu_whole_by_default() -> None:
    # stream_length 0 (the default): capture readers see each PDU as it was on the wire.
    big = PDataTfPDU([PresentationDataValueItem(1, 0x02, bytes(3 << 20))]).encode()
    framer = PDUFramer(max_pdata_length=0, max_other_length=0)
    out = []
    for i in range(0, len(big), 1 << 16):
        out += framer.feed(big[i : i + (1 << 16)])
    assert [bytes(v) for v in out] == [big]


def test_a_streamed_pdata_ends_with_the_last_bit_and_keeps_following_pdus() -> None:
    framer = PDUFramer(max_pdata_length=0, stream_length=1000)
    items = [
        PresentationDataValueItem(1, 0x03, bytes(2500)),
        PresentationDataValueItem(3, 0x00, b""),
        PresentationDataValueItem(3, 0x02, bytes(10)),
    ]
    big = PDataTfPDU(items).encode()
    release = header(0x05, 4) + bytes(4)
    stream = big + release
    frames = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    decoded = [decode(f) for f in frames]
    assert bytes(frames[-1]) == release
    pdvs = [p.data_value_items[0] for p in decoded[:-1]]  # type: ignore[union-attr]
    assert [(v.context_id, v.control_header, len(v.fragment)) for v in pdvs] == [
        (1, 0x01, 1000),
        (1, 0x01, 1000),
        (1, 0x03, 500),
        (3, 0x00, 0),
        (3, 0x02, 10),
    ]
    assert framer.pending == 0


@pytest.mark.parametrize(
    ("pdv", "reason"),
    [
        (struct.pack(">IBB", 1, 1, 2), "at least 2"),
        (struct.pack(">IBB", 5000, 1, 2), "overruns"),
        (struct.pack(">IBB", 2, 1, 2) + b"\x00\x00\x00", "truncated"),
    ],
)
def test_a_streamed_pdata_with_bad_pdv_items_is_refused(pdv: bytes, reason: str) -> None:
    # PS3.8 Table 9-23, as PDataTfPDU.decode: Evt19 with reason 6 (invalid parameter value).
    framer = PDUFramer(max_pdata_length=0, stream_length=8)
    body = pdv if reason == "truncated" else pdv + bytes(20 - len(pdv))
    with pytest.raises(FramingError, match=reason) as info:
        framer.feed(header(0x04, len(body)) + body)
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    with pytest.raises(FramingError):
        framer.feed(b"\x05")  # out of sync from then on


def test_an_oversized_request_in_sta2_is_aborted_at_once() -> None:
    # PS3.8 Table 9-10: Sta2 + Evt19 → AA-1 (A-ABORT, ARTIM, Sta13), after 8 bytes.
    conn = Connection(requestor=False)
    conn.transport_accepted(0.0)
    effects = conn.receive_bytes(header(0x01, 4 * 1024 * 1024 - 6) + b"\x00\x01", 0.0)
    assert conn.transcript[-1].event is Event.Evt19
    assert conn.transcript[-1].action is Action.AA_1
    assert conn.state is State.Sta13
    sent = [e.pdu for e in effects if isinstance(e, SendPDU)]
    assert len(sent) == 1 and isinstance(sent[0], AAbortPDU)
    assert conn.receive_bytes(bytes(1 << 16), 0.0) == []  # the rest is not buffered


def _messages(frames: list[memoryview]) -> list[tuple[int, int, bytes]]:
    """(context, command bit, bytes) of each PDV run ended by bit 1 (PS3.8 E.2)."""
    done, parts = [], []
    for frame in frames:
        pdu = decode(frame)
        assert isinstance(pdu, PDataTfPDU)
        for pdv in pdu.data_value_items:
            parts.append(bytes(pdv.fragment))
            if pdv.control_header & 2:
                done.append((pdv.context_id, pdv.control_header & 1, b"".join(parts)))
                parts = []
    return done


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    chunk=st.integers(1, 97),
    stream=st.integers(8, 64),
)
def test_streaming_delivers_the_same_messages_whatever_the_reads(
    sizes: list[int], chunk: int, stream: int
) -> None:
    # Pieces are a finer fragmentation of the same PDVs (PS3.8 E.1, E.2): joined by the last
    # bit they give exactly the messages of the P-DATA-TF framed whole.
    items = [
        PresentationDataValueItem(2 * i + 1, 0x02 | (i & 1), bytes([i]) * n)
        for i, n in enumerate(sizes)
    ]
    data = PDataTfPDU(items).encode() + PDataTfPDU(items[:1]).encode()
    whole = PDUFramer(max_pdata_length=0).feed(data)
    framer = PDUFramer(max_pdata_length=0, stream_length=stream)
    pieces: list[memoryview] = []
    for i in range(0, len(data), chunk):
        pieces += framer.feed(data[i : i + chunk])
    assert _messages(pieces) == _messages(whole)
    assert framer.pending == 0
