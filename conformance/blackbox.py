"""Black-box recipes: a peer at HOST:PORT (acceptor) or connecting to us (``--listen``).

Only the wire is seen. A cell has one or more *cases* (the event in several PS3.8 shapes: an
unknown PDU type with bodies of 0, 4 and 64 bytes, PDV items that are too short or run past the
PDU, …) and each case one or more *recipes* to reach the state (Sta13 by a release, by a
provider abort or by an A-ASSOCIATE-RJ). The matrix tries a case's recipes in order and calls
the case inconclusive only when none reached the state.

After each action that enters Sta13 (AA-1, AA-8, AE-6's reject branch, AR-4 answering our
release) the peer must hold Sta13 (no reset at once) and close about its timer later
(``ExpectSta13``, PS3.8 §9.1.4, §9.1.5). In a black-box cell the peer's own user may react to an
indication: a PDU that a user primitive defined in the next state sends is accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from netdicom2.acse import build_rq
from netdicom2.conformance.recipes import (
    ECHO,
    UNRECOGNIZED_PDU,
    USER_EVENTS,
    VERIFICATION,
    Params,
    Skip,
    _abort_rules,
    _inject,
    _next_state,
    _reactions,
    _send_rules,
    association_rq,
)
from netdicom2.conformance.script import (
    Accept,
    Connect,
    Expect,
    ExpectClosed,
    ExpectIdleEnd,
    ExpectResponses,
    ExpectSilence,
    ExpectSta13,
    Pdu,
    Reply,
    Role,
    Script,
    Send,
    Step,
)
from netdicom2.conformance.table import CellSpec
from netdicom2.dimse import c_echo_rq, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU
from netdicom2.subitems import (
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityRQSubItem,
)

__all__ = ["remote_plans"]

# PS3.5 Table A-1 / Annex A: transfer syntaxes a modality typically proposes.
_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
]
# 128 presentation contexts (PS3.8 §9.3.2.2: IDs 1..255, odd): Verification, then storage
# SOP classes of PS3.4 Annex B (CT, MR, US, SC, … under 1.2.840.10008.5.1.4.1.1).
_STORAGE = [
    f"1.2.840.10008.5.1.4.1.1.{leaf}"
    for leaf in ("1", "2", "2.1", "4", "4.1", "6.1", "7", "12.1", "20", "88.22", "128", "481.1")
]
_UNKNOWN_EMPTY = b"\x09\x00\x00\x00\x00\x00"  # PS3.8 §9.3.1: type 09H, no body
_UNKNOWN_LONG = b"\x09\x00\x00\x00\x00\x40" + bytes(64)
# PS3.8 §9.3.5.1: a PDV item's length covers context ID and header: never below 2.
_PDV_TOO_SHORT = b"\x04\x00\x00\x00\x00\x05" + b"\x00\x00\x00\x01\x01"
# A PDV item announcing 64 bytes inside a P-DATA-TF whose PDU-length ends after 2 (§9.3.5).
_PDV_PAST_END = b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x40\x01\x03"

_LISTEN_NA = {
    "Sta1": "the requestor's idle state: Evt1 is its user's and Evt5 an acceptor's event",
    "Sta2": "an association-acceptor state: test the peer as acceptor with --target HOST:PORT",
    "Sta3": "an association-acceptor state: test the peer as acceptor with --target HOST:PORT",
    "Sta4": "transient: the peer's TCP connect completes before the harness can act",
    "Sta8": "transient: the peer's user answers the A-RELEASE indication at once",
    "Sta9": "transient: the peer's user answers the A-RELEASE indication at once",
    "Sta10": "an association-acceptor state (release collision)",
    "Sta12": "an association-acceptor state (release collision)",
}
_ACCEPTOR_NA = {
    "Sta4": "an association-requestor state: test the peer as requestor with --listen",
    "Sta5": "an association-requestor state: test the peer as requestor with --listen",
    "Sta7": "needs the acceptor's user to request a release; a black-box acceptor never does",
    "Sta9": "an association-requestor state: test the peer as requestor with --listen",
    "Sta10": "needs the acceptor's user to request a release; a black-box acceptor never does",
    "Sta11": "an association-requestor state: test the peer as requestor with --listen",
    "Sta12": "needs the acceptor's user to request a release; a black-box acceptor never does",
}


@dataclass(frozen=True)
class Recipe:
    """Steps to a state, and per step the cell whose transition it relies on."""

    name: str
    steps: tuple[Step, ...]
    reaches: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One shape of the event: what is sent and what must follow."""

    name: str
    inject: tuple[Step, ...]
    expect: tuple[Step, ...]
    recipes: tuple[Recipe, ...] | None = None  # None: the state's own recipes


def _recipe(name: str, *pairs: tuple[Step, str]) -> Recipe:
    """A recipe from (step, cell it relies on) pairs."""
    return Recipe(name, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


def _acceptor_recipes(state: str, params: Params, window: float) -> list[Recipe]:
    """Ways to bring an association acceptor to ``state`` from the wire."""
    rq = association_rq(params)
    connect: tuple[Step, str] = (Connect(), "Sta1-Evt5")
    # The reader is known to wait: nothing came back for a while after the connect.
    waiting: tuple[Step, str] = (ExpectSilence(window), "Sta1-Evt5")
    associate: list[tuple[Step, str]] = [
        (Send(rq), "Sta2-Evt6"),
        (Expect((Pdu("A-ASSOCIATE-AC"),)), "Sta2-Evt6"),
    ]
    if state == "Sta1":
        return [Recipe("idle", (), ())]
    if state == "Sta2":
        return [_recipe("connect, reader waiting", connect, waiting)]
    if state == "Sta6":
        return [_recipe("associate", connect, *associate)]
    hold: Step = ExpectSilence(window)  # it stays: PS3.8 §9.1.4, it waits for our close or ARTIM
    version = dataclasses.replace(rq, protocol_version=0x0002)
    return [
        # AR-2 then its user's AR-4: A-RELEASE-RP sent, ARTIM started, Sta13.
        _recipe(
            "release",
            connect,
            *associate,
            (Send(AReleaseRqPDU()), "Sta6-Evt12"),
            (Expect((Pdu("A-RELEASE-RP"),), skip=("P-DATA-TF",)), "Sta6-Evt12"),
            (hold, "Sta6-Evt12"),
        ),
        # AE-6 reject branch: protocol version without bit 0 (Table 9-21: 1, 2, 2), Sta13.
        _recipe(
            "A-ASSOCIATE-RJ",
            connect,
            (Send(version), "Sta2-Evt6"),
            (Expect((Pdu("A-ASSOCIATE-RJ"),)), "Sta2-Evt6"),
            (hold, "Sta2-Evt6"),
        ),
        # AA-8: a well-formed A-ASSOCIATE-RQ inside the association makes the provider
        # abort, start ARTIM, Sta13 (a PDU its framing surely follows, unlike an unknown type).
        _recipe(
            "provider abort",
            connect,
            *associate,
            (Send(rq), "Sta6-Evt6"),
            (Expect(_abort_rules(None)), "Sta6-Evt6"),
            (hold, "Sta6-Evt6"),
        ),
    ]


def _requestor_recipes(state: str, window: float) -> list[Recipe]:
    """Ways to bring an association requestor (it connects to us) to ``state``."""
    pairs: list[tuple[Step, str]] = [
        (Accept(within=30.0), ""),
        (Expect((Pdu("A-ASSOCIATE-RQ"),)), ""),
    ]
    if state == "Sta13":
        # AA-8 in Sta5, three ways: the peer aborts, starts ARTIM, Sta13 (the abort's source
        # is the cell's own to judge, not the recipe's).
        out = []
        for name, pdu, cell in (
            ("A-RELEASE-RQ in Sta5", AReleaseRqPDU().encode(), "Sta5-Evt12"),
            ("P-DATA-TF in Sta5", ECHO.encode(), "Sta5-Evt10"),
            ("unrecognized PDU in Sta5", UNRECOGNIZED_PDU, "Sta5-Evt19"),
        ):
            steps: list[tuple[Step, str]] = [(Send(pdu), cell), (Expect(_abort_rules(None)), cell)]
            out.append(_recipe(name, *pairs, *steps, (ExpectSilence(window), cell)))
        return out
    if state in ("Sta6", "Sta7", "Sta11"):
        pairs += [
            (Reply("A-ASSOCIATE-AC"), "Sta5-Evt3"),
            (Expect((Pdu("P-DATA-TF"),)), "Sta5-Evt3"),
        ]
    if state in ("Sta7", "Sta11"):
        pairs += [
            (Reply("C-ECHO-RSP"), "Sta6-Evt10"),
            (Expect((Pdu("A-RELEASE-RQ"),), skip=("P-DATA-TF",)), "Sta6-Evt10"),
        ]
    if state == "Sta11":
        # Release collision on the requestor's side: Sta7 → AR-8 → Sta9 → its user → Sta11.
        pairs += [
            (Send(AReleaseRqPDU()), "Sta7-Evt12"),
            (Expect((Pdu("A-RELEASE-RP"),)), "Sta7-Evt12"),
        ]
    return [_recipe("associate", *pairs)]


def _sta13(params: Params, after: str, window: float, *, await_close: bool = True) -> ExpectSta13:
    """Hold Sta13 after ``after``; with the timer known (and wanted) await the close."""
    timer = params.sta13 if await_close else None
    return ExpectSta13(
        after, hold=window, timer=timer, within=params.ceiling(timer), await_close=await_close
    )


def _main_expect(c: CellSpec, params: Params, listen: bool, window: float) -> list[Step]:
    """What the cell's action shows on the wire (PS3.8 Tables 9-6 … 9-9)."""
    spec = c.spec
    assert spec is not None
    s, e = c.state, c.event
    next_state = _next_state(spec, "requestor" if listen else "acceptor")[0]
    if spec.sends is not None:
        steps: list[Step] = [Expect(_send_rules(spec))]
        if spec.name in ("AA-1", "AA-8"):  # start ARTIM, Sta13 (Table 9-9)
            steps.append(_sta13(params, "A-ABORT", window))
        return steps
    if e == "Evt18":
        timer = params.artim if s == "Sta2" else params.sta13
        assert timer is not None
        # Sta2's ARTIM is always awaited; Sta13's close at most --max-wait (DCMTK: 180 s).
        within = params.ceiling(timer)
        if s == "Sta2":
            within = max(within, timer * 1.25 + 2.0)
        return [ExpectClosed(within=within, not_before=timer * 0.8, expected=timer, how="any")]
    if spec.name == "AR-6":
        # A requestor in Sta7 (PS3.8 §7.2.2, Table 9-8 AR-6): a P-DATA indication, still Sta7,
        # so the provider neither aborts nor closes, and our A-RELEASE-RP then completes the
        # release (AR-3). Its user may abort instead (Evt15 in Sta7, AA-1: source 0).
        user_abort = Pdu(
            "A-ABORT",
            source=(0,),
            undecided="its user aborted after the P-DATA indication (Evt15 in Sta7, AA-1):"
            " that the provider stayed in Sta7 was not shown",
        )
        # The close shows AR-3 from Sta7; FIN or RST is Sta7-Evt13's to judge.
        return [
            Expect((user_abort,), within=window, or_silence=True),
            Send(AReleaseRpPDU()),
            ExpectClosed(),
        ]
    if spec.name == "AR-3":  # the release is complete: an orderly close (Table 9-8)
        return [ExpectClosed(how="fin")]
    if spec.transport in ("close", "gone"):
        return [ExpectClosed()]
    if spec.name == "AE-6":
        return [Expect(_ae6_accept_rules())]
    if spec.name == "AR-2":
        # The peer's user must answer the release indication (Sta8): A-RELEASE-RP (AR-4) or
        # an abort (AA-1), both entering Sta13; data (AR-7) may come first. Silence fails.
        answers = tuple(r for r in _reactions(next_state) if r.name != "P-DATA-TF")
        return [
            Expect(answers, skip=("P-DATA-TF",), within=3.0),
            _sta13(params, "answer to the release", window),
        ]
    if spec.indicates is not None:
        return [Expect(_reactions(next_state), within=window, or_silence=True)]
    return [ExpectSilence(window)]


def _ae6_accept_rules() -> tuple[Pdu, ...]:
    """A valid request is accepted (AE-6 → indication → AE-7), Table 9-21 decides the rest."""
    titles = (
        "its user refuses our AE titles (set --called-ae / --calling-ae):"
        " the AE-6 accept branch was not shown"
    )
    return (
        Pdu("A-ASSOCIATE-AC"),
        Pdu("A-ASSOCIATE-RJ", result=(2,), undecided="rejected-transient"),
        Pdu("A-ASSOCIATE-RJ", source=(1,), reason=(3, 7), undecided=titles),
    )


def _modality_rq(params: Params) -> Send:
    """A modality's typical request: 128 presentation contexts, every user-information item."""
    abstracts = [VERIFICATION, *_STORAGE]
    contexts = [(abstracts[i % len(abstracts)], _SYNTAXES) for i in range(128)]
    # 51H, 52H, 53H and 55H from build_rq; 54H, 56H, 57H, 58H added (PS3.7 Annex D.3.3).
    rq = build_rq(params.called_ae, params.calling_ae, contexts, max_operations=4)
    info = rq.user_information
    assert info is not None
    info.sub_items += [
        SCPSCURoleSelectionSubItem(_STORAGE[0], 1, 0),
        SOPClassExtendedNegotiationSubItem(_STORAGE[0], b"\x01"),
        SOPClassCommonExtendedNegotiationSubItem(_STORAGE[0], "1.2.840.10008.4.2"),
        UserIdentityRQSubItem(1, 0, b"conformance"),
    ]
    return Send(rq)


def _cases(c: CellSpec, params: Params, listen: bool, window: float) -> list[Case]:
    """The main case of the cell and its further PS3.8 shapes."""
    s, e = c.state, c.event
    inject = _inject(e, s, params, listen=listen)
    if e == "Evt6" and s != "Sta2":
        # Whole, not in segments: a peer that aborts on the PDU type would otherwise close
        # while the rest is in flight, and its close would race between FIN and RST.
        inject = Send(association_rq(params))
    main = Case(
        "main",
        (inject,),
        tuple(_main_expect(c, params, listen, window)),
    )
    cases = [main]
    if e == "Evt6" and s == "Sta2" and not listen:
        rq = association_rq(params)
        rj = (Pdu("A-ASSOCIATE-RJ", result=(1,), source=(2,), reason=(2,)),)
        cases += [
            Case(
                "protocol version 0002H (bit 0 clear): RJ 1/2/2, Sta13",
                (Send(dataclasses.replace(rq, protocol_version=0x0002)),),
                (Expect(rj), _sta13(params, "A-ASSOCIATE-RJ", window, await_close=False)),
            ),
            Case(
                "protocol version 0003H (bit 0 and another set): accepted",
                (Send(dataclasses.replace(rq, protocol_version=0x0003)),),
                (Expect(_ae6_accept_rules()),),
            ),
            Case(
                "128 presentation contexts and every user-information sub-item",
                (_modality_rq(params),),
                (Expect(_ae6_accept_rules()),),
            ),
        ]
    if e == "Evt19":
        spec = c.spec
        assert spec is not None
        expect: list[Step] = [Expect(_send_rules(spec))]
        if spec.name in ("AA-1", "AA-8"):
            expect.append(_sta13(params, "A-ABORT", window, await_close=False))
        shapes = [
            ("unknown PDU type 09H with an empty body", _UNKNOWN_EMPTY),
            ("unknown PDU type 09H with a 64-byte body", _UNKNOWN_LONG),
            ("P-DATA-TF with a PDV item shorter than 2 bytes", _PDV_TOO_SHORT),
            ("P-DATA-TF with a PDV item running past the PDU's end", _PDV_PAST_END),
        ]
        if s != "Sta2":  # in Sta2 a provider may answer a bad RQ with AE-6's RJ instead
            shapes.append(("A-ASSOCIATE-RQ with an item length past its end", _bad_item_rq(params)))
        cases += [Case(name, (Send(data),), tuple(expect)) for name, data in shapes]
        if s == "Sta2" and not listen:
            # The same PDU before the peer's reader is known to wait (at once after connect).
            at_once = _recipe("sent at once after connect", (Connect(), "Sta1-Evt5"))
            cases.append(Case("sent at once after connect", main.inject, main.expect, (at_once,)))
    if e == "Evt10" and s == "Sta6" and not listen:
        cases += [_fragmented_echo(params, window), _many_echoes(ECHOES)]
    if e == "Evt12" and s == "Sta6" and not listen:
        cases.append(_echo_then_release(c, params, window))
    return cases


def _bad_item_rq(params: Params) -> bytes:
    """Our RQ with its Application Context item's length running past the PDU (§9.3.2)."""
    data = bytearray(association_rq(params).encode())
    # PS3.8 Table 9-11: variable items start at byte 75 (offset 74); the item-length is at +2.
    assert data[74] == 0x10
    data[76:78] = (0xFFF0).to_bytes(2, "big")
    return bytes(data)


def _fragmented_echo(params: Params, window: float) -> Case:
    """Many P-DATA-TF back to back in one segment: a command in 8 fragments (PS3.8 Annex E)."""
    command = encode_command(c_echo_rq(1))
    size = -(-len(command) // 16) * 2  # PS3.8 Annex E: every fragment has an even length
    parts = [command[i : i + size] for i in range(0, len(command), size)]
    data = b"".join(
        PDataTfPDU(
            [PresentationDataValueItem(1, 0x03 if i == len(parts) - 1 else 0x01, part)]
        ).encode()
        for i, part in enumerate(parts)
    )
    return Case(
        f"{len(parts)} P-DATA-TF back to back (one command in fragments)",
        (Send(data),),
        (Expect((Pdu("P-DATA-TF"),), within=3.0),),
    )


ECHOES = 50  # C-ECHO-RQ back to back in one segment (Sta6-Evt10)


def _many_echoes(count: int) -> Case:
    """Many P-DATA-TF back to back in one segment: each a whole C-ECHO-RQ (DT-2 each)."""
    data = b"".join(
        PDataTfPDU([PresentationDataValueItem(1, 0x03, encode_command(c_echo_rq(i)))]).encode()
        for i in range(1, count + 1)
    )
    return Case(
        f"{count} C-ECHO-RQ in {count} P-DATA-TF back to back (one segment)",
        (Send(data),),
        (ExpectResponses(1, count, within=3.0 + count / 25),),
    )


def _echo_then_release(c: CellSpec, params: Params, window: float) -> Case:
    """A C-ECHO-RQ and our A-RELEASE-RQ in one segment: data while the release is pending.

    DT-2 then AR-2 (Sta8): its user may still answer the echo there (AR-7, PS3.8 §7.2.2) before
    its A-RELEASE-RP (AR-4); after the RP it is in Sta13 and sends no data (Table 9-10: no
    P-DATA request in Sta13), and nothing aborts (source 2) on the way.
    """
    main = _main_expect(c, params, False, window)
    assert isinstance(main[0], Expect)
    return Case(
        "a C-ECHO-RQ and the A-RELEASE-RQ in one segment (the answer before the A-RELEASE-RP)",
        (Send(ECHO.encode() + AReleaseRqPDU().encode()),),
        (main[0], _sta13(params, "A-RELEASE-RP", window, await_close=False)),
    )


def _idle(params: Params, window: float) -> list[Script]:
    """Sta6-Evt15 of an acceptor: an idle association, ended (or not) by its own timer."""
    artim = params.artim if params.artim is not None else params.long_artim
    wait = ExpectIdleEnd(params.ceiling(None), window, params.sta13, params.ceiling(params.sta13))
    return [
        Script(
            "Sta6-Evt15",
            "acceptor",
            artim,
            recipe.steps,
            (),
            (wait,),
            recipe=recipe.name,
            reaches=recipe.reaches,
            case="idle association (the peer's own timer)",
        )
        for recipe in _acceptor_recipes("Sta6", params, window)
    ]


# Sta3 and Sta8 last only until the peer's user answers: the event is sent in the same TCP
# segment as the PDU that enters the state, so a peer that reads it before answering gets it
# there; a peer that answers first has left the state (the cell is then inconclusive).
_BACK_TO_BACK = {
    "Sta3": ("A-ASSOCIATE-RQ", ("A-ASSOCIATE-AC", "A-ASSOCIATE-RJ")),
    "Sta8": ("A-RELEASE-RQ", ("A-RELEASE-RP",)),
}


def _back_to_back(c: CellSpec, params: Params, window: float) -> list[Script] | Skip:
    """Sta3/Sta8 of an acceptor: the entering PDU and the event in one segment (AA-8 only)."""
    spec = c.spec
    assert spec is not None
    entering, answers = _BACK_TO_BACK[c.state]
    if spec.name != "AA-8":
        return Skip("na", f"transient: {c.event} cannot be put behind the {entering} in Sta3/8")
    event = _inject(c.event, c.state, params)
    assert isinstance(event, Send)
    first = association_rq(params) if c.state == "Sta3" else AReleaseRqPDU()
    data = first.encode() + (event.data if isinstance(event.data, bytes) else event.data.encode())
    left = (
        f"the peer's user answered the {entering} before reading the event: "
        f"{c.state} was left before the event was delivered"
    )
    expect = (
        Expect(
            (*(Pdu(a, undecided=left) for a in answers), *_send_rules(spec)),
            skip=("P-DATA-TF",),
        ),
        _sta13(params, "A-ABORT", window),
    )
    setup: list[tuple[Step, str]] = [(Connect(), "Sta1-Evt5")]
    if c.state == "Sta8":
        setup += [
            (Send(association_rq(params)), "Sta2-Evt6"),
            (Expect((Pdu("A-ASSOCIATE-AC"),)), "Sta2-Evt6"),
        ]
    recipe = _recipe(f"{entering} and the event in one segment", *setup)
    artim = params.artim if params.artim is not None else params.long_artim
    return [
        Script(
            c.name,
            "acceptor",
            artim,
            recipe.steps,
            (Send(data),),
            expect,
            recipe=recipe.name,
            reaches=recipe.reaches,
        )
    ]


def remote_plans(c: CellSpec, params: Params, *, listen: bool) -> list[Script] | Skip:
    """Every (case, recipe) script of a black-box cell, or why it is not run."""
    s, e = c.state, c.event
    if c.blank:
        return Skip("blank", "blank in Table 9-10: the event cannot legally occur in this state")
    if (s, e) == ("Sta6", "Evt15") and not listen:
        artim = params.artim if params.artim is not None else params.long_artim
        return _idle(params, min(params.window, artim / 4))
    if e in USER_EVENTS:
        return Skip(
            "na", f"{e} is a primitive of the peer's local user: not producible from the wire"
        )
    if e == "Evt2" or (e == "Evt5" and listen):
        return Skip("na", f"{e} is the peer's local transport event")
    if e == "Evt18" and (params.artim if s == "Sta2" else params.sta13) is None:
        option = "--artim S" if s == "Sta2" else "--sta13-timer S (or --artim S)"
        return Skip("na", f"ARTIM expiry in {s}: give the peer's timer with {option}")
    na = (_LISTEN_NA if listen else _ACCEPTOR_NA).get(s)
    if na is not None:
        return Skip("na", na)
    if s in _BACK_TO_BACK and not listen:
        artim = params.artim if params.artim is not None else params.long_artim
        return _back_to_back(c, params, min(params.window, artim / 4))
    artim = params.artim if params.artim is not None else params.long_artim
    window = min(params.window, artim / 4)
    own = _requestor_recipes(s, window) if listen else _acceptor_recipes(s, params, window)
    role: Role = "requestor" if listen else "acceptor"
    out = []
    for case in _cases(c, params, listen, window):
        for recipe in case.recipes or own:
            out.append(
                Script(
                    c.name,
                    role,
                    artim,
                    recipe.steps,
                    case.inject,
                    case.expect,
                    recipe=recipe.name,
                    reaches=recipe.reaches,
                    case=case.name,
                )
            )
    return out
