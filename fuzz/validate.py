"""An independent structural judge of one PDU: valid, invalid (Evt19) or either (PS3.8 §9.3).

The fuzz oracles must know what a receiver is *required* to do with a byte string without asking
the codec under test. This module re-reads PS3.8 §9.3 and PS3.7 D.3.3 on its own, small and
slow, and sorts every PDU into:

* ``VALID``: the receiver must take it as its PDU type (Evt3/4/6/10/12/13/16). This includes
  everything PS3.8 says must not be rejected (spec notes §4.1): reserved fields, protocol-version
  bits other than bit 0, unknown items and sub-items (skipped by their length), sub-item order.
* ``INVALID``: the receiver must see Evt19: an unknown PDU type (§9.3.1), or one of the
  structural triggers of spec notes §4.1 [interp]: a length that overruns or underruns its
  container, a mandatory item missing or doubled,
  a P-DATA-TF without PDV or with a PDV shorter than 2 bytes. ``interp`` marks the contextual
  [interp] rules (P-DATA over the announced maximum, on a context not accepted: §10.1, D.1;
  an accepted presentation context without its transfer syntax sub-item, Table 9-18).
* ``EITHER``: the standard does not decide (even or repeated context IDs, odd AE titles or
  UIDs, a missing sub-item 51H/52H, out-of-range codes, an RJ/RELEASE/ABORT whose length is
  not 4): both readings conform.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

__all__ = ["EITHER", "INVALID", "VALID", "Verdict", "judge"]

VALID, EITHER, INVALID = "valid", "either", "invalid"
_RANK = {VALID: 0, EITHER: 1, INVALID: 2}
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass
class Verdict:
    """How a receiver must read one PDU, and the facts later PDUs depend on."""

    pdu_type: int
    level: str = VALID
    rules: list[str] = field(default_factory=list)
    interp: bool = False  # INVALID only by a contextual [interp] rule
    interp_rules: list[str] = field(default_factory=list)  # their keys (fuzz.interp.RULES)
    undecided: bool = False  # some rule left both readings open (EITHER)
    version_bit0: bool = True  # A-ASSOCIATE-RQ: bit 0 of protocol-version (AE-6 branch)
    context_ids: tuple[int, ...] = ()  # RQ: proposed; AC: accepted (result 0)
    max_length: int | None = None  # sub-item 51H of an RQ/AC
    source: int | None = None  # A-ABORT / A-ASSOCIATE-RJ source

    def flag(self, level: str, rule: str, *, interp: str = "") -> None:
        """Record a rule; the verdict is the most severe level seen.

        ``interp`` names the ``fuzz.interp.RULES`` entry when the rule is one of them.
        """
        self.rules.append(rule)
        self.undecided |= level == EITHER
        if interp:
            self.interp_rules.append(interp)
        if _RANK[level] > _RANK[self.level]:
            self.level = level
            self.interp = bool(interp)
        elif level == INVALID and not interp:
            self.interp = False


def judge(
    data: bytes,
    *,
    accepted: frozenset[int] | None = None,
    max_pdata: int | None = None,
    contexts_known: bool = True,
) -> Verdict:
    """Sort one whole PDU (header + PDU-length bytes); ``accepted``/``max_pdata`` for P-DATA.

    ``contexts_known=False``: an association exists but which contexts it accepted is not
    known (the target's A-ASSOCIATE-AC was not seen), so a PDV's context decides nothing.
    """
    pdu_type = data[0] if data else -1
    verdict = Verdict(pdu_type)
    if len(data) < 6:
        verdict.flag(INVALID, "§9.3.1: shorter than the 6-byte PDU header")
        return verdict
    length = struct.unpack_from(">I", data, 2)[0]
    if length != len(data) - 6:
        verdict.flag(INVALID, "§9.3.1: PDU-length disagrees with the bytes given")
        return verdict
    body = data[6:]
    if pdu_type in (0x01, 0x02):
        _associate(body, verdict, rq=pdu_type == 0x01)
    elif pdu_type == 0x03:
        if _fixed(body, verdict, "Table 9-21"):
            result, source, reason = body[1], body[2], body[3]
            verdict.source = source
            if result not in (1, 2) or source not in (1, 2, 3):
                verdict.flag(EITHER, "Table 9-21: result/source out of range")
            elif (source == 2 and reason not in (1, 2)) or (source == 3 and reason > 7):
                verdict.flag(EITHER, "Table 9-21: reason out of range")
    elif pdu_type == 0x04:
        _pdata(body, verdict, accepted if contexts_known else None, max_pdata, length)
        if not contexts_known and verdict.level == VALID:
            verdict.flag(EITHER, "§10.1: the accepted presentation contexts are not known")
    elif pdu_type in (0x05, 0x06):
        _fixed(body, verdict, "Tables 9-24/9-25")
    elif pdu_type == 0x07:
        if _fixed(body, verdict, "Table 9-26"):
            verdict.source = body[2]
            if body[2] > 2:
                verdict.flag(EITHER, "Table 9-26: source out of range")
            elif body[2] == 2 and body[3] > 6:
                verdict.flag(EITHER, "Table 9-26: reason out of range")
    else:
        verdict.flag(INVALID, f"§9.3.1: unknown PDU-type 0x{pdu_type:02X}")
    return verdict


def _fixed(body: bytes, verdict: Verdict, table: str) -> bool:
    """RJ/RELEASE/ABORT: PDU-length fixed at 4, but no receiver rule (spec notes §7.6).

    Treating another length as Evt19 is allowed, and so is reading the PDU as its type: EITHER.
    """
    if len(body) != 4:
        verdict.flag(EITHER, f"{table} [interp]: PDU-length {len(body)}, fixed 4")
        return len(body) > 4
    return True


def _items(
    body: bytes, start: int, end: int, verdict: Verdict, where: str
) -> list[tuple[int, int, int, int]] | None:
    """(type, reserved, value start, value end) of each item; None when lengths do not nest."""
    out = []
    off = start
    while off < end:
        if end - off < 4:
            verdict.flag(INVALID, f"§9.3.1: truncated item header in {where}")
            return None
        item_type, reserved, length = struct.unpack_from(">BBH", body, off)
        if off + 4 + length > end:
            verdict.flag(INVALID, f"§9.3.1: item 0x{item_type:02X} overruns {where}")
            return None
        out.append((item_type, reserved, off + 4, off + 4 + length))
        off += 4 + length
    return out


def _uid(value: bytes, verdict: Verdict, what: str) -> None:
    """Annex F: digits and dots, no padding, at most 64 characters; else EITHER."""
    text = value.decode("latin-1")
    stripped = text.rstrip("\x00 ")
    if not stripped or len(text) > 64 or not _UID.fullmatch(stripped):
        verdict.flag(EITHER, f"Annex F: {what} UID {text[:70]!r}")


def _ae_title(value: bytes, verdict: Verdict, what: str) -> None:
    """§7.1.1.3-5: ISO 646 G0, not all spaces; otherwise the user decides (EITHER)."""
    if value.strip(b" ") == b"" or any(b < 0x20 or b > 0x7E or b == 0x5C for b in value):
        verdict.flag(EITHER, f"Table 9-11: {what} AE title {value!r}")


def _associate(body: bytes, verdict: Verdict, *, rq: bool) -> None:
    """A-ASSOCIATE-RQ/AC: 68 fixed bytes then items 10H, 20H/21H, 50H (Tables 9-11, 9-17)."""
    if len(body) < 68:
        verdict.flag(INVALID, "Table 9-11: shorter than the 68 fixed bytes")
        return
    version = struct.unpack_from(">H", body, 0)[0]
    verdict.version_bit0 = bool(version & 1)
    if rq:
        _ae_title(body[4:20], verdict, "called")
        _ae_title(body[20:36], verdict, "calling")
    elif not version & 1:
        verdict.flag(EITHER, "Table 9-17: A-ASSOCIATE-AC protocol-version without bit 0")
    items = _items(body, 68, len(body), verdict, "the PDU")
    if items is None:
        return
    pc_type = 0x20 if rq else 0x21
    counts = {0x10: 0, pc_type: 0, 0x50: 0}
    ids: list[int] = []
    last_known = 0
    for item_type, _reserved, start, end in items:
        if item_type not in counts:
            continue  # §9.3.1: unknown items are skipped by their length
        if item_type < last_known:
            verdict.flag(EITHER, "§9.3.1: items not in increasing type order")
        last_known = item_type
        counts[item_type] += 1
        if item_type == 0x10:
            _uid(body[start:end], verdict, "application context")
        elif item_type == 0x50:
            _user_information(body, start, end, verdict)
        elif _presentation_context(body, start, end, verdict, rq=rq) and (
            rq or body[start + 2] == 0
        ):
            ids.append(body[start])
    for item_type, name in ((0x10, "application context"), (0x50, "user information")):
        if counts[item_type] != 1:
            verdict.flag(INVALID, f"Table 9-11: {counts[item_type]} {name} items, exactly one")
    if counts[pc_type] == 0:
        verdict.flag(INVALID, "Table 9-11: no presentation context item")
    if rq and any(i % 2 == 0 for i in ids):
        verdict.flag(EITHER, "§7.1.1.13: presentation context IDs even or zero")
    if len(set(ids)) != len(ids):
        verdict.flag(EITHER, "§7.1.1.13: presentation context ID repeated")
    verdict.context_ids = tuple(ids)


def _presentation_context(body: bytes, start: int, end: int, verdict: Verdict, *, rq: bool) -> bool:
    """Item 20H (one 30H, 1+ 40H) or 21H (result, at most one 40H); Tables 9-13, 9-18."""
    if end - start < 4:
        verdict.flag(INVALID, "Table 9-13: presentation context item shorter than 4 bytes")
        return False
    subs = _items(body, start + 4, end, verdict, "a presentation context")
    if subs is None:
        return False
    abstract = [s for s in subs if s[0] == 0x30]
    transfer = [s for s in subs if s[0] == 0x40]
    result = body[start + 2]
    # A context whose sub-items are wrong (but nest) may be refused alone (result 2, Table 9-18)
    # or make the PDU invalid: spec notes §4.1 lists only missing items, not sub-items.
    if rq:
        if len(abstract) != 1 or not transfer:
            verdict.flag(EITHER, "Table 9-13: not one abstract and 1+ transfer syntaxes")
            return False
        _uid(body[abstract[0][2] : abstract[0][3]], verdict, "abstract syntax")
    else:
        if abstract or len(transfer) > 1:
            verdict.flag(EITHER, "Table 9-18: abstract syntax or 2+ transfer syntaxes")
            return False
        if result > 4:
            verdict.flag(EITHER, "Table 9-18: result/reason out of range")
        if result == 0 and not transfer:
            # Not among the Evt19 triggers of spec notes §4.1: a contextual [interp] rule.
            rule = "Table 9-18 [interp]: accepted context without transfer syntax"
            verdict.flag(INVALID, rule, interp="ac-context-no-transfer-syntax")
            return False
        if result != 0:
            return True  # the transfer syntax of a rejected context is not tested
    for _t, _r, a, b in transfer:
        _uid(body[a:b], verdict, "transfer syntax")
    return True


def _nested(body: bytes, off: int, end: int) -> int | None:
    """End of a 2-byte-length-prefixed field at off, None when it overruns end."""
    if end - off < 2:
        return None
    stop = off + 2 + struct.unpack_from(">H", body, off)[0]
    return stop if stop <= end else None


def _user_information(body: bytes, start: int, end: int, verdict: Verdict) -> None:
    """Item 50H and its sub-items (PS3.8 Annex D.1, PS3.7 D.3.3); unknown ones are skipped."""
    subs = _items(body, start, end, verdict, "the user information item")
    if subs is None:
        return
    seen: dict[int, int] = {}
    for sub_type, _reserved, a, b in subs:
        seen[sub_type] = seen.get(sub_type, 0) + 1
        size = b - a
        bad = False
        if sub_type in (0x51, 0x53):
            bad = size != 4
            if sub_type == 0x51 and not bad:
                verdict.max_length = struct.unpack_from(">I", body, a)[0]
        elif sub_type == 0x52:
            _uid(body[a:b], verdict, "implementation class")
        elif sub_type == 0x54:
            stop = _nested(body, a, b)
            bad = stop is None or b - stop != 2
        elif sub_type == 0x55:
            if not 1 <= size <= 16:
                verdict.flag(EITHER, "D.3-3: implementation version name not 1-16 characters")
        elif sub_type == 0x56:
            bad = _nested(body, a, b) is None
        elif sub_type == 0x57:
            bad = _common_extended(body, a, b)
        elif sub_type == 0x58:
            first = _nested(body, a + 2, b) if size >= 2 else None
            bad = first is None or _nested(body, first, b) != b
        elif sub_type == 0x59:
            bad = _nested(body, a, b) != b
        if bad:
            verdict.flag(INVALID, f"D.3.3: sub-item 0x{sub_type:02X} lengths do not nest")
    for sub_type in (0x51, 0x52):
        if seen.get(sub_type, 0) != 1:
            verdict.flag(EITHER, f"D.1/D.3.3.2: {seen.get(sub_type, 0)} sub-items 0x{sub_type:02X}")


def _common_extended(body: bytes, a: int, b: int) -> bool:
    """Sub-item 57H: three nested length-prefixed fields that end exactly at b (D.3-12)."""
    sop = _nested(body, a, b)
    svc = None if sop is None else _nested(body, sop, b)
    rel = None if svc is None else _nested(body, svc, b)
    if rel != b or svc is None:
        return True
    off = svc + 2
    while off < b:
        nxt = _nested(body, off, b)
        if nxt is None:
            return True
        off = nxt
    return False


def _pdata(
    body: bytes,
    verdict: Verdict,
    accepted: frozenset[int] | None,
    max_pdata: int | None,
    length: int,
) -> None:
    """P-DATA-TF: 1+ PDV items, each 4-byte length >= 2, nesting exactly (Tables 9-22, 9-23)."""
    off = 0
    ids = []
    while off < len(body):
        if len(body) - off < 6:
            verdict.flag(INVALID, "Table 9-23: truncated PDV item")
            return
        size = struct.unpack_from(">I", body, off)[0]
        if size < 2 or off + 4 + size > len(body):
            verdict.flag(INVALID, "Table 9-23: PDV item-length < 2 or overruns the PDU")
            return
        ids.append(body[off + 4])
        off += 4 + size
    if not ids:
        verdict.flag(INVALID, "Table 9-22: P-DATA-TF without PDV item")
        return
    verdict.context_ids = tuple(ids)
    if accepted is not None and not set(ids) <= accepted:
        verdict.flag(
            INVALID, "§10.1 [interp]: PDV on a context not accepted", interp="pdata-context"
        )
    if max_pdata and length > max_pdata:
        rule = "Annex D.1 [interp]: longer than the announced maximum"
        verdict.flag(INVALID, rule, interp="pdata-max-length")
