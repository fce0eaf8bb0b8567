"""The harness' transcription of PS3.8 Table 9-10 equals the shared CSV, cell by cell."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from netdicom2.conformance.table import ACTIONS, EVENTS, GRID, STATES, _parse, cell, cells
from tests.shared import STATE_TABLE, require_shared


def _shared_rows() -> list[dict[str, str]]:
    """The shared CSV's 247 rows; skips when ../shared is absent."""
    with require_shared(STATE_TABLE).open(newline="") as f:
        return list(csv.DictReader(f))


def test_transcription_equals_the_shared_state_table() -> None:
    rows = _shared_rows()
    assert len(rows) == 247
    for row in rows:
        spec = cell(row["state"], row["event"])
        assert (spec.action or "-") == row["action"], row
        assert ("|".join(spec.next_states) or "-") == row["next_state"], row


def test_table_has_the_standards_123_defined_and_124_blank_cells() -> None:
    # PS3.8 §9.2 Table 9-10, counted per action (spec notes §6).
    assert len(cells()) == 13 * 19
    counts = Counter(c.action for c in cells())
    assert counts.pop(None) == 124
    assert sum(counts.values()) == 123
    expected = {
        "AR-3": 2,
        "AR-4": 2,
        "AA-1": 15,
        "AA-2": 5,
        "AA-3": 9,
        "AA-4": 10,
        "AA-5": 1,
        "AA-6": 5,
        "AA-7": 2,
        "AA-8": 54,
    }
    for action in ACTIONS:
        assert counts[action] == expected.get(action, 1), action


def test_artim_runs_only_in_sta2_and_sta13() -> None:
    # PS3.8 §9.1.5: the actions that start ARTIM all lead to Sta2 or Sta13.
    for spec in ACTIONS.values():
        if spec.artim == "start":
            assert set(spec.next_states) <= {"Sta2", "Sta13"}, spec.name


def test_action_effects_agree_with_their_fields() -> None:
    for spec in ACTIONS.values():
        sends = [t.removeprefix("send ") for t in spec.effects if t.startswith("send ")]
        assert sends == ([spec.sends] if spec.sends else []), spec.name
        indications = [t for t in spec.effects if t.startswith("indicate ")]
        assert bool(indications) == (spec.indicates is not None), spec.name
        assert ("close" in spec.effects) == (spec.transport == "close"), spec.name


def test_grid_parser_rejects_a_bad_grid() -> None:
    lines = GRID.strip().splitlines()
    with pytest.raises(ValueError, match="unknown action"):
        _parse("\n".join([*lines[:-1], lines[-1].replace("AA-7", "AA-9")]))
    with pytest.raises(ValueError, match="cells"):
        _parse("\n".join([*lines[:-1], lines[-1] + " AA-1"]))
    assert tuple(STATES) == tuple(lines[0].split()) and len(EVENTS) == 19
