"""Fuzzing campaigns: Hypothesis drives cases at a target; results become statistics and a corpus.

A campaign runs in chunks (one Hypothesis run each) until its example count or time budget is
spent. A result whose failure signature is new raises inside the test, so Hypothesis shrinks it
(white-box targets) and stores it in its example database, which replays it first in the next
run or on another worker sharing the database; known signatures are only counted. Every new
finding is also written to the corpus as JSON with a one-line reproduction command.
"""

from __future__ import annotations

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
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable

from fuzz.check import FAILURES, HARD_FAILURES
from fuzz.properties import check_codec, check_framing
from fuzz.strategies import Case, cases, mutated_batch
from fuzz.targets import Result, Target

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
            "findings": [vars(f) for f in self.findings.values()],
        }


def signature(result: Result) -> str:
    """A failure's identity: verdict, start scenario, observed outcome, expected next step."""
    judgement = result.judgement
    key = judgement.key or re.sub(r"\d+(\.\d+)?", "N", judgement.detail)[:80]
    return f"{judgement.verdict} | {result.case.scenario} | {key}"


def _command(target: str, artim: float | None) -> str:
    """The command line that runs cases against this target."""
    return f"netdicom2 fuzz --target {target}" + ("" if artim is None else f" --artim {artim}")


def _save(
    corpus: Path, target: str, result: Result, suffix: str = "", artim: float | None = None
) -> Path:
    """Write a failing case and its verdict to the corpus; return its path."""
    corpus.mkdir(parents=True, exist_ok=True)
    body = result.case.to_json()
    digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    slug = target.replace(":", "_").replace("/", "_")
    path = corpus / f"{slug}-{result.judgement.verdict}-{digest}{suffix}.json"
    record = {
        "target": target,
        "verdict": result.judgement.verdict,
        "detail": result.judgement.detail,
        "outcome": result.outcome,
        "target_sent": result.raw,
        "case": body,
        "repro": f"{_command(target, artim)} --replay {path}",
    }
    path.write_text(json.dumps(record, indent=1))
    return path


def _rss_kb() -> int:
    """Peak resident set size of this process, in KiB (Linux ru_maxrss)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


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
) -> Stats:
    """Fuzz ``target`` until ``max_examples`` cases ran or ``budget`` seconds passed.

    ``seed`` makes the run reproducible; Hypothesis then ignores the example database (a
    replayed database would change the run). ``replay_only`` runs only the database's examples
    (e.g. another worker's failures from a shared Redis database).
    """
    if max_examples is None and budget is None:
        max_examples = 100
    stats = Stats(target.name, budget=budget, max_examples=max_examples)
    stats.rss_kb.append(_rss_kb())
    white_box = target.name in ("local", "provider")
    artim: float | None = getattr(target, "artim", None) if not white_box else None
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
    index = 0
    last_failure: list[Result] = []
    while True:
        left = None if max_examples is None else max_examples - stats.examples
        if (left is not None and left <= 0) or (budget is not None and stats.elapsed >= budget):
            break
        if getattr(target, "crashed", False):
            break
        size = chunk if left is None else min(chunk, left)
        config = settings(
            max_examples=size,
            deadline=None,
            database=database,
            # Only the first chunk replays the database: a later chunk would find the earlier
            # failures "known" (not raised), and Hypothesis would delete them from it.
            phases=phases if index == 0 else [p for p in phases if p is not Phase.reuse],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            print_blob=False,
            verbosity=Verbosity.quiet,  # findings are reported by the campaign, not printed
        )

        @config
        @given(strategy)
        def campaign_property(drawn: tuple[Case, int]) -> None:
            if budget is not None and stats.elapsed >= budget:
                reject()  # out of time: let this Hypothesis run end
            case, batch_seed = drawn
            if codec_batch:
                _codec_batch(case, batch_seed, codec_batch, stats)
            result = target.run(case)
            stats.record(result)
            if stats.examples % 64 == 0:
                stats.rss_kb.append(_rss_kb())
            if progress is not None:
                progress(stats)
            if result.judgement.verdict not in FAILURES:
                return
            key = signature(result)
            finding = stats.findings.get(key)
            if finding is None:
                finding = Finding(
                    key,
                    result.judgement.verdict,
                    result.judgement.detail,
                    first_example=stats.examples,
                )
                if corpus is not None:
                    path = _save(corpus, target.name, result, artim=artim)
                    finding.path = str(path)
                    finding.repro = f"{_command(target.name, artim)} --replay {path}"
                stats.findings[key] = finding
            finding.count += 1
            if key not in known and result.judgement.verdict in HARD_FAILURES:
                last_failure[:] = [result]
                raise FuzzFinding(key)

        if seed is not None:
            campaign_property = hypothesis_seed(seed + index)(campaign_property)
        index += 1
        before = stats.examples
        try:
            campaign_property()
        except (FuzzFinding, Flaky, Unsatisfiable, unittest.SkipTest):
            pass  # a finding (recorded above), or nothing to run (replay of an empty database)
        except HypothesisException:
            pass
        if last_failure and corpus is not None:
            _save(corpus, target.name, last_failure[0], "-min", artim)  # the shrunk example
        last_failure.clear()
        known.update(stats.findings)
        if stats.examples == before or replay_only:
            break  # nothing ran (e.g. out of budget at once), or the database is replayed
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


def replay(target: Target, paths: list[Path]) -> list[tuple[Path, Result]]:
    """Run saved cases (corpus JSON files) against ``target`` again."""
    out = []
    for path in paths:
        record = json.loads(path.read_text())
        out.append((path, target.run(Case.from_json(record["case"]))))
    return out
