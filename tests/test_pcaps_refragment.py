"""Re-fragmentation to a live Maximum Length (PS3.8 Annex D.1, E.2) and zero-filled holes."""

from __future__ import annotations

import pytest

from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.reassembly import Segment, reassemble
from netdicom2.pcaps.refragment import fill_hole, refragment
from netdicom2.pdu import PDataTfPDU, decode


def _message(pdus: list[bytes]) -> list[tuple[int, int, bytes]]:
    """(context, control header, joined fragments) per PDV run up to its last fragment."""
    out: list[tuple[int, int, bytes]] = []
    buffer = bytearray()
    for data in pdus:
        pdu = decode(data)
        assert isinstance(pdu, PDataTfPDU)
        for pdv in pdu.data_value_items:
            buffer += pdv.fragment
            if pdv.is_last:
                out.append((pdv.context_id, pdv.control_header, bytes(buffer)))
                buffer.clear()
    assert not buffer
    return out


ORIGINAL = PDataTfPDU(
    [
        PresentationDataValueItem(3, 0x03, b"C" * 300),  # command, last
        PresentationDataValueItem(3, 0x00, bytes(range(256)) * 200),  # data, more follows
        PresentationDataValueItem(3, 0x02, b"D" * 5000),  # data, last
    ]
)


@pytest.mark.parametrize("max_length", [8, 100, 4096, 16384])
def test_refragment_keeps_pdvs_and_flags(max_length: int) -> None:
    pdus = refragment(ORIGINAL, max_length)
    assert all(len(p) - 6 <= max_length for p in pdus)
    assert _message(pdus) == _message([_whole_messages()])
    for data in pdus:
        for pdv in decode(data).data_value_items:  # type: ignore[attr-defined]
            assert pdv.context_id == 3 and pdv.control_header & 1 in (0, 1)
    commands = [
        pdv
        for data in pdus
        for pdv in decode(data).data_value_items
        if pdv.is_command  # type: ignore[attr-defined]
    ]
    assert commands and all(c.fragment.tobytes() == b"C" * len(c.fragment) for c in commands)
    assert sum(1 for c in commands if c.is_last) == 1


def _whole_messages() -> bytes:
    """The original as one PDU whose second PDV run is joined (what a receiver rebuilds)."""
    data = bytes(range(256)) * 200 + b"D" * 5000
    return PDataTfPDU(
        [PresentationDataValueItem(3, 0x03, b"C" * 300), PresentationDataValueItem(3, 0x02, data)]
    ).encode()


def test_refragment_leaves_fitting_pdus_alone() -> None:
    whole = ORIGINAL.encode()
    assert refragment(ORIGINAL, 0) == [whole] and refragment(ORIGINAL, len(whole)) == [whole]


def _record(data: bytes, holes: list[tuple[int, int]]) -> tuple[PduRecord, object]:
    """A stream (with SYN) holding ``data`` except the byte ranges in ``holes``."""
    kept: list[Segment] = [Segment(0.0, 99, b"", 0x02)]
    cursor = 0
    for start, end in [*holes, (len(data), len(data))]:
        if start > cursor:
            kept.append(Segment(1.0, 100 + cursor, data[cursor:start], 0x18))
        cursor = end
    stream = reassemble(kept)
    first = holes[0][0] if holes else len(data)
    return PduRecord(0, 1.0, data[:first], "incomplete"), stream


@pytest.mark.parametrize(
    ("hole", "pdvs"),
    [((1000, 3000), 3), ((310, 320), 2), ((6, 12), 1)],
    ids=["in-data", "over-an-item-header", "over-the-first-item-header"],
)
def test_fill_hole_keeps_the_framing(hole: tuple[int, int], pdvs: int) -> None:
    data = ORIGINAL.encode()
    record, stream = _record(data, [hole])
    filled = fill_hole(stream, record, 1 << 20)  # type: ignore[arg-type]
    assert filled is not None
    rebuilt, missing = filled
    assert len(rebuilt) == len(data) and missing == hole[1] - hole[0]
    pdu = decode(rebuilt)
    assert isinstance(pdu, PDataTfPDU) and len(pdu.data_value_items) == pdvs
    assert rebuilt[: hole[0]] == data[: hole[0]]


def test_fill_hole_is_bounded_by_the_limit() -> None:
    data = ORIGINAL.encode()
    record, stream = _record(data, [(1000, 2000)])
    assert fill_hole(stream, record, 1000) is None  # type: ignore[arg-type]
