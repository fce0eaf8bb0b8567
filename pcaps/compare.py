"""Field-by-field comparison of a live peer's answers with recorded ones, with normalisation.

What is compared, and what is normalised (``NORMALISED``, also in docs/pcaps.md): a peer of a
different build, or the same build on another day, legitimately changes some values. Those
are left out of the comparison; everything else that PS3.8 or PS3.7 makes significant is
compared and each difference is named by its field.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import Message, Reassembler
from netdicom2.items import PresentationContextItemAC, PresentationContextItemRQ
from netdicom2.pcaps.describe import command_name, parse_command, sub_item_fields
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    PDataTfPDU,
)

__all__ = ["NORMALISED", "MessageAssembler", "compare_messages", "compare_pdus"]

#: Values a comparison leaves out, and why (the documented normalisation).
NORMALISED: dict[str, str] = {
    "ac-echo": "A-ASSOCIATE-AC bytes 11-74 echo the RQ and are not tested (PS3.8 Table 9-17)",
    "implementation": "Implementation Class UID (52H) and Version Name (55H): the peer's build "
    "(PS3.7 D.3.3.2)",
    "rejected-ts": "transfer syntax of a presentation context whose result is not acceptance: "
    "not significant (PS3.8 Table 9-18)",
    "order": "order of presentation contexts (matched by ID, §7.1.1.13) and of user information "
    "sub-items (§9.3.2.3)",
    "reserved": "reserved fields (PS3.8 §9.3: not tested)",
    "abort-reason": "A-ABORT reason when the source is 0 (not significant, §9.3.8)",
    "fragmentation": "how P-DATA is cut into PDUs and PDVs (PS3.8 Annex E); P-DATA is compared "
    "per DIMSE message",
    "peer-message-id": "(0000,0110) Message ID of requests the peer originates (PS3.7 §9.1.1.1)",
    "peer-uids": "(0000,1000)/(0000,1001) SOP Instance UIDs of requests the peer originates",
    "group-length": "(0000,0000) Command Group Length (follows the other elements)",
    "error-comment": "(0000,0902) Error Comment: free text",
    "datasets": "data set contents (presence compared; bytes only with --strict-datasets)",
    "timing": "time between PDUs (only the order is compared)",
}

_US = struct.Struct("<H")


def _strip(value: str | None) -> str | None:
    """A UID/title without padding (PS3.8 Annex F [interp])."""
    return None if value is None else value.strip(" \x00")


def _diff(out: list[tuple[str, str, str]], name: str, expected: object, actual: object) -> None:
    """Append (field, expected, actual) when they differ."""
    if expected != actual:
        out.append((name, repr(expected), repr(actual)))


def _sub_items(pdu: AAssociateRqPDU | AAssociateAcPDU) -> dict[tuple[Any, ...], dict[str, Any]]:
    """User information sub-items keyed by type (+ SOP class), normalised items left out."""
    info = pdu.user_information
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    if info is None:
        return out
    for sub in info.sub_items:
        fields = sub_item_fields(sub)
        kind = fields["type"]
        if kind in (0x52, 0x55):
            continue  # NORMALISED["implementation"]
        key: tuple[Any, ...] = (kind, fields.get("sop_class"))
        while key in out:  # bounded by the number of sub-items
            key = (*key, len(out))
        out[key] = fields
    return out


def _associate_fields(pdu: AAssociateRqPDU | AAssociateAcPDU) -> dict[str, object]:
    """Compared A-ASSOCIATE fields: version bit 0, RQ AE titles (the AC's echo is NORMALISED
    ["ac-echo"]), application context (PS3.8 Tables 9-11, 9-17)."""
    fields: dict[str, object] = {"protocol-version bit 0": pdu.protocol_version & 1}
    if isinstance(pdu, AAssociateRqPDU):
        fields["called AE title"] = _strip(pdu.called_ae_title)
        fields["calling AE title"] = _strip(pdu.calling_ae_title)
    fields["application context"] = pdu.application_context_name
    return fields


def _context_fields(
    item: PresentationContextItemRQ | PresentationContextItemAC,
) -> dict[str, object]:
    """Compared presentation context fields: RQ abstract syntax and transfer syntaxes in order
    of preference (PS3.8 Table 9-13); AC result, and the transfer syntax only when accepted
    (Table 9-18, NORMALISED["rejected-ts"])."""
    if isinstance(item, PresentationContextItemRQ):
        return {
            "abstract syntax": _strip(item.abstract_syntax),
            "transfer syntax": [_strip(t) for t in item.transfer_syntaxes],
        }
    fields: dict[str, object] = {"result": item.result}
    if item.result == 0:
        fields["transfer syntax"] = _strip(item.transfer_syntax)
    return fields


def _diff_fields(
    out: list[tuple[str, str, str]],
    prefix: str,
    expected: dict[str, object],
    actual: dict[str, object],
) -> None:
    """The fields both sides carry, in order (one a side leaves untested is not in its dict)."""
    for name, value in expected.items():
        if name in actual:
            _diff(out, prefix + name, value, actual[name])


def _compare_associate(
    expected: AAssociateRqPDU | AAssociateAcPDU,
    actual: AAssociateRqPDU | AAssociateAcPDU,
    out: list[tuple[str, str, str]],
) -> None:
    """A-ASSOCIATE-RQ or -AC (same type): the PDU's fields, each presentation context matched
    by ID, then the user information sub-items matched by type (and SOP class), normalised ones
    left out (NORMALISED["order"], ["implementation"])."""
    _diff_fields(out, "", _associate_fields(expected), _associate_fields(actual))
    want = {c.context_id: c for c in expected.presentation_context_items}
    have = {c.context_id: c for c in actual.presentation_context_items}
    _diff(out, "presentation context IDs", sorted(want), sorted(have))
    for context_id in sorted(set(want) & set(have)):
        _diff_fields(
            out,
            f"context {context_id} ",
            _context_fields(want[context_id]),
            _context_fields(have[context_id]),
        )
    subs_a, subs_b = _sub_items(expected), _sub_items(actual)
    for key in sorted(set(subs_a) | set(subs_b), key=repr):
        label = f"user information {key[0]:02X}H" + (f" {key[1]}" if key[1] else "")
        _diff(out, label, subs_a.get(key), subs_b.get(key))


def compare_pdus(expected: PDU, actual: PDU) -> list[tuple[str, str, str]]:
    """Differences between a recorded and a live non-P-DATA PDU, field by field."""
    out: list[tuple[str, str, str]] = []
    if type(expected) is not type(actual):
        return [("PDU type", type(expected).__name__, type(actual).__name__)]
    if isinstance(expected, AAssociateRqPDU | AAssociateAcPDU) and isinstance(
        actual, AAssociateRqPDU | AAssociateAcPDU
    ):
        _compare_associate(expected, actual, out)
    elif isinstance(expected, AAssociateRjPDU) and isinstance(actual, AAssociateRjPDU):
        _diff(out, "A-ASSOCIATE-RJ result", expected.result, actual.result)
        _diff(out, "A-ASSOCIATE-RJ source", expected.source, actual.source)
        _diff(out, "A-ASSOCIATE-RJ reason/diag", expected.reason_diag, actual.reason_diag)
    elif isinstance(expected, AAbortPDU) and isinstance(actual, AAbortPDU):
        _diff(out, "A-ABORT source", expected.source, actual.source)
        if expected.source == 2 and actual.source == 2:
            _diff(out, "A-ABORT reason/diag", expected.reason_diag, actual.reason_diag)
    return out


class MessageAssembler:
    """P-DATA-TF PDUs of one direction into DIMSE messages (PS3.8 Annex E)."""

    def __init__(self) -> None:
        self._reassembler = Reassembler()
        self.messages: list[Message] = []
        self.errors: list[str] = []

    def add(self, pdus: Iterable[PDU]) -> None:
        """Feed P-DATA-TF PDUs; complete messages accumulate in ``messages``."""
        for pdu in pdus:
            if not isinstance(pdu, PDataTfPDU):
                continue
            try:
                self.messages += self._reassembler.add(pdu)
            except PDUDecodeError as exc:
                self.errors.append(exc.reason)


def _elements(message: Message) -> dict[int, bytes]:
    """The command set's elements ({} if it does not parse)."""
    return parse_command(message.command) or {}


def compare_messages(
    expected: Message, actual: Message, *, strict_datasets: bool = False
) -> list[tuple[str, str, str]]:
    """Differences between a recorded and a live DIMSE message (command set, data set)."""
    out: list[tuple[str, str, str]] = []
    _diff(out, "presentation context ID", expected.context_id, actual.context_id)
    want, have = _elements(expected), _elements(actual)
    name = command_name(want)
    field = want.get(0x0100)
    request = field is not None and len(field) == 2 and not _US.unpack(field)[0] & 0x8000
    skip = {0x0000, 0x0902}
    if request:
        skip |= {0x0110, 0x1000, 0x1001}  # NORMALISED["peer-message-id"], ["peer-uids"]
    for element in sorted((set(want) | set(have)) - skip):
        a, b = want.get(element), have.get(element)
        if a is not None and b is not None and len(a) == 2 and len(b) == 2:
            _diff(
                out,
                f"{name} (0000,{element:04X})",
                f"0x{_US.unpack(a)[0]:04X}",
                f"0x{_US.unpack(b)[0]:04X}",
            )
        else:
            _diff(out, f"{name} (0000,{element:04X})", a, b)
    _diff(out, f"{name} data set present", expected.dataset is not None, actual.dataset is not None)
    if strict_datasets and expected.dataset is not None and actual.dataset is not None:
        _diff(out, f"{name} data set bytes", len(expected.dataset), len(actual.dataset))
        if len(expected.dataset) == len(actual.dataset) and expected.dataset != actual.dataset:
            out.append((f"{name} data set bytes", "recorded bytes", "different bytes"))
    return out
