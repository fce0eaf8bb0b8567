"""Cell scripts as data: the steps a scripted peer and a scripted local user perform.

A ``Script`` brings the implementation under test (IUT) to a state (``setup``), injects one
event of PS3.8 Table 9-10 (``inject``) and checks what the cell's action must do (``expect``).
Every step is a frozen dataclass whose repr can be evaluated back (PDUs are dataclasses with
evaluable reprs too), so a failing cell prints the exact script that reproduces it.

Three kinds of step:

* the wire, performed by the scripted peer: ``Connect`` … ``Reset``;
* the IUT's local user (targets ``local`` and ``provider``): ``UserSend`` … ``ExpectRefused``;
* white-box checks of the IUT (targets ``local`` and ``provider``): ``AwaitState`` …
  ``ElapseArtim``. A black-box (remote) script never contains user or white-box steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, TypeAlias

from netdicom2.pdu import PDU

__all__ = [
    "Accept",
    "AwaitState",
    "Close",
    "Connect",
    "ElapseArtim",
    "Expect",
    "ExpectArtim",
    "ExpectClosed",
    "ExpectIdleEnd",
    "ExpectNoTransition",
    "ExpectRefused",
    "ExpectResponses",
    "ExpectSilence",
    "ExpectSta13",
    "ExpectTransition",
    "HalfClose",
    "Pdu",
    "RefuseConnect",
    "Reply",
    "Reset",
    "Role",
    "Script",
    "Send",
    "Step",
    "TransportEvent",
    "UserExpect",
    "UserExpectNothing",
    "UserSend",
    "render",
]

Role = Literal["acceptor", "requestor"]


@dataclass(frozen=True)
class Pdu:
    """A PDU rule: its name (PS3.8 §9.3) and the allowed source / result / reason bytes."""

    name: str
    source: tuple[int, ...] | None = None  # A-ABORT / A-ASSOCIATE-RJ source (None: any)
    reason: tuple[int, ...] | None = None  # A-ABORT / A-ASSOCIATE-RJ reason/diag (None: any)
    max_length: int | None = None  # PDU-length at most this (PS3.8 Annex D.1)
    result: tuple[int, ...] | None = None  # A-ASSOCIATE-RJ result (None: any)
    undecided: str = ""  # matching this makes the cell inconclusive, for this reason


# --------------------------------------------------------------------------- the wire


@dataclass(frozen=True)
class Connect:
    """The peer opens a TCP connection to the IUT (the IUT's Evt5, PS3.8 §9.1.2)."""


@dataclass(frozen=True)
class Accept:
    """The peer accepts the TCP connection the IUT opens (the IUT's Evt2, PS3.8 §9.1.2)."""

    within: float = 5.0


@dataclass(frozen=True)
class RefuseConnect:
    """The IUT's TRANSPORT CONNECT fails (the IUT's Evt17 in Sta4, PS3.8 Table 9-10)."""


@dataclass(frozen=True)
class Send:
    """The peer writes a PDU or raw bytes, optionally cut into segments with a delay between."""

    data: PDU | bytes
    segments: tuple[int, ...] = ()  # sizes of the first pieces; the rest goes last
    delay: float = 0.0  # seconds between pieces


@dataclass(frozen=True)
class Reply:
    """The peer answers what it last received: "A-ASSOCIATE-AC" or "C-ECHO-RSP" (remote SCUs)."""

    kind: Literal["A-ASSOCIATE-AC", "C-ECHO-RSP"]


@dataclass(frozen=True)
class Expect:
    """The IUT sends one PDU matching one of ``any_of`` within ``within`` seconds.

    PDUs named in ``skip`` may arrive first and are passed over. With ``or_silence`` the
    IUT may also send nothing (and keep the transport open) for ``within`` seconds.
    """

    any_of: tuple[Pdu, ...]
    within: float = 3.0
    skip: tuple[str, ...] = ()
    or_silence: bool = False


@dataclass(frozen=True)
class ExpectClosed:
    """The IUT closes the transport (``how``: "fin", "rst" or "any") without sending a PDU.

    ``not_before`` (seconds after the previous wire step) rejects an early close: ARTIM cells.
    """

    within: float = 3.0
    how: Literal["fin", "rst", "any"] = "any"
    not_before: float = 0.0
    expected: float | None = None  # about when (a timer): later than x 1.25 + 2 s fails


@dataclass(frozen=True)
class ExpectSta13:
    """After a PDU that enters Sta13 (AA-1, AA-7/AA-8's A-ABORT, AE-6/AE-8's RJ, AR-4's RP).

    PS3.8 §9.1.4 / Table 9-9: the IUT waits there for the transport close or ARTIM. A reset
    within ``hold`` seconds of that PDU is a deviation (the PDU may be lost with it); a FIN at
    once is recorded. With ``timer`` known the IUT must close about ``timer`` seconds after
    the PDU (later than ``timer`` x 1.25 + 2 s is a deviation); we watch at most ``within``.
    """

    after: str  # the PDU that entered Sta13, for the report
    hold: float = 0.3
    timer: float | None = None
    within: float = 3.0
    await_close: bool = True  # False: this case checks the hold only (the Sta13 cells the close)


@dataclass(frozen=True)
class ExpectResponses:
    """The IUT answers DIMSE requests ``first`` … ``first + count - 1`` in order, none aborts.

    Each request came in its own P-DATA-TF (DT-2 each: PS3.8 Table 9-10, Sta6-Evt10); every
    indication reaches the IUT's user, whose responses name the requests by Message ID Being
    Responded To (PS3.7 §9.3.1). Responses may share a P-DATA-TF or be fragmented (Annex E).
    """

    first: int
    count: int
    within: float = 5.0


@dataclass(frozen=True)
class ExpectIdleEnd:
    """Nothing was sent in Sta6: how the IUT's own timer ends the association, if it does.

    PS3.8 Table 9-10 leaves Sta6 on the IUT's initiative only by its user's A-RELEASE request
    (Evt11, AR-1: an A-RELEASE-RQ) or A-ABORT request (Evt15, AA-1: an A-ABORT of source 0,
    ARTIM, Sta13); §9.1.4 Note 2 puts such timers in the user (PS3.7). No action of Sta6 closes
    the transport without a PDU. Silence for ``within`` seconds: no idle timer, not judged.
    """

    within: float
    hold: float = 0.3
    timer: float | None = None  # its Sta13 timer, when known
    sta13_within: float = 3.0


@dataclass(frozen=True)
class ExpectSilence:
    """The IUT sends nothing and keeps the transport open for ``duration`` seconds."""

    duration: float


@dataclass(frozen=True)
class Close:
    """The peer closes the transport normally (FIN; the IUT's Evt17)."""


@dataclass(frozen=True)
class HalfClose:
    """The peer shuts down its sending side (FIN; the IUT's Evt17) and keeps reading."""


@dataclass(frozen=True)
class Reset:
    """The peer aborts the transport with SO_LINGER 0 (RST; the IUT's Evt17)."""


# --------------------------------------------------------------------------- the local user


@dataclass(frozen=True)
class UserSend:
    """The IUT's user issues a primitive (Evt1, 7, 8, 9, 11, 14 or 15 by its PDU type)."""

    primitive: PDU


@dataclass(frozen=True)
class UserExpect:
    """The IUT's user receives an indication or confirmation matching ``pdu``."""

    pdu: Pdu
    within: float = 3.0


@dataclass(frozen=True)
class UserExpectNothing:
    """The IUT's user receives no indication within ``within`` seconds."""

    within: float = 0.0


@dataclass(frozen=True)
class ExpectRefused:
    """The last local input was refused with LocalProtocolError and changed nothing (blank)."""


# --------------------------------------------------------------------------- white box


@dataclass(frozen=True)
class TransportEvent:
    """The local transport service reports Evt2 (connect confirmation) or Evt5 (indication)."""

    event: Literal["Evt2", "Evt5"]


@dataclass(frozen=True)
class AwaitState:
    """The IUT's state machine reaches ``state`` within ``within`` seconds."""

    state: str
    within: float = 3.0


@dataclass(frozen=True)
class ExpectTransition:
    """The next transition is ``event`` → ``action`` → one of ``next_states``.

    ``effects`` are the core's effects in order ("send A-ABORT", "start", …; "stop?" means a
    StopTimer only when ARTIM was running), checked where the target can see them.
    """

    event: str
    action: str
    next_states: tuple[str, ...]
    effects: tuple[str, ...] = ()
    within: float = 3.0


@dataclass(frozen=True)
class ExpectNoTransition:
    """No transition happened and the state is unchanged since the event was injected."""


@dataclass(frozen=True)
class ExpectArtim:
    """ARTIM after the event: "start" (running, from the event), "stop", "keep" (as before)."""

    expect: Literal["start", "stop", "keep"]


@dataclass(frozen=True)
class ElapseArtim:
    """Let ARTIM expire (Evt18): the fake clock jumps to its deadline; wall clocks just run."""


Step: TypeAlias = (
    Connect
    | Accept
    | RefuseConnect
    | Send
    | Reply
    | Expect
    | ExpectClosed
    | ExpectSilence
    | ExpectSta13
    | ExpectResponses
    | ExpectIdleEnd
    | Close
    | HalfClose
    | Reset
    | UserSend
    | UserExpect
    | UserExpectNothing
    | ExpectRefused
    | TransportEvent
    | AwaitState
    | ExpectTransition
    | ExpectNoTransition
    | ExpectArtim
    | ElapseArtim
)

WIRE_STEPS = (
    Connect,
    Accept,
    RefuseConnect,
    Send,
    Reply,
    Expect,
    ExpectClosed,
    ExpectSilence,
    ExpectSta13,
    ExpectResponses,
    ExpectIdleEnd,
    Close,
    HalfClose,
    Reset,
)


@dataclass(frozen=True)
class Script:
    """One cell's script: reach ``state`` (setup), inject ``event``, check the action (expect)."""

    cell: str
    role: Role  # the IUT's association role (PS3.8 §9.2: it decides AR-8's next state)
    artim: float  # the ARTIM duration configured in the IUT (provider) or known (remote)
    setup: tuple[Step, ...]
    inject: tuple[Step, ...]
    expect: tuple[Step, ...]
    hold_connect: bool = False  # provider: the TRANSPORT CONNECT stays pending (Sta4)
    recipe: str = ""  # how the state is reached, when there is more than one way
    case: str = ""  # which shape of the event, when the cell checks several
    reaches: tuple[str, ...] = ()  # per setup step: the cell whose transition it relies on

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step, in order."""
        return self.setup + self.inject + self.expect


def render(script: Script) -> str:
    """The script as evaluable Python, one step per line."""
    lines = [f"Script(cell={script.cell!r}, role={script.role!r}, artim={script.artim!r},"]
    if script.hold_connect:
        lines.append("    hold_connect=True,")
    if script.recipe:
        lines.append(f"    recipe={script.recipe!r},")
    if script.case:
        lines.append(f"    case={script.case!r},")
    if script.reaches:
        lines.append(f"    reaches={script.reaches!r},")
    for phase in ("setup", "inject", "expect"):
        steps: tuple[Step, ...] = getattr(script, phase)
        lines.append(f"    {phase}=(")
        lines.extend(f"        {step!r}," for step in steps)
        lines.append("    ),")
    lines.append(")")
    return "\n".join(lines)


def describe(step: Step) -> str:
    """A short one-line description of a step (its class and non-default fields)."""
    parts = []
    for f in fields(step):
        value = getattr(step, f.name)
        if value != f.default:
            text = repr(value)
            parts.append(f"{f.name}={text if len(text) < 60 else text[:57] + '...'}")
    return f"{type(step).__name__}({', '.join(parts)})"
