"""Table 9-10 in netdicom2.fsm checked cell by cell against the shared oracle state_table.csv."""

from __future__ import annotations

import ast
import csv
from collections import Counter
from pathlib import Path

from netdicom2 import fsm
from netdicom2.fsm import (
    ARTIM_STATES,
    NETWORK_EVENTS,
    NEXT_STATE,
    PDU_TYPE_EVENT,
    PRIMITIVE_TYPE_EVENT,
    TIMER_EVENTS,
    TRANSITIONS,
    TRANSPORT_EVENTS,
    USER_EVENTS,
    Action,
    Event,
    State,
)
from tests.shared import STATE_TABLE, require_shared

# PS3.8 §6 of the shared spec: defined cells per action (123 in total).
EXPECTED_COUNTS = {
    "AE-1": 1, "AE-2": 1, "AE-3": 1, "AE-4": 1, "AE-5": 1, "AE-6": 1, "AE-7": 1, "AE-8": 1,
    "DT-1": 1, "DT-2": 1,
    "AR-1": 1, "AR-2": 1, "AR-3": 2, "AR-4": 2, "AR-5": 1, "AR-6": 1, "AR-7": 1, "AR-8": 1,
    "AR-9": 1, "AR-10": 1,
    "AA-1": 15, "AA-2": 5, "AA-3": 9, "AA-4": 10, "AA-5": 1, "AA-6": 5, "AA-7": 2, "AA-8": 54,
}  # fmt: skip


def _rows() -> list[dict[str, str]]:
    """The oracle's 247 rows (event, state, action, next_state); '-' marks a blank cell."""
    with require_shared(STATE_TABLE).open(newline="") as f:
        return list(csv.DictReader(f))


def test_oracle_has_all_247_cells() -> None:
    rows = _rows()
    assert len(rows) == 19 * 13 == 247
    assert {(r["state"], r["event"]) for r in rows} == {
        (s.value, e.value) for s in State for e in Event
    }


def test_enums_use_the_standards_names_and_describe_themselves() -> None:
    assert [s.value for s in State] == [f"Sta{i}" for i in range(1, 14)]
    assert [e.value for e in Event] == [f"Evt{i}" for i in range(1, 20)]
    assert {a.value for a in Action} == set(EXPECTED_COUNTS)
    assert str(State.Sta6) == "Sta6" and str(Action.AR_10) == "AR-10"
    for member in [*State, *Event, *Action]:
        assert member.description


def test_every_cell_matches_the_oracle() -> None:
    mismatches: list[tuple[dict[str, str], Action | None]] = []
    for row in _rows():
        key = (State(row["state"]), Event(row["event"]))
        got = TRANSITIONS.get(key)
        if row["action"] == "-":
            if got is not None:
                mismatches.append((row, got))
            continue
        nxt = "|".join(s.value for s in NEXT_STATE[got]) if got else None
        if got is None or got.value != row["action"] or nxt != row["next_state"]:
            mismatches.append((row, got))
    assert mismatches == []


def test_123_defined_and_124_blank_cells() -> None:
    rows = _rows()
    assert len(TRANSITIONS) == 123 == sum(r["action"] != "-" for r in rows)
    assert 247 - len(TRANSITIONS) == 124 == sum(r["action"] == "-" for r in rows)


def test_defined_cells_per_action() -> None:
    counts = Counter(a.value for a in TRANSITIONS.values())
    assert counts == EXPECTED_COUNTS
    oracle = Counter(r["action"] for r in _rows() if r["action"] != "-")
    assert counts == oracle


def test_next_state_written_once_per_action_and_only_ae6_ar8_branch() -> None:
    assert set(NEXT_STATE) == set(Action)
    branching = {a for a, states in NEXT_STATE.items() if len(states) > 1}
    assert branching == {Action.AE_6, Action.AR_8}
    assert NEXT_STATE[Action.AE_6] == (State.Sta3, State.Sta13)
    assert NEXT_STATE[Action.AR_8] == (State.Sta9, State.Sta10)


def test_event_origins_partition_the_events() -> None:
    groups = [USER_EVENTS, NETWORK_EVENTS, TRANSPORT_EVENTS, TIMER_EVENTS]
    assert sum(len(g) for g in groups) == 19
    assert frozenset().union(*groups) == frozenset(Event)


def test_pdu_type_maps_to_received_and_primitive_events() -> None:
    assert set(PDU_TYPE_EVENT) == set(PRIMITIVE_TYPE_EVENT) == set(range(1, 8))
    assert set(PDU_TYPE_EVENT.values()) == NETWORK_EVENTS - {Event.Evt19}
    assert set(PRIMITIVE_TYPE_EVENT.values()) == USER_EVENTS


def test_network_events_and_close_are_defined_wherever_the_transport_is_open() -> None:
    # PS3.8 §9.2: no blank cell is reachable from the wire. The transport is open in every
    # state except Sta1 (idle) and Sta4 (connect still pending).
    open_states = set(State) - {State.Sta1, State.Sta4}
    for state in open_states:
        for event in [*NETWORK_EVENTS, Event.Evt17]:
            assert (state, event) in TRANSITIONS, (state, event)


def test_artim_only_expires_where_it_runs() -> None:
    # PS3.8 §9.1.5: Evt18 is defined exactly in the states where ARTIM runs.
    assert {s for (s, e) in TRANSITIONS if e is Event.Evt18} == set(ARTIM_STATES)


def test_fsm_imports_nothing_from_the_package() -> None:
    tree = ast.parse(Path(fsm.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add(node.module or "")
    assert imported <= {"__future__", "enum"}
