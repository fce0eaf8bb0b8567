"""The Table 9-10 matrix: every cell's script run against one target, with a verdict.

Verdicts: "pass" (the event was delivered in the intended state and everything the cell's
action prescribes was observed), "fail" (delivered, and the reaction differs: the reason says
what was expected and what was seen), "inconclusive" (the state could not be reached, by any of
the recipes tried, or the event not delivered: the reason names the failed step, what the peer
did and, when another cell's failure explains it, that cell), "na" (this target cannot produce
the state or event) and "blank" (a blank cell of Table 9-10: shown to stay blank, or impossible
by the standard). A rejected-transient A-ASSOCIATE-RJ is retried with a bounded backoff; a
"local limit exceeded" one also lowers the number of cells run at once against that peer.
"""

from __future__ import annotations

import datetime
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from netdicom2 import __version__
from netdicom2.conformance.checks import rj_text
from netdicom2.conformance.local import LocalDriver
from netdicom2.conformance.peer import Address, Connector, Listener
from netdicom2.conformance.provider import ProviderDriver
from netdicom2.conformance.recipes import Params, Skip, association_rq, plans
from netdicom2.conformance.remote import (
    RemoteDriver,
    Spawner,
    probe_acceptor,
    probe_requestor,
)
from netdicom2.conformance.runner import Driver, Run, execute
from netdicom2.conformance.script import Script, render
from netdicom2.conformance.table import ACTIONS, CellSpec, cells

__all__ = ["CellResult", "Report", "Target", "Verdict", "run_cell", "run_matrix"]

Verdict = Literal["pass", "fail", "inconclusive", "na", "blank"]
VERDICT_NAMES: tuple[Verdict, ...] = ("pass", "fail", "inconclusive", "na", "blank")
# A rejected-transient A-ASSOCIATE-RJ (PS3.8 Table 9-21, result 2) is retried after these
# pauses (seconds, bounded), then the cell is inconclusive.
BACKOFF: tuple[float, ...] = (0.5, 1.0, 2.0)
Kind = Literal["local", "provider", "remote", "remote-requestor"]


@dataclass
class Target:
    """What to test: our core, our provider, or a peer at an address / connecting to us."""

    name: str
    kind: Kind
    params: Params = field(default_factory=Params)
    address: Address | None = None
    connector: Connector | None = None
    listen_port: int | None = None
    listen_host: str = "127.0.0.1"
    spawn: tuple[str, ...] | None = None


@dataclass
class CellResult:
    """One cell's outcome, with what was expected and what was observed."""

    state: str
    event: str
    action: str | None
    next_states: tuple[str, ...]
    verdict: Verdict
    reason: str = ""
    observed: list[str] = field(default_factory=list)
    script: str | None = None
    seconds: float = 0.0
    measured: dict[str, float] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)  # recipes tried to reach the state
    explained_by: str | None = None  # a cell whose failure explains this one's inconclusive
    retries: int = 0  # attempts repeated after a rejected-transient A-ASSOCIATE-RJ
    step: str = ""  # the step where the cell stopped, described (inconclusive and fail)
    step_case: str = ""  # the case (shape of the event) this result is about

    @property
    def cell(self) -> str:
        """ "Sta6-Evt10"."""
        return f"{self.state}-{self.event}"

    @property
    def test_id(self) -> str:
        """ "Sta6-Evt10-DT-2", or "Sta1-Evt2-blank" for a blank cell."""
        return f"{self.cell}-{self.action or 'blank'}"

    def to_json(self) -> dict[str, Any]:
        """One JSON record: the cell, the oracle's expectation, the observation, the verdict."""
        spec = ACTIONS.get(self.action or "")
        expected: dict[str, Any] = {"action": self.action, "next_state": list(self.next_states)}
        if spec is not None:
            expected.update(
                sends=spec.sends,
                send_source=list(spec.send_source) if spec.send_source else None,
                send_reason=list(spec.send_reason) if spec.send_reason else None,
                indicates=spec.indicates,
                artim=spec.artim,
                transport=spec.transport,
                effects=list(spec.effects),
            )
        return {
            "id": self.test_id,
            "state": self.state,
            "event": self.event,
            "expected": expected,
            "verdict": self.verdict,
            "reason": self.reason,
            "observed": self.observed,
            "measured": self.measured,
            "seconds": round(self.seconds, 3),
            "case": self.step_case,
            "recipes_tried": self.tried,
            "explained_by": self.explained_by,
            "retries": self.retries,
            "script": self.script,
        }


@dataclass
class Report:
    """The header (target, date, versions, peer identity) and the 247 cell results."""

    header: dict[str, Any]
    results: list[CellResult]

    def counts(self) -> dict[str, int]:
        """How many cells got each verdict."""
        out: dict[str, int] = dict.fromkeys(VERDICT_NAMES, 0)
        for result in self.results:
            out[result.verdict] += 1
        return out

    @property
    def ok(self) -> bool:
        """True when no cell failed."""
        return all(r.verdict != "fail" for r in self.results)

    @property
    def strict_ok(self) -> bool:
        """True when no cell failed and none was inconclusive (``--strict``)."""
        return all(r.verdict not in ("fail", "inconclusive") for r in self.results)

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-ready data."""
        return {
            "header": {**self.header, "counts": self.counts()},
            "cells": [r.to_json() for r in self.results],
        }


def _driver(target: Target, script: Script, listener: Listener | None) -> Driver:
    """The driver for the target's kind."""
    if target.kind == "local":
        return LocalDriver(script)
    if target.kind == "provider":
        return ProviderDriver(script)
    spawner = None
    if target.spawn and listener is not None:
        spawner = Spawner(target.spawn, listener.address[1])
    return RemoteDriver(
        script,
        address=target.address,
        connector=target.connector,
        listener=listener,
        spawner=spawner,
    )


class Gate:
    """How many cells may run at once against the target; lowered when it says "too many"."""

    def __init__(self, jobs: int) -> None:
        """Up to ``jobs`` at once."""
        self.asked = self.limit = max(1, jobs)
        self.active = 0
        self.note = ""
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while a cell runs."""
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait()
            self.active += 1
        try:
            yield
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify_all()

    def lower(self, why: str) -> None:
        """PS3.8 Table 9-21 source 3 reason 2 (local limit exceeded): one cell fewer at once."""
        with self._cond:
            new = max(1, min(self.limit, self.active) - 1)
            if new < self.limit:
                self.limit = new
                self.note = f"lowered from {self.asked} to {new} at once: the peer answered {why}"


def _attempt(target: Target, script: Script, listener: Listener | None, gate: Gate) -> Run:
    """One script, repeated after rejected-transient answers (bounded backoff)."""
    retries = 0
    while True:
        with gate.slot():
            run = execute(script, _driver(target, script, listener))
        if run.transient is None or run.ok:
            run.measured["retries"] = retries
            return run
        if run.transient[1:] == (3, 2):  # local-limit-exceeded: fewer cells at once
            gate.lower(f"A-ASSOCIATE-RJ ({rj_text(*run.transient)})")
        if retries >= len(BACKOFF):
            run.measured["retries"] = retries
            return run
        threading.Event().wait(BACKOFF[retries])  # a pause between attempts, not a sync
        retries += 1


def run_cell(
    target: Target, spec: CellSpec, listener: Listener | None = None, gate: Gate | None = None
) -> CellResult:
    """Plan and run one cell: each case, each by the first recipe that reaches the state.

    The cell fails when a case fails; it is inconclusive when its main case is; a further
    case that is inconclusive is named in the reason of a passing cell.
    """
    planned = plans(spec, "remote" if target.kind == "remote" else target.kind, target.params)
    result = CellResult(spec.state, spec.event, spec.action, spec.next_states, "na")
    if isinstance(planned, Skip):
        result.verdict, result.reason = planned.verdict, planned.reason
        return result
    gate = gate or Gate(1)
    start = time.monotonic()
    cases: dict[str, list[Script]] = {}
    for script in planned:
        cases.setdefault(script.case, []).append(script)
    outcomes: list[CellResult] = []
    for scripts in cases.values():
        outcome = _run_case(target, spec, scripts, listener, gate)
        outcomes.append(outcome)
        if outcome.verdict == "fail" or (outcome.verdict == "inconclusive" and not outcomes[1:]):
            break  # the main case decides whether the others can be delivered at all
    chosen = next((o for o in outcomes if o.verdict == "fail"), outcomes[0])
    result.__dict__.update({k: v for k, v in chosen.__dict__.items() if k != "seconds"})
    result.seconds = time.monotonic() - start
    if len(cases) > 1:
        names = [o.step_case for o in outcomes]
        if chosen.verdict == "fail" and chosen.step_case not in ("", "main"):
            result.reason = f"case '{chosen.step_case}': {result.reason}"
        passed = [n for n, o in zip(names, outcomes, strict=True) if o.verdict == "pass"]
        undecided = [
            f"'{n}' inconclusive ({o.reason})"
            for n, o in zip(names, outcomes, strict=True)
            if o.verdict == "inconclusive" and o is not outcomes[0]
        ]
        if result.verdict == "pass":
            extra = f"{len(passed)} cases passed"
            result.reason = "; ".join(x for x in (result.reason, extra, *undecided) if x)
    return result


def _run_case(
    target: Target,
    spec: CellSpec,
    scripts: list[Script],
    listener: Listener | None,
    gate: Gate,
) -> CellResult:
    """One case of a cell: try its recipes in order until one reaches the state."""
    result = CellResult(spec.state, spec.event, spec.action, spec.next_states, "inconclusive")
    result.step_case = scripts[0].case
    unreached: list[str] = []
    run: Run | None = None
    script = scripts[0]
    for script in scripts:
        result.tried.append(script.recipe or "default")
        try:
            run = _attempt(target, script, listener, gate)
        except Exception as exc:  # our own IUT failed (white box), or a harness bug (remote)
            result.verdict = "fail" if target.kind in ("local", "provider") else "inconclusive"
            result.reason = f"harness error: {exc!r}"
            result.script = render(script)
            return result
        if run.ok or run.phase != "setup" or run.transient is not None:
            break
        explains = script.reaches[run.index] if run.index is not None and script.reaches else ""
        if explains and result.explained_by is None:
            result.explained_by = explains
        unreached.append(f"{script.recipe or 'default'}: {_where(run)}")
    assert run is not None
    result.observed = run.log
    result.measured = {k: v for k, v in run.measured.items() if k != "retries"}
    result.retries = int(run.measured.get("retries", 0))
    result.script = render(script)
    _judge(result, spec, run, unreached, white=target.kind in ("local", "provider"))
    return result


def _where(run: Run) -> str:
    """ "step 3 Expect(...): what happened; afterwards: …"."""
    text = f"step {run.index} ({run.step_text}): {run.message}"
    after = [line.split("afterwards: ", 1)[1] for line in run.log if "afterwards: " in line]
    return text + (f"; then the peer: {after[-1]}" if after else "")


def _judge(
    result: CellResult, spec: CellSpec, run: Run, unreached: list[str], *, white: bool
) -> None:
    """The verdict of one run (see the module docstring)."""
    result.step = run.step_text
    if run.ok:
        result.verdict = "blank" if spec.blank else "pass"
        if spec.blank:
            # The step that shows it: the refused primitive, or ARTIM not running (§9.1.5).
            shown = [line for line in run.log if "ExpectRefused" in line or "ExpectArtim" in line]
            result.reason = "shown blank: " + (shown or run.log or [""])[0].split(": ", 1)[-1]
        else:
            notes = [line.split(": ", 1)[-1] for line in run.log if "not held" in line]
            if notes:
                result.reason = "; ".join(notes)
        return
    if run.na:  # the peer never produced the event (its own timer did not run out)
        result.verdict, result.reason = "na", run.message
        return
    if run.transient is not None:
        result.verdict = "inconclusive"
        result.reason = (
            f"the peer rejected the association as transient ({rj_text(*run.transient)}) "
            f"{result.retries + 1} times, retried after {', '.join(map(str, BACKOFF))} s"
        )
        return
    if run.phase == "setup" and not white:
        result.verdict = "inconclusive"
        tried = "; ".join(unreached) if len(unreached) > 1 else _where(run)
        result.reason = f"could not reach {spec.state} (tried {tried})"
        return
    if not run.delivered and run.phase != "setup":
        result.verdict = "inconclusive"
        what = "not delivered in" if run.phase == "inject" else "not judged in"
        result.reason = f"{spec.event} {what} {spec.state}: {_where(run)}"
        return
    result.verdict = "fail"
    result.reason = f"{run.phase} step {run.index}: {run.message}"
    if run.phase == "setup":
        # White box: every setup step is itself checked against Table 9-10 (the transition,
        # the state), so a setup that goes wrong is a deviation of the IUT, seen here.
        result.reason = f"could not reach {spec.state}: {result.reason}"


def explain(results: list[CellResult]) -> None:
    """An inconclusive cell names the failed cell whose transition its recipe relied on."""
    by_name = {r.cell: r for r in results}
    for r in results:
        other = by_name.get(r.explained_by or "")
        if r.verdict != "inconclusive" or other is None or other.verdict != "fail":
            r.explained_by = None
            continue
        r.reason += f"; explained by {other.cell} (fail)"


def _header(target: Target) -> dict[str, Any]:
    """Target, date, versions; for a remote peer, who it says it is."""
    header: dict[str, Any] = {
        "target": target.name,
        "kind": target.kind,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "netdicom2_version": __version__,
        "python": platform.python_version(),
        "standard": "DICOM PS3.8 §9.2, Table 9-10",
    }
    if target.kind in ("local", "provider"):
        header["artim"] = {
            "short (Evt18 cells)": target.params.short_artim,
            "long (other cells)": target.params.long_artim,
        }
    else:
        header["artim"] = target.params.artim
        header["sta13_timer"] = target.params.sta13
        header["max_wait"] = target.params.ceiling(target.params.sta13)
    return header


def run_matrix(
    target: Target,
    *,
    only: Iterable[str] | None = None,
    jobs: int = 1,
    progress: Callable[[CellResult], None] | None = None,
    on_interrupt: Callable[[Report], None] | None = None,
) -> Report:
    """Run every cell (or those named in ``only``, "Sta6-Evt10") against ``target``.

    On KeyboardInterrupt (Ctrl-C, SIGTERM via the CLI) ``on_interrupt`` gets the report of the
    cells finished so far, marked partial, and the interrupt propagates.
    """
    wanted = set(only) if only is not None else None
    selected = [c for c in cells() if wanted is None or c.name in wanted]
    gate = Gate(jobs if target.kind != "remote-requestor" else 1)
    header = _header(target)
    listener = None
    done: dict[str, CellResult] = {}
    start = time.monotonic()

    def finish(partial: bool) -> Report:
        results = [done[c.name] for c in selected if c.name in done]
        explain(results)
        header["seconds"] = round(time.monotonic() - start, 2)
        header["jobs"] = {"asked": gate.asked, "at most": gate.limit}
        if gate.note:
            header["jobs"]["note"] = gate.note
        if partial:
            header["partial"] = f"interrupted: {len(results)} of {len(selected)} cells run"
        return Report(header, results)

    def one(spec: CellSpec) -> CellResult:
        result = run_cell(target, spec, listener, gate)
        done[spec.name] = result
        if progress is not None:
            progress(result)
        return result

    pool = ThreadPoolExecutor(max_workers=gate.asked) if gate.asked > 1 else None
    try:
        if target.kind == "remote-requestor":
            listener = Listener(target.listen_host, target.listen_port or 0)
            spawner = Spawner(target.spawn, listener.address[1]) if target.spawn else None
            header["peer"] = probe_requestor(listener, spawner)
        elif target.kind == "remote" and target.address is not None:
            rq = association_rq(target.params)
            header["peer"] = probe_acceptor(target.address, target.connector, rq)
        start = time.monotonic()
        if pool is not None:
            for future in [pool.submit(one, spec) for spec in selected]:
                future.result()
        else:
            for spec in selected:
                one(spec)
    except KeyboardInterrupt:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if on_interrupt is not None:
            on_interrupt(finish(partial=True))
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if listener is not None:
            listener.close()
    return finish(partial=False)
