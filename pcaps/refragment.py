"""Recorded PDUs made fit to send to a live peer: re-fragmented P-DATA, filled holes.

* PS3.8 Annex D.1: a P-DATA-TF sent to a peer must not be longer (PDU-length) than the Maximum
  Length the peer announced in its A-ASSOCIATE-RQ/AC (0: no limit). A recorded P-DATA-TF that
  is longer is cut into several: each PDV fragment is split where needed, the message control
  header is kept (command/data bit; the last-fragment bit only on the final piece, PS3.8 E.2),
  PDVs are never merged, and the pieces are packed into as few PDUs as fit.
* A PDU the capture lost bytes of is rebuilt to its PDU-length with the missing bytes zeroed;
  when the zeros break the PDV items' framing (Table 9-23), the items from the hole on become
  one PDV that carries the rest of the PDU, with the context ID and control header of the item
  the hole starts in. Its length field and framing are thus whole.
"""

from __future__ import annotations

import struct

from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.reassembly import Stream
from netdicom2.pdu import PDataTfPDU

__all__ = ["capture_lost", "fill_hole", "refragment"]

_HEADER = struct.Struct(">BBI")
_ITEM = struct.Struct(">IBB")
_PIECE_OVERHEAD = 6  # PDV item: item-length (4), context ID, message control header


def refragment(pdu: PDataTfPDU, max_length: int) -> list[bytes]:
    """``pdu`` as P-DATA-TF PDUs whose PDU-length is at most ``max_length`` (0: unchanged)."""
    whole = pdu.encode()
    if max_length <= 0 or len(whole) - 6 <= max_length:
        return [whole]
    room = max(1, max_length - _PIECE_OVERHEAD)  # fragment bytes one PDV can carry
    pieces: list[PresentationDataValueItem] = []
    for pdv in pdu.data_value_items:
        fragment = bytes(pdv.fragment)
        starts = range(0, len(fragment), room) if fragment else range(1)
        for start in starts:
            last = start + room >= len(fragment)
            header = pdv.control_header if last else pdv.control_header & ~0x02
            cut = fragment[start : start + room]
            pieces.append(PresentationDataValueItem(pdv.context_id, header, cut))
    out: list[bytes] = []
    batch: list[PresentationDataValueItem] = []
    size = 0
    for piece in pieces:  # greedy packing: PDVs in order, each PDU within max_length
        need = _PIECE_OVERHEAD + len(piece.fragment)
        if batch and size + need > max_length:
            out.append(PDataTfPDU(batch).encode())
            batch, size = [], 0
        batch.append(piece)
        size += need
    if batch:
        out.append(PDataTfPDU(batch).encode())
    return out


def _bytes_of(stream: Stream, start: int, end: int) -> tuple[bytearray, int]:
    """Stream bytes [start, end), zeros where the capture has none; and how many were zero."""
    out = bytearray(end - start)
    present = 0
    for chunk in stream.chunks:  # bounded by the chunks of the direction
        if chunk.end <= start or chunk.offset >= end:
            continue
        lo, hi = max(start, chunk.offset), min(end, chunk.end)
        out[lo - start : hi - start] = chunk.data[lo - chunk.offset : hi - chunk.offset]
        present += hi - lo
    return out, (end - start) - present


def fill_hole(stream: Stream, record: PduRecord, limit: int) -> tuple[bytes, int] | None:
    """The whole PDU of an incomplete record, missing bytes zeroed; None when it cannot be.

    ``limit`` bounds the rebuilt size (a length field is not a reason to allocate).
    """
    length = record.length
    if length is None or length + 6 > limit:
        return None
    data, missing = _bytes_of(stream, record.offset, record.offset + 6 + length)
    if data[0] != 0x04:
        return bytes(data), missing
    # PS3.8 Table 9-23: walk the PDV items; the first one the zeros broke (or no room for an
    # item header) turns into one PDV carrying the rest of the PDU.
    cursor, previous, context, control = 6, None, 1, 0
    while cursor < len(data):  # bounded: every item advances by at least 6 bytes
        fits = cursor + 6 <= len(data)
        if fits:
            size, context_id, header = _ITEM.unpack_from(data, cursor)
            fits = size >= 2 and bool(context_id & 1) and cursor + 4 + size <= len(data)
        if not fits:
            at = cursor if cursor + 6 <= len(data) else previous
            if at is None:
                return None  # no room for one PDV item: the PDU cannot be made whole
            _ITEM.pack_into(data, at, len(data) - at - 4, context | 1, control)
            break
        context, control, previous = context_id, header, cursor
        cursor += 4 + size
    return bytes(data), missing


def capture_lost(stream: Stream, record: PduRecord, ended: bool) -> bool:
    """The capture lost bytes of this incomplete PDU (a hole in it, or it ends inside it).

    ``ended``: the connection was closed (FIN/RST) by either side. A PDU with no hole in a
    connection that ended is what its sender sent (a cut or malformed PDU): not lost bytes.
    """
    length = record.length
    end = record.offset + 6 + (length if length is not None else 0)
    if any(g.start < end and g.end > record.offset for g in stream.gaps):
        return True
    return not ended
