"""Framing of the byte stream, fragmentation and reassembly (PS3.8 §9.1.3, Annex D.1, E)."""

from __future__ import annotations

import struct
import time

import pytest

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.framing import (
    UNLIMITED_FRAGMENT_SIZE,
    FramingError,
    Message,
    PDUFramer,
    Reassembler,
    command_has_dataset,
    fragment,
)
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import PDataTfPDU, decode

RELEASE_RQ = bytes.fromhex("05 00 00000004 00000000")
ABORT = bytes.fromhex("07 00 00000004 00 00 02 02")


def pdata(length: int) -> bytes:
    """A P-DATA-TF whose PDU-length is ``length`` (one PDV)."""
    return PDataTfPDU([PresentationDataValueItem(1, 2, bytes(length - 6))]).encode()


# PDUFramer -----------------------------------------------------------------------------------


def test_several_pdus_in_one_chunk_are_zero_copy_slices() -> None:
    chunk = RELEASE_RQ + ABORT + RELEASE_RQ
    out = PDUFramer().feed(chunk)
    assert [bytes(v) for v in out] == [RELEASE_RQ, ABORT, RELEASE_RQ]
    assert all(v.obj is chunk for v in out)


def test_header_split_across_chunks() -> None:
    framer = PDUFramer()
    assert framer.feed(ABORT[:2]) == []
    assert framer.pending == 2
    assert framer.feed(ABORT[2:5]) == []
    assert framer.pending == 5
    assert [bytes(v) for v in framer.feed(ABORT[5:] + RELEASE_RQ[:6])] == [ABORT]
    assert framer.pending == 6
    assert [bytes(v) for v in framer.feed(RELEASE_RQ[6:])] == [RELEASE_RQ]
    assert framer.pending == 0


def test_empty_feed_and_zero_length_pdu() -> None:
    framer = PDUFramer()
    assert framer.feed(b"") == []
    # A PDU-length of 0 is framed (6 bytes); decoding it is another matter.
    assert [bytes(v) for v in framer.feed(b"\x05\x00\x00\x00" + b"\x00\x00")] == [
        bytes.fromhex("05 00 00000000")
    ]
    framer.feed(b"\x05\x00\x00")
    assert [bytes(v) for v in framer.feed(b"\x00\x00\x00")] == [bytes.fromhex("05 00 00000000")]


def test_mutable_input_is_copied() -> None:
    buffer = bytearray(RELEASE_RQ + ABORT[:4])
    framer = PDUFramer()
    out = framer.feed(buffer)
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer
    assert [bytes(v) for v in out] == [RELEASE_RQ]
    assert [bytes(v) for v in framer.feed(memoryview(ABORT[4:]))] == [ABORT]


def test_hostile_length_refused_right_after_the_header() -> None:
    # A peer announcing 0xFFFFFFF0 must not make us reserve it: refused on the 6th byte.
    framer = PDUFramer()
    header = bytes.fromhex("01 00 FFFFFFF0")
    assert framer.feed(header[:5]) == []
    with pytest.raises(PDUDecodeError) as info:
        framer.feed(header[5:] + bytes(100))
    assert (info.value.pdu_type, info.value.offset, info.value.field) == (1, 2, "PDU-length")
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    # The stream is out of sync: every later call fails the same way.
    with pytest.raises(PDUDecodeError, match="exceeds the limit"):
        framer.feed(RELEASE_RQ)


def test_pdus_before_a_refused_header_are_handed_over_with_the_error() -> None:
    # PS3.8 Table 9-10 handles events in arrival order: the A-RELEASE-RQ and A-ABORT that came
    # first in the chunk are not lost when the header after them is refused.
    framer = PDUFramer(max_other_length=100)
    with pytest.raises(FramingError) as info:
        framer.feed(RELEASE_RQ + ABORT + bytes.fromhex("01 00 00000200"))
    assert isinstance(info.value, PDUDecodeError)
    assert [bytes(v) for v in info.value.frames] == [RELEASE_RQ, ABORT]
    with pytest.raises(FramingError) as info:
        framer.feed(RELEASE_RQ)
    assert info.value.frames == []


def test_pdata_limit_is_the_announced_maximum_length() -> None:
    # PS3.8 Annex D.1: a P-DATA-TF whose PDU-length exceeds our maximum is a protocol error.
    assert [bytes(v) for v in PDUFramer(max_pdata_length=100).feed(pdata(100))] == [pdata(100)]
    with pytest.raises(PDUDecodeError) as info:
        PDUFramer(max_pdata_length=100).feed(pdata(101)[:6])
    assert info.value.pdu_type == 4
    # Other PDU types are bounded by max_other_length, not by the P-DATA maximum.
    big_rq = bytes.fromhex("01 00 00000200") + bytes(0x200)
    assert len(PDUFramer(max_pdata_length=100, max_other_length=0x200).feed(big_rq)) == 1
    with pytest.raises(PDUDecodeError):
        PDUFramer(max_pdata_length=100, max_other_length=0x1FF).feed(big_rq)


def test_zero_means_unlimited() -> None:
    framer = PDUFramer(max_pdata_length=0, max_other_length=0)
    assert framer.feed(bytes.fromhex("04 00 FFFFFFFF") + b"\x00") == []
    assert framer.pending == 7 and framer.reserved == 256  # nothing buffered up front


def test_unknown_pdu_types_are_framed_by_length() -> None:
    # The core turns them into Evt19 (PS3.8 §9.2: unrecognized PDU); framing keeps the sync.
    unknown = bytes.fromhex("0A 00 00000002 ABCD")
    framer = PDUFramer(max_other_length=4)
    assert [bytes(v) for v in framer.feed(unknown + RELEASE_RQ)] == [unknown, RELEASE_RQ]
    with pytest.raises(PDUDecodeError) as info:
        PDUFramer(max_other_length=1).feed(unknown)
    assert info.value.abort_reason == AbortReason.UNRECOGNIZED_PDU


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_pdata_length"):
        PDUFramer(max_pdata_length=-1)
    with pytest.raises(ValueError, match="max_other_length"):
        PDUFramer(max_other_length=1 << 32)


def test_feeding_is_linear_in_the_stream_size() -> None:
    # 2 MiB in 64-byte chunks: a framer that re-joined or re-sliced its growing buffer on every
    # call would copy ~32 GiB here; the linear one copies each byte about twice.
    data = pdata(2 << 20)
    framer = PDUFramer(max_pdata_length=0)
    start = time.perf_counter()
    out = []
    for i in range(0, len(data), 64):
        out += framer.feed(data[i : i + 64])
    elapsed = time.perf_counter() - start
    assert [bytes(v) for v in out] == [data]
    assert elapsed < 2.0, f"{elapsed:.2f} s for {len(data) // 64} feeds"


# fragment ------------------------------------------------------------------------------------


def _fragments(pdus: list[PDataTfPDU]) -> list[tuple[int, int, bytes]]:
    """(context, control, fragment) of every PDV."""
    return [
        (pdv.context_id, pdv.control_header, bytes(pdv.fragment))
        for pdu in pdus
        for pdv in pdu.data_value_items
    ]


def test_fragment_respects_the_maximum_length_and_sets_the_last_bit() -> None:
    data = bytes(range(20))
    pdus = list(fragment(3, data, is_command=True, max_pdu_length=14))
    # max 14 - 6 = 8 payload bytes per PDV (PS3.8 Annex D.1, one PDV per PDU).
    assert _fragments(pdus) == [(3, 0x01, data[:8]), (3, 0x01, data[8:16]), (3, 0x03, data[16:])]
    assert all(len(pdu.encode()) - 6 <= 14 for pdu in pdus)
    pdus = list(fragment(5, data, is_command=False, max_pdu_length=15))
    # 15 - 6 = 9, rounded down to even (PS3.8 Annex E.1: fragments have even length).
    assert _fragments(pdus) == [(5, 0x00, data[:8]), (5, 0x00, data[8:16]), (5, 0x02, data[16:])]


def test_fragment_exact_multiple_and_single_fragment() -> None:
    data = bytes(16)
    assert [
        c for _, c, _ in _fragments(list(fragment(1, data, is_command=False, max_pdu_length=14)))
    ] == [0, 2]
    assert _fragments(list(fragment(1, data, is_command=True, max_pdu_length=100))) == [
        (1, 3, data)
    ]


def test_fragment_empty_data_and_unlimited() -> None:
    assert _fragments(list(fragment(1, b"", is_command=False, max_pdu_length=100))) == [(1, 2, b"")]
    data = bytes(UNLIMITED_FRAGMENT_SIZE + 2)
    pdus = list(fragment(1, data, is_command=False, max_pdu_length=0))
    assert [len(p.data_value_items[0].fragment) for p in pdus] == [UNLIMITED_FRAGMENT_SIZE, 2]
    with pytest.raises(ValueError, match="no room"):
        list(fragment(1, data, is_command=False, max_pdu_length=7))


def test_fragments_are_views_of_the_data() -> None:
    data = bytes(100)
    pdus = list(fragment(1, memoryview(data), is_command=False, max_pdu_length=56))
    views = [pdv.fragment for pdu in pdus for pdv in pdu.data_value_items]
    assert all(isinstance(v, memoryview) and v.obj is data for v in views)


# Reassembler ---------------------------------------------------------------------------------


def command(data_set_type: int, tail: bytes = b"") -> bytes:
    """A command set: (0000,0000) group length, (0000,0800) Command Data Set Type (PS3.7 E.1)."""
    return (
        struct.pack("<HHII", 0, 0x0000, 4, 10)
        + struct.pack("<HHIH", 0, 0x0800, 2, data_set_type)
        + tail
    )


def pdv_pdu(*pdvs: tuple[int, int, bytes]) -> PDataTfPDU:
    """A P-DATA-TF from (context, control, fragment) triples."""
    return PDataTfPDU([PresentationDataValueItem(*pdv) for pdv in pdvs])


def test_command_without_data_set_completes_at_once() -> None:
    cmd = command(0x0101)
    assert Reassembler().add(pdv_pdu((1, 3, cmd))) == [Message(1, cmd, None)]


def test_command_and_data_set_over_several_pdus() -> None:
    cmd = command(0x0000)
    reassembler = Reassembler()
    assert reassembler.add(pdv_pdu((7, 1, cmd[:6]))) == []
    assert reassembler.add(pdv_pdu((7, 3, cmd[6:]), (7, 0, b"ab"))) == []
    assert reassembler.pending == len(cmd) + 2
    assert reassembler.add(pdv_pdu((7, 2, b"cd"))) == [Message(7, cmd, b"abcd")]
    assert reassembler.pending == 0


def test_two_messages_in_one_pdu_are_accepted() -> None:
    cmd = command(0x0101)
    assert Reassembler().add(pdv_pdu((1, 3, cmd), (3, 3, cmd))) == [
        Message(1, cmd, None),
        Message(3, cmd, None),
    ]


@pytest.mark.parametrize(
    ("pdvs", "match", "abort_reason"),
    [
        ([(1, 0, b"ds")], "without a command set", 5),
        ([(1, 1, b"cm"), (1, 0, b"ds")], "before the last command fragment", 5),
        ([(1, 1, b"cm"), (3, 1, b"cm")], "inside a message on context 1", 5),
        ([(1, 3, command(0)), (1, 1, b"cm")], "after the command set ended", 5),
        ([(1, 3, command(0)), (3, 2, b"ds")], "inside a message on context 1", 5),
        ([(1, 3, b"\x00" * 8)], "Command Data Set Type", 6),
        ([(1, 3, struct.pack("<HHI", 0, 0x0800, 4) + bytes(4))], "Command Data Set Type", 6),
        ([(1, 3, struct.pack("<HHIH", 8, 0x0800, 2, 0))], "Command Data Set Type", 6),
    ],
)
def test_protocol_errors_raise_and_reset(
    pdvs: list[tuple[int, int, bytes]], match: str, abort_reason: int
) -> None:
    reassembler = Reassembler()
    with pytest.raises(PDUDecodeError, match=match) as info:
        for pdv in pdvs:
            reassembler.add(pdv_pdu(pdv))
    assert info.value.abort_reason == abort_reason
    assert reassembler.pending == 0
    cmd = command(0x0101)
    assert reassembler.add(pdv_pdu((1, 3, cmd))) == [Message(1, cmd, None)]


def test_context_restriction_and_size_bound() -> None:
    with pytest.raises(PDUDecodeError, match="not accepted") as info:
        Reassembler(contexts={1, 3}).add(pdv_pdu((5, 3, command(0x0101))))
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    reassembler = Reassembler(max_message_size=30)
    reassembler.add(pdv_pdu((1, 3, command(0))))
    with pytest.raises(PDUDecodeError, match="larger than 30") as info:
        reassembler.add(pdv_pdu((1, 0, bytes(20))))
    assert info.value.abort_reason == AbortReason.NOT_SPECIFIED


def test_custom_data_set_predicate() -> None:
    reassembler = Reassembler(has_dataset=lambda cmd: cmd == b"DS")
    assert reassembler.add(pdv_pdu((1, 3, b"NO"))) == [Message(1, b"NO", None)]
    assert reassembler.add(pdv_pdu((1, 3, b"DS"), (1, 2, b"x"))) == [Message(1, b"DS", b"x")]


def test_command_has_dataset_skips_earlier_elements() -> None:
    assert command_has_dataset(command(0x0102, b"\x00" * 4)) is True
    assert command_has_dataset(command(0x0101)) is False
    assert command_has_dataset(command(0xFEFE)) is True


def test_round_trip_through_encode_decode_and_framer() -> None:
    cmd, dataset = command(0), bytes(range(256)) * 3
    stream = b"".join(
        p.encode()
        for is_cmd, part in ((True, cmd), (False, dataset))
        for p in fragment(1, part, is_command=is_cmd, max_pdu_length=64)
    )
    framer, reassembler = PDUFramer(max_pdata_length=64), Reassembler()
    messages = []
    for i in range(0, len(stream), 50):
        for raw in framer.feed(stream[i : i + 50]):
            messages += reassembler.add(decode(raw))  # type: ignore[arg-type]
    assert messages == [Message(1, cmd, dataset)]


def test_a_large_pdu_is_received_in_place_through_body_buffer() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB
    pdu = PDataTfPDU([PresentationDataValueItem(1, 0x02, payload)]).encode()
    framer = PDUFramer(max_pdata_length=1 << 20)
    assert framer.feed(pdu[:1000]) == [] and framer.body_buffer() is None  # too little arrived
    assert framer.feed(pdu[1000:70000]) == []
    assert framer.body_buffer(1 << 20) is None  # less than that is missing
    buffer = framer.body_buffer()
    # The room offered is what arrived (the buffer doubles), not the announced rest.
    assert buffer is not None and len(buffer) == 70000
    buffer[:5000] = pdu[70000:75000]  # as socket.recv_into would
    del buffer
    assert framer.body_received(5000) == []
    assert framer.feed(pdu[75000:76000]) == []  # plain feed() still works in between
    frames: list[memoryview] = []
    while not frames:
        rest = framer.body_buffer(1)
        assert rest is not None and 0 < len(rest) <= len(pdu) - framer.pending
        assert framer.reserved <= 2 * framer.pending
        n = len(rest)
        rest[:] = pdu[framer.pending : framer.pending + n]
        del rest
        frames = framer.body_received(n)
    [frame] = frames
    assert bytes(frame) == pdu and frame.readonly and framer.pending == 0
    assert framer.feed(pdu) and framer.body_buffer() is None  # whole PDUs need no buffer


def test_body_buffer_is_never_offered_past_the_limit_or_the_direct_maximum() -> None:
    framer = PDUFramer(max_pdata_length=0)  # unlimited
    framer.feed(b"\x04\x00" + (64 << 20).to_bytes(4, "big"))
    assert framer.body_buffer() is None  # 64 MiB announced: not allocated up front
    with pytest.raises(ValueError):
        framer.body_received(1)
