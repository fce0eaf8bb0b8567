"""The Table 9-10 matrix: every cell's script run against one target, with a verdict.

Verdicts: "pass" (the cell's action did what PS3.8 says), "fail", "na" (this target cannot
produce the state or event; the reason says why) and "blank" (a blank cell of Table 9-10: shown
to stay blank, or impossible by the standard; the reason says which).
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from conformance.local import LocalDriver
from conformance.peer import Address, Connector, Listener
from conformance.provider import ProviderDriver
from conformance.recipes import Params, Skip, association_rq, plan
from conformance.remote import RemoteDriver, Spawner, probe_acceptor, probe_requestor
from conformance.runner import Driver, execute
from conformance.script import Script, render
from conformance.table import ACTIONS, CellSpec, cells
from netdicom2 import __version__

__all__ = ["CellResult", "Report", "Target", "Verdict", "run_cell", "run_matrix"]

Verdict = Literal["pass", "fail", "na", "blank"]
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
    listen_host: str = "0.0.0.0"
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
            "script": self.script,
        }


@dataclass
class Report:
    """The header (target, date, versions, peer identity) and the 247 cell results."""

    header: dict[str, Any]
    results: list[CellResult]

    def counts(self) -> dict[str, int]:
        """How many cells got each verdict."""
        out = {"pass": 0, "fail": 0, "na": 0, "blank": 0}
        for result in self.results:
            out[result.verdict] += 1
        return out

    @property
    def ok(self) -> bool:
        """True when no cell failed."""
        return all(r.verdict != "fail" for r in self.results)

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


def run_cell(target: Target, spec: CellSpec, listener: Listener | None = None) -> CellResult:
    """Plan and run one cell against ``target``."""
    planned = plan(spec, "remote" if target.kind == "remote" else target.kind, target.params)
    result = CellResult(spec.state, spec.event, spec.action, spec.next_states, "na")
    if isinstance(planned, Skip):
        result.verdict, result.reason = planned.verdict, planned.reason
        return result
    start = time.monotonic()
    try:
        run = execute(planned, _driver(target, planned, listener))
    except Exception as exc:
        result.verdict, result.reason = "fail", f"harness error: {exc!r}"
        result.script = render(planned)
        return result
    result.seconds = time.monotonic() - start
    result.observed = run.log
    result.measured = run.measured
    result.script = render(planned)
    if run.ok:
        result.verdict = "blank" if spec.blank else "pass"
        if spec.blank:
            # The step that shows it: the refused primitive, or ARTIM not running (§9.1.5).
            shown = [line for line in run.log if "ExpectRefused" in line or "ExpectArtim" in line]
            result.reason = "shown blank: " + (shown or run.log or [""])[0].split(": ", 1)[-1]
    else:
        result.verdict = "fail"
        result.reason = f"{run.phase} step {run.index}: {run.message}"
        if run.phase == "setup":
            result.reason = f"could not reach {spec.state}: {result.reason}"
    return result


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
    return header


def run_matrix(
    target: Target,
    *,
    only: Iterable[str] | None = None,
    jobs: int = 1,
    progress: Callable[[CellResult], None] | None = None,
) -> Report:
    """Run every cell (or those named in ``only``, "Sta6-Evt10") against ``target``."""
    wanted = set(only) if only is not None else None
    selected = [c for c in cells() if wanted is None or c.name in wanted]
    header = _header(target)
    listener = None
    if target.kind == "remote-requestor":
        listener = Listener(target.listen_host, target.listen_port or 0)
        spawner = Spawner(target.spawn, listener.address[1]) if target.spawn else None
        header["peer"] = probe_requestor(listener, spawner)
    elif target.kind == "remote" and target.address is not None:
        rq = association_rq(target.params)
        header["peer"] = probe_acceptor(target.address, target.connector, rq)
    start = time.monotonic()

    def one(spec: CellSpec) -> CellResult:
        result = run_cell(target, spec, listener)
        if progress is not None:
            progress(result)
        return result

    try:
        if jobs > 1 and target.kind != "remote-requestor":
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(one, selected))
        else:
            results = [one(spec) for spec in selected]
    finally:
        if listener is not None:
            listener.close()
    header["seconds"] = round(time.monotonic() - start, 2)
    return Report(header, results)
