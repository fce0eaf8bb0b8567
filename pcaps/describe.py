"""Human-readable names and one-line summaries of PDUs and DIMSE command sets.

Code tables are PS3.8 §9.3 (Tables 9-18, 9-21, 9-26) and PS3.7 §9.3/§10.3 (command fields);
command sets are read as Implicit VR Little Endian group 0000 (PS3.7 §6.3.1), keeping every
element's raw value so that comparisons see all of them.
"""

from __future__ import annotations

import struct
from typing import Any

from netdicom2.items import (
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UnknownItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
)
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    PDataTfPDU,
)

__all__ = [
    "PDU_NAMES",
    "command_name",
    "describe",
    "describe_command",
    "parse_command",
    "sub_item_fields",
]

PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}

# PS3.8 Table 9-21.
RJ_RESULT = {1: "rejected-permanent", 2: "rejected-transient"}
RJ_SOURCE = {1: "service-user", 2: "service-provider (ACSE)", 3: "service-provider (presentation)"}
RJ_REASON = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
# PS3.8 Table 9-26.
ABORT_SOURCE = {0: "service-user", 1: "reserved", 2: "service-provider"}
ABORT_REASON = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    4: "unrecognized-PDU-parameter",
    5: "unexpected-PDU-parameter",
    6: "invalid-PDU-parameter-value",
}
# PS3.8 Table 9-18.
CONTEXT_RESULT = {
    0: "acceptance",
    1: "user-rejection",
    2: "no-reason",
    3: "abstract-syntax-not-supported",
    4: "transfer-syntaxes-not-supported",
}
# PS3.7 §9.3 and §10.3: command field values.
COMMANDS = {
    0x0001: "C-STORE-RQ",
    0x8001: "C-STORE-RSP",
    0x0010: "C-GET-RQ",
    0x8010: "C-GET-RSP",
    0x0020: "C-FIND-RQ",
    0x8020: "C-FIND-RSP",
    0x0021: "C-MOVE-RQ",
    0x8021: "C-MOVE-RSP",
    0x0030: "C-ECHO-RQ",
    0x8030: "C-ECHO-RSP",
    0x0FFF: "C-CANCEL-RQ",
    0x0100: "N-EVENT-REPORT-RQ",
    0x8100: "N-EVENT-REPORT-RSP",
    0x0110: "N-GET-RQ",
    0x8110: "N-GET-RSP",
    0x0120: "N-SET-RQ",
    0x8120: "N-SET-RSP",
    0x0130: "N-ACTION-RQ",
    0x8130: "N-ACTION-RSP",
    0x0140: "N-CREATE-RQ",
    0x8140: "N-CREATE-RSP",
    0x0150: "N-DELETE-RQ",
    0x8150: "N-DELETE-RSP",
}
_ELEMENT = struct.Struct("<HHI")


def parse_command(data: bytes | memoryview) -> dict[int, bytes] | None:
    """Group 0000 elements of an Implicit VR LE command set by element number; None if bad."""
    view = bytes(data)
    out: dict[int, bytes] = {}
    offset = 0
    while offset < len(view):  # bounded: every element advances offset by >= 8
        if len(view) - offset < 8:
            return None
        group, element, length = _ELEMENT.unpack_from(view, offset)
        offset += 8
        if group != 0 or length > len(view) - offset:
            return None
        out[element] = view[offset : offset + length]
        offset += length
    return out


def _us(raw: bytes | None) -> int | None:
    """A US value, None when absent or not 2 bytes."""
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


def command_name(elements: dict[int, bytes]) -> str:
    """The command field's name, e.g. "C-ECHO-RSP" (PS3.7 §9.3)."""
    value = _us(elements.get(0x0100))
    return "?" if value is None else COMMANDS.get(value, f"command 0x{value:04X}")


def describe_command(elements: dict[int, bytes]) -> str:
    """ "C-STORE-RSP msg 1 status 0x0000": name, message (being responded to) ID, status."""
    parts = [command_name(elements)]
    message = _us(elements.get(0x0110))
    answered = _us(elements.get(0x0120))
    status = _us(elements.get(0x0900))
    if message is not None:
        parts.append(f"msg {message}")
    if answered is not None:
        parts.append(f"answers {answered}")
    if status is not None:
        parts.append(f"status 0x{status:04X}")
    return " ".join(parts)


def _text(value: str) -> str:
    """A UID or title without padding."""
    return value.strip(" \x00")


def sub_item_fields(sub: object) -> dict[str, Any]:
    """A user-information sub-item as plain fields (PS3.8 Annex D, PS3.7 D.3.3)."""
    if isinstance(sub, MaximumLengthSubItem):
        return {"type": 0x51, "maximum_length": sub.maximum_length}
    if isinstance(sub, ImplementationClassUIDSubItem):
        return {"type": 0x52, "uid": _text(sub.uid)}
    if isinstance(sub, AsynchronousOperationsWindowSubItem):
        return {"type": 0x53, "invoked": sub.invoked, "performed": sub.performed}
    if isinstance(sub, SCPSCURoleSelectionSubItem):
        return {
            "type": 0x54,
            "sop_class": _text(sub.sop_class_uid),
            "scu": sub.scu_role,
            "scp": sub.scp_role,
        }
    if isinstance(sub, ImplementationVersionNameSubItem):
        return {"type": 0x55, "name": _text(sub.name)}
    if isinstance(sub, SOPClassExtendedNegotiationSubItem):
        info = bytes(sub.service_class_application_information).hex()
        return {"type": 0x56, "sop_class": _text(sub.sop_class_uid), "info": info}
    if isinstance(sub, SOPClassCommonExtendedNegotiationSubItem):
        return {
            "type": 0x57,
            "sop_class": _text(sub.sop_class_uid),
            "service_class": _text(sub.service_class_uid),
            "related": [_text(u) for u in sub.related_general_sop_class_uids],
        }
    if isinstance(sub, UserIdentityRQSubItem):
        return {
            "type": 0x58,
            "identity_type": sub.user_identity_type,
            "response_requested": sub.positive_response_requested,
            "primary": bytes(sub.primary_field).hex(),
            "secondary": bytes(sub.secondary_field).hex(),
        }
    if isinstance(sub, UserIdentityACSubItem):
        return {"type": 0x59, "response": bytes(sub.server_response).hex()}
    if isinstance(sub, UnknownItem):
        return {"type": sub.item_type, "data": sub.data.hex()}
    return {"type": -1, "repr": repr(sub)}


def _user_info(info: UserInformationItem | None) -> str:
    """ "max 16384 impl 1.2.3/NAME +53 +54x2": the interesting sub-items in short."""
    if info is None:
        return "no user information"
    parts = [f"max {info.maximum_length}", f"impl {info.implementation_class_uid}"]
    if info.implementation_version_name:
        parts[-1] += f"/{info.implementation_version_name}"
    counts: dict[int, int] = {}
    for sub in info.sub_items:
        kind = int(getattr(sub, "item_type", -1))
        if kind not in (0x51, 0x52, 0x55):
            counts[kind] = counts.get(kind, 0) + 1
    parts += [f"+{k:02X}" + (f"x{n}" if n > 1 else "") for k, n in sorted(counts.items())]
    return " ".join(parts)


def describe(pdu: PDU) -> str:
    """One line: the PDU's name and its significant fields."""
    name = PDU_NAMES[pdu.pdu_type]
    if isinstance(pdu, AAssociateRqPDU):
        contexts = pdu.presentation_context_items
        shown = ", ".join(
            f"{c.context_id}:{_text(c.abstract_syntax)}[{len(c.transfer_syntaxes)} TS]"
            for c in contexts[:3]
        )
        more = f", +{len(contexts) - 3}" if len(contexts) > 3 else ""
        return (
            f"{name} {_text(pdu.calling_ae_title)!r}->{_text(pdu.called_ae_title)!r} "
            f"{len(contexts)} contexts ({shown}{more}); {_user_info(pdu.user_information)}"
        )
    if isinstance(pdu, AAssociateAcPDU):
        results = pdu.presentation_context_items
        accepted = sum(1 for c in results if c.result == 0)
        shown = ", ".join(
            f"{c.context_id}:"
            + (
                "ok " + _text(c.transfer_syntax or "")
                if c.result == 0
                else CONTEXT_RESULT.get(c.result, str(c.result))
            )
            for c in results[:3]
        )
        more = f", +{len(results) - 3}" if len(results) > 3 else ""
        return (
            f"{name} {accepted}/{len(results)} accepted ({shown}{more}); "
            f"{_user_info(pdu.user_information)}"
        )
    if isinstance(pdu, AAssociateRjPDU):
        reason = RJ_REASON.get((pdu.source, pdu.reason_diag), str(pdu.reason_diag))
        return (
            f"{name} result {pdu.result} ({RJ_RESULT.get(pdu.result, '?')}) source {pdu.source} "
            f"({RJ_SOURCE.get(pdu.source, '?')}) reason {pdu.reason_diag} ({reason})"
        )
    if isinstance(pdu, PDataTfPDU):
        pdvs = ", ".join(
            f"ctx {p.context_id} {'cmd' if p.is_command else 'data'}"
            f"{' last' if p.is_last else ''} {len(p.fragment)} B"
            for p in pdu.data_value_items
        )
        return f"{name} [{pdvs}]"
    if isinstance(pdu, AAbortPDU):
        reason = ABORT_REASON.get(pdu.reason_diag, str(pdu.reason_diag)) if pdu.source == 2 else "-"
        return (
            f"{name} source {pdu.source} ({ABORT_SOURCE.get(pdu.source, '?')}) "
            f"reason {pdu.reason_diag} ({reason})"
        )
    return name
