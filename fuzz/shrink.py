"""Shrinking findings against the live target: delta-debug the PDU sequence, then the bytes.

Each candidate is re-run against the target and kept only when it shows the same root cause
(``fuzz.campaign.signature``), so a shrunk example always reproduces. The steps, cheapest
first: one TCP segment without delays or early close; the PDU list (ddmin: halves, then
single PDUs); each PDU's body (chunks removed, its PDU-length kept consistent, PS3.8 §9.3.1).
Everything stops at ``limit`` (monotonic seconds): ``--shrink-budget``.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from netdicom2.fuzz.strategies import Case, Delivery
from netdicom2.fuzz.targets import Result
from netdicom2.fuzz.wire import OutOfTime

if TYPE_CHECKING:
    from netdicom2.fuzz.campaign import _Campaign

__all__ = ["shrink_case", "shrink_findings"]

Check = Callable[[Case], Result | None]


class _NoTime(Exception):
    """The shrink budget is spent."""


def shrink_findings(run: _Campaign, limit: float) -> None:
    """Shrink every finding (most frequent first) until ``limit``; record what happened."""
    from netdicom2.fuzz.campaign import rerun, signature

    findings = sorted(run.stats.findings.values(), key=lambda f: -f.count)
    for finding in findings:
        if finding.shrunk or finding.example is None:
            continue
        if finding.verdict == "crash":
            finding.shrunk = "not shrunk (the peer is gone)"
            continue
        if time.monotonic() >= limit:
            finding.shrunk = "no time left to shrink"
            continue
        key = finding.signature
        before = len(finding.example.case.stream)

        runs = [0]

        def check(
            case: Case, key: str = key, runs: list[int] = runs, verdict: str = finding.verdict
        ) -> Result | None:
            if time.monotonic() >= limit:
                raise _NoTime
            runs[0] += 1
            result = rerun(run.target, verdict)(case)
            return result if signature(result) == key else None

        try:
            best = shrink_case(finding.example, check)
        except (_NoTime, OutOfTime):
            best = None
            finding.shrunk = "no time left to finish shrinking"
        if best is not None and len(best.case.stream) < before:
            finding.example = best
            finding.smallest = len(best.case.stream)
            finding.detail = best.judgement.detail
            finding.shrunk = f"shrunk {before} -> {finding.smallest} bytes ({runs[0]} runs)"
        elif not finding.shrunk:
            finding.shrunk = f"minimal ({runs[0]} runs)"
        run.save(finding)


def _with(case: Case, pdus: list[tuple[str, bytes]] | None = None, **plan: object) -> Case:
    """A copy of ``case`` with other PDUs and/or delivery fields."""
    delivery = dataclasses.replace(case.delivery, **plan) if plan else case.delivery  # type: ignore[arg-type]
    return dataclasses.replace(case, pdus=case.pdus if pdus is None else pdus, delivery=delivery)


def shrink_case(result: Result, check: Check) -> Result:
    """The smallest variant of ``result.case`` that ``check`` still confirms."""
    best = result
    case = result.case
    # 1. Delivery: one segment, no delays, no early close (when that still reproduces).
    plain = dataclasses.replace(case, delivery=Delivery(delays=[0.0]))
    if plain.delivery != case.delivery:
        got = check(plain)
        if got is not None:
            best = got
    # Then closing at once after delivery (when that still reproduces): every later candidate
    # runs without a quiet wait or ARTIM linger (findings that rest on those keep them).
    if best.case.end != "fin":
        got = check(dataclasses.replace(best.case, end="fin"))
        if got is not None:
            best = got
    # 2. The PDU sequence: drop chunks of PDUs, halves first, then single ones (ddmin).
    pdus = list(best.case.pdus)
    step = max(1, len(pdus) // 2)
    while pdus and step >= 1:
        changed = False
        start = 0
        while start < len(pdus) and len(pdus) > 1:
            trial = pdus[:start] + pdus[start + step :]
            got = check(_with(best.case, trial)) if trial else None
            if got is not None:
                best, pdus, changed = got, trial, True
            else:
                start += step
        if not changed:
            step //= 2
    # 3. The bytes of each PDU: remove chunks of its body, the PDU-length kept consistent.
    for index in range(len(pdus)):
        pdus = list(best.case.pdus)
        label, data = pdus[index]
        consistent = len(data) >= 6 and struct.unpack_from(">I", data, 2)[0] == len(data) - 6
        chunk = max(1, (len(data) - 6) // 2)
        while chunk >= 1 and len(data) > 6:
            changed = False
            off = 6
            while off < len(data):
                body = data[6:off] + data[off + chunk :]
                head = data[:2] + (struct.pack(">I", len(body)) if consistent else data[2:6])
                smaller = head + body
                variant = [*pdus[:index], (label, smaller), *pdus[index + 1 :]]
                got = check(_with(best.case, variant))
                if got is not None:
                    best, data, changed = got, smaller, True
                    pdus = list(best.case.pdus)
                else:
                    off += chunk
            if not changed:
                chunk //= 2
    return best
