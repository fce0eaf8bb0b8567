"""Property tests of the codec: round trips both ways, hostile bytes, chunking (PS3.8 §9.3)."""

from __future__ import annotations

import struct

from hypothesis import example, given
from hypothesis import strategies as st
from strategies_codec import chunkings, pdata_pdus, pdus

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.framing import Message, PDUFramer, Reassembler, fragment
from netdicom2.items import decode_item
from netdicom2.pdu import PDU, decode

_ABORT_REASONS = {
    AbortReason.NOT_SPECIFIED,
    AbortReason.UNRECOGNIZED_PDU,
    AbortReason.UNEXPECTED_PDU,
    AbortReason.UNRECOGNIZED_PDU_PARAMETER,
    AbortReason.UNEXPECTED_PDU_PARAMETER,
    AbortReason.INVALID_PDU_PARAMETER_VALUE,
}


def _decode_or_error(data: bytes) -> PDU | PDUDecodeError:
    """decode() must return a PDU or raise PDUDecodeError, nothing else (PS3.8 §9.3)."""
    try:
        return decode(data)
    except PDUDecodeError as error:
        assert error.abort_reason in _ABORT_REASONS
        assert 0 <= error.offset <= max(len(data), 6)
        return error


@given(pdus)
def test_round_trip_both_ways(pdu: PDU) -> None:
    data = pdu.encode()
    assert decode(data) == pdu
    assert decode(data).encode() == data
    assert decode(memoryview(data)).encode() == data
    assert decode(bytearray(data)) == pdu


@given(st.binary(max_size=300))
@example(b"")
@example(b"\x01")
@example(b"\x04\x00\x00\x00\x00\x00")
@example(b"\x01\x00\x00\x00\x00\x44" + bytes(68))
def test_random_bytes_decode_to_pdu_or_decode_error(data: bytes) -> None:
    result = _decode_or_error(data)
    if not isinstance(result, PDUDecodeError):
        # Whatever decode accepts, it reproduces byte for byte.
        assert result.encode() == data


@given(st.integers(1, 7), st.integers(0, 0xFF), st.binary(max_size=200))
def test_random_body_behind_a_valid_header(pdu_type: int, reserved: int, body: bytes) -> None:
    # A known type and a matching PDU-length, so decoding goes past the header checks.
    raw = bytes([pdu_type, reserved]) + struct.pack(">I", len(body)) + body
    result = _decode_or_error(raw)
    if not isinstance(result, PDUDecodeError):
        assert result.encode() == raw


@given(pdus, st.data())
def test_mutated_encodings_decode_to_pdu_or_error_and_round_trip(
    pdu: PDU, data: st.DataObject
) -> None:
    raw = bytearray(pdu.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and raw:
            raw[pos] = data.draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and raw:
            del raw[pos : pos + data.draw(st.integers(1, 4))]
        elif kind == "truncate":
            del raw[pos:]
    mutated = bytes(raw)
    result = _decode_or_error(mutated)
    if not isinstance(result, PDUDecodeError):
        assert result.encode() == mutated
        assert decode(result.encode()) == result
    # The same after fixing the PDU-length, which gets mutations past the header check.
    if len(mutated) >= 6:
        fixed = mutated[:2] + struct.pack(">I", len(mutated) - 6) + mutated[6:]
        result = _decode_or_error(fixed)
        if not isinstance(result, PDUDecodeError):
            assert result.encode() == fixed


@given(st.binary(max_size=80))
def test_decode_item_raises_only_decode_error(data: bytes) -> None:
    try:
        item = decode_item(data)
    except PDUDecodeError:
        return
    assert item.encode() == data


@given(st.lists(pdus, min_size=1, max_size=3), st.data())
def test_framing_any_chunking_agrees_with_one_chunk(items: list[PDU], data: st.DataObject) -> None:
    stream = b"".join(pdu.encode() for pdu in items)
    whole = [bytes(v) for v in PDUFramer(0, 0).feed(stream)]
    framer = PDUFramer(0, 0)
    chunked: list[bytes] = []
    for chunk in data.draw(chunkings(stream)):
        chunked += [bytes(v) for v in framer.feed(chunk)]
    assert whole == chunked == [pdu.encode() for pdu in items]
    assert framer.pending == 0
    assert [decode(raw) for raw in chunked] == items


@given(
    st.binary(max_size=600).map(lambda b: b + b"\x00" * (len(b) % 2)),
    st.binary(max_size=900).map(lambda b: b + b"\x00" * (len(b) % 2)),
    st.integers(8, 300),
    st.integers(1, 255),
)
def test_fragment_then_reassemble_gives_the_message_back(
    command_tail: bytes, dataset: bytes, max_pdu: int, context_id: int
) -> None:
    # A command set whose (0000,0800) says a data set follows (PS3.7 Table E.1-1).
    command = struct.pack("<HHIH", 0, 0x0800, 2, 0x0000) + command_tail
    reassembler = Reassembler()
    messages: list[Message] = []
    for is_command, part in ((True, command), (False, dataset)):
        for pdu in fragment(context_id, part, is_command=is_command, max_pdu_length=max_pdu):
            assert len(pdu.encode()) - 6 <= max_pdu
            assert all(len(pdv.fragment) % 2 == 0 for pdv in pdu.data_value_items)
            messages += reassembler.add(decode(pdu.encode()))  # type: ignore[arg-type]
    assert messages == [Message(context_id, command, dataset)]
    assert reassembler.pending == 0


@given(pdata_pdus)
def test_pdata_fragments_are_views_of_the_input(pdu: PDU) -> None:
    data = pdu.encode()
    decoded = decode(data)
    for pdv in decoded.data_value_items:  # type: ignore[union-attr]
        assert isinstance(pdv.fragment, memoryview)
        assert pdv.fragment.obj is data


@given(st.integers(0, 0xFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=120))
def test_framer_refuses_oversized_headers_and_frames_the_rest(
    pdu_type: int, length: int, body: bytes
) -> None:
    data = bytes([pdu_type, 0]) + struct.pack(">I", length) + body[:length]
    framer = PDUFramer(max_pdata_length=100, max_other_length=100)
    try:
        out = framer.feed(data)
    except PDUDecodeError as error:
        assert length > 100
        assert error.field == "PDU-length"
        assert framer.pending == 0  # refused before buffering anything
        return
    assert length <= 100
    complete = len(data) == 6 + length
    assert [bytes(v) for v in out] == ([data] if complete else [])
    assert framer.pending == (0 if complete else len(data))
