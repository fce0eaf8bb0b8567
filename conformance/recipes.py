"""One script per Table 9-10 cell and target kind: reach the state, inject the event, expect.

``plan(cell, kind, params)`` returns the ``Script`` of a cell, or a ``Skip`` saying why it
is not run: "blank" (the standard defines nothing and the event cannot occur there) or "na"
(the target cannot produce that state or event, e.g. a remote peer's local-user primitives).

Target kinds:

* ``white`` (targets ``local`` and ``provider``): both sides are scripted, the local user
  included; the expectations are the action's full effects (PS3.8 Tables 9-6 … 9-9) and the
  transition read from the IUT's transcript.
* ``remote``: a black-box association acceptor at HOST:PORT; only the wire is seen.
* ``remote-requestor``: a black-box association requestor that connects to us (``--listen``).

In a black-box cell the IUT's own user may react to an indication (an SCP answers an
A-ASSOCIATE-RQ or a C-ECHO, or a release): such a reaction is accepted when it is a PDU that
a user primitive defined in the next state sends (Table 9-10, user events of that column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netdicom2.acse import build_rq, negotiate
from netdicom2.conformance.script import (
    Accept,
    AwaitState,
    Connect,
    ElapseArtim,
    Expect,
    ExpectArtim,
    ExpectClosed,
    ExpectNoTransition,
    ExpectRefused,
    ExpectSilence,
    ExpectTransition,
    HalfClose,
    Pdu,
    RefuseConnect,
    Reply,
    Role,
    Script,
    Send,
    Step,
    TransportEvent,
    UserExpect,
    UserExpectNothing,
    UserSend,
)
from netdicom2.conformance.table import PDU_NAMES, PROVIDER_REASONS, ActionSpec, CellSpec, cell
from netdicom2.dimse import c_echo_rq, encode_command
from netdicom2.items import PresentationDataValueItem
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

__all__ = ["Kind", "Params", "Skip", "association_rq", "plan", "plans"]

Kind = Literal["white", "remote", "remote-requestor"]

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# PS3.8 §9.3.1: a PDU-type no PDU has (09H) with a well-formed 4-byte body: Evt19.
UNRECOGNIZED_PDU = b"\x09\x00\x00\x00\x00\x04\x00\x00\x00\x00"

USER_EVENTS = ("Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15")
NETWORK_EVENTS = ("Evt3", "Evt4", "Evt6", "Evt10", "Evt12", "Evt13", "Evt16", "Evt19")


@dataclass(frozen=True)
class Params:
    """What the scripts need to know about the target."""

    called_ae: str = "ANY-SCP"
    calling_ae: str = "NETDICOM2-CONF"
    artim: float | None = None  # remote: the peer's ARTIM (--artim), None when unknown
    short_artim: float = 0.3  # local/provider: ARTIM configured for the Evt18 cells
    long_artim: float = 10.0  # local/provider: ARTIM for every other cell (never expires)
    window: float = 0.3  # black box: how long "nothing happens" is watched
    user_window: float = 0.05  # provider: how long "no indication" is watched
    sta13_timer: float | None = None  # remote: its timer in Sta13 (default: ``artim``)
    max_wait: float | None = None  # remote: the longest wait for a close (default 10 s)

    @property
    def sta13(self) -> float | None:
        """The peer's timer in Sta13 (PS3.8 §9.1.5), when known."""
        return self.sta13_timer if self.sta13_timer is not None else self.artim

    def ceiling(self, timer: float | None) -> float:
        """How long a close is awaited: ``max_wait``; by default 10 s or a timer's bound."""
        if self.max_wait is not None:
            return self.max_wait
        return max(10.0, 0.0 if timer is None else timer * 1.25 + 2.0)


@dataclass(frozen=True)
class Skip:
    """A cell that is not run: "blank" (by the standard) or "na" (not applicable here)."""

    verdict: Literal["blank", "na"]
    reason: str


# --------------------------------------------------------------------------- PDUs


def association_rq(params: Params) -> AAssociateRqPDU:
    """A-ASSOCIATE-RQ proposing Verification with Implicit VR Little Endian."""
    return build_rq(params.called_ae, params.calling_ae, [(VERIFICATION, [IMPLICIT_VR_LE])])


def _ac(params: Params) -> AAssociateAcPDU:
    """The A-ASSOCIATE-AC accepting ``_rq`` (context 1)."""
    answer, _ = negotiate(association_rq(params))
    assert isinstance(answer, AAssociateAcPDU)
    return answer


ECHO = PDataTfPDU([PresentationDataValueItem(1, 0x03, encode_command(c_echo_rq(1)))])
RJ_USER = AAssociateRjPDU(result=1, source=1, reason_diag=1)  # PS3.8 Table 9-21
ABORT = AAbortPDU(source=0, reason_diag=0)  # PS3.8 Table 9-26: service-user


def _names(pdu: PDU) -> Pdu:
    """The rule matching a PDU by its type only."""
    return Pdu(PDU_NAMES[pdu.pdu_type])


def _abort_rules(source: tuple[int, ...] | None) -> tuple[Pdu, ...]:
    """A-ABORT rules: source 0 has no significant reason (§9.3.8); source 2 a defined one."""
    rules = []
    if source is None or 0 in source:
        rules.append(Pdu("A-ABORT", source=(0,)))
    if source is None or 2 in source:
        rules.append(Pdu("A-ABORT", source=(2,), reason=PROVIDER_REASONS))
    return tuple(rules)


def _send_rules(spec: ActionSpec) -> tuple[Pdu, ...]:
    """What the action's PDU must look like (PS3.8 Tables 9-6 … 9-9, 9-21, 9-26)."""
    assert spec.sends is not None
    if spec.sends == "A-ABORT":
        return _abort_rules(spec.send_source)
    return (Pdu(spec.sends, source=spec.send_source, reason=spec.send_reason),)


# --------------------------------------------------------------------------- white box


def _white_setup(state: str, event: str, params: Params) -> tuple[Role, list[Step], bool]:
    """Steps (peer and local user) that bring our IUT to ``state``; its role; hold connect."""
    rq, ac = association_rq(params), _ac(params)
    requestor_states = {"Sta4", "Sta5", "Sta9", "Sta11"}
    if state == "Sta1":
        return ("acceptor" if event == "Evt5" else "requestor"), [], False
    if state in requestor_states:
        if state == "Sta4":
            return "requestor", [UserSend(rq), AwaitState("Sta4")], True
        steps: list[Step] = [UserSend(rq), Accept(), Expect((_names(rq),)), AwaitState("Sta5")]
        if state in ("Sta9", "Sta11"):
            steps += [Send(ac), UserExpect(_names(ac)), AwaitState("Sta6")]
            steps += [UserSend(AReleaseRqPDU()), Expect((Pdu("A-RELEASE-RQ"),)), AwaitState("Sta7")]
            # PS3.8 §7.2.2 release collision, association-requestor side: Sta7 → AR-8 → Sta9.
            steps += [Send(AReleaseRqPDU()), UserExpect(Pdu("A-RELEASE-RQ")), AwaitState("Sta9")]
        if state == "Sta11":
            steps += [UserSend(AReleaseRpPDU()), Expect((Pdu("A-RELEASE-RP"),))]
            steps += [AwaitState("Sta11")]
        return "requestor", steps, False
    steps = [Connect(), AwaitState("Sta2")]
    if state == "Sta2":
        return "acceptor", steps, False
    steps += [Send(rq), UserExpect(_names(rq)), AwaitState("Sta3")]
    if state == "Sta3":
        return "acceptor", steps, False
    steps += [UserSend(ac), Expect((_names(ac),)), AwaitState("Sta6")]
    if state in ("Sta8", "Sta13"):
        steps += [Send(AReleaseRqPDU()), UserExpect(Pdu("A-RELEASE-RQ")), AwaitState("Sta8")]
        if state == "Sta13":
            # PS3.8 Table 9-8 AR-4: A-RELEASE-RP sent, ARTIM started, Sta13.
            steps += [UserSend(AReleaseRpPDU()), Expect((Pdu("A-RELEASE-RP"),))]
            steps += [AwaitState("Sta13")]
    elif state in ("Sta7", "Sta10", "Sta12"):
        steps += [UserSend(AReleaseRqPDU()), Expect((Pdu("A-RELEASE-RQ"),)), AwaitState("Sta7")]
        if state in ("Sta10", "Sta12"):
            # PS3.8 §7.2.2 release collision, association-acceptor side: Sta7 → AR-8 → Sta10.
            steps += [Send(AReleaseRqPDU()), UserExpect(Pdu("A-RELEASE-RQ")), AwaitState("Sta10")]
        if state == "Sta12":
            steps += [Send(AReleaseRpPDU()), UserExpect(Pdu("A-RELEASE-RP")), AwaitState("Sta12")]
    return "acceptor", steps, False


def _inject(event: str, state: str, params: Params, *, listen: bool = False) -> Step:
    """The step that makes ``event`` happen to the IUT (PS3.8 Table 9-10 rows)."""
    rq = association_rq(params)
    user: dict[str, PDU] = {
        "Evt1": rq,
        "Evt7": _ac(params),
        "Evt8": RJ_USER,
        "Evt9": ECHO,
        "Evt11": AReleaseRqPDU(),
        "Evt14": AReleaseRpPDU(),
        "Evt15": ABORT,
    }
    if event in user:
        return UserSend(user[event])
    wire: dict[str, Step] = {
        "Evt2": Accept(),
        "Evt3": Send(_ac(params)),
        "Evt4": Send(RJ_USER),
        "Evt5": Connect(),
        # The RQ arrives in three TCP segments: the IUT must frame by PDU-length (§9.3.1).
        "Evt6": Send(rq, segments=(1, 5, 30)),
        "Evt10": Send(ECHO),
        "Evt12": Send(AReleaseRqPDU()),
        "Evt13": Send(AReleaseRpPDU()),
        "Evt16": Send(ABORT),
        "Evt17": RefuseConnect() if state == "Sta4" else HalfClose(),
        "Evt18": ElapseArtim(),
        "Evt19": Send(UNRECOGNIZED_PDU),
    }
    if listen and event == "Evt3":
        return Reply("A-ASSOCIATE-AC")  # an AC for the requestor's own RQ
    if listen and event == "Evt10" and state == "Sta6":
        return Reply("C-ECHO-RSP")  # the answer the requestor's user is waiting for
    return wire[event]


def _next_state(spec: ActionSpec, role: Role) -> tuple[str, ...]:
    """The branch our scripts take: AE-6 accepts (Sta3); AR-8 by association role."""
    if spec.name == "AE-6":
        return ("Sta3",)
    if spec.name == "AR-8":
        return ("Sta9",) if role == "requestor" else ("Sta10",)
    return spec.next_states


def _indication_rule(spec: ActionSpec, event: str) -> Pdu | None:
    """The primitive the user must receive (PS3.8 §7; A-P-ABORT is an A-ABORT of source 2)."""
    if spec.indicates is None:
        return None
    if spec.indicates == "A-P-ABORT":
        return Pdu("A-ABORT", source=(2,))
    if spec.name == "AA-3":
        return Pdu("A-ABORT", source=(ABORT.source,))  # the peer's A-ABORT: same source
    return Pdu(spec.indicates)


def _white_expect(c: CellSpec, role: Role, params: Params, artim: float) -> list[Step]:
    """Everything the action must do, observed on the wire, at the user and in the core."""
    spec = c.spec
    assert spec is not None and c.action is not None
    steps: list[Step] = [ExpectTransition(c.event, c.action, _next_state(spec, role), spec.effects)]
    if spec.sends is not None:
        steps.append(Expect(_send_rules(spec)))
    indication = _indication_rule(spec, c.event)
    if indication is not None:
        steps.append(UserExpect(indication))
    else:
        steps.append(UserExpectNothing(params.user_window))
    steps.append(ExpectArtim(spec.artim))
    if spec.transport in ("close", "gone"):
        if c.event == "Evt18":
            # PS3.8 §9.1.5: the close comes when ARTIM expires, not before.
            steps.append(ExpectClosed(within=artim + 3.0, not_before=artim * 0.5))
        else:
            steps.append(ExpectClosed())
    elif spec.transport == "open":
        steps.append(Accept())  # AE-1: the TRANSPORT CONNECT reaches the peer
    elif spec.sends is None:
        steps.append(ExpectSilence(params.user_window))
    return steps


def _white_blank(c: CellSpec, params: Params, local: bool) -> Script | Skip:
    """A blank cell: show that it stays blank, or say why it cannot occur (PS3.8 §9.2)."""
    s, e = c.state, c.event
    if e in NETWORK_EVENTS and s in ("Sta1", "Sta4"):
        return Skip(
            "blank",
            f"{e} needs a PDU from the peer; in {s} no transport connection "
            "exists to carry one (PS3.8 Table 9-10)",
        )
    if e == "Evt17" and s == "Sta1":
        return Skip("blank", "in Sta1 there is no transport connection that could close")
    if e in ("Evt2", "Evt5") and not local:
        what = (
            "its own TRANSPORT CONNECT (AE-1) completes"
            if e == "Evt2"
            else ("it is built on an accepted socket")
        )
        return Skip("blank", f"the provider raises {e} only when {what}: it cannot occur in {s}")
    role, setup, hold = _white_setup(s, e, params)
    expect: list[Step]
    if e in USER_EVENTS or e in ("Evt2", "Evt5"):
        inject: Step = (
            TransportEvent("Evt2" if e == "Evt2" else "Evt5")
            if e in ("Evt2", "Evt5")
            else _inject(e, s, params)
        )
        expect = [ExpectRefused(), ExpectNoTransition(), UserExpectNothing()]
    else:  # Evt18 outside Sta2/Sta13: ARTIM does not run there (PS3.8 §9.1.5)
        inject = ElapseArtim()
        expect = [ExpectArtim("stop"), ExpectNoTransition(), UserExpectNothing()]
    if s not in ("Sta1", "Sta4"):
        expect.append(ExpectSilence(params.user_window))
    artim = params.long_artim
    return Script(c.name, role, artim, tuple(setup), (inject,), tuple(expect), hold)


def _white(c: CellSpec, params: Params, local: bool) -> Script | Skip:
    """Targets ``local`` and ``provider``: every cell is run."""
    if c.blank:
        return _white_blank(c, params, local)
    role, setup, hold = _white_setup(c.state, c.event, params)
    artim = params.short_artim if c.event == "Evt18" else params.long_artim
    inject = _inject(c.event, c.state, params)
    expect = _white_expect(c, role, params, artim)
    return Script(c.name, role, artim, tuple(setup), (inject,), tuple(expect), hold)


# --------------------------------------------------------------------------- black box


def _reactions(state: str) -> tuple[Pdu, ...]:
    """PDUs the IUT's own user may cause in ``state``: sends of its user events' actions."""
    rules: list[Pdu] = []
    for event in USER_EVENTS:
        spec = cell(state, event).spec
        if spec is not None and spec.sends is not None:
            rules.extend(_send_rules(spec))
    return tuple(dict.fromkeys(rules))


def plan(c: CellSpec, kind: Kind | Literal["local", "provider"], params: Params) -> Script | Skip:
    """The script of one cell for a target kind (its first recipe), or why it is not run."""
    if kind in ("local", "provider", "white"):
        return _white(c, params, local=kind == "local")
    from netdicom2.conformance.blackbox import remote_plans  # black-box recipes build on these

    planned = remote_plans(c, params, listen=kind == "remote-requestor")
    return planned if isinstance(planned, Skip) else planned[0]


def plans(
    c: CellSpec, kind: Kind | Literal["local", "provider"], params: Params
) -> list[Script] | Skip:
    """Every recipe of one cell, tried in order until one reaches the state; or why not run."""
    if kind in ("local", "provider", "white"):
        planned = _white(c, params, local=kind == "local")
        return planned if isinstance(planned, Skip) else [planned]
    from netdicom2.conformance.blackbox import remote_plans

    return remote_plans(c, params, listen=kind == "remote-requestor")
