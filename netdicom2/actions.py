"""What each PS3.8 action does (Tables 9-6 … 9-9), one pure function per action.

An action gets an ``ActionContext`` (the clock reading, the ARTIM duration, the association
role, the PDU that caused the event …) and returns an ``Outcome``: the effects in the order the
standard lists them (send PDU · issue indication · start/stop ARTIM · open/close transport) and
the next state. Which action runs for a (state, event) pair is not decided here: that is
``netdicom2.fsm.TRANSITIONS``. Nothing here performs I/O or mutates anything.

Indications (``Indicate.primitive``) handed to the user, per action:

* AE-3: the received ``AAssociateAcPDU`` (A-ASSOCIATE confirmation, accept).
* AE-4: the received ``AAssociateRjPDU`` (A-ASSOCIATE confirmation, reject).
* AE-6 (accept branch): the received ``AAssociateRqPDU`` (A-ASSOCIATE indication).
* DT-2, AR-6: the received ``PDataTfPDU`` (P-DATA indication).
* AR-2, AR-8: the received ``AReleaseRqPDU`` (A-RELEASE indication).
* AR-3, AR-10: the received ``AReleaseRpPDU`` (A-RELEASE confirmation).
* AA-3: the received ``AAbortPDU``: source 0 is an A-ABORT indication, source 1 or 2 an
  A-P-ABORT indication.
* AA-4: ``AAbortPDU(source=2, reason_diag=0)``, an A-P-ABORT indication (transport lost).
* AA-8: ``AAbortPDU(source=2, reason_diag=<the reason sent>)``, an A-P-ABORT indication.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netdicom2.exceptions import AbortReason
from netdicom2.fsm import Action, State
from netdicom2.pdu import PDU, AAbortPDU, AAssociateRjPDU, AAssociateRqPDU, PDataTfPDU

__all__ = [
    "ACTIONS",
    "Acceptable",
    "ActionContext",
    "CloseTransport",
    "Effect",
    "Indicate",
    "OpenTransport",
    "Outcome",
    "SendPDU",
    "StartTimer",
    "StopTimer",
    "run",
]

# A local policy run by AE-6 before the user sees an A-ASSOCIATE-RQ: an RJ refuses it.
Acceptable = Callable[[AAssociateRqPDU], AAssociateRjPDU | None]


class SendPDU:
    """Write this PDU on the transport; ``data`` is its encoding.

    ``SendPDU(pdu, data)``, or ``SendPDU(pdu, parts=...)``: the encoding in pieces, as a
    P-DATA-TF keeps it so that its fragments are written with one gathering system call and
    never copied (``data`` joins them when first read). Immutable; equal by pdu and data.
    """

    __slots__ = ("_data", "parts", "pdu", "size")
    __match_args__ = ("pdu", "data")
    __hash__ = None  # type: ignore[assignment]  # a PDU is mutable, as in a frozen dataclass

    pdu: PDU
    parts: tuple[bytes | memoryview, ...]
    size: int  # len(data)
    _data: bytes | None

    def __init__(
        self,
        pdu: PDU,
        data: bytes | None = None,
        *,
        parts: Sequence[bytes | memoryview] | None = None,
    ) -> None:
        """Either the whole encoding (data) or its pieces (parts)."""
        if data is not None:
            if parts is not None:
                raise TypeError("SendPDU takes data or parts")
            pieces: tuple[bytes | memoryview, ...] = (data,)
            size = len(data)
        elif parts is None:
            raise TypeError("SendPDU takes data or parts")
        else:
            pieces = tuple(parts)
            size = sum(map(len, pieces))
        setattr_ = object.__setattr__  # immutable: __setattr__ refuses
        setattr_(self, "pdu", pdu)
        setattr_(self, "_data", data)
        setattr_(self, "parts", pieces)
        setattr_(self, "size", size)

    @property
    def data(self) -> bytes:
        """The PDU's encoding, joined from its parts once."""
        if self._data is None:
            object.__setattr__(self, "_data", b"".join(self.parts))
        assert self._data is not None
        return self._data

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SendPDU is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SendPDU):
            return NotImplemented
        return self.pdu == other.pdu and self.data == other.data

    def __repr__(self) -> str:
        return f"SendPDU(pdu={self.pdu!r}, data={self.data!r})"


@dataclass(frozen=True, init=False)
class Indicate:
    """Deliver this primitive (indication or confirmation) to the local user."""

    primitive: PDU

    def __init__(self, primitive: PDU) -> None:
        """Set the field past the frozen __setattr__ (one per received PDU)."""
        self.__dict__["primitive"] = primitive


@dataclass(frozen=True)
class StartTimer:
    """Start (or restart) ARTIM so that it expires at ``deadline`` (PS3.8 §9.1.5)."""

    deadline: float


@dataclass(frozen=True)
class StopTimer:
    """Stop ARTIM (PS3.8 §9.1.5)."""


@dataclass(frozen=True)
class OpenTransport:
    """Issue a TRANSPORT CONNECT request to the local transport service (PS3.8 §9.1.2)."""


@dataclass(frozen=True)
class CloseTransport:
    """Close the transport connection, without lingering (PS3.8 §9.1.4)."""


Effect = SendPDU | Indicate | StartTimer | StopTimer | OpenTransport | CloseTransport

# The effects without fields are values: one instance of each serves every action.
_STOP_TIMER = StopTimer()
_OPEN_TRANSPORT = OpenTransport()
_CLOSE_TRANSPORT = CloseTransport()


@dataclass(frozen=True, init=False)
class ActionContext:
    """What an action may look at: clock, ARTIM, role, the event's PDU and the abort reason."""

    now: float
    artim_timeout: float = 30.0
    artim_running: bool = False
    is_requestor: bool = False
    pdu: PDU | None = None
    abort_reason: int = AbortReason.UNEXPECTED_PDU
    acceptable: Acceptable | None = None

    def __init__(
        self,
        now: float,
        artim_timeout: float = 30.0,
        artim_running: bool = False,
        is_requestor: bool = False,
        pdu: PDU | None = None,
        abort_reason: int = AbortReason.UNEXPECTED_PDU,
        acceptable: Acceptable | None = None,
    ) -> None:
        """Set the fields past the frozen __setattr__: one context is built per event."""
        fields = self.__dict__
        fields["now"] = now
        fields["artim_timeout"] = artim_timeout
        fields["artim_running"] = artim_running
        fields["is_requestor"] = is_requestor
        fields["pdu"] = pdu
        fields["abort_reason"] = abort_reason
        fields["acceptable"] = acceptable

    @property
    def artim_deadline(self) -> float:
        """When ARTIM expires if (re)started now."""
        return self.now + self.artim_timeout


@dataclass(frozen=True, init=False)
class Outcome:
    """The effects of one action, in PS3.8 order, and the state the machine goes to."""

    effects: tuple[Effect, ...]
    next_state: State

    def __init__(self, effects: tuple[Effect, ...], next_state: State) -> None:
        """Set the fields past the frozen __setattr__: one outcome is built per event."""
        fields = self.__dict__
        fields["effects"] = effects
        fields["next_state"] = next_state


def _send(pdu: PDU) -> SendPDU:
    """The effect that writes ``pdu`` on the transport."""
    if type(pdu) is PDataTfPDU:
        return SendPDU(pdu, parts=pdu.encode_parts())  # the fragments are not copied
    return SendPDU(pdu, pdu.encode())


def _pdu(ctx: ActionContext) -> PDU:
    """The PDU or primitive that caused the event (every action but a few has one)."""
    if ctx.pdu is None:
        raise ValueError("this action needs the event's PDU in ActionContext.pdu")
    return ctx.pdu


# --- Association establishment, PS3.8 §9.2.2 Table 9-6 -------------------------------------


def ae_1(ctx: ActionContext) -> Outcome:
    """AE-1: issue TRANSPORT CONNECT to the local transport service; next Sta4."""
    return Outcome((_OPEN_TRANSPORT,), State.Sta4)


def ae_2(ctx: ActionContext) -> Outcome:
    """AE-2: send the A-ASSOCIATE-RQ PDU the user asked for in Evt1; next Sta5."""
    return Outcome((_send(_pdu(ctx)),), State.Sta5)


def ae_3(ctx: ActionContext) -> Outcome:
    """AE-3: issue A-ASSOCIATE confirmation (accept); next Sta6."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta6)


def ae_4(ctx: ActionContext) -> Outcome:
    """AE-4: issue A-ASSOCIATE confirmation (reject) and close the transport; next Sta1."""
    return Outcome((Indicate(_pdu(ctx)), _CLOSE_TRANSPORT), State.Sta1)


def ae_5(ctx: ActionContext) -> Outcome:
    """AE-5: issue the transport connection response and start ARTIM; next Sta2."""
    return Outcome((StartTimer(ctx.artim_deadline),), State.Sta2)


def provider_rejection(
    rq: AAssociateRqPDU, acceptable: Acceptable | None
) -> AAssociateRjPDU | None:
    """The A-ASSOCIATE-RJ the service-provider answers ``rq`` with, or None if acceptable."""
    # PS3.8 §9.3.2: a version-1 receiver tests bit 0 of the protocol-version only; without it
    # the provider rejects: result 1 (permanent), source 2 (ACSE), reason 2 (protocol version).
    if not rq.protocol_version & 0x0001:
        return AAssociateRjPDU(result=1, source=2, reason_diag=2)
    # A configured local policy (e.g. called AE title not served, or local limit exceeded:
    # source 3 reason 2) may refuse the request before the user sees it (§7.1.2.6).
    if acceptable is not None:
        rj = acceptable(rq)
        if rj is not None and not isinstance(rj, AAssociateRjPDU):
            raise TypeError(f"acceptable() must return AAssociateRjPDU or None, not {rj!r}")
        return rj
    return None


def ae_6(ctx: ActionContext) -> Outcome:
    """AE-6: stop ARTIM; if acceptable, A-ASSOCIATE indication (Sta3), else RJ + ARTIM (Sta13)."""
    rq = _pdu(ctx)
    if not isinstance(rq, AAssociateRqPDU):
        raise TypeError(f"AE-6 needs an A-ASSOCIATE-RQ, not {rq!r}")
    rj = provider_rejection(rq, ctx.acceptable)
    if rj is None:
        return Outcome((_STOP_TIMER, Indicate(rq)), State.Sta3)
    # Not acceptable: send the RJ and start ARTIM; the indication is not issued (§7.1.2.6).
    return Outcome((_STOP_TIMER, _send(rj), StartTimer(ctx.artim_deadline)), State.Sta13)


def ae_7(ctx: ActionContext) -> Outcome:
    """AE-7: send the A-ASSOCIATE-AC PDU; next Sta6."""
    return Outcome((_send(_pdu(ctx)),), State.Sta6)


def ae_8(ctx: ActionContext) -> Outcome:
    """AE-8: send the A-ASSOCIATE-RJ PDU and start ARTIM; next Sta13."""
    return Outcome((_send(_pdu(ctx)), StartTimer(ctx.artim_deadline)), State.Sta13)


# --- Data transfer, PS3.8 §9.2.2 Table 9-7 -------------------------------------------------


def dt_1(ctx: ActionContext) -> Outcome:
    """DT-1: send the P-DATA-TF PDU; stay in Sta6."""
    return Outcome((_send(_pdu(ctx)),), State.Sta6)


def dt_2(ctx: ActionContext) -> Outcome:
    """DT-2: issue P-DATA indication; stay in Sta6."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta6)


# --- Association release, PS3.8 §9.2.2 Table 9-8 -------------------------------------------


def ar_1(ctx: ActionContext) -> Outcome:
    """AR-1: send the A-RELEASE-RQ PDU; next Sta7."""
    return Outcome((_send(_pdu(ctx)),), State.Sta7)


def ar_2(ctx: ActionContext) -> Outcome:
    """AR-2: issue A-RELEASE indication; next Sta8."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta8)


def ar_3(ctx: ActionContext) -> Outcome:
    """AR-3: issue A-RELEASE confirmation and close the transport; next Sta1."""
    return Outcome((Indicate(_pdu(ctx)), _CLOSE_TRANSPORT), State.Sta1)


def ar_4(ctx: ActionContext) -> Outcome:
    """AR-4: send the A-RELEASE-RP PDU and start ARTIM; next Sta13."""
    return Outcome((_send(_pdu(ctx)), StartTimer(ctx.artim_deadline)), State.Sta13)


def ar_5(ctx: ActionContext) -> Outcome:
    """AR-5: stop ARTIM (the peer closed the transport); next Sta1."""
    return Outcome((_STOP_TIMER,), State.Sta1)


def ar_6(ctx: ActionContext) -> Outcome:
    """AR-6: issue P-DATA indication (data may still arrive after A-RELEASE-RQ); stay Sta7."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta7)


def ar_7(ctx: ActionContext) -> Outcome:
    """AR-7: send the P-DATA-TF PDU (before answering the release); stay in Sta8."""
    return Outcome((_send(_pdu(ctx)),), State.Sta8)


def ar_8(ctx: ActionContext) -> Outcome:
    """AR-8: issue A-RELEASE indication (collision); association-requestor Sta9, else Sta10."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta9 if ctx.is_requestor else State.Sta10)


def ar_9(ctx: ActionContext) -> Outcome:
    """AR-9: send the A-RELEASE-RP PDU; next Sta11."""
    return Outcome((_send(_pdu(ctx)),), State.Sta11)


def ar_10(ctx: ActionContext) -> Outcome:
    """AR-10: issue A-RELEASE confirmation; next Sta12."""
    return Outcome((Indicate(_pdu(ctx)),), State.Sta12)


# --- Association abort, PS3.8 §9.2.2 Table 9-9 ---------------------------------------------


def aa_1(ctx: ActionContext) -> Outcome:
    """AA-1: send A-ABORT (service-user source, reason 0) and (re)start ARTIM; next Sta13."""
    # PS3.8 §9.3.8: the A-ABORT is built here, source 0; its reason is "not significant" and
    # sent as 00H. The user's A-ABORT primitive (Evt15) is never echoed onto the wire, and in
    # Sta2 (an unexpected PDU before the A-ASSOCIATE-RQ) the source is 0 too, as AA-1 says.
    abort = AAbortPDU(source=0, reason_diag=0)
    return Outcome((_send(abort), StartTimer(ctx.artim_deadline)), State.Sta13)


def aa_2(ctx: ActionContext) -> Outcome:
    """AA-2: stop ARTIM if running and close the transport; next Sta1, no indication."""
    stop: tuple[Effect, ...] = (_STOP_TIMER,) if ctx.artim_running else ()
    return Outcome((*stop, _CLOSE_TRANSPORT), State.Sta1)


def aa_3(ctx: ActionContext) -> Outcome:
    """AA-3: issue A-ABORT (source 0) or A-P-ABORT (source 1/2) indication, close; next Sta1."""
    # The indication is the received A-ABORT itself: its source says which primitive it is.
    return Outcome((Indicate(_pdu(ctx)), _CLOSE_TRANSPORT), State.Sta1)


def aa_4(ctx: ActionContext) -> Outcome:
    """AA-4: issue A-P-ABORT indication (the transport is already gone); next Sta1."""
    indication = AAbortPDU(source=2, reason_diag=AbortReason.NOT_SPECIFIED)
    return Outcome((Indicate(indication),), State.Sta1)


def aa_5(ctx: ActionContext) -> Outcome:
    """AA-5: stop ARTIM (the transport closed before any A-ASSOCIATE-RQ); next Sta1."""
    return Outcome((_STOP_TIMER,), State.Sta1)


def aa_6(ctx: ActionContext) -> Outcome:
    """AA-6: ignore the PDU; stay in Sta13 with ARTIM untouched."""
    return Outcome((), State.Sta13)


def aa_7(ctx: ActionContext) -> Outcome:
    """AA-7: send A-ABORT (source 2, unexpected or unrecognized PDU); stay in Sta13."""
    # The standard leaves the A-ABORT's fields open; source 2 reason 2 as DCMTK and pynetdicom,
    # except reason 1 (unrecognized PDU) for an unknown PDU type. ARTIM keeps running.
    reason = (
        AbortReason.UNRECOGNIZED_PDU
        if ctx.abort_reason == AbortReason.UNRECOGNIZED_PDU
        else AbortReason.UNEXPECTED_PDU
    )
    return Outcome((_send(AAbortPDU(source=2, reason_diag=reason)),), State.Sta13)


def aa_8(ctx: ActionContext) -> Outcome:
    """AA-8: send A-ABORT (source 2), issue A-P-ABORT indication, start ARTIM; next Sta13."""
    # PS3.8 §9.3.8: the reason is the best fit the caller found: 1 unrecognized PDU (unknown
    # type), 2 unexpected PDU (well formed, wrong state) or 4/5/6 (bad parameter).
    abort = AAbortPDU(source=2, reason_diag=ctx.abort_reason)
    indication = AAbortPDU(source=2, reason_diag=ctx.abort_reason)
    return Outcome(
        (_send(abort), Indicate(indication), StartTimer(ctx.artim_deadline)), State.Sta13
    )


# The function of each action. PS3.8 §9.2.2, Tables 9-6 … 9-9.
ACTIONS: dict[Action, Callable[[ActionContext], Outcome]] = {
    Action.AE_1: ae_1,
    Action.AE_2: ae_2,
    Action.AE_3: ae_3,
    Action.AE_4: ae_4,
    Action.AE_5: ae_5,
    Action.AE_6: ae_6,
    Action.AE_7: ae_7,
    Action.AE_8: ae_8,
    Action.DT_1: dt_1,
    Action.DT_2: dt_2,
    Action.AR_1: ar_1,
    Action.AR_2: ar_2,
    Action.AR_3: ar_3,
    Action.AR_4: ar_4,
    Action.AR_5: ar_5,
    Action.AR_6: ar_6,
    Action.AR_7: ar_7,
    Action.AR_8: ar_8,
    Action.AR_9: ar_9,
    Action.AR_10: ar_10,
    Action.AA_1: aa_1,
    Action.AA_2: aa_2,
    Action.AA_3: aa_3,
    Action.AA_4: aa_4,
    Action.AA_5: aa_5,
    Action.AA_6: aa_6,
    Action.AA_7: aa_7,
    Action.AA_8: aa_8,
}


def run(action: Action, ctx: ActionContext) -> Outcome:
    """Perform ``action`` in ``ctx``: its effects in PS3.8 order and its next state."""
    return ACTIONS[action](ctx)
