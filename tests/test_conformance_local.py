"""Target ``local``: every Table 9-10 cell against the sans-I/O core on a fake clock.

Each test is one cell: defined cells must do their action (PS3.8 Tables 9-6 … 9-9), blank
cells must be refused without any change. A failure prints the reproducing script.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netdicom2 import actions
from netdicom2.conformance.matrix import Target, run_cell
from netdicom2.conformance.table import CellSpec, cell, cells
from netdicom2.fsm import Action, State
from netdicom2.pdu import AAbortPDU

CELLS = cells()
IDS = [f"{c.name}-{c.action or 'blank'}" for c in CELLS]
LOCAL = Target("local", "local")


def check(target: Target, spec: CellSpec) -> None:
    """Run one cell; fail with the reason, the log and the reproducing script."""
    result = run_cell(target, spec)
    wanted = "blank" if spec.blank else "pass"
    assert result.verdict == wanted, "\n".join(
        [result.reason, *result.observed, "", result.script or ""]
    )


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_cell(spec: CellSpec) -> None:
    check(LOCAL, spec)


Outcome = actions.Outcome
Ctx = actions.ActionContext


def _send(pdu: AAbortPDU) -> actions.SendPDU:
    """The effect that writes ``pdu``."""
    return actions.SendPDU(pdu, pdu.encode())


def _mutant(name: str) -> Callable[[Ctx], Outcome]:
    """A wrong action, to show the harness notices (mutation testing of the oracle)."""
    if name == "AA-7 sends a reserved source":
        return lambda ctx: Outcome((_send(AAbortPDU(1, 2)),), State.Sta13)
    if name == "AA-1 does not restart ARTIM":
        return lambda ctx: Outcome((_send(AAbortPDU(0, 0)),), State.Sta13)
    if name == "AA-4 forgets the A-P-ABORT":
        return lambda ctx: Outcome((), State.Sta1)
    return lambda ctx: Outcome((actions.Indicate(ctx.pdu),), State.Sta10)  # type: ignore[arg-type]


MUTANTS = {
    "AA-7 sends a reserved source": (Action.AA_7, ("Sta13", "Evt6")),
    "AA-1 does not restart ARTIM": (Action.AA_1, ("Sta2", "Evt3")),
    "AA-4 forgets the A-P-ABORT": (Action.AA_4, ("Sta6", "Evt17")),
    "AR-8 ignores the association role": (Action.AR_8, ("Sta9", "Evt14")),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_wrong_action_fails_its_cell(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    action, (state, event) = MUTANTS[name]
    monkeypatch.setitem(actions.ACTIONS, action, _mutant(name))
    result = run_cell(LOCAL, cell(state, event))
    assert result.verdict == "fail", result.observed
