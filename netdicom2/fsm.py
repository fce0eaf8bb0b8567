"""The rules of the DICOM Upper Layer state machine (PS3.8 §9.2), as literal tables.

This module owns the rules. Everything the machine may do is written here once, as data:
the states (Tables 9-1 … 9-5), the events and where they come from (Table 9-10 rows), the
actions (Tables 9-6 … 9-9), the state transition table itself (Table 9-10: ``TRANSITIONS``) and
the state each action leads to (``NEXT_STATE``). ``actions.py`` says what each action does and
``connection.py`` feeds events in; neither decides which action a (state, event) pair runs.

A (state, event) pair missing from ``TRANSITIONS`` is one of the standard's 124 blank cells.
This module imports nothing from the package.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ARTIM_STATES",
    "NETWORK_EVENTS",
    "NEXT_STATE",
    "PDU_TYPE_EVENT",
    "PRIMITIVE_TYPE_EVENT",
    "TIMER_EVENTS",
    "TRANSITIONS",
    "TRANSPORT_EVENTS",
    "USER_EVENTS",
    "Action",
    "Event",
    "State",
]


class State(StrEnum):
    """The 13 states of the DICOM UL protocol machine (PS3.8 §9.2.1, Tables 9-1 … 9-5)."""

    Sta1 = "Sta1"
    Sta2 = "Sta2"
    Sta3 = "Sta3"
    Sta4 = "Sta4"
    Sta5 = "Sta5"
    Sta6 = "Sta6"
    Sta7 = "Sta7"
    Sta8 = "Sta8"
    Sta9 = "Sta9"
    Sta10 = "Sta10"
    Sta11 = "Sta11"
    Sta12 = "Sta12"
    Sta13 = "Sta13"

    @property
    def description(self) -> str:
        """The standard's definition of this state."""
        return _STATE_DESCRIPTIONS[self]


class Event(StrEnum):
    """The 19 events of the DICOM UL protocol machine (PS3.8 §9.2.2, Table 9-10 rows)."""

    Evt1 = "Evt1"
    Evt2 = "Evt2"
    Evt3 = "Evt3"
    Evt4 = "Evt4"
    Evt5 = "Evt5"
    Evt6 = "Evt6"
    Evt7 = "Evt7"
    Evt8 = "Evt8"
    Evt9 = "Evt9"
    Evt10 = "Evt10"
    Evt11 = "Evt11"
    Evt12 = "Evt12"
    Evt13 = "Evt13"
    Evt14 = "Evt14"
    Evt15 = "Evt15"
    Evt16 = "Evt16"
    Evt17 = "Evt17"
    Evt18 = "Evt18"
    Evt19 = "Evt19"

    @property
    def description(self) -> str:
        """The standard's definition of this event."""
        return _EVENT_DESCRIPTIONS[self]


class Action(StrEnum):
    """The 26 actions of the DICOM UL protocol machine (PS3.8 §9.2.2, Tables 9-6 … 9-9)."""

    AE_1 = "AE-1"
    AE_2 = "AE-2"
    AE_3 = "AE-3"
    AE_4 = "AE-4"
    AE_5 = "AE-5"
    AE_6 = "AE-6"
    AE_7 = "AE-7"
    AE_8 = "AE-8"
    DT_1 = "DT-1"
    DT_2 = "DT-2"
    AR_1 = "AR-1"
    AR_2 = "AR-2"
    AR_3 = "AR-3"
    AR_4 = "AR-4"
    AR_5 = "AR-5"
    AR_6 = "AR-6"
    AR_7 = "AR-7"
    AR_8 = "AR-8"
    AR_9 = "AR-9"
    AR_10 = "AR-10"
    AA_1 = "AA-1"
    AA_2 = "AA-2"
    AA_3 = "AA-3"
    AA_4 = "AA-4"
    AA_5 = "AA-5"
    AA_6 = "AA-6"
    AA_7 = "AA-7"
    AA_8 = "AA-8"

    @property
    def description(self) -> str:
        """The standard's definition of this action."""
        return _ACTION_DESCRIPTIONS[self]


S, E, A = State, Event, Action

# PS3.8 §9.2.1, Tables 9-1 … 9-5.
_STATE_DESCRIPTIONS: dict[State, str] = {
    S.Sta1: "Idle",
    S.Sta2: "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)",
    S.Sta3: "Awaiting local A-ASSOCIATE response primitive (from local user)",
    S.Sta4: "Awaiting transport connection opening to complete (from local transport service)",
    S.Sta5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    S.Sta6: "Association established and ready for data transfer",
    S.Sta7: "Awaiting A-RELEASE-RP PDU",
    S.Sta8: "Awaiting local A-RELEASE response primitive (from local user)",
    S.Sta9: "Release collision requestor side; awaiting A-RELEASE response (from local user)",
    S.Sta10: "Release collision acceptor side; awaiting A-RELEASE-RP PDU",
    S.Sta11: "Release collision requestor side; awaiting A-RELEASE-RP PDU",
    S.Sta12: "Release collision acceptor side; awaiting A-RELEASE response primitive "
    "(from local user)",
    S.Sta13: "Awaiting Transport Connection Close Indication (Association no longer exists)",
}

# PS3.8 §9.2.2, Table 9-10 (event column).
_EVENT_DESCRIPTIONS: dict[Event, str] = {
    E.Evt1: "A-ASSOCIATE Request (local user)",
    E.Evt2: "Transport Conn. Confirm (local transport service)",
    E.Evt3: "A-ASSOCIATE-AC PDU (received on transport connection)",
    E.Evt4: "A-ASSOCIATE-RJ PDU (received on transport connection)",
    E.Evt5: "Transport Connection Indication (local transport service)",
    E.Evt6: "A-ASSOCIATE-RQ PDU (received on transport connection)",
    E.Evt7: "A-ASSOCIATE-response primitive (accept)",
    E.Evt8: "A-ASSOCIATE-response primitive (reject)",
    E.Evt9: "P-DATA request primitive",
    E.Evt10: "P-DATA-TF PDU",
    E.Evt11: "A-RELEASE Request primitive",
    E.Evt12: "A-RELEASE-RQ PDU (received on open transport connection)",
    E.Evt13: "A-RELEASE-RP PDU (received on transport connection)",
    E.Evt14: "A-RELEASE Response primitive",
    E.Evt15: "A-ABORT Request primitive",
    E.Evt16: "A-ABORT PDU (received on open transport connection)",
    E.Evt17: "Transport connection closed indication (local transport service)",
    E.Evt18: "ARTIM timer expired (Association reject/release timer)",
    E.Evt19: "Unrecognized or invalid PDU received",
}

# PS3.8 §9.2.2, Tables 9-6 (AE), 9-7 (DT), 9-8 (AR), 9-9 (AA).
_ACTION_DESCRIPTIONS: dict[Action, str] = {
    A.AE_1: "Issue TRANSPORT CONNECT request primitive to local transport service",
    A.AE_2: "Send A-ASSOCIATE-RQ-PDU",
    A.AE_3: "Issue A-ASSOCIATE confirmation (accept) primitive",
    A.AE_4: "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection",
    A.AE_5: "Issue Transport connection response primitive; start ARTIM timer",
    A.AE_6: "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider: issue "
    "A-ASSOCIATE indication primitive (next Sta3); otherwise: issue A-ASSOCIATE-RJ-PDU and "
    "start ARTIM timer (next Sta13)",
    A.AE_7: "Send A-ASSOCIATE-AC PDU",
    A.AE_8: "Send A-ASSOCIATE-RJ PDU and start ARTIM timer",
    A.DT_1: "Send P-DATA-TF PDU",
    A.DT_2: "Send P-DATA indication primitive",
    A.AR_1: "Send A-RELEASE-RQ PDU",
    A.AR_2: "Issue A-RELEASE indication primitive",
    A.AR_3: "Issue A-RELEASE confirmation primitive, and close transport connection",
    A.AR_4: "Issue A-RELEASE-RP PDU and start ARTIM timer",
    A.AR_5: "Stop ARTIM timer",
    A.AR_6: "Issue P-DATA indication",
    A.AR_7: "Issue P-DATA-TF PDU",
    A.AR_8: "Issue A-RELEASE indication (release collision): if association-requestor, next "
    "Sta9; otherwise next Sta10",
    A.AR_9: "Send A-RELEASE-RP PDU",
    A.AR_10: "Issue A-RELEASE confirmation primitive",
    A.AA_1: "Send A-ABORT PDU (service-user source) and start (or restart if already "
    "started) ARTIM timer",
    A.AA_2: "Stop ARTIM timer if running. Close transport connection",
    A.AA_3: "If (service-user initiated abort): issue A-ABORT indication and close transport "
    "connection; otherwise (service-provider initiated abort): issue A-P-ABORT indication "
    "and close transport connection",
    A.AA_4: "Issue A-P-ABORT indication primitive",
    A.AA_5: "Stop ARTIM timer",
    A.AA_6: "Ignore PDU",
    A.AA_7: "Send A-ABORT PDU",
    A.AA_8: "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and "
    "start ARTIM timer",
}

# Where each event comes from (PS3.8 §9.2.2): the local user, the network (a received PDU),
# the local transport service, or the ARTIM timer.
USER_EVENTS: frozenset[Event] = frozenset(
    {E.Evt1, E.Evt7, E.Evt8, E.Evt9, E.Evt11, E.Evt14, E.Evt15}
)
NETWORK_EVENTS: frozenset[Event] = frozenset(
    {E.Evt3, E.Evt4, E.Evt6, E.Evt10, E.Evt12, E.Evt13, E.Evt16, E.Evt19}
)
TRANSPORT_EVENTS: frozenset[Event] = frozenset({E.Evt2, E.Evt5, E.Evt17})
TIMER_EVENTS: frozenset[Event] = frozenset({E.Evt18})

# PS3.8 §9.3.1: byte 1 (PDU-type) of a received PDU selects its event; any other value is Evt19.
PDU_TYPE_EVENT: dict[int, Event] = {
    0x01: E.Evt6,  # A-ASSOCIATE-RQ
    0x02: E.Evt3,  # A-ASSOCIATE-AC
    0x03: E.Evt4,  # A-ASSOCIATE-RJ
    0x04: E.Evt10,  # P-DATA-TF
    0x05: E.Evt12,  # A-RELEASE-RQ
    0x06: E.Evt13,  # A-RELEASE-RP
    0x07: E.Evt16,  # A-ABORT
}

# PS3.8 §9.2.2: the primitive the local user passes (carried as the PDU of that type) selects
# its event. An A-ASSOCIATE-RJ from the user is the response primitive with result reject.
PRIMITIVE_TYPE_EVENT: dict[int, Event] = {
    0x01: E.Evt1,  # A-ASSOCIATE request
    0x02: E.Evt7,  # A-ASSOCIATE response (accept)
    0x03: E.Evt8,  # A-ASSOCIATE response (reject)
    0x04: E.Evt9,  # P-DATA request
    0x05: E.Evt11,  # A-RELEASE request
    0x06: E.Evt14,  # A-RELEASE response
    0x07: E.Evt15,  # A-ABORT request
}

# PS3.8 §9.2, Table 9-10: the 123 defined cells, row by row (event), column by column (state).
TRANSITIONS: dict[tuple[State, Event], Action] = {
    # Evt1 A-ASSOCIATE request (local user)
    (S.Sta1, E.Evt1): A.AE_1,
    # Evt2 Transport connect confirmation
    (S.Sta4, E.Evt2): A.AE_2,
    # Evt3 A-ASSOCIATE-AC PDU received
    (S.Sta2, E.Evt3): A.AA_1,
    (S.Sta3, E.Evt3): A.AA_8,
    (S.Sta5, E.Evt3): A.AE_3,
    (S.Sta6, E.Evt3): A.AA_8,
    (S.Sta7, E.Evt3): A.AA_8,
    (S.Sta8, E.Evt3): A.AA_8,
    (S.Sta9, E.Evt3): A.AA_8,
    (S.Sta10, E.Evt3): A.AA_8,
    (S.Sta11, E.Evt3): A.AA_8,
    (S.Sta12, E.Evt3): A.AA_8,
    (S.Sta13, E.Evt3): A.AA_6,
    # Evt4 A-ASSOCIATE-RJ PDU received
    (S.Sta2, E.Evt4): A.AA_1,
    (S.Sta3, E.Evt4): A.AA_8,
    (S.Sta5, E.Evt4): A.AE_4,
    (S.Sta6, E.Evt4): A.AA_8,
    (S.Sta7, E.Evt4): A.AA_8,
    (S.Sta8, E.Evt4): A.AA_8,
    (S.Sta9, E.Evt4): A.AA_8,
    (S.Sta10, E.Evt4): A.AA_8,
    (S.Sta11, E.Evt4): A.AA_8,
    (S.Sta12, E.Evt4): A.AA_8,
    (S.Sta13, E.Evt4): A.AA_6,
    # Evt5 Transport connection indication
    (S.Sta1, E.Evt5): A.AE_5,
    # Evt6 A-ASSOCIATE-RQ PDU received
    (S.Sta2, E.Evt6): A.AE_6,
    (S.Sta3, E.Evt6): A.AA_8,
    (S.Sta5, E.Evt6): A.AA_8,
    (S.Sta6, E.Evt6): A.AA_8,
    (S.Sta7, E.Evt6): A.AA_8,
    (S.Sta8, E.Evt6): A.AA_8,
    (S.Sta9, E.Evt6): A.AA_8,
    (S.Sta10, E.Evt6): A.AA_8,
    (S.Sta11, E.Evt6): A.AA_8,
    (S.Sta12, E.Evt6): A.AA_8,
    (S.Sta13, E.Evt6): A.AA_7,
    # Evt7 A-ASSOCIATE response primitive (accept)
    (S.Sta3, E.Evt7): A.AE_7,
    # Evt8 A-ASSOCIATE response primitive (reject)
    (S.Sta3, E.Evt8): A.AE_8,
    # Evt9 P-DATA request primitive
    (S.Sta6, E.Evt9): A.DT_1,
    (S.Sta8, E.Evt9): A.AR_7,
    # Evt10 P-DATA-TF PDU received
    (S.Sta2, E.Evt10): A.AA_1,
    (S.Sta3, E.Evt10): A.AA_8,
    (S.Sta5, E.Evt10): A.AA_8,
    (S.Sta6, E.Evt10): A.DT_2,
    (S.Sta7, E.Evt10): A.AR_6,
    (S.Sta8, E.Evt10): A.AA_8,
    (S.Sta9, E.Evt10): A.AA_8,
    (S.Sta10, E.Evt10): A.AA_8,
    (S.Sta11, E.Evt10): A.AA_8,
    (S.Sta12, E.Evt10): A.AA_8,
    (S.Sta13, E.Evt10): A.AA_6,
    # Evt11 A-RELEASE request primitive
    (S.Sta6, E.Evt11): A.AR_1,
    # Evt12 A-RELEASE-RQ PDU received
    (S.Sta2, E.Evt12): A.AA_1,
    (S.Sta3, E.Evt12): A.AA_8,
    (S.Sta5, E.Evt12): A.AA_8,
    (S.Sta6, E.Evt12): A.AR_2,
    (S.Sta7, E.Evt12): A.AR_8,
    (S.Sta8, E.Evt12): A.AA_8,
    (S.Sta9, E.Evt12): A.AA_8,
    (S.Sta10, E.Evt12): A.AA_8,
    (S.Sta11, E.Evt12): A.AA_8,
    (S.Sta12, E.Evt12): A.AA_8,
    (S.Sta13, E.Evt12): A.AA_6,
    # Evt13 A-RELEASE-RP PDU received
    (S.Sta2, E.Evt13): A.AA_1,
    (S.Sta3, E.Evt13): A.AA_8,
    (S.Sta5, E.Evt13): A.AA_8,
    (S.Sta6, E.Evt13): A.AA_8,
    (S.Sta7, E.Evt13): A.AR_3,
    (S.Sta8, E.Evt13): A.AA_8,
    (S.Sta9, E.Evt13): A.AA_8,
    (S.Sta10, E.Evt13): A.AR_10,
    (S.Sta11, E.Evt13): A.AR_3,
    (S.Sta12, E.Evt13): A.AA_8,
    (S.Sta13, E.Evt13): A.AA_6,
    # Evt14 A-RELEASE response primitive
    (S.Sta8, E.Evt14): A.AR_4,
    (S.Sta9, E.Evt14): A.AR_9,
    (S.Sta12, E.Evt14): A.AR_4,
    # Evt15 A-ABORT request primitive
    (S.Sta3, E.Evt15): A.AA_1,
    (S.Sta4, E.Evt15): A.AA_2,
    (S.Sta5, E.Evt15): A.AA_1,
    (S.Sta6, E.Evt15): A.AA_1,
    (S.Sta7, E.Evt15): A.AA_1,
    (S.Sta8, E.Evt15): A.AA_1,
    (S.Sta9, E.Evt15): A.AA_1,
    (S.Sta10, E.Evt15): A.AA_1,
    (S.Sta11, E.Evt15): A.AA_1,
    (S.Sta12, E.Evt15): A.AA_1,
    # Evt16 A-ABORT PDU received
    (S.Sta2, E.Evt16): A.AA_2,
    (S.Sta3, E.Evt16): A.AA_3,
    (S.Sta5, E.Evt16): A.AA_3,
    (S.Sta6, E.Evt16): A.AA_3,
    (S.Sta7, E.Evt16): A.AA_3,
    (S.Sta8, E.Evt16): A.AA_3,
    (S.Sta9, E.Evt16): A.AA_3,
    (S.Sta10, E.Evt16): A.AA_3,
    (S.Sta11, E.Evt16): A.AA_3,
    (S.Sta12, E.Evt16): A.AA_3,
    (S.Sta13, E.Evt16): A.AA_2,
    # Evt17 Transport connection closed indication
    (S.Sta2, E.Evt17): A.AA_5,
    (S.Sta3, E.Evt17): A.AA_4,
    (S.Sta4, E.Evt17): A.AA_4,
    (S.Sta5, E.Evt17): A.AA_4,
    (S.Sta6, E.Evt17): A.AA_4,
    (S.Sta7, E.Evt17): A.AA_4,
    (S.Sta8, E.Evt17): A.AA_4,
    (S.Sta9, E.Evt17): A.AA_4,
    (S.Sta10, E.Evt17): A.AA_4,
    (S.Sta11, E.Evt17): A.AA_4,
    (S.Sta12, E.Evt17): A.AA_4,
    (S.Sta13, E.Evt17): A.AR_5,
    # Evt18 ARTIM timer expired
    (S.Sta2, E.Evt18): A.AA_2,
    (S.Sta13, E.Evt18): A.AA_2,
    # Evt19 Unrecognized or invalid PDU received
    (S.Sta2, E.Evt19): A.AA_1,
    (S.Sta3, E.Evt19): A.AA_8,
    (S.Sta5, E.Evt19): A.AA_8,
    (S.Sta6, E.Evt19): A.AA_8,
    (S.Sta7, E.Evt19): A.AA_8,
    (S.Sta8, E.Evt19): A.AA_8,
    (S.Sta9, E.Evt19): A.AA_8,
    (S.Sta10, E.Evt19): A.AA_8,
    (S.Sta11, E.Evt19): A.AA_8,
    (S.Sta12, E.Evt19): A.AA_8,
    (S.Sta13, E.Evt19): A.AA_7,
}

# PS3.8 §9.2.2, Tables 9-6 … 9-9, "Next state" column: written once per action. Two actions
# branch: AE-6 on whether the service-provider can accept the A-ASSOCIATE-RQ (Sta3 | Sta13) and
# AR-8 on the association role (requestor Sta9 | acceptor Sta10); the first state listed is
# the accepting / requestor branch.
NEXT_STATE: dict[Action, tuple[State, ...]] = {
    A.AE_1: (S.Sta4,),
    A.AE_2: (S.Sta5,),
    A.AE_3: (S.Sta6,),
    A.AE_4: (S.Sta1,),
    A.AE_5: (S.Sta2,),
    A.AE_6: (S.Sta3, S.Sta13),
    A.AE_7: (S.Sta6,),
    A.AE_8: (S.Sta13,),
    A.DT_1: (S.Sta6,),
    A.DT_2: (S.Sta6,),
    A.AR_1: (S.Sta7,),
    A.AR_2: (S.Sta8,),
    A.AR_3: (S.Sta1,),
    A.AR_4: (S.Sta13,),
    A.AR_5: (S.Sta1,),
    A.AR_6: (S.Sta7,),
    A.AR_7: (S.Sta8,),
    A.AR_8: (S.Sta9, S.Sta10),
    A.AR_9: (S.Sta11,),
    A.AR_10: (S.Sta12,),
    A.AA_1: (S.Sta13,),
    A.AA_2: (S.Sta1,),
    A.AA_3: (S.Sta1,),
    A.AA_4: (S.Sta1,),
    A.AA_5: (S.Sta1,),
    A.AA_6: (S.Sta13,),
    A.AA_7: (S.Sta13,),
    A.AA_8: (S.Sta13,),
}

# PS3.8 §9.1.5 and Table 9-10: ARTIM is started by AE-5, AE-6 (reject), AE-8, AR-4, AA-1, AA-8
# and stopped by AE-6, AR-5, AA-2, AA-5, so it runs in exactly these states.
ARTIM_STATES: frozenset[State] = frozenset({S.Sta2, S.Sta13})

del S, E, A
