"""TCP bytes to whole PDUs, and messages to/from P-DATA-TF fragments (PS3.8 §9.1.3, Annex E).

* ``PDUFramer`` cuts the byte stream into PDUs by their 6-byte header (PS3.8 §9.1.3, §9.3.1),
  in linear time, refusing an oversized PDU-length before buffering its body.
* ``fragment`` cuts a command or data set into PDV fragments that respect the peer's maximum
  length (PS3.8 Annex D.1, E.1).
* ``Reassembler`` joins PDV fragments back into messages (PS3.8 Annex E.1, E.2).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from netdicom2.exceptions import AbortReason, PDUDecodeError
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import PDU_DECODERS, Buffer, PDataTfPDU

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_OTHER_LENGTH",
    "DEFAULT_MAX_PDATA_LENGTH",
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
#: Limit on the PDU-length of every other PDU type; an A-ASSOCIATE-RQ with 128 presentation
#: contexts is ~10 KiB, so 4 MiB is generous while bounding memory (PS3.8 §9.3.1 [interp]).
DEFAULT_MAX_OTHER_LENGTH = 4 * 1024 * 1024
#: Fragment payload used when the peer announced 0 = no maximum (PS3.8 Annex D.1 [interp]).
UNLIMITED_FRAGMENT_SIZE = 1024 * 1024
#: Default bound on the bytes of one reassembled message (command + data set).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024 * 1024
#: ``PDUFramer.body_buffer`` offers a direct buffer only when this much of a PDU is missing,
#: and only for PDUs up to DIRECT_BODY_MAXIMUM bytes: a peer that announces a large PDU and
#: stalls makes us hold at most that much (within the length we announced, Annex D.1).
DIRECT_BODY_MINIMUM = 64 * 1024
DIRECT_BODY_MAXIMUM = 4 * 1024 * 1024

_MAX_LENGTH_FIELD = 0xFFFFFFFF
_LENGTH = struct.Struct(">I")
# Implicit VR Little Endian element header of a command set: group, element, length (PS3.7 §6.3).
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")


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


class PDUFramer:
    """Incremental PDU framer: feed it bytes, get whole PDUs back (PS3.8 §9.1.3, §9.3.1).

    A PDU is the 6-byte header (type, reserved, PDU-length) plus PDU-length bytes. Unknown
    PDU types are framed by their length like the others (decoding then raises, Evt19). A
    limit of 0 means unlimited (up to 2**32-1, the largest PDU-length).

    Large PDUs can skip the joining copy: ``body_buffer()`` hands out the rest of the PDU in
    progress as a writable buffer (for ``socket.recv_into``), ``body_received(n)`` accounts for
    what was written; the PDU is then a view of that one buffer.
    """

    __slots__ = (
        "_body",
        "_error",
        "_have",
        "_need",
        "_parts",
        "max_other_length",
        "max_pdata_length",
    )

    def __init__(
        self,
        max_pdata_length: int = DEFAULT_MAX_PDATA_LENGTH,
        max_other_length: int = DEFAULT_MAX_OTHER_LENGTH,
    ) -> None:
        """Limits apply to the PDU-length field: P-DATA-TF (type 04H) and all other types."""
        if not 0 <= max_pdata_length <= _MAX_LENGTH_FIELD:
            raise ValueError(f"max_pdata_length must be in 0..2**32-1, not {max_pdata_length}")
        if not 0 <= max_other_length <= _MAX_LENGTH_FIELD:
            raise ValueError(f"max_other_length must be in 0..2**32-1, not {max_other_length}")
        self.max_pdata_length = max_pdata_length
        self.max_other_length = max_other_length
        self._parts: list[memoryview | bytes] = []  # bytes of the PDU in progress
        self._have = 0  # how many bytes of the PDU in progress arrived (in _parts or _body)
        self._need = 0  # total size of the PDU in progress, 0 while its header is incomplete
        self._body: bytearray | None = None  # the whole PDU in progress, once body_buffer() ran
        self._error: PDUDecodeError | None = None

    @property
    def pending(self) -> int:
        """Bytes buffered for a PDU that is not complete yet."""
        return self._have

    def _size(self, header: Buffer, pos: int) -> int:
        """Total size of the PDU whose header starts at pos; refuse it if over the limit."""
        pdu_type = header[pos]
        length: int = _LENGTH.unpack_from(header, pos + 2)[0]
        # PS3.8 Annex D.1: a P-DATA-TF longer than our announced maximum is a protocol error;
        # other types get a local bound so a hostile length cannot make us buffer gigabytes.
        limit = self.max_pdata_length if pdu_type == 0x04 else self.max_other_length
        if limit and length > limit:
            known = pdu_type in PDU_DECODERS
            self._error = PDUDecodeError(
                f"PDU-length {length} exceeds the limit {limit}",
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
        """The missing bytes of the PDU in progress as one writable buffer, or None.

        None unless the PDU's header is complete (so its length passed the limit check, PS3.8
        Annex D.1) and at least ``minimum`` bytes are missing. The bytes buffered so far are
        copied in once; write the next received bytes at the start of the returned view, then
        call ``body_received``. The view ends where the PDU ends: no next PDU spills into it.
        """
        if self._error is not None or not self._need:
            return None
        if self._body is None:
            if self._need - self._have < minimum or self._need > DIRECT_BODY_MAXIMUM:
                return None
            body = bytearray(self._need)
            pos = 0
            for part in self._parts:
                body[pos : pos + len(part)] = part
                pos += len(part)
            self._body, self._parts = body, []
        return memoryview(self._body)[self._have : self._need]

    def body_received(self, nbytes: int) -> list[memoryview]:
        """``nbytes`` were written into ``body_buffer()``; the PDU when it is now complete."""
        if self._body is None or not 0 <= nbytes <= self._need - self._have:
            raise ValueError(f"{nbytes} bytes were not received into body_buffer()")
        self._have += nbytes
        if self._have < self._need:
            return []
        frame = memoryview(self._body).toreadonly()
        self._body = None
        self._have = self._need = 0
        return [frame]

    def feed(self, data: Buffer) -> list[memoryview]:
        """Add received bytes; return every PDU completed by them, header included, in order.

        PDUs wholly inside ``data`` are zero-copy slices of it (a bytes copy of a bytearray or
        memoryview argument); PDUs spread over several calls are joined once. A refused header
        raises ``FramingError`` (a PDUDecodeError) carrying the PDUs completed before it; the
        stream is then out of sync and every later call raises the same error.
        """
        if self._error is not None:
            raise FramingError(self._error)
        out: list[memoryview] = []
        try:
            self._feed(data, out)
        except PDUDecodeError as error:
            raise FramingError(error, out) from None
        return out

    def _feed(self, data: Buffer, out: list[memoryview]) -> None:
        """Frame data into out; raise on a refused header (PS3.8 §9.1.3, Annex D.1)."""
        view = memoryview(data if type(data) is bytes else bytes(data))
        size = len(view)
        if not self._have and size >= 6 and self._size(view, 0) == size:
            out.append(view)  # the usual read: exactly one whole PDU (nothing in progress)
            return
        pos = 0
        if self._body is not None:
            # The PDU in progress already has its own buffer (body_buffer): fill it.
            take = min(self._need - self._have, size)
            self._body[self._have : self._have + take] = view[:take]
            pos = take
            self._have += take
            if self._have == self._need:
                out.append(memoryview(self._body).toreadonly())
                self._body = None
                self._have = self._need = 0
        while pos < size:
            if not self._have:
                # At a PDU boundary: slice whole PDUs straight out of the chunk.
                avail = size - pos
                if avail >= 6:
                    total = self._size(view, pos)
                    if avail >= total:
                        out.append(view[pos : pos + total])
                        pos += total
                        continue
                    self._need = total
                self._parts.append(view[pos:])
                self._have = avail
                break
            if not self._need:
                # PS3.8 §9.1.3 [interp]: the 6-byte header may itself be split across reads.
                take = min(6 - self._have, size - pos)
                self._parts.append(view[pos : pos + take])
                self._have += take
                pos += take
                if self._have < 6:
                    break
                header = b"".join(self._parts)
                self._need = self._size(header, 0)
                self._parts = [header]
            else:
                take = min(self._need - self._have, size - pos)
                self._parts.append(view[pos : pos + take])
                self._have += take
                pos += take
            if self._have == self._need:
                out.append(memoryview(b"".join(self._parts)))
                self._parts = []
                self._have = self._need = 0


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
