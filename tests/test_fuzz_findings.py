"""Findings: one per root cause with a count, re-checked on a remote peer, shrunk live."""

from __future__ import annotations

from pathlib import Path

from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.campaign import run_campaign, signature
from netdicom2.fuzz.check import Judgement
from netdicom2.fuzz.shrink import shrink_case
from netdicom2.fuzz.strategies import Case, Delivery
from netdicom2.fuzz.targets import Result

KEY = "in Sta2, next Evt16, saw nothing"


class FakePeer:
    """A black-box target with one planted fault: any A-ABORT PDU in the stream is a deviation."""

    name = "fake:104"
    pipelinable: frozenset[str] = frozenset()
    max_delay = 0.0
    ends: tuple[str, ...] = ("fin",)
    deadline: float | None = None

    def __init__(self, *, flaky: bool = False) -> None:
        self.scenarios = ["sta2", "sta6"]
        self.flaky = flaky
        self.runs = 0

    def run(self, case: Case) -> Result:
        self.runs += 1
        planted = any(data[:1] == b"\x07" for _, data in case.pdus)
        if planted and not (self.flaky and self.runs % 2 == 0):
            judgement = Judgement("deviation", "abort ignored", key=KEY)
        else:
            judgement = Judgement("conform", "close")
        return Result(case, judgement, "close")

    def close(self) -> None:
        pass


def test_repeats_of_one_cause_are_one_finding_with_its_smallest_example(tmp_path: Path) -> None:
    target = FakePeer()
    stats = run_campaign(target, max_examples=300, seed=1, corpus=tmp_path, shrink_budget=2.0)
    assert list(stats.findings) == [f"deviation | {KEY}"]  # both scenarios: one cause
    finding = stats.findings[f"deviation | {KEY}"]
    assert finding.count > 1 and finding.count == stats.raw_findings
    assert finding.example is not None and finding.shrunk.startswith(("shrunk", "minimal"))
    assert len(finding.example.case.pdus) == 1 and len(finding.example.case.stream) <= 6
    assert Path(finding.path).exists()
    assert finding.example.case.pdus[0][1].hex() in Path(finding.path).read_text()


def test_live_shrinking_cuts_the_sequence_then_the_bytes() -> None:
    target = FakePeer()
    pdus = [
        ("valid:release-rq", t.release_rq().encode()),
        ("valid:abort", t.abort(0, 0).encode()),
        ("valid:pdata", t.pdata([(1, 3, b"\x00" * 40)]).encode()),
    ]
    case = Case("sta6", pdus, Delivery(cuts=[3, 7, 15], delays=[0.0, 0.01, 0.0, 0.0]), "quiet")
    big = target.run(case)
    runs = target.runs

    def check(candidate: Case) -> Result | None:
        result = target.run(candidate)
        return result if signature(result) == signature(big) else None

    small = shrink_case(big, check)
    assert small.case.pdus == [("valid:abort", bytes.fromhex("070000000000"))]
    assert small.case.delivery.cuts == [] and target.runs - runs < 60


def test_a_finding_that_does_not_reproduce_is_dropped() -> None:
    stats = run_campaign(FakePeer(flaky=True), max_examples=200, seed=2, shrink_budget=0)
    assert stats.raw_findings > 0
    assert stats.unconfirmed > 0
    assert stats.unconfirmed + sum(f.count for f in stats.findings.values()) >= stats.raw_findings


def test_the_signature_is_the_cause_not_the_scenario() -> None:
    a = Result(Case("sta2", []), Judgement("deviation", "x 1", key=KEY), "close")
    b = Result(Case("sta13", []), Judgement("deviation", "y 2", key=KEY), "open")
    c = Result(Case("sta2", []), Judgement("hang", "x 1", key=KEY), "close")
    assert signature(a) == signature(b) != signature(c)
