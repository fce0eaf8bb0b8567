"""TCP bytes to whole PDUs, and messages to/from P-DATA-TF fragments (PS3.8 §9.1.3, Annex E).

* ``PDUFramer`` cuts the byte stream into PDUs by their 6-byte header (PS3.8 §9.1.3, §9.3.1),
  in linear time, refusing an oversized PDU-length before buffering its body.
* ``fragment`` cuts a command or data set into PDV fragments that respect the peer's maximum
  length (PS3.8 Annex D.1, E.1).
* ``Reassembler`` joins PDV fragments back into messages (PS3.8 Annex E.1, E.2).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import PDU_DECODERS, Buffer, PDataTfPDU

__all__ = [
    "DEFAULT_MAX_ASSOCIATE_LENGTH",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_OTHER_LENGTH",
    "DEFAULT_MAX_PDATA_LENGTH",
    "MAX_FIXED_LENGTH",
    "PDATA_STREAM_LENGTH",
    "UNLIMITED_FRAGMENT_SIZE",
    "FramingError",
    "Message",
    "PDUFramer",
    "Reassembler",
    "command_has_dataset",
    "fragment",
]

#: Our default Maximum-length-received (PS3.8 Annex D.1), the P-DATA-TF PDU-length limit.
DEFAULT_MAX_PDATA_LENGTH = 16384
#: Limit on the PDU-length of an A-ASSOCIATE-RQ/AC (and of an unknown PDU type). PS3.8 §9.3.2
#: bounds each item to a 2-byte length, and §9.3.2.2 to 128 presentation contexts; the largest
#: request we can imagine in use (128 contexts of 16 transfer syntaxes, two 64 KiB user
#: identity fields, extended negotiation for every context) is about 200 KB. DCMTK refuses
#: A-ASSOCIATE PDUs over its own limit too ("A-ASSOCIATE PDU too large", dcmAssociatePDUSizeLimit).
DEFAULT_MAX_ASSOCIATE_LENGTH = 256 * 1024
#: Before the per-type limits this bounded every non-P-DATA PDU; now the associate limit.
DEFAULT_MAX_OTHER_LENGTH = DEFAULT_MAX_ASSOCIATE_LENGTH
#: A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT have PDU-length 4 (PS3.8 Tables 9-21, 9-24,
#: 9-25, 9-26); a longer one is framed up to this bound (decoding then refuses it, Evt19) and
#: refused at its header above it.
MAX_FIXED_LENGTH = 1024
#: A P-DATA-TF longer than this (possible when our maximum length is 0 = unlimited, or large)
#: is not buffered whole: it is delivered as P-DATA-TF pieces of at most this many PDV bytes,
#: each fragment cut at an even offset with bit 1 (last) cleared on all but its last piece
#: (PS3.8 Annex E.1, E.2: the message is the same, only fragmented finer) [interp].
PDATA_STREAM_LENGTH = 1024 * 1024
#: Fragment payload used when the peer announced 0 = no maximum (PS3.8 Annex D.1 [interp]).
UNLIMITED_FRAGMENT_SIZE = 1024 * 1024
#: Default bound on the bytes of one reassembled message (command + data set).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024 * 1024
#: ``PDUFramer.body_buffer`` offers a direct buffer only when this much of a PDU is missing
#: and at least this much of it arrived: the buffer grows with what was received (at most
#: doubling it), never with what the PDU-length announces.
DIRECT_BODY_MINIMUM = 64 * 1024

_MAX_LENGTH_FIELD = 0xFFFFFFFF
_LENGTH = struct.Struct(">I")
# A streamed piece: P-DATA-TF header then one PDV item header (PS3.8 Tables 9-22, 9-23).
_PIECE_HEAD = struct.Struct(">BBIIBB")
_PDV_HEAD = struct.Struct(">IBB")
# First buffer of a PDU spread over reads; buffers at least _MAPPED big are anonymous mappings,
# returned to the system when freed (a heap block may stay with the process after free()).
_INITIAL = 256
_MAPPED = 128 * 1024
# Implicit VR Little Endian element header of a command set: group, element, length (PS3.7 §6.3).
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_FIXED_TYPES = frozenset({0x03, 0x05, 0x06, 0x07})


class FramingError(PDUDecodeError):
    """A refused PDU header; ``frames`` are the PDUs completed before it in the same feed().

    Handle those first to keep PS3.8's event order (e.g. Evt10 for a P-DATA-TF, then Evt19).
    """

    def __init__(self, error: PDUDecodeError, frames: list[memoryview] | None = None) -> None:
        """Copy where/why from error; keep the PDUs framed before it."""
        super().__init__(
            error.reason,
            pdu_type=error.pdu_type,
            offset=error.offset,
            field=error.field,
            abort_reason=error.abort_reason,
        )
        self.frames: list[memoryview] = frames or []


def _allocate(size: int) -> bytearray | mmap.mmap:
    """A zeroed buffer of ``size`` bytes: small ones on the heap, large ones mapped."""
    return mmap.mmap(-1, size) if size >= _MAPPED else bytearray(size)


class _Growing:
    """Bytes received so far, in a buffer that at most doubles as data arrives, up to ``limit``."""

    __slots__ = ("buf", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.buf: bytearray | mmap.mmap | None = None
        self.limit = limit  # the buffer never grows past it (0: not known yet, _INITIAL)
        self.size = 0

    @property
    def capacity(self) -> int:
        """Bytes allocated."""
        return 0 if self.buf is None else len(self.buf)

    def reserve(self, end: int) -> None:
        """Make room for ``end`` bytes: at least double the buffer, within the limit."""
        buf = self.buf
        old = 0 if buf is None else len(buf)
        if end <= old:
            return
        capacity = max(end, 2 * old, _INITIAL)
        if self.limit:
            capacity = max(end, min(capacity, self.limit))
        new = _allocate(capacity)
        if buf is not None:
            if self.size:
                new[: self.size] = memoryview(buf)[: self.size]
            _release(buf)
        self.buf = new

    def append(self, data: memoryview) -> None:
        """Copy ``data`` after the bytes held."""
        end = self.size + len(data)
        self.reserve(end)
        assert self.buf is not None
        self.buf[self.size : end] = data
        self.size = end

    def view(self) -> memoryview:
        """The bytes held, read-only (the buffer is then owned by the view)."""
        assert self.buf is not None
        return memoryview(self.buf)[: self.size].toreadonly()


def _release(buf: bytearray | mmap.mmap) -> None:
    """Unmap a mapped buffer no view refers to any more (else it goes when they do)."""
    if type(buf) is mmap.mmap:
        try:  # noqa: SIM105 - a view handed out (body_buffer) may still hold it
            buf.close()
        except BufferError:
            pass


class PDUFramer:
    """Incremental PDU framer: feed it bytes, get whole PDUs back (PS3.8 §9.1.3, §9.3.1).

    A PDU is the 6-byte header (type, reserved, PDU-length) plus PDU-length bytes. Unknown
    PDU types are framed by their length like the others (decoding then raises, Evt19). A
    limit of 0 means unlimited (up to 2**32-1, the largest PDU-length).

    Memory grows with the bytes received, never with a length field: a PDU spread over reads is
    collected in a buffer that at most doubles as its bytes arrive (``reserved`` bytes), and a
    P-DATA-TF longer than ``stream_length`` (when not 0) is handed over in pieces.
    Limits by type: P-DATA-TF ``max_pdata_length`` (the length we announced, Annex D.1),
    A-ASSOCIATE-RQ/AC and unknown types ``max_other_length``, the fixed-length PDUs
    MAX_FIXED_LENGTH; a header over its limit is refused before any of its body is kept.

    Large PDUs can skip a copy: ``body_buffer()`` hands out room after the bytes received as a
    writable buffer (for ``socket.recv_into``), ``body_received(n)`` accounts for what was
    written; the PDU is then a view of that one buffer.
    """

    __slots__ = (
        "_body",
        "_error",
        "_need",
        "_offered",
        "_pdv_control",
        "_pdv_head",
        "_pdv_id",
        "_pdv_left",
        "_piece",
        "_stream_left",
        "_stream_reserved",
        "max_other_length",
        "max_pdata_length",
        "stream_length",
    )

    def __init__(
        self,
        max_pdata_length: int = DEFAULT_MAX_PDATA_LENGTH,
        max_other_length: int = DEFAULT_MAX_OTHER_LENGTH,
        *,
        stream_length: int = 0,
    ) -> None:
        """Limits apply to the PDU-length field: P-DATA-TF (type 04H) and all other types.

        ``stream_length`` 0 hands every PDU over whole (tools reading captures); the
        providers' Connection passes PDATA_STREAM_LENGTH.
        """
        if not 0 <= max_pdata_length <= _MAX_LENGTH_FIELD:
            raise ValueError(f"max_pdata_length must be in 0..2**32-1, not {max_pdata_length}")
        if not 0 <= max_other_length <= _MAX_LENGTH_FIELD:
            raise ValueError(f"max_other_length must be in 0..2**32-1, not {max_other_length}")
        if stream_length and not 8 <= stream_length <= _MAX_LENGTH_FIELD:
            raise ValueError(f"stream_length must be 0 or in 8..2**32-1, not {stream_length}")
        self.max_pdata_length = max_pdata_length
        self.max_other_length = max_other_length
        self.stream_length = stream_length & ~1  # pieces cut at even offsets (PS3.8 E.1)
        self._body = _Growing(0)  # the PDU in progress (header included)
        self._need = 0  # total size of the PDU in progress, 0 while its header is incomplete
        self._offered = 0  # bytes of room the last body_buffer() handed out
        self._error: PDUDecodeError | None = None
        # A P-DATA-TF being streamed (PS3.8 Table 9-23): body bytes left, the PDV item header
        # in progress, the PDV's value bytes left, its ID and control header, the piece.
        self._stream_left = 0
        self._stream_reserved = 0
        self._pdv_head = bytearray()
        self._pdv_left = 0
        self._pdv_id = 0
        self._pdv_control = 0
        self._piece: _Growing | None = None

    @property
    def pending(self) -> int:
        """Bytes buffered for a PDU (or a streamed piece) that is not complete yet."""
        held = self._body.size + len(self._pdv_head)
        if self._piece is not None:
            held += self._piece.size
        return held

    @property
    def reserved(self) -> int:
        """Bytes allocated for what is pending (at most about twice ``pending``)."""
        held = self._body.capacity
        if self._piece is not None:
            held += self._piece.capacity
        return held

    def _limit(self, pdu_type: int) -> int:
        """The PDU-length limit of a PDU type (0: none)."""
        if pdu_type == 0x04:
            return self.max_pdata_length
        other = self.max_other_length
        if pdu_type in _FIXED_TYPES and (not other or other > MAX_FIXED_LENGTH):
            return MAX_FIXED_LENGTH if other else 0
        return other

    def _size(self, header: Buffer, pos: int) -> int:
        """Total size of the PDU whose header starts at pos; refuse it if over the limit."""
        pdu_type = header[pos]
        length: int = _LENGTH.unpack_from(header, pos + 2)[0]
        # PS3.8 Annex D.1: a P-DATA-TF longer than our announced maximum is a protocol error;
        # other types get a local bound by type so a hostile length cannot make us buffer
        # megabytes (PS3.8 Table 9-10: Evt19, AA-1 in Sta2, AA-8 in Sta3-Sta12).
        limit = self._limit(pdu_type)
        if limit and length > limit:
            known = pdu_type in PDU_DECODERS
            self._error = PDUDecodeError(
                f"PDU-length {length} exceeds the limit {limit} (PDU too large)",
                pdu_type=pdu_type,
                offset=2,
                field="PDU-length",
                abort_reason=(
                    AbortReason.INVALID_PDU_PARAMETER_VALUE
                    if known
                    else AbortReason.UNRECOGNIZED_PDU
                ),
            )
            raise self._error
        return 6 + length

    def body_buffer(self, minimum: int = DIRECT_BODY_MINIMUM) -> memoryview | None:
        """Room after the received bytes of the PDU in progress, as one writable buffer.

        None unless the PDU's header is complete (so its length passed the limit check, PS3.8
        Annex D.1), at least ``minimum`` bytes are missing and ``minimum`` arrived: the room
        is at most what arrived (the buffer doubles), never the announced rest. Write the next
        received bytes at the start of the returned view, then call ``body_received``. The
        view ends where the PDU ends: no next PDU spills into it.
        """
        body = self._body
        if self._error is not None or not self._need or self._stream_left:
            return None
        have = body.size
        if self._need - have < minimum:
            return None
        if body.capacity - have < minimum:
            if have < minimum:
                return None
            body.reserve(min(self._need, 2 * have))
        assert body.buf is not None
        self._offered = body.capacity - have
        return memoryview(body.buf)[have:]

    def body_received(self, nbytes: int) -> list[memoryview]:
        """``nbytes`` were written into ``body_buffer()``; the PDU when it is now complete."""
        body = self._body
        if not self._need or not 0 <= nbytes <= self._offered:
            raise ValueError(f"{nbytes} bytes were not received into body_buffer()")
        self._offered = 0
        body.size += nbytes
        if body.size < self._need:
            return []
        return [self._complete()]

    def _complete(self) -> memoryview:
        """Hand over the PDU in progress and start the next one."""
        frame = self._body.view()
        self._body = _Growing(0)
        self._need = 0
        return frame

    def feed(self, data: Buffer) -> list[memoryview]:
        """Add received bytes; return every PDU completed by them, header included, in order.

        PDUs wholly inside ``data`` are zero-copy slices of it (a bytes copy of a bytearray or
        memoryview argument); PDUs spread over several calls are collected once. A refused
        header (or a streamed P-DATA-TF whose PDV items do not fit, Table 9-23) raises
        ``FramingError`` (a PDUDecodeError) carrying the PDUs completed before it; the stream
        is then out of sync and every later call raises the same error.
        """
        if self._error is not None:
            raise FramingError(self._error)
        self._offered = 0  # a buffer handed out before is not to be reported any more
        out: list[memoryview] = []
        try:
            self._feed(data, out)
        except PDUDecodeError as error:
            self._error = error
            self._body = _Growing(0)
            self._piece = None
            raise FramingError(error, out) from None
        return out

    def _streams(self, header: Buffer, pos: int, total: int) -> bool:
        """Start streaming when the PDU at pos is a P-DATA-TF past stream_length."""
        if header[pos] != 0x04 or not self.stream_length or total - 6 <= self.stream_length:
            return False
        self._stream_left = total - 6
        self._stream_reserved = header[pos + 1]
        return True

    def _feed(self, data: Buffer, out: list[memoryview]) -> None:
        """Frame data into out; raise on a refused header (PS3.8 §9.1.3, Annex D.1)."""
        view = memoryview(data if type(data) is bytes else bytes(data))
        size = len(view)
        body = self._body
        pos = 0
        if not body.size and not self._stream_left and size >= 6:
            # The usual read: exactly one whole PDU, nothing in progress (no copy, no loop).
            total = self._size(view, 0)
            if total == size:
                if self._streams(view, 0, total):
                    pos = 6
                else:
                    out.append(view)
                    return
        while pos < size:
            if self._stream_left:
                pos = self._stream(view, pos, out)
                continue
            if not body.size:
                # At a PDU boundary: slice whole PDUs straight out of the chunk.
                avail = size - pos
                if avail >= 6:
                    total = self._size(view, pos)
                    if self._streams(view, pos, total):
                        pos += 6
                        continue
                    if avail >= total:
                        out.append(view[pos : pos + total])
                        pos += total
                        continue
                    self._need = body.limit = total
                body.append(view[pos:])
                return
            if not self._need:
                # PS3.8 §9.1.3 [interp]: the 6-byte header may itself be split across reads.
                take = min(6 - body.size, size - pos)
                body.append(view[pos : pos + take])
                pos += take
                if body.size < 6:
                    return
                assert body.buf is not None
                header = bytes(memoryview(body.buf)[:6])
                total = self._size(header, 0)
                if self._streams(header, 0, total):
                    self._body = body = _Growing(0)
                    continue
                self._need = body.limit = total
            else:
                take = min(self._need - body.size, size - pos)
                body.append(view[pos : pos + take])
                pos += take
            if body.size == self._need:
                out.append(self._complete())
                body = self._body

    def _stream(self, view: memoryview, pos: int, out: list[memoryview]) -> int:
        """Cut a long P-DATA-TF into pieces as its bytes arrive (PS3.8 Table 9-23, E.1, E.2)."""
        size = len(view)
        while pos < size and self._stream_left:
            if not self._pdv_left and self._piece is None:
                # A PDV item header: item-length (4), presentation-context-ID, control header.
                head = self._pdv_head
                take = min(6 - len(head), size - pos, self._stream_left)
                head += view[pos : pos + take]
                pos += take
                self._stream_left -= take
                if len(head) < 6:
                    if not self._stream_left:
                        self._pdv_fail("truncated PDV item header")
                    continue
                length, self._pdv_id, self._pdv_control = _PDV_HEAD.unpack(head)
                head.clear()
                # PS3.8 Table 9-23: the item-length counts the ID and control header (so at
                # least 2) and the item ends inside the PDU.
                if length < 2:
                    self._pdv_fail(f"PDV item-length {length} (at least 2)")
                if length - 2 > self._stream_left:
                    self._pdv_fail(f"PDV item-length {length} overruns the PDU")
                self._pdv_left = length - 2
                self._piece = _Growing(12 + min(self._pdv_left, self.stream_length))
                self._piece.size = 12  # the headers are written when the piece is handed over
                if not self._pdv_left:
                    out.append(self._hand_piece())
                continue
            piece = self._piece
            assert piece is not None
            take = min(self._pdv_left, size - pos, piece.limit - piece.size)
            piece.append(view[pos : pos + take])
            pos += take
            self._pdv_left -= take
            self._stream_left -= take
            if not self._pdv_left or piece.size == piece.limit:
                out.append(self._hand_piece())
        if not self._stream_left and self._pdv_head:  # pragma: no cover - failed above
            self._pdv_fail("truncated PDV item header")
        return pos

    def _hand_piece(self) -> memoryview:
        """The piece as a P-DATA-TF of one PDV; bit 1 (last) only on the PDV's last piece."""
        piece = self._piece
        assert piece is not None
        self._piece = None
        length = piece.size - 12
        control = self._pdv_control if not self._pdv_left else self._pdv_control & 0xFD
        piece.reserve(12)
        assert piece.buf is not None
        _PIECE_HEAD.pack_into(
            piece.buf, 0, 0x04, self._stream_reserved, 6 + length, 2 + length, self._pdv_id, control
        )
        if self._pdv_left:  # the same PDV continues in the next piece
            self._piece = _Growing(12 + min(self._pdv_left, self.stream_length))
            self._piece.size = 12
        return piece.view()

    def _pdv_fail(self, reason: str) -> None:
        """A streamed P-DATA-TF whose PDV items break Table 9-23: Evt19 (invalid parameter)."""
        self._stream_left = 0
        raise PDUDecodeError(
            reason,
            pdu_type=0x04,
            offset=6,
            field="PDV item-length",
            abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
        )


def fragment(
    context_id: int, data: Buffer, *, is_command: bool, max_pdu_length: int
) -> Iterator[PDataTfPDU]:
    """One P-DATA-TF per fragment, each within the peer's maximum length (PS3.8 D.1, E.1).

    With one PDV per PDU the payload is at most max_pdu_length - 6 (4 item-length, PCID,
    control header), rounded down to even (PS3.8 E.1: fragments have an even length);
    0 = no maximum, then ``UNLIMITED_FRAGMENT_SIZE``. The last fragment has bit 1 of the
    control header set, bit 0 says command (E.2). Fragments are memoryview slices of data.
    Empty data gives one empty last fragment.
    """
    if max_pdu_length == 0:
        chunk = UNLIMITED_FRAGMENT_SIZE
    elif max_pdu_length < 8:
        raise ValueError(f"max_pdu_length {max_pdu_length} leaves no room for a fragment")
    else:
        chunk = (max_pdu_length - 6) & ~1
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    total = len(view)
    control = 1 if is_command else 0
    if not total:
        yield PDataTfPDU([PresentationDataValueItem(context_id, control | 2, view)])
        return
    for start in range(0, total, chunk):
        end = start + chunk
        flags = control | 2 if end >= total else control
        yield PDataTfPDU([PresentationDataValueItem(context_id, flags, view[start:end])])


def command_has_dataset(command: bytes) -> bool:
    """Whether (0000,0800) Command Data Set Type says a data set follows: any value but 0101H.

    The command set is Implicit VR Little Endian (PS3.7 §6.3, §E.1); a missing or malformed
    element raises PDUDecodeError (invalid PDU parameter value).
    """
    off = 0
    size = len(command)
    while size - off >= 8:
        group, element, length = _ELEMENT.unpack_from(command, off)
        if group == 0 and element == 0x0800:
            if length != 2 or size - off < 10:
                break
            return bool(_US.unpack_from(command, off + 8)[0] != 0x0101)
        if group > 0:
            break
        off += 8 + length
    raise PDUDecodeError(
        "command set without a valid (0000,0800) Command Data Set Type",
        pdu_type=0x04,
        offset=0,
        field="command set",
        abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
    )


@dataclass(slots=True)
class Message:
    """A reassembled DIMSE message: context ID, command set, data set if any (PS3.8 E.1)."""

    context_id: int
    command: bytes
    dataset: bytes | None = None


class Reassembler:
    """Join PDV fragments into messages (PS3.8 Annex E.1, E.2).

    Rules enforced (each violation raises PDUDecodeError with A-ABORT reason 5, unexpected
    PDU parameter, and resets the reassembler):

    * all fragments of a message carry the same presentation context ID (E.1: no
      interleaving of fragments of different messages on an association);
    * the command fragments, the last with bit 1 set, precede every data set fragment (E.2,
      [interp]); a data set fragment outside a message, or a command fragment after the
      command ended, is a protocol error.

    Several messages may end in the same P-DATA-TF; E.1 says a P-DATA-TF holds PDVs of one
    message, but the last bits delimit messages unambiguously so we accept it ([interp]).
    ``contexts``, when given, are the accepted presentation context IDs; another ID raises
    reason 6. ``max_message_size`` bounds the bytes held (reason 0 when exceeded).
    """

    __slots__ = (
        "_command",
        "_context",
        "_parts",
        "_size",
        "contexts",
        "has_dataset",
        "max_message_size",
    )

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        contexts: set[int] | frozenset[int] | None = None,
        has_dataset: Callable[[bytes], bool] = command_has_dataset,
    ) -> None:
        """Bound the message size; optionally restrict context IDs and the data set test."""
        self.max_message_size = max_message_size
        self.contexts = contexts
        self.has_dataset = has_dataset
        self._context: int | None = None
        self._command: bytes | None = None  # complete command set waiting for its data set
        self._parts: list[bytes | memoryview] = []
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes held for the message in progress (command and data set fragments)."""
        return self._size

    def reset(self) -> None:
        """Forget the message in progress."""
        self._context = None
        self._command = None
        self._parts = []
        self._size = 0

    def _error(self, reason: str, fld: str, abort_reason: int) -> PDUDecodeError:
        """Reset, then build the error for a fragment breaking PS3.8 Annex E."""
        self.reset()
        return PDUDecodeError(reason, pdu_type=0x04, offset=6, field=fld, abort_reason=abort_reason)

    def add(self, pdu: PDataTfPDU) -> list[Message]:
        """Consume the PDVs of one P-DATA-TF; return the messages they complete (E.1, E.2)."""
        done: list[Message] = []
        unexpected = AbortReason.UNEXPECTED_PDU_PARAMETER
        for pdv in pdu.data_value_items:
            context_id = pdv.context_id
            control = pdv.control_header
            if self.contexts is not None and context_id not in self.contexts:
                raise self._error(
                    f"PDV on presentation context {context_id}, not accepted",
                    "presentation-context-ID",
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            if self._context is None:
                if not control & 1:
                    raise self._error(
                        "data set fragment without a command set",
                        "message control header",
                        unexpected,
                    )
                self._context = context_id
            elif context_id != self._context:
                raise self._error(
                    f"PDV on context {context_id} inside a message on context {self._context}",
                    "presentation-context-ID",
                    unexpected,
                )
            is_command = bool(control & 1)
            if is_command == (self._command is not None):
                raise self._error(
                    "command fragment after the command set ended"
                    if is_command
                    else "data set fragment before the last command fragment",
                    "message control header",
                    unexpected,
                )
            self._size += len(pdv.fragment)
            if self._size > self.max_message_size:
                raise self._error(
                    f"message larger than {self.max_message_size} bytes",
                    "presentation-data-value",
                    AbortReason.NOT_SPECIFIED,
                )
            self._parts.append(pdv.fragment)
            if not control & 2:
                continue
            joined = b"".join(self._parts)
            self._parts = []
            if is_command:
                try:
                    follows = self.has_dataset(joined)
                except PDUDecodeError:
                    self.reset()
                    raise
                if follows:
                    self._command = joined
                    continue
                done.append(Message(context_id, joined, None))
            else:
                done.append(Message(context_id, self._command or b"", joined))
            self.reset()
        return done
