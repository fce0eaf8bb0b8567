"""Association negotiation helpers for the example SCP/SCU (PS3.8 §7.1, PS3.7 Annex D).

Pure functions: build an A-ASSOCIATE-RQ, answer one with an AC or an RJ, and read which
presentation contexts an AC accepted. The state machine never calls these; users may.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netdicom2 import __version__
from netdicom2.items import (
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    SubItem,
    UserInformationItem,
)
from netdicom2.pdu import AAssociateAcPDU, AAssociateRjPDU, AAssociateRqPDU

__all__ = [
    "APPLICATION_CONTEXT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "MAX_PRESENTATION_CONTEXTS",
    "MAX_REQUEST_ITEMS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "AcceptedContext",
    "accepted_contexts",
    "build_rq",
    "check_request",
    "check_window",
    "negotiate",
    "operations_window",
    "window_granted",
]

# PS3.7 Annex A.2.1: the DICOM Application Context Name.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = (
    "2.25.100177370509293821525267959656968553210"  # PS3.5 §B.2: a UUID-derived UID
)
IMPLEMENTATION_VERSION_NAME = f"NETDICOM2_{__version__.replace('.', '')}"[:16]

VERIFICATION = "1.2.840.10008.1.1"

# PS3.4 Annex B.5: the storage SOP classes the example SCP serves by default.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    "1.2.840.10008.5.1.4.1.1." + suffix
    for suffix in (
        "1",  # Computed Radiography
        "1.1",  # Digital X-Ray, for presentation
        "1.1.1",  # Digital X-Ray, for processing
        "1.2",  # Digital Mammography, for presentation
        "1.2.1",  # Digital Mammography, for processing
        "2",  # CT
        "2.1",  # Enhanced CT
        "3.1",  # Ultrasound Multi-frame
        "4",  # MR
        "4.1",  # Enhanced MR
        "6.1",  # Ultrasound
        "7",  # Secondary Capture
        "7.1",  # Multi-frame Single Bit SC
        "7.2",  # Multi-frame Grayscale Byte SC
        "7.3",  # Multi-frame Grayscale Word SC
        "7.4",  # Multi-frame True Color SC
        "11.1",  # Grayscale Softcopy Presentation State
        "12.1",  # X-Ray Angiographic
        "12.2",  # X-Ray Radiofluoroscopic
        "20",  # Nuclear Medicine
        "66",  # Raw Data
        "77.1.4",  # VL Photographic
        "88.11",  # Basic Text SR
        "88.22",  # Enhanced SR
        "88.33",  # Comprehensive SR
        "88.59",  # Key Object Selection
        "104.1",  # Encapsulated PDF
        "128",  # Positron Emission Tomography
        "481.1",  # RT Image
        "481.2",  # RT Dose
        "481.3",  # RT Structure Set
        "481.5",  # RT Plan
    )
)

# What negotiate() accepts when not told otherwise: Verification and the storage SOP classes.
_DEFAULT_ABSTRACT_SYNTAXES = frozenset({VERIFICATION, *STORAGE_SOP_CLASSES})

# PS3.5 §10 and Annex A: the transfer syntaxes accepted, in the acceptor's order of preference.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian (the default, PS3.5 §10.1)
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

# PS3.8 §9.3.2.2, Table 9-13: presentation context IDs are odd integers 1-255, each used once.
MAX_PRESENTATION_CONTEXTS = 128
#: Variable items an A-ASSOCIATE-RQ may carry: Table 9-11 defines one Application Context item,
#: one or more Presentation Context items (at most 128) and one User Information item; room is
#: left for as many items of other types (kept, not interpreted). More is refused before
#: decoding, so that a request costs a bounded number of items whatever its length [interp].
MAX_REQUEST_ITEMS = 256
_ITEM_HEADER = struct.Struct(">BBH")

# PS3.8 Table 9-18: presentation context results.
ACCEPTANCE = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True, init=False)
class AcceptedContext:
    """A presentation context the acceptor accepted: ID, abstract and transfer syntax."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str

    def __init__(self, context_id: int, abstract_syntax: str, transfer_syntax: str) -> None:
        """Set the fields past the frozen __setattr__ (one per accepted context)."""
        fields = self.__dict__
        fields["context_id"] = context_id
        fields["abstract_syntax"] = abstract_syntax
        fields["transfer_syntax"] = transfer_syntax


def _user_information(
    max_pdu_length: int, window: tuple[int, int] | None = None
) -> UserInformationItem:
    """User information: the mandatory 51H and 52H, our 55H, and 53H when a window is given."""
    sub_items: list[SubItem] = [
        MaximumLengthSubItem(max_pdu_length),
        ImplementationClassUIDSubItem(IMPLEMENTATION_CLASS_UID),
    ]
    if window is not None:  # PS3.7 D.3.3.3 (sub-item order is not significant)
        sub_items.append(AsynchronousOperationsWindowSubItem(*window))
    sub_items.append(ImplementationVersionNameSubItem(IMPLEMENTATION_VERSION_NAME))
    return UserInformationItem(sub_items)


def check_window(name: str, value: int, *, minimum: int = 0) -> None:
    """A window size is a uint16 (PS3.7 Table D.3-7), 0 meaning unlimited; ValueError if not."""
    if not minimum <= value <= 0xFFFF:
        raise ValueError(f"{name} must be {minimum}..65535, not {value}")


def _min_zero_as_max(proposed: int, limit: int) -> int:
    """The smaller of two window sizes where 0 means unlimited (PS3.7 D.3.3.3)."""
    if proposed == 0 or limit == 0:
        return proposed or limit
    return min(proposed, limit)


def window_granted(ac: AAssociateAcPDU, proposed: int) -> int:
    """Requests a requestor that proposed `proposed` may have outstanding under this AC.

    PS3.7 D.3.3.3: the AC's invoked value, never more than proposed (0 from either side means
    unlimited); 1 (synchronous) when the AC has no 53H sub-item or we proposed none.
    """
    granted = operations_window(ac)
    if granted is None or proposed == 1:
        return 1
    return _min_zero_as_max(granted[0], proposed)


def operations_window(pdu: AAssociateRqPDU | AAssociateAcPDU) -> tuple[int, int] | None:
    """(Maximum-number-operations-invoked, -performed) of sub-item 53H, None when absent.

    PS3.7 D.3.3.3: both values are stated from the association-requestor's side in the RQ
    and in the AC; without the sub-item the window is 1/1 (synchronous operation).
    """
    info = pdu.user_information
    sub = None if info is None else info.first(AsynchronousOperationsWindowSubItem)
    return None if sub is None else (sub.invoked, sub.performed)


def build_rq(
    called_ae: str,
    calling_ae: str,
    contexts: Iterable[tuple[str, Sequence[str]]],
    *,
    max_pdu_length: int = 16384,
    max_operations: int = 1,
) -> AAssociateRqPDU:
    """An A-ASSOCIATE-RQ proposing `contexts` with odd IDs 1, 3, 5, ... (PS3.8 §9.3.2.2).

    `max_operations` other than 1 proposes an Asynchronous Operations Window (sub-item 53H,
    PS3.7 D.3.3.3): that many outstanding requests invoked by us, one performed for the peer.
    """
    check_window("max_operations", max_operations)
    items: list[object] = [ApplicationContextItem(APPLICATION_CONTEXT)]
    for index, (abstract, transfer) in enumerate(contexts):
        context_id = 2 * index + 1
        if context_id > 255:
            raise ValueError("at most 128 presentation contexts per association (PS3.8 §9.3.2.2)")
        items.append(PresentationContextItemRQ(context_id, abstract, list(transfer)))
    window = None if max_operations == 1 else (max_operations, 1)
    items.append(_user_information(max_pdu_length, window))
    return AAssociateRqPDU(called_ae, calling_ae, items)  # type: ignore[arg-type]


def check_request(pdu: bytes | bytearray | memoryview) -> str | None:
    """Why an encoded A-ASSOCIATE-RQ breaks PS3.8 §9.3.2.2, or None; linear, before decoding.

    Table 9-13: each Presentation Context item (20H) has an odd ID from 1 to 255, used once,
    so at most 128 of them. A request breaking this is an invalid PDU parameter value: the
    provider treats it as Evt19 (A-ABORT, Table 9-26 reason 6), not as a request AE-6 could
    reject (the RJ reasons of Table 9-21 are for valid requests the acceptor will not take).
    Only the top-level item headers are read, at most MAX_REQUEST_ITEMS + 1 of them: the scan
    stops at the first fault, and a length that does not nest is left to the decoder.
    """
    size = len(pdu)
    seen: set[int] = set()
    off = 74  # PS3.8 Table 9-11: the variable items start after the 74-byte fixed part
    unpack = _ITEM_HEADER.unpack_from
    items = 0
    while off + 4 <= size:
        items += 1
        if items > MAX_REQUEST_ITEMS:
            return f"more than {MAX_REQUEST_ITEMS} variable items (PS3.8 Table 9-11)"
        item_type, _, length = unpack(pdu, off)
        if item_type == 0x20 and off + 4 < size:  # (a truncated item: the decoder says so)
            context_id = pdu[off + 4]
            if not context_id & 1:
                return f"presentation context ID {context_id} is even (PS3.8 §9.3.2.2)"
            if context_id in seen:
                return f"presentation context ID {context_id} proposed twice (PS3.8 §9.3.2.2)"
            seen.add(context_id)  # odd, unique and one byte: at most 128 (Table 9-13)
        off += 4 + length
    return None


def _preferred(ours: Sequence[str], proposed: list[str]) -> str | None:
    """The first of our transfer syntaxes among the proposed ones, None when there is none."""
    offered = set(proposed)  # a request may propose thousands: one lookup each of ours
    for name in ours:
        if name in offered:
            return name
    return None


def negotiate(
    rq: AAssociateRqPDU,
    *,
    abstract_syntaxes: Iterable[str] | None = None,
    transfer_syntaxes: Sequence[str] = TRANSFER_SYNTAXES,
    max_pdu_length: int = 16384,
    ae_title: str | None = None,
    max_operations_performed: int = 1,
) -> tuple[AAssociateAcPDU | AAssociateRjPDU, list[AcceptedContext]]:
    """Answer an A-ASSOCIATE-RQ: RJ 1/1/7 on a wrong called AE title, else an AC.

    Each proposed context gets one result (PS3.8 Table 9-18): accepted with the proposed
    transfer syntax we prefer, 3 for an unknown abstract syntax, 4 for no common transfer
    syntax. `abstract_syntaxes=None` means Verification and the storage SOP classes.
    An RQ with an Asynchronous Operations Window (53H) gets one back (PS3.7 D.3.3.3): the
    requestor may invoke up to its proposal bounded by `max_operations_performed` (0 means
    unlimited), and this acceptor invokes one operation at a time.
    """
    check_window("max_operations_performed", max_operations_performed)
    if ae_title is not None and rq.called_ae_title.strip() != ae_title.strip():
        # PS3.8 Table 9-21: rejected-permanent, service-user, called-AE-title-not-recognized.
        return AAssociateRjPDU(result=1, source=1, reason_diag=7), []
    supported = (
        set(abstract_syntaxes) if abstract_syntaxes is not None else _DEFAULT_ABSTRACT_SYNTAXES
    )
    results: list[object] = [ApplicationContextItem(APPLICATION_CONTEXT)]
    accepted: list[AcceptedContext] = []
    answered: set[int] = set()
    for context in rq.presentation_context_items:
        # PS3.8 §9.3.2.2: odd IDs 1-255, each once. The provider refuses other requests before
        # they get here (check_request); a request built locally gets an AC bounded the same
        # way: one result per valid ID, the first proposal of it.
        if not context.context_id & 1 or context.context_id in answered:
            continue
        answered.add(context.context_id)
        abstract = context.abstract_syntax.rstrip("\0 ")
        proposed = [ts.rstrip("\0 ") for ts in context.transfer_syntaxes]
        # Our order of preference decides among the proposed ones (Explicit VR LE first; the
        # retired Explicit VR Big Endian only when nothing else is offered).
        if abstract not in supported:
            result, chosen = ABSTRACT_SYNTAX_NOT_SUPPORTED, proposed[0] if proposed else ""
        elif (preferred := _preferred(transfer_syntaxes, proposed)) is None:
            result, chosen = TRANSFER_SYNTAXES_NOT_SUPPORTED, proposed[0] if proposed else ""
        else:
            result, chosen = ACCEPTANCE, preferred
            accepted.append(AcceptedContext(context.context_id, abstract, chosen))
        results.append(PresentationContextItemAC(context.context_id, result, chosen))
    proposed_window = operations_window(rq)
    window = None
    if proposed_window is not None:  # PS3.7 D.3.3.3: answered only when proposed
        # Ours to perform: bounded by max_operations_performed. Ours to invoke: one at a time.
        window = (_min_zero_as_max(proposed_window[0], max_operations_performed), 1)
    results.append(_user_information(max_pdu_length, window))
    ac = AAssociateAcPDU(rq.called_ae_title, rq.calling_ae_title, results)  # type: ignore[arg-type]
    return ac, accepted


def accepted_contexts(rq: AAssociateRqPDU, ac: AAssociateAcPDU) -> list[AcceptedContext]:
    """The contexts of `rq` that `ac` accepted, matched by ID, not position (PS3.8 §7.1.1.13)."""
    proposed = {item.context_id: item for item in rq.presentation_context_items}
    out = []
    for item in ac.presentation_context_items:
        rq_item = proposed.get(item.context_id)
        if rq_item is None or item.result != ACCEPTANCE:
            continue  # an ID we never proposed (dcm4che's "NaughtyScp" seed) is ignored
        out.append(
            AcceptedContext(
                item.context_id,
                rq_item.abstract_syntax.rstrip("\0 "),
                (item.transfer_syntax or "").rstrip("\0 "),
            )
        )
    return out
