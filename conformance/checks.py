"""What a received PDU must contain, judged against what we sent (beyond its PDU type).

Each check returns the deviations it finds, in words, or an empty list. They read the PDU
through the codec only after the peer's own framing (``peer.py``) delimited it; a PDU the codec
cannot decode is a deviation too (PS3.8 §9.3: its fields are invalid).
"""

from __future__ import annotations

from netdicom2.conformance.peer import parse_frame
from netdicom2.exceptions import NetDicomError
from netdicom2.pdu import AAssociateAcPDU, AAssociateRqPDU, decode

__all__ = [
    "RJ_REASONS",
    "ac_deviations",
    "pdata_deviations",
    "rj_deviations",
    "rj_text",
]

# PS3.8 §9.3.4, Table 9-21: the defined reason/diag values of each A-ASSOCIATE-RJ source.
RJ_REASONS: dict[int, dict[int, str]] = {
    1: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        7: "called-AE-title-not-recognized",
    },
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {1: "temporary-congestion", 2: "local-limit-exceeded"},
}
_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_SOURCES = {1: "service-user", 2: "service-provider (ACSE)", 3: "service-provider (presentation)"}
# PS3.8 §9.3.3.2, Table 9-18: presentation context Result/Reason values.
_PC_RESULTS = (0, 1, 2, 3, 4)


def rj_text(result: int, source: int, reason: int) -> str:
    """An RJ triple in the standard's words: "rejected-transient, service-provider ..."."""
    return (
        f"{_RESULTS.get(result, f'result {result}')}, {_SOURCES.get(source, f'source {source}')},"
        f" {RJ_REASONS.get(source, {}).get(reason, f'reason {reason}')}"
    )


def rj_deviations(data: bytes) -> list[str]:
    """The A-ASSOCIATE-RJ's result/source/reason triple against Table 9-21."""
    fields = parse_frame(data)
    if fields["length"] != 4 or len(data) != 10:
        return [f"A-ASSOCIATE-RJ PDU-length {fields['length']} (Table 9-21: always 4)"]
    result, source, reason = fields["result"], fields["source"], fields["reason"]
    out = []
    if result not in _RESULTS:
        out.append(f"result {result} is not 1 or 2 (Table 9-21)")
    if source not in RJ_REASONS:
        out.append(f"source {source} is not 1, 2 or 3 (Table 9-21)")
    elif reason not in RJ_REASONS[source]:
        defined = ", ".join(str(r) for r in RJ_REASONS[source])
        out.append(f"reason {reason} is not defined for source {source} (Table 9-21: {defined})")
    return out


def ac_deviations(data: bytes, rq: AAssociateRqPDU | None) -> list[str]:
    """The A-ASSOCIATE-AC against our request (PS3.8 §9.3.3, Table 9-18; §7.1.1.13).

    Each proposed presentation context is answered exactly once and no other; the result is
    0..4; an accepted context names one transfer syntax among those proposed for it.
    """
    try:
        ac = decode(data)
    except NetDicomError as exc:
        return [f"the A-ASSOCIATE-AC cannot be decoded: {exc}"]
    if not isinstance(ac, AAssociateAcPDU) or rq is None:
        return []
    proposed = {pc.context_id: pc.transfer_syntaxes for pc in rq.presentation_context_items}
    out: list[str] = []
    if not ac.protocol_version & 1:
        out.append(f"protocol-version 0x{ac.protocol_version:04X} without bit 0 (Table 9-17)")
    seen: set[int] = set()
    for pc in ac.presentation_context_items:
        where = f"presentation context {pc.context_id}"
        if pc.context_id not in proposed:
            out.append(f"{where} answered but never proposed (§7.1.1.13)")
        elif pc.context_id in seen:
            out.append(f"{where} answered twice (§7.1.1.13)")
        seen.add(pc.context_id)
        if pc.result not in _PC_RESULTS:
            out.append(f"{where}: result/reason {pc.result} is not 0..4 (Table 9-18)")
        elif (
            pc.result == 0
            and pc.context_id in proposed
            and pc.transfer_syntax not in proposed[pc.context_id]
        ):
            out.append(
                f"{where} accepted with transfer syntax {pc.transfer_syntax!r},"
                " which was not proposed for it (Table 9-18)"
            )
    missing = sorted(set(proposed) - seen)
    if missing:
        out.append(f"presentation contexts {missing} not answered (§7.1.1.13)")
    return out


def pdata_deviations(data: bytes, announced: int | None) -> list[str]:
    """P-DATA-TF no longer than the maximum length we announced (PS3.8 Annex D.1)."""
    if not announced:  # 0 or absent: no limit (Annex D.1)
        return []
    length = parse_frame(data)["length"]
    # Annex D.1: the maximum length bounds the PDV items of one P-DATA-TF (PDU-length).
    if length > announced:
        return [
            f"P-DATA-TF PDU-length {length} exceeds the maximum length {announced} we announced"
        ]
    return []
