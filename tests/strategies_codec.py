"""Hypothesis strategies for valid PDU objects and byte chunkings (reusable by fuzz/).

Every object drawn here satisfies ``decode(encode(p)) == p``: items sit where PS3.8 defines
them, ``UnknownItem`` types are undefined at their level, lengths fit their fields. Reserved
fields, padded UIDs, unknown items and non-canonical sub-item layouts are all exercised.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from netdicom2.items import (
    AbstractSyntaxSubItem,
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    Item,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    SubItem,
    SyntaxSubItem,
    TransferSyntaxSubItem,
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
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

__all__ = [
    "abort_pdus",
    "ae_titles",
    "associate_ac_pdus",
    "associate_rj_pdus",
    "associate_rq_pdus",
    "chunkings",
    "pdata_pdus",
    "pdus",
    "presentation_context_ac_items",
    "presentation_context_rq_items",
    "release_rp_pdus",
    "release_rq_pdus",
    "uids",
    "user_information_items",
]

byte = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
#: Reserved fields: mostly 0 as sent by real peers, sometimes anything (never tested, §9.3.1).
reserved8 = st.one_of(st.just(0), byte)
reserved16 = st.one_of(st.just(0), u16)
reserved24 = st.one_of(st.just(0), st.integers(0, 0xFFFFFF))
reserved32 = st.one_of(st.just(0), u32)
small_bytes = st.binary(max_size=24)

#: UIDs per PS3.5 §9.1, sometimes with the NUL or space padding real peers send.
clean_uids = st.from_regex(r"[12](\.(0|[1-9][0-9]{0,6})){1,8}", fullmatch=True)
uids = st.one_of(
    clean_uids, clean_uids.map(lambda u: u + "\x00"), clean_uids.map(lambda u: u + " ")
)
#: Any latin-1 text (the codec keeps the wire bytes, whatever they are).
latin1 = st.text(st.characters(max_codepoint=0xFF), max_size=20)
ae_titles = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
    st.text(st.characters(max_codepoint=0xFF), min_size=16, max_size=16),
)


def unknown_items(defined: frozenset[int]) -> st.SearchStrategy[UnknownItem]:
    """Items of a type not defined at this level (PS3.8 §9.3.1: kept verbatim)."""
    types = st.integers(0, 0xFF).filter(lambda t: t not in defined)
    return st.builds(UnknownItem, types, small_bytes, reserved8)


user_sub_items: st.SearchStrategy[SubItem] = st.one_of(
    st.builds(MaximumLengthSubItem, u32, reserved8),
    st.builds(ImplementationClassUIDSubItem, uids, reserved8),
    st.builds(AsynchronousOperationsWindowSubItem, u16, u16, reserved8),
    st.builds(SCPSCURoleSelectionSubItem, uids, byte, byte, reserved8),
    st.builds(ImplementationVersionNameSubItem, latin1, reserved8),
    st.builds(SOPClassExtendedNegotiationSubItem, uids, small_bytes, reserved8),
    st.builds(
        SOPClassCommonExtendedNegotiationSubItem,
        uids,
        uids,
        st.lists(uids, max_size=3),
        reserved8,
    ),
    st.builds(UserIdentityRQSubItem, byte, byte, small_bytes, small_bytes, reserved8),
    st.builds(UserIdentityACSubItem, small_bytes, reserved8),
    unknown_items(frozenset(range(0x51, 0x5A))),
)

user_information_items = st.builds(
    UserInformationItem, st.lists(user_sub_items, max_size=5), reserved8
)
application_context_items = st.builds(
    ApplicationContextItem, st.one_of(st.just("1.2.840.10008.3.1.1.1"), uids), reserved8
)
_syntax_unknown = unknown_items(frozenset({0x30, 0x40}))


@st.composite
def presentation_context_rq_items(draw: st.DrawFn) -> PresentationContextItemRQ:
    """A 20H item, canonical or with a verbatim sub-item layout (PS3.8 Table 9-13)."""
    abstract = draw(uids)
    transfer = draw(st.lists(uids, min_size=1, max_size=3))
    layout: list[SyntaxSubItem] | None = None
    if draw(st.booleans()):
        subs: list[SyntaxSubItem] = [AbstractSyntaxSubItem(abstract, draw(reserved8))]
        subs += [TransferSyntaxSubItem(name, draw(reserved8)) for name in transfer]
        subs += draw(st.lists(_syntax_unknown, max_size=2))
        # Keep the transfer syntaxes in order, move the abstract syntax and unknown items.
        layout = draw(st.permutations(subs))
        order = [s.name for s in layout if isinstance(s, TransferSyntaxSubItem)]
        transfer = order
    return PresentationContextItemRQ(
        draw(byte), abstract, transfer, draw(reserved8), draw(reserved24), layout
    )


@st.composite
def presentation_context_ac_items(draw: st.DrawFn) -> PresentationContextItemAC:
    """A 21H item; transfer syntax may be absent; layout as for the RQ (PS3.8 Table 9-18)."""
    transfer = draw(st.one_of(st.none(), uids))
    layout: list[SyntaxSubItem] | None = None
    if draw(st.booleans()):
        subs: list[SyntaxSubItem] = draw(st.lists(_syntax_unknown, max_size=2))
        if transfer is not None:
            subs.append(TransferSyntaxSubItem(transfer, draw(reserved8)))
        layout = draw(st.permutations(subs))
    return PresentationContextItemAC(
        draw(byte),
        draw(st.integers(0, 4) | byte),
        transfer,
        draw(reserved8),
        draw(reserved8),
        draw(reserved8),
        layout,
    )


def _variable_items(
    pc: st.SearchStrategy[Item], defined: frozenset[int]
) -> st.SearchStrategy[list[Item]]:
    """One application context, 1+ presentation contexts, one user information item, extras."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Item]:
        items: list[Item] = [draw(application_context_items), draw(user_information_items)]
        items += draw(st.lists(pc, min_size=1, max_size=3))
        items += draw(st.lists(unknown_items(defined), max_size=2))
        if draw(st.booleans()):
            return sorted(items, key=lambda item: item.item_type)  # the order senders use
        return list(draw(st.permutations(items)))

    return build()


def _associate(
    cls: type[AAssociateRqPDU] | type[AAssociateAcPDU],
    pc: st.SearchStrategy[Item],
    defined: frozenset[int],
) -> st.SearchStrategy[AAssociateRqPDU | AAssociateAcPDU]:
    """An A-ASSOCIATE-RQ or -AC with arbitrary reserved fields (PS3.8 Tables 9-11, 9-17)."""
    return st.builds(
        cls,
        ae_titles,
        ae_titles,
        _variable_items(pc, defined),
        st.one_of(st.just(1), u16),
        st.one_of(st.just(bytes(32)), st.binary(min_size=32, max_size=32)),
        reserved16,
        reserved8,
    )


associate_rq_pdus = _associate(
    AAssociateRqPDU, presentation_context_rq_items(), frozenset({0x10, 0x20, 0x50})
)
associate_ac_pdus = _associate(
    AAssociateAcPDU, presentation_context_ac_items(), frozenset({0x10, 0x21, 0x50})
)
associate_rj_pdus = st.builds(AAssociateRjPDU, byte, byte, byte, reserved8, reserved8)
pdv_items = st.builds(
    PresentationDataValueItem, byte, st.one_of(st.integers(0, 3), byte), st.binary(max_size=64)
)
pdata_pdus = st.builds(PDataTfPDU, st.lists(pdv_items, min_size=1, max_size=4), reserved8)
release_rq_pdus = st.builds(AReleaseRqPDU, reserved32, reserved8)
release_rp_pdus = st.builds(AReleaseRpPDU, reserved32, reserved8)
abort_pdus = st.builds(AAbortPDU, byte, byte, reserved16, reserved8)

pdus: st.SearchStrategy[PDU] = st.one_of(
    associate_rq_pdus,
    associate_ac_pdus,
    associate_rj_pdus,
    pdata_pdus,
    release_rq_pdus,
    release_rp_pdus,
    abort_pdus,
)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """data cut at random points (TCP delivers any split, PS3.8 §9.1.3)."""
    if not data:
        return []
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
