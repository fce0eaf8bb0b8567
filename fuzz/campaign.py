"""Fuzzing campaigns: Hypothesis drives cases at a target; results become statistics and a corpus.

A campaign runs in chunks (one Hypothesis run each) until its example count or time budget is
spent; the budget is a hard deadline (``fuzz.wire.OutOfTime`` unwinds a case in progress). A
finding's identity is its root cause (``signature``: verdict, the state where the run left
Table 9-10, the event class of the input there, the peer's reaction), so repeats are one
finding with a count and its smallest example. A new signature raises inside the test, so
Hypothesis shrinks it (white-box targets) and stores it in its example database; on a remote
peer a new finding is re-run once and kept only when it reproduces. ``fuzz.shrink`` then
minimises each finding against the live target within ``shrink_budget``. Every finding is
written to the corpus as JSON with a one-line reproduction command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import resource
import time
import unittest
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable

from netdicom2.fuzz.check import FAILURES, HARD_FAILURES, INTERP
from netdicom2.fuzz.properties import check_codec, check_framing
from netdicom2.fuzz.strategies import Case, cases, mutated_batch
from netdicom2.fuzz.targets import Result, Target
from netdicom2.fuzz.wire import OutOfTime

if TYPE_CHECKING:
    from netdicom2.fuzz.pool import Pool

__all__ = ["FuzzFinding", "Stats", "replay", "run_campaign", "signature"]

Progress = Callable[["Stats"], None]


class FuzzFinding(AssertionError):
    """A result with a new failure signature (raised so Hypothesis shrinks and stores it)."""


@dataclass
class Finding:
    """One distinct failure signature: how often, an example, how to reproduce it."""

    signature: str
    verdict: str
    detail: str
    count: int = 0
    first_example: int = 0  # the campaign's example number where it first showed
    path: str = ""
    repro: str = ""
    smallest: int = 0  # bytes of the smallest example's stream
    shrunk: str = ""  # "", "shrunk N → M bytes", "did not reproduce", "no time"
    example: Result | None = field(default=None, repr=False)  # the smallest example

    def report(self) -> dict[str, Any]:
        """JSON-ready, without the example object."""
        return {k: v for k, v in vars(self).items() if k != "example"}


#: Setup failures by kind (fuzz.wire.run_setup): an RJ (e.g. local limit exceeded), nothing
#: at all, the peer closed, a refused connection, anything else.
SETUP_KINDS = ("rejected", "unresponsive", "closed", "refused", "other")


def setup_kind(detail: str) -> str:
    """The kind of a setup failure from its detail ("rejected: expect:AC: got ['RJ(2,3,2)']")."""
    head = detail.split(":", 1)[0]
    return head if head in SETUP_KINDS else "other"


@dataclass
class Stats:
    """What a campaign saw."""

    target: str
    started: float = field(default_factory=time.monotonic)
    examples: int = 0
    codec_inputs: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # label kind → outcomes
    cells: set[tuple[str, str, str]] = field(default_factory=set)
    findings: dict[str, Finding] = field(default_factory=dict)
    artim_errors: list[float] = field(default_factory=list)
    budget: float | None = None
    max_examples: int | None = None
    rss_kb: list[int] = field(default_factory=list)
    setup_failed: Counter[str] = field(default_factory=Counter)  # by SETUP_KINDS
    interpretations: Counter[str] = field(default_factory=Counter)  # deviation-interp keys
    unconfirmed: int = 0  # findings that did not reproduce when re-run (dropped)
    raw_findings: int = 0  # failing cases before grouping by root cause
    scenario_keys: set[str] = field(default_factory=set)  # the former key: with the scenario
    stopped: str = ""  # why the campaign ended early (peer crashed, stopped answering)
    interrupted: BaseException | None = None  # Ctrl-C / SIGTERM: the summary is partial
    peer: dict[str, str] = field(default_factory=dict)  # what the peer said it is
    backoffs: int = 0  # --jobs: times the window halved on "local limit exceeded"

    @property
    def elapsed(self) -> float:
        """Seconds since the campaign started."""
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Examples per second."""
        return self.examples / self.elapsed if self.elapsed > 0 else 0.0

    def time_left(self) -> float | None:
        """Seconds of budget left, None without a budget."""
        return None if self.budget is None else max(0.0, self.budget - self.elapsed)

    def distinct_outcomes(self) -> int:
        """How many distinct outcome classes were seen."""
        return len({o for counter in self.outcomes.values() for o in counter})

    def record(self, result: Result) -> None:
        """Count one executed case."""
        self.examples += 1
        judgement = result.judgement
        self.verdicts[judgement.verdict] += 1
        for label in judgement.labels or ["(empty stream)"]:
            kind = label.split(":")[0] if label.startswith(("mutate", "seed", "valid")) else label
            self.outcomes.setdefault(kind, Counter())[result.outcome] += 1
        self.cells.update(result.cells)
        if judgement.artim_error is not None:
            self.artim_errors.append(judgement.artim_error)
        if judgement.verdict == "setup-failed":
            self.setup_failed[setup_kind(judgement.detail)] += 1
        elif judgement.verdict == INTERP:
            self.interpretations[judgement.key] += 1

    def summary(self) -> dict[str, Any]:
        """The end-of-campaign summary (JSON-ready)."""
        errors = self.artim_errors
        return {
            "target": self.target,
            "examples": self.examples,
            "seconds": round(self.elapsed, 3),
            "examples_per_second": round(self.rate, 1),
            "codec_inputs": self.codec_inputs,
            "codec_inputs_per_second": round(self.codec_inputs / max(self.elapsed, 1e-9), 1),
            "verdicts": dict(self.verdicts),
            "distinct_outcomes": self.distinct_outcomes(),
            "cells_reached": len(self.cells),
            "cells": sorted(f"{s}/{e}->{a}" for e, s, a in self.cells),
            "outcomes_by_malformation": {k: dict(v) for k, v in sorted(self.outcomes.items())},
            "artim": {
                "closes_measured": len(errors),
                "error_min_s": round(min(errors), 4) if errors else None,
                "error_max_s": round(max(errors), 4) if errors else None,
                "error_mean_s": round(sum(errors) / len(errors), 4) if errors else None,
            },
            "max_rss_kb": max(self.rss_kb, default=0),
            "rss_growth_kb": (self.rss_kb[-1] - self.rss_kb[0]) if len(self.rss_kb) > 1 else 0,
            "setup_failed": {kind: self.setup_failed[kind] for kind in SETUP_KINDS},
            "interpretations": dict(self.interpretations),
            "failing_cases": self.raw_findings,
            "distinct_by_scenario": len(self.scenario_keys),
            "unconfirmed_findings": self.unconfirmed,
            "stopped": self.stopped,
            "backoffs": self.backoffs,
            "partial": self.interrupted is not None,
            "peer": dict(self.peer),
            "findings": [f.report() for f in self.findings.values()],
        }


def signature(result: Result) -> str:
    """A finding's root cause: verdict | state, input's event class, reaction (``match`` key).

    The scenario that led there is not part of it: the same reaction to the same class of
    input in the same state is one cause however it was reached.
    """
    judgement = result.judgement
    key = judgement.key or re.sub(r"\d+(\.\d+)?", "N", judgement.detail)[:80]
    return f"{judgement.verdict} | {key}"


def _command(target: str, artim: float | None) -> str:
    """The command line that runs cases against this target."""
    return f"netdicom2 fuzz --target {target}" + ("" if artim is None else f" --artim {artim}")


def _save(corpus: Path, target: str, finding: Finding, command: str) -> Path:
    """Write a finding's smallest example and its verdict to the corpus; return its path."""
    assert finding.example is not None
    result = finding.example
    corpus.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(finding.signature.encode()).hexdigest()[:10]
    slug = target.replace(":", "_").replace("/", "_").replace(" ", "-")
    path = corpus / f"{slug}-{finding.verdict}-{digest}.json"
    record = {
        "target": target,
        "signature": finding.signature,
        "count": finding.count,
        "shrunk": finding.shrunk,
        "verdict": result.judgement.verdict,
        "detail": result.judgement.detail,
        "outcome": result.outcome,
        "target_sent": result.raw,
        "case": result.case.to_json(),
        "repro": f"{command} --replay {path}",
    }
    path.write_text(json.dumps(record, indent=1))
    return path


def _rss_kb() -> int:
    """Peak resident set size of this process, in KiB (Linux ru_maxrss)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class _Campaign:
    """The bookkeeping of one campaign: findings, corpus, the time left."""

    def __init__(
        self,
        target: Target,
        stats: Stats,
        corpus: Path | None,
        deadline: float | None,
        shrink_budget: float,
    ) -> None:
        self.target = target
        self.stats = stats
        self.corpus = corpus
        self.deadline = deadline
        self.shrink_budget = shrink_budget
        self.white_box = target.name in ("local", "provider")
        self.artim: float | None = None if self.white_box else getattr(target, "artim", None)

    def unshrunk(self) -> bool:
        """Findings wait for shrinking, and there is shrinking time left."""
        return self.shrink_budget > 0 and any(not f.shrunk for f in self.stats.findings.values())

    def fuzz_until(self) -> float | None:
        """When fuzzing pauses: the deadline, less the shrinking time findings are waiting for."""
        if self.deadline is None:
            return None
        if self.unshrunk():
            assert self.stats.budget is not None
            return self.deadline - min(self.shrink_budget, self.stats.budget / 4)
        return self.deadline

    def shrink(self) -> None:
        """Shrink the waiting findings against the target, within what is left of the budgets."""
        from netdicom2.fuzz.shrink import shrink_findings

        began = time.monotonic()
        limit = began + self.shrink_budget
        if self.deadline is not None:
            limit = min(limit, self.deadline)
        shrink_findings(self, limit)
        self.shrink_budget = max(0.0, self.shrink_budget - (time.monotonic() - began))

    def found(self, result: Result) -> Finding | None:
        """A failing result: confirm it (remote, new cause), group it, keep its smallest case."""
        stats = self.stats
        stats.raw_findings += 1
        key = signature(result)
        stats.scenario_keys.add(f"{key} | {result.case.scenario}")
        finding = stats.findings.get(key)
        if finding is None and not self.white_box and result.judgement.verdict != "crash":
            # Re-run a new cause once before keeping it: a peer refusing associations for a
            # moment, or a slow one, must not leave a finding that does not reproduce.
            again = rerun(self.target, result.judgement.verdict)(result.case)
            if signature(again) != key:
                stats.unconfirmed += 1
                return None
        if finding is None:
            finding = Finding(
                key, result.judgement.verdict, result.judgement.detail, first_example=stats.examples
            )
            finding.smallest = 1 << 62
            stats.findings[key] = finding
        finding.count += 1
        size = len(result.case.stream)
        if size < finding.smallest:
            finding.smallest = size
            finding.example = result
            finding.detail = result.judgement.detail
            self.save(finding)
        return finding

    def save(self, finding: Finding) -> None:
        """(Re)write the finding's corpus file."""
        if self.corpus is not None:
            command = getattr(self.target, "command", "") or _command(self.target.name, None)
            if self.artim is not None:
                command += f" --artim {self.artim}"
            path = _save(self.corpus, self.target.name, finding, command)
            finding.path = str(path)
            finding.repro = f"{command} --replay {path}"


def run_campaign(
    target: Target,
    *,
    max_examples: int | None = None,
    budget: float | None = None,
    seed: int | None = None,
    database: ExampleDatabase | None = None,
    corpus: Path | None = None,
    progress: Progress | None = None,
    chunk: int | None = None,
    codec_batch: int = 0,
    replay_only: bool = False,
    shrink_budget: float = 0.0,
    jobs: int = 1,
) -> Stats:
    """Fuzz ``target`` until ``max_examples`` cases ran or ``budget`` seconds passed.

    ``seed`` makes the run reproducible; Hypothesis then ignores the example database (a
    replayed database would change the run). ``replay_only`` runs only the database's examples
    (e.g. another worker's failures from a shared Redis database). The budget is a deadline
    for everything, shrinking included (at most ``shrink_budget`` s of it, at the end).
    Ctrl-C/SIGTERM end the campaign early: ``stats.interrupted`` holds the exception.
    ``jobs`` > 1 runs that many cases at once against a black-box peer (``fuzz.pool``).
    """
    if max_examples is None and budget is None:
        max_examples = 100
    stats = Stats(target.name, budget=budget, max_examples=max_examples)
    stats.rss_kb.append(_rss_kb())
    deadline = None if budget is None else stats.started + budget
    run = _Campaign(target, stats, corpus, deadline, shrink_budget)
    target.deadline = deadline
    white_box = run.white_box
    pool: Pool | None = None
    chunk = chunk or (200 if target.name == "local" else 50 if white_box else 20)
    known: set[str] = set()
    strategy = st.tuples(
        cases(
            target.scenarios,
            max_delay=target.max_delay,
            pipelinable=target.pipelinable,
            ends=target.ends,
        ),
        st.integers(0, 2**32 - 1),
    )
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if white_box else [])
    if replay_only:
        phases = [Phase.reuse]
    if jobs > 1 and not white_box:
        from netdicom2.fuzz.pool import Pool

        chunk = max(chunk, 100)
    handlers: list[Callable[[Result], None]] = []
    index = 0
    try:
        if jobs > 1 and not white_box:
            pool = Pool(target, jobs, lambda result: handlers[-1](result))
        while True:
            left = None if max_examples is None else max_examples - stats.examples
            if (left is not None and left <= 0) or getattr(target, "crashed", False):
                break
            until = run.fuzz_until()
            if until is not None and time.monotonic() >= until:
                if not run.unshrunk():
                    break
                run.shrink()  # then fuzz on with what is left
                continue
            size = chunk if left is None else min(chunk, left)
            config = settings(
                max_examples=size,
                deadline=None,
                database=database,
                # Only the first chunk replays the database: a later chunk would find the
                # earlier failures "known" (not raised), and Hypothesis would delete them.
                phases=phases if index == 0 else [p for p in phases if p is not Phase.reuse],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
                print_blob=False,
                verbosity=Verbosity.quiet,  # findings are reported by the campaign
            )

            @config
            @given(strategy)
            def campaign_property(drawn: tuple[Case, int]) -> None:
                until = run.fuzz_until()
                if until is not None and time.monotonic() >= until:
                    raise OutOfTime  # a BaseException: Hypothesis stops at once
                if getattr(target, "crashed", False):
                    raise OutOfTime  # the peer is gone: end this Hypothesis run at once
                case, batch_seed = drawn
                if codec_batch:
                    _codec_batch(case, batch_seed, codec_batch, stats)
                if pool is not None:
                    pool.submit(case)  # judged in handle() as it completes
                    return
                handle(target.run(case))

            def handle(result: Result) -> None:
                stats.record(result)
                if stats.examples % 64 == 0:
                    stats.rss_kb.append(_rss_kb())
                if progress is not None:
                    progress(stats)
                if result.judgement.verdict not in FAILURES:
                    return
                finding = run.found(result)
                if finding is None:
                    return
                key = finding.signature
                if key not in known and result.judgement.verdict in HARD_FAILURES and white_box:
                    raise FuzzFinding(key)

            handlers[:] = [handle]
            if seed is not None:
                campaign_property = hypothesis_seed(seed + index)(campaign_property)
            index += 1
            before = stats.examples
            paused = False
            try:
                campaign_property()
                if pool is not None:
                    pool.drain()
            except OutOfTime:
                paused = True  # for shrinking, or the end: the loop's head decides
                if pool is not None:
                    with contextlib.suppress(OutOfTime):
                        pool.drain()
            except (FuzzFinding, Flaky, Unsatisfiable, unittest.SkipTest):
                pass  # a finding (recorded above), or nothing to run (an empty database)
            except HypothesisException:
                pass
            known.update(stats.findings)
            if paused:
                continue
            if stats.examples == before or replay_only:
                break  # nothing ran (e.g. out of budget at once), or the database is replayed
        if getattr(target, "crashed", False):
            stats.stopped = getattr(target, "stopped", "") or "the peer crashed"
        if run.unshrunk():
            run.shrink()
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM (netdicom2.cli.Interrupted)
        stats.interrupted = exc
    except OutOfTime:
        pass
    finally:
        if pool is not None:
            target.deadline = time.monotonic()  # cases in flight unwind (OutOfTime) now
            with contextlib.suppress(OutOfTime, KeyboardInterrupt):
                pool.drain()
            pool.close()
            stats.backoffs = pool.backoffs
        target.deadline = None
    stats.rss_kb.append(_rss_kb())
    return stats


def _codec_batch(case: Case, batch_seed: int, size: int, stats: Stats) -> None:
    """The codec properties on the case's PDUs and ``size`` byte-level mutants of them."""
    rnd = random.Random(batch_seed)
    pdus = [data for _, data in case.pdus] or [b""]
    for data in pdus:
        check_codec(data)
    check_framing(case.stream, case.delivery.cuts)
    for mutant in mutated_batch(rnd, pdus, size):
        check_codec(mutant)
    stats.codec_inputs += len(pdus) + size + 1


#: Verdicts that rest on ARTIM (PS3.8 §9.1.5): confirming one must wait the timer out again.
TIMED = ("timing", "hang")


def rerun(target: Target, verdict: str = "timing") -> Callable[[Case], Result]:
    """How to run a finding's case again: lingering as it did when its verdict is TIMED."""
    run: Callable[[Case], Result] = target.run
    return getattr(target, "rerun", run) if verdict in TIMED else run


def replay(target: Target, paths: list[Path]) -> list[tuple[Path, Result]]:
    """Run saved cases (corpus JSON files) against ``target`` again."""
    out = []
    for path in paths:
        record = json.loads(path.read_text())
        out.append((path, rerun(target)(Case.from_json(record["case"]))))
    return out
