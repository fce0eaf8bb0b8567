"""TCP reassembly and PDU framing of captures: synthetic segments built with scapy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
from scapy.packet import Padding, Raw
from scapy.utils import wrpcapng

from netdicom2.pcaps.flows import load_capture
from netdicom2.pcaps.pdus import plausible_header, split_stream
from netdicom2.pcaps.reassembly import FIN, SYN, Segment, reassemble
from tests.pcaps_helpers import Conversation, echo_pdus, ether, write

NAMES = [
    "A-ASSOCIATE-RQ",
    "A-ASSOCIATE-AC",
    "P-DATA-TF",
    "P-DATA-TF",
    "A-RELEASE-RQ",
    "A-RELEASE-RP",
]


def _types(capture_path: Path, ports: tuple[int, ...] = ()) -> list[tuple[str, int]]:
    """(side, PDU type) of every PDU of the only connection, in timeline order."""
    capture = load_capture(capture_path, ports)
    assert len(capture.connections) == 1
    return [(e.side, e.record.pdu_type) for e in capture.connections[0].timeline() if e.record]


def _segments(payloads: list[tuple[int, bytes]], *, syn: int | None = 0) -> list[Segment]:
    """Segments from (sequence number, payload), times increasing in list order."""
    out = [] if syn is None else [Segment(0.0, syn, b"", SYN)]
    out += [Segment(1.0 + i, seq, data) for i, (seq, data) in enumerate(payloads)]
    return out


# ---------------------------------------------------------------------------- reassembly


def test_in_order_segments_give_the_bytes_back() -> None:
    stream = reassemble(_segments([(1, b"abc"), (4, b"def")]))
    assert b"".join(c.data for c in stream.chunks) == b"abcdef"
    assert stream.start_known and not stream.gaps and stream.out_of_order_segments == 0


def test_out_of_order_segments_are_put_back_in_order() -> None:
    data = bytes(range(200))
    pieces = [(1 + i, data[i : i + 20]) for i in range(0, 200, 20)]
    random.Random(7).shuffle(pieces)
    stream = reassemble(_segments(pieces))
    assert b"".join(c.data for c in stream.chunks) == data
    assert stream.out_of_order_segments > 0


def test_retransmission_keeps_the_first_copy_and_is_counted() -> None:
    stream = reassemble(_segments([(1, b"hello"), (1, b"hello"), (6, b"world")]))
    assert b"".join(c.data for c in stream.chunks) == b"helloworld"
    assert stream.retransmitted_segments == 1 and stream.retransmitted_bytes == 5
    assert not stream.conflicts


def test_overlap_with_different_bytes_is_reported_and_first_copy_wins() -> None:
    stream = reassemble(_segments([(1, b"abcdef"), (4, b"XYZghi")]))
    assert b"".join(c.data for c in stream.chunks) == b"abcdefghi"
    assert [(g.start, g.end) for g in stream.conflicts] == [(3, 6)]


def test_hole_is_a_gap_and_fin_marks_the_end() -> None:
    segments = _segments([(1, b"abc"), (10, b"xyz")])
    segments.append(Segment(9.0, 13, b"", FIN))
    stream = reassemble(segments)
    assert [(g.start, g.end) for g in stream.gaps] == [(3, 9)]
    assert stream.fin_offset == 12 and len(stream.runs()) == 2


def test_sequence_numbers_wrap_around() -> None:
    isn = (1 << 32) - 3
    segments = [
        Segment(0.0, isn, b"", SYN),
        Segment(1.0, isn + 1, b"ab"),
        Segment(2.0, (isn + 3) % (1 << 32), b"cdef"),
    ]
    assert b"".join(c.data for c in reassemble(segments).chunks) == b"abcdef"


def test_without_syn_the_lowest_byte_is_offset_zero() -> None:
    stream = reassemble(_segments([(500, b"def"), (497, b"abc")], syn=None))
    assert not stream.start_known
    assert [(c.offset, c.data) for c in stream.chunks] == [(0, b"abc"), (3, b"def")]


# ---------------------------------------------------------------------------- framing


def test_pdu_split_over_many_segments_has_the_time_of_its_last_segment() -> None:
    rq = echo_pdus()[0]
    pieces = [(1 + i, rq[i : i + 1]) for i in range(len(rq))]  # one byte per segment
    records, skips = split_stream(reassemble(_segments(pieces)))
    assert [r.status for r in records] == ["ok"] and not skips
    assert records[0].time == 1.0 + len(rq) - 1 and records[0].data == rq


def test_several_pdus_in_one_segment() -> None:
    pdus = echo_pdus()
    records, _ = split_stream(reassemble(_segments([(1, b"".join(pdus))])))
    assert [r.data for r in records] == list(pdus)


def test_out_of_order_pdu_completes_when_the_missing_segment_arrives() -> None:
    rq = echo_pdus()[0]
    # The tail arrives first (time 1), the head last (time 2): the PDU completes at time 2.
    records, _ = split_stream(reassemble(_segments([(51, rq[50:]), (1, rq[:50])])))
    assert records[0].status == "ok" and records[0].time == 2.0


def test_capture_starting_mid_pdu_resynchronises_on_the_next_header() -> None:
    rq, _, echo, _, release, _ = echo_pdus()
    stream = reassemble(_segments([(1000, rq[37:] + echo + release)], syn=None))
    records, skips = split_stream(stream)
    assert [r.data for r in records] == [echo, release]
    assert skips[0].size == len(rq) - 37 and "mid-PDU" in skips[0].reason


def test_hole_inside_a_pdu_resumes_at_its_declared_end() -> None:
    _, _, echo, _, release, _ = echo_pdus()
    data = echo + release
    stream = reassemble(_segments([(1, data[:20]), (1 + 40, data[40:])]))
    records, skips = split_stream(stream)
    assert [r.status for r in records] == ["incomplete", "ok"]
    assert records[1].data == release and skips[0].reason == "tail of a PDU cut by a hole"


def test_hole_over_a_header_resynchronises_by_scanning() -> None:
    _, _, echo, _, release, _ = echo_pdus()
    data = echo + echo + release
    stream = reassemble(_segments([(1, data[:3]), (1 + len(echo) + 2, data[len(echo) + 2 :])]))
    records, _ = split_stream(stream)
    assert records[-1].data == release and records[0].status == "incomplete"


def test_truncated_pdu_before_fin_is_incomplete_with_a_note() -> None:
    rq = echo_pdus()[0]
    segments = _segments([(1, rq[:100])])
    segments.append(Segment(5.0, 101, b"", FIN))
    records, _ = split_stream(reassemble(segments))
    assert records[0].status == "incomplete" and records[0].length == len(rq) - 6
    assert records[0].notes


def test_unknown_pdu_type_in_a_synchronised_stream_is_framed_and_invalid() -> None:
    garbage = bytes.fromhex("09000000000400000000")
    records, _ = split_stream(reassemble(_segments([(1, garbage + echo_pdus()[4])])))
    assert [r.status for r in records] == ["invalid", "ok"]


@pytest.mark.parametrize("pdu", echo_pdus())
def test_every_valid_pdu_is_a_plausible_header(pdu: bytes) -> None:
    assert plausible_header(pdu, 0)


def test_data_bytes_are_not_a_plausible_header() -> None:
    assert not plausible_header(b"\x04\x00\x00\x00\x00\x08" + b"\x00" * 8, 0)


# ---------------------------------------------------------------------------- capture files


@pytest.mark.parametrize(
    ("layer", "linktype"),
    [(ether, None), (CookedLinux, 113), (CookedLinuxV2, 276), (Loopback, 0), (None, 101)],
    ids=["ethernet", "sll", "sll2", "null", "raw-ip"],
)
def test_link_types(tmp_path: Path, layer: object, linktype: int | None) -> None:
    packets = Conversation().echo_session()
    rebuilt = []
    for pkt in packets:
        ip = pkt[IP]
        new = ip if layer is None else layer() / ip  # type: ignore[operator]
        new.time = pkt.time
        rebuilt.append(new)
    path = write(tmp_path / "c.pcap", rebuilt, linktype)
    assert [t for _, t in _types(path)] == [1, 2, 4, 4, 5, 6]


def test_pcapng_and_ipv6(tmp_path: Path) -> None:
    conv = Conversation(client=("fd00::1", 50000), server=("fd00::2", 11112))
    path = tmp_path / "c.pcapng"
    wrpcapng(str(path), conv.echo_session())
    assert _types(path)[0] == ("requestor", 1)


def test_ethernet_padding_is_not_payload(tmp_path: Path) -> None:
    conv = Conversation()
    packets = conv.echo_session()
    padded = []
    for pkt in packets:
        new = Ether(bytes(pkt / Padding(b"\x00" * 6))) if Raw in pkt else pkt
        new.time = pkt.time
        padded.append(new)
    path = write(tmp_path / "c.pcap", padded)
    capture = load_capture(path)
    assert all(r.status == "ok" for r in capture.connections[0].rq.pdus)


def test_out_of_order_and_retransmitted_file(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    rq, ac, echo, *_ = echo_pdus()
    segs = conv.send(0, rq, cuts=[10, 50, 100])
    conv.send(1, ac)
    data = conv.send(0, echo, cuts=[7])
    swapped = [segs[2], segs[0], segs[1], segs[1], segs[3]]  # out of order, one retransmitted
    order = [*conv.packets[:3], *swapped, *conv.packets[7:], data[-1]]
    capture = load_capture(write(tmp_path / "c.pcap", order))
    conn = capture.connections[0]
    assert [r.data for r in conn.rq.pdus] == [rq, echo]
    assert conn.rq.stream.retransmitted_segments >= 1 and conn.rq.stream.out_of_order_segments
    assert any("out of order" in note for note in conn.notes)


def test_flow_selection_by_port_by_request_and_by_option(tmp_path: Path) -> None:
    dicom = Conversation(server=("10.0.0.2", 4242)).echo_session()
    odd_rq = Conversation(client=("10.0.0.3", 40000), server=("10.0.0.4", 5158)).echo_session()
    other = Conversation(client=("10.0.0.5", 40001), server=("10.0.0.6", 8080))
    other.handshake()
    other.send(0, b"GET / HTTP/1.0\r\n\r\n")
    path = write(tmp_path / "c.pcap", dicom + odd_rq + other.packets)
    capture = load_capture(path)
    assert [c.selected_by for c in capture.connections] == [
        "port 4242",
        "A-ASSOCIATE-RQ at stream start",
    ]
    assert capture.ignored == 1
    assert len(load_capture(path, [8080]).connections) == 3


def test_port_reuse_starts_a_new_connection(tmp_path: Path) -> None:
    first = Conversation().echo_session()
    second = Conversation(isn=(90000, 95000), time=2000.0).echo_session()
    capture = load_capture(write(tmp_path / "c.pcap", first + second))
    assert [c.pdu_count for c in capture.connections] == [6, 6]


def test_roles_come_from_the_request_when_the_syn_is_missing(tmp_path: Path) -> None:
    conv = Conversation(client=("10.0.0.1", 104), server=("10.0.0.2", 50000))
    packets = conv.echo_session()[3:]  # no handshake; the requestor uses port 104 here
    conn = load_capture(write(tmp_path / "c.pcap", packets)).connections[0]
    assert conn.roles_from == "A-ASSOCIATE-RQ" and conn.requestor == ("10.0.0.1", 104)


def test_non_tcp_packets_are_skipped(tmp_path: Path) -> None:
    packets = Conversation().echo_session()
    noise = ether() / IP(src="10.9.9.9", dst="10.9.9.8") / Raw(b"x")
    noise.time = 999.0
    capture = load_capture(write(tmp_path / "c.pcap", [noise, *packets]))
    assert capture.stats.skipped == 1 and capture.connections[0].pdu_count == 6


def test_not_a_capture_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"not a capture at all")
    with pytest.raises(ValueError, match="not a pcap"):
        load_capture(path)


def test_tcp_flags_constant_matches_scapy() -> None:
    assert int(TCP(flags="S").flags) == SYN and int(TCP(flags="F").flags) == FIN


def test_scapy_dicom_layer_does_not_change_what_is_read(tmp_path: Path) -> None:
    """With scapy.contrib.dicom bound to 104/11112, several PDUs in a segment still count."""
    import scapy.contrib.dicom  # noqa: F401 - imported for its layer bindings

    pdus = echo_pdus()
    conv = Conversation()
    conv.handshake()
    conv.send(0, pdus[0] + pdus[2] + pdus[4])  # RQ, C-ECHO-RQ, RELEASE-RQ in one segment
    conn = load_capture(write(tmp_path / "c.pcap", conv.packets)).connections[0]
    assert [r.data for r in conn.rq.pdus] == [pdus[0], pdus[2], pdus[4]]
