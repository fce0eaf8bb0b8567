"""The harness' own transcription of PS3.8 Table 9-10 and of what each action shows (the oracle).

Written from the standard (PS3.8 §9.2, Tables 9-6 … 9-10), independently of
``netdicom2.fsm``: a table must not be checked against itself (ARCHITECTURE §3). Only the names
of states and events are shared. ``test_table.py`` checks this grid against the shared
``state_table.csv``.

``GRID`` is Table 9-10 laid out as in the standard: one row per event, one column per state,
``.`` for a blank cell. ``ACTIONS`` says, for each of the 28 actions of Tables 9-6 … 9-9, what
an observer can see: the PDU sent (with the source/reason it must carry), the primitive issued
to the user, what happens to ARTIM, whether the transport is opened or closed, and the next
state(s). ``EFFECTS`` lists the same as the ordered tokens the sans-I/O core must return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACTIONS",
    "EVENTS",
    "GRID",
    "PDU_NAMES",
    "PROVIDER_REASONS",
    "STATES",
    "ActionSpec",
    "CellSpec",
    "cell",
    "cells",
]

STATES: tuple[str, ...] = tuple(f"Sta{i}" for i in range(1, 14))
EVENTS: tuple[str, ...] = tuple(f"Evt{i}" for i in range(1, 20))

# PS3.8 §9.3.1: the PDU-type byte of each of the seven PDUs.
PDU_NAMES: dict[int, str] = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}

# PS3.8 §9.3.8, Table 9-26: the reasons a service-provider (source 2) A-ABORT may carry
# (3 is reserved). AA-7 and AA-8 do not prescribe one (spec notes §5.4): accept any of these.
PROVIDER_REASONS: tuple[int, ...] = (0, 1, 2, 4, 5, 6)

# PS3.8 §9.2, Table 9-10. Rows: events; columns: Sta1 … Sta13; "." = blank cell.
GRID = """
        Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
Evt1    AE-1  .     .     .     .     .     .     .     .     .     .     .     .
Evt2    .     .     .     AE-2  .     .     .     .     .     .     .     .     .
Evt3    .     AA-1  AA-8  .     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4    .     AA-1  AA-8  .     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5    AE-5  .     .     .     .     .     .     .     .     .     .     .     .
Evt6    .     AE-6  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7    .     .     AE-7  .     .     .     .     .     .     .     .     .     .
Evt8    .     .     AE-8  .     .     .     .     .     .     .     .     .     .
Evt9    .     .     .     .     .     DT-1  .     AR-7  .     .     .     .     .
Evt10   .     AA-1  AA-8  .     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11   .     .     .     .     .     AR-1  .     .     .     .     .     .     .
Evt12   .     AA-1  AA-8  .     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13   .     AA-1  AA-8  .     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14   .     .     .     .     .     .     .     AR-4  AR-9  .     .     AR-4  .
Evt15   .     .     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  .
Evt16   .     AA-2  AA-3  .     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17   .     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18   .     AA-2  .     .     .     .     .     .     .     .     .     .     AA-2
Evt19   .     AA-1  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""

# What happens to ARTIM, as a post-condition an observer can check (PS3.8 §9.1.5):
# "start" = running, expiring ARTIM seconds after the event (AA-1's "start, or restart");
# "stop" = not running; "keep" = as it was before the event (the action does not mention it).
Artim = Literal["start", "stop", "keep"]
Transport = Literal["open", "close", "gone", "keep"]


@dataclass(frozen=True)
class ActionSpec:
    """What one PS3.8 action does that an observer can see (Tables 9-6 … 9-9)."""

    name: str
    next_states: tuple[str, ...]
    sends: str | None = None  # the PDU written on the transport
    send_source: tuple[int, ...] | None = None  # allowed A-ABORT / A-ASSOCIATE-RJ sources
    send_reason: tuple[int, ...] | None = None  # allowed reasons (None: not tested)
    indicates: str | None = None  # the primitive issued to the user, by its PDU
    artim: Artim = "keep"
    transport: Transport = "keep"
    effects: tuple[str, ...] = ()  # the core's effects, in the order the action lists them
    text: str = ""


def _spec(
    name: str,
    nxt: str,
    text: str,
    effects: tuple[str, ...],
    *,
    sends: str | None = None,
    send_source: tuple[int, ...] | None = None,
    send_reason: tuple[int, ...] | None = None,
    indicates: str | None = None,
    artim: Artim = "keep",
    transport: Transport = "keep",
) -> ActionSpec:
    """One row of Tables 9-6 … 9-9."""
    return ActionSpec(
        name,
        tuple(nxt.split("|")),
        sends,
        send_source,
        send_reason,
        indicates,
        artim,
        transport,
        effects,
        text,
    )


_ABORT = "A-ABORT"
_ANY_SOURCE = (0, 2)  # PS3.8 Table 9-26: 1 is reserved

ACTIONS: dict[str, ActionSpec] = {
    a.name: a
    for a in (
        # PS3.8 Table 9-6, association establishment.
        _spec(
            "AE-1",
            "Sta4",
            "Issue TRANSPORT CONNECT request primitive to local transport service",
            ("open",),
            transport="open",
        ),
        _spec(
            "AE-2",
            "Sta5",
            "Send A-ASSOCIATE-RQ-PDU",
            ("send A-ASSOCIATE-RQ",),
            sends="A-ASSOCIATE-RQ",
        ),
        _spec(
            "AE-3",
            "Sta6",
            "Issue A-ASSOCIATE confirmation (accept) primitive",
            ("indicate A-ASSOCIATE-AC",),
            indicates="A-ASSOCIATE-AC",
        ),
        _spec(
            "AE-4",
            "Sta1",
            "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection",
            ("indicate A-ASSOCIATE-RJ", "close"),
            indicates="A-ASSOCIATE-RJ",
            transport="close",
        ),
        _spec(
            "AE-5",
            "Sta2",
            "Issue Transport connection response primitive; start ARTIM timer",
            ("start",),
            artim="start",
        ),
        # AE-6 has two branches; this spec is the "acceptable" one (next Sta3). The reject
        # branch (next Sta13) sends an A-ASSOCIATE-RJ with a provider source (2 or 3) and
        # starts ARTIM: see AE6_REJECT.
        _spec(
            "AE-6",
            "Sta3|Sta13",
            "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by "
            "service-provider: issue A-ASSOCIATE indication primitive, next Sta3; otherwise "
            "issue A-ASSOCIATE-RJ-PDU and start ARTIM timer, next Sta13",
            ("stop", "indicate A-ASSOCIATE-RQ"),
            indicates="A-ASSOCIATE-RQ",
            artim="stop",
        ),
        _spec(
            "AE-7",
            "Sta6",
            "Send A-ASSOCIATE-AC PDU",
            ("send A-ASSOCIATE-AC",),
            sends="A-ASSOCIATE-AC",
        ),
        _spec(
            "AE-8",
            "Sta13",
            "Send A-ASSOCIATE-RJ PDU and start ARTIM timer",
            ("send A-ASSOCIATE-RJ", "start"),
            sends="A-ASSOCIATE-RJ",
            artim="start",
        ),
        # PS3.8 Table 9-7, data transfer.
        _spec("DT-1", "Sta6", "Send P-DATA-TF PDU", ("send P-DATA-TF",), sends="P-DATA-TF"),
        _spec(
            "DT-2",
            "Sta6",
            "Send P-DATA indication primitive",
            ("indicate P-DATA-TF",),
            indicates="P-DATA-TF",
        ),
        # PS3.8 Table 9-8, association release.
        _spec(
            "AR-1", "Sta7", "Send A-RELEASE-RQ PDU", ("send A-RELEASE-RQ",), sends="A-RELEASE-RQ"
        ),
        _spec(
            "AR-2",
            "Sta8",
            "Issue A-RELEASE indication primitive",
            ("indicate A-RELEASE-RQ",),
            indicates="A-RELEASE-RQ",
        ),
        _spec(
            "AR-3",
            "Sta1",
            "Issue A-RELEASE confirmation primitive, and close transport connection",
            ("indicate A-RELEASE-RP", "close"),
            indicates="A-RELEASE-RP",
            transport="close",
        ),
        _spec(
            "AR-4",
            "Sta13",
            "Issue A-RELEASE-RP PDU and start ARTIM timer",
            ("send A-RELEASE-RP", "start"),
            sends="A-RELEASE-RP",
            artim="start",
        ),
        _spec("AR-5", "Sta1", "Stop ARTIM timer", ("stop",), artim="stop", transport="gone"),
        _spec(
            "AR-6",
            "Sta7",
            "Issue P-DATA indication",
            ("indicate P-DATA-TF",),
            indicates="P-DATA-TF",
        ),
        _spec("AR-7", "Sta8", "Issue P-DATA-TF PDU", ("send P-DATA-TF",), sends="P-DATA-TF"),
        _spec(
            "AR-8",
            "Sta9|Sta10",
            "Issue A-RELEASE indication (release collision): if "
            "association-requestor, next Sta9, if not, next Sta10",
            ("indicate A-RELEASE-RQ",),
            indicates="A-RELEASE-RQ",
        ),
        _spec(
            "AR-9", "Sta11", "Send A-RELEASE-RP PDU", ("send A-RELEASE-RP",), sends="A-RELEASE-RP"
        ),
        _spec(
            "AR-10",
            "Sta12",
            "Issue A-RELEASE confirmation primitive",
            ("indicate A-RELEASE-RP",),
            indicates="A-RELEASE-RP",
        ),
        # PS3.8 Table 9-9, association abort.
        _spec(
            "AA-1",
            "Sta13",
            "Send A-ABORT PDU (service-user source) and start (or restart "
            "if already started) ARTIM timer",
            ("send A-ABORT", "start"),
            sends=_ABORT,
            send_source=(0,),
            artim="start",
        ),
        _spec(
            "AA-2",
            "Sta1",
            "Stop ARTIM timer if running. Close transport connection",
            ("stop?", "close"),
            artim="stop",
            transport="close",
        ),
        _spec(
            "AA-3",
            "Sta1",
            "If (service-user initiated abort): issue A-ABORT indication and "
            "close transport connection; otherwise (service-provider initiated abort): issue "
            "A-P-ABORT indication and close transport connection",
            ("indicate A-ABORT", "close"),
            indicates=_ABORT,
            transport="close",
        ),
        _spec(
            "AA-4",
            "Sta1",
            "Issue A-P-ABORT indication primitive",
            ("indicate A-ABORT",),
            indicates="A-P-ABORT",
            transport="gone",
        ),
        _spec("AA-5", "Sta1", "Stop ARTIM timer", ("stop",), artim="stop", transport="gone"),
        _spec("AA-6", "Sta13", "Ignore PDU", ()),
        _spec(
            "AA-7",
            "Sta13",
            "Send A-ABORT PDU",
            ("send A-ABORT",),
            sends=_ABORT,
            send_source=_ANY_SOURCE,
            send_reason=PROVIDER_REASONS,
        ),
        _spec(
            "AA-8",
            "Sta13",
            "Send A-ABORT PDU (service-provider source), issue an "
            "A-P-ABORT indication, and start ARTIM timer",
            ("send A-ABORT", "indicate A-ABORT", "start"),
            sends=_ABORT,
            send_source=(2,),
            send_reason=PROVIDER_REASONS,
            indicates="A-P-ABORT",
            artim="start",
        ),
    )
}

# PS3.8 Table 9-6, AE-6 "otherwise" branch: A-ASSOCIATE-RJ from the service-provider (source 2
# ACSE related or 3 presentation related, Table 9-21), ARTIM stopped then started; Sta13.
AE6_REJECT = ActionSpec(
    "AE-6",
    ("Sta13",),
    sends="A-ASSOCIATE-RJ",
    send_source=(2, 3),
    artim="start",
    effects=("stop", "send A-ASSOCIATE-RJ", "start"),
    text=ACTIONS["AE-6"].text,
)


@dataclass(frozen=True)
class CellSpec:
    """One cell of Table 9-10: the action (None when blank) and its possible next states."""

    state: str
    event: str
    action: str | None

    @property
    def blank(self) -> bool:
        """True for one of the standard's 124 blank cells."""
        return self.action is None

    @property
    def next_states(self) -> tuple[str, ...]:
        """The next state(s) the action leads to (two for AE-6 and AR-8), () when blank."""
        return () if self.action is None else ACTIONS[self.action].next_states

    @property
    def spec(self) -> ActionSpec | None:
        """What the action does, None when blank."""
        return None if self.action is None else ACTIONS[self.action]

    @property
    def name(self) -> str:
        """The cell's name: "Sta6-Evt10"."""
        return f"{self.state}-{self.event}"


def _parse(grid: str) -> dict[tuple[str, str], str | None]:
    """Read GRID into {(state, event): action or None}, checking its shape."""
    lines = [line.split() for line in grid.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    if tuple(header) != STATES or tuple(r[0] for r in rows) != EVENTS:
        raise ValueError("Table 9-10 grid: bad header or row labels")
    table: dict[tuple[str, str], str | None] = {}
    for row in rows:
        if len(row) != 14:
            raise ValueError(f"Table 9-10 grid: row {row[0]} has {len(row) - 1} cells")
        for state, value in zip(STATES, row[1:], strict=True):
            if value != "." and value not in ACTIONS:
                raise ValueError(f"Table 9-10 grid: unknown action {value} at {row[0]}/{state}")
            table[(state, row[0])] = None if value == "." else value
    return table


_TABLE = _parse(GRID)


def cell(state: str, event: str) -> CellSpec:
    """The cell of Table 9-10 for ``state`` and ``event``."""
    return CellSpec(state, event, _TABLE[(state, event)])


def cells() -> list[CellSpec]:
    """All 247 cells, state-major (Sta1/Evt1, Sta1/Evt2, …)."""
    return [cell(s, e) for s in STATES for e in EVENTS]


# PS3.8 Tables 9-6 … 9-9: the actions that issue a primitive to the local user (spec §5.5).
INDICATING: frozenset[str] = frozenset(a.name for a in ACTIONS.values() if a.indicates)
