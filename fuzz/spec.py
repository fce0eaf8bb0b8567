"""PS3.8 Table 9-10 and the observable effect of each action, transcribed for the fuzz oracles.

The oracle must not be ``netdicom2.fsm`` checked against itself (ARCHITECTURE.md §3). The table
is read from the project's ``state_table.csv`` (``../shared/spec`` beside the repository, or
``$NETDICOM2_STATE_TABLE``) when it is there; otherwise from the harness' own transcription of
PS3.8 Table 9-10, ``conformance/table.py`` (a test checks that both agree).

``EFFECTS`` says what each action makes visible to someone outside the provider: PDUs on the
wire, indications to the local user, closing the transport (PS3.8 Tables 9-6 … 9-9).
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from netdicom2.conformance.table import cells as table_cells

__all__ = [
    "ARTIM_STATES",
    "EFFECTS",
    "PDU_EVENT",
    "Cell",
    "Effects",
    "csv_path",
    "load_table",
    "parse_csv",
    "parse_embedded",
]

STATES = tuple(f"Sta{n}" for n in range(1, 14))
#: PS3.8 §9.2.2: byte 1 of a received PDU selects its event; any other value is Evt19.
PDU_EVENT: dict[int, str] = {
    0x01: "Evt6",
    0x02: "Evt3",
    0x03: "Evt4",
    0x04: "Evt10",
    0x05: "Evt12",
    0x06: "Evt13",
    0x07: "Evt16",
}
#: PS3.8 §9.1.5: ARTIM runs only in Sta2 and Sta13 (started by AE-5, AE-6 reject, AE-8, AR-4,
#: AA-1, AA-8; Evt18 is defined nowhere else).
ARTIM_STATES = frozenset({"Sta2", "Sta13"})

# PS3.8 Table 9-10 itself comes from the harness' one independent transcription,
# conformance/table.py (checked there against state_table.csv); the next state of each action
# is in the standard's action tables (9-6 … 9-9); "|" marks the two actions whose next state
# depends on a decision (AE-6: Sta3|Sta13, AR-8: Sta9|Sta10).

# PS3.8 Tables 9-6 … 9-9: the state each action leads to.
_NEXT = {
    "AE-1": "Sta4",
    "AE-2": "Sta5",
    "AE-3": "Sta6",
    "AE-4": "Sta1",
    "AE-5": "Sta2",
    "AE-6": "Sta3|Sta13",
    "AE-7": "Sta6",
    "AE-8": "Sta13",
    "DT-1": "Sta6",
    "DT-2": "Sta6",
    "AR-1": "Sta7",
    "AR-2": "Sta8",
    "AR-3": "Sta1",
    "AR-4": "Sta13",
    "AR-5": "Sta1",
    "AR-6": "Sta7",
    "AR-7": "Sta8",
    "AR-8": "Sta9|Sta10",
    "AR-9": "Sta11",
    "AR-10": "Sta12",
    "AA-1": "Sta13",
    "AA-2": "Sta1",
    "AA-3": "Sta1",
    "AA-4": "Sta1",
    "AA-5": "Sta1",
    "AA-6": "Sta13",
    "AA-7": "Sta13",
    "AA-8": "Sta13",
}


@dataclass(frozen=True)
class Cell:
    """One defined cell of Table 9-10: the action and the possible next states."""

    action: str
    next_states: tuple[str, ...]


def parse_embedded() -> dict[tuple[str, str], Cell]:
    """The harness' transcription (conformance/table.py) as {(event, state): Cell}."""
    return {
        (spec.event, spec.state): Cell(spec.action, tuple(_NEXT[spec.action].split("|")))
        for spec in table_cells()
        if spec.action is not None
    }


def csv_path() -> Path | None:
    """Where the project's state_table.csv is, if it is there (``../shared/spec``)."""
    override = os.environ.get("NETDICOM2_STATE_TABLE")
    if override:
        return Path(override) if Path(override).is_file() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "spec" / "state_table.csv"
        if candidate.is_file():
            return candidate
    return None


def parse_csv(path: Path) -> dict[tuple[str, str], Cell]:
    """state_table.csv (event, state, action, next_state; "-" = blank) as {(event, state): Cell}."""
    table: dict[tuple[str, str], Cell] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["action"] != "-":
                table[(row["event"], row["state"])] = Cell(
                    row["action"], tuple(row["next_state"].split("|"))
                )
    return table


@functools.cache
def load_table() -> dict[tuple[str, str], Cell]:
    """Table 9-10 from state_table.csv when present, else the embedded transcription."""
    path = csv_path()
    return parse_csv(path) if path is not None else parse_embedded()


@dataclass(frozen=True)
class Effects:
    """What an action shows outside the provider (PS3.8 Tables 9-6 … 9-9).

    ``send``: the PDU kind it puts on the wire ("ABORT-user" = A-ABORT source 0, "ABORT-provider"
    = source 2, "ABORT" = source not prescribed); ``indicate``: the primitive the local user
    gets; ``close``: the provider closes the transport.
    """

    send: str | None = None
    indicate: str | None = None
    close: bool = False


#: PS3.8 Tables 9-6 … 9-9, the visible part of every action that a received PDU, a closed
#: transport or the timer can trigger (the user's own primitives are modelled in ``oracle``).
EFFECTS: dict[str, Effects] = {
    "AE-3": Effects(indicate="A-ASSOCIATE-AC"),  # confirmation (accept)
    "AE-4": Effects(indicate="A-ASSOCIATE-RJ", close=True),  # confirmation (reject), close
    "AE-6": Effects(),  # branch decided by the oracle: indication (Sta3) or RJ (Sta13)
    "DT-2": Effects(indicate="P-DATA"),
    "AR-2": Effects(indicate="A-RELEASE-RQ"),
    "AR-3": Effects(indicate="A-RELEASE-RP", close=True),
    "AR-5": Effects(),
    "AR-6": Effects(indicate="P-DATA"),
    "AR-8": Effects(indicate="A-RELEASE-RQ"),
    "AR-10": Effects(indicate="A-RELEASE-RP"),
    "AA-1": Effects(send="ABORT-user"),  # service-user source (0), ARTIM (re)started
    "AA-2": Effects(close=True),  # no PDU, no indication
    "AA-3": Effects(indicate="A-ABORT", close=True),  # A-ABORT or A-P-ABORT by source
    "AA-4": Effects(indicate="A-P-ABORT"),  # transport already gone
    "AA-5": Effects(),
    "AA-6": Effects(),  # ignore the PDU
    "AA-7": Effects(send="ABORT"),  # source not prescribed by the standard
    "AA-8": Effects(send="ABORT-provider", indicate="A-P-ABORT"),  # source 2, ARTIM started
}
