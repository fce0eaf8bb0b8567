"""Fuzz campaigns against our own core (fake clock) and provider (real sockets): no failures.

Each provider example is a fresh DULServiceProvider on a real TCP pair on 127.0.0.1; the
campaign checks the Table 9-10 oracle, the user's indications, and that no thread, file
descriptor or exception is left behind. The ARTIM closes it measured are bounded here too.
"""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import settings

from netdicom2.fuzz.campaign import replay, run_campaign
from netdicom2.fuzz.check import HARD_FAILURES
from netdicom2.fuzz.nettargets import ProviderTarget
from netdicom2.fuzz.scenarios import SCENARIOS
from netdicom2.fuzz.strategies import Case, Delivery
from netdicom2.fuzz.targets import LocalTarget
from netdicom2.fuzz.wire import setup_pdu

EXAMPLES = settings.default.max_examples  # "ci": 200, "dev": 50, "long": 20 000


def _hard(stats_findings: dict[str, object]) -> list[str]:
    return [k for k in stats_findings if k.split(" | ")[0] in HARD_FAILURES]


def test_local_campaign_finds_no_failure_and_reaches_most_cells(tmp_path: Path) -> None:
    target = LocalTarget()
    stats = run_campaign(target, max_examples=EXAMPLES, seed=7, corpus=tmp_path, codec_batch=16)
    assert _hard(stats.findings) == []
    assert stats.examples >= EXAMPLES
    assert stats.codec_inputs > stats.examples
    assert len(stats.cells) >= (45 if EXAMPLES >= 200 else 25)  # of 123
    # Fake clock: every ARTIM close it judged happened exactly at the deadline.
    assert all(error == 0.0 for error in stats.artim_errors)


def test_every_scenario_reaches_its_start_state_on_both_white_box_targets() -> None:
    provider = ProviderTarget()
    try:
        for target in (LocalTarget(), provider):
            for name in SCENARIOS:
                result = target.run(Case(name, []))
                assert result.judgement.verdict == "conform", (target.name, name, result)
    finally:
        provider.close()


def test_provider_campaign_has_no_failure_leak_or_thread_death(tmp_path: Path) -> None:
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    target = ProviderTarget(artim=0.2)
    try:
        stats = run_campaign(target, max_examples=max(20, EXAMPLES // 4), seed=11, corpus=tmp_path)
    finally:
        target.close()
    assert _hard(stats.findings) == []
    assert stats.verdicts["failure"] == 0
    # Wall clock ARTIM (0.2 s): measured close error within the stated tolerance.
    assert all(-0.05 <= error <= 0.5 for error in stats.artim_errors)
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) == fds


def test_provider_memory_stays_bounded_over_many_associations() -> None:
    target = ProviderTarget(artim=0.2)
    case = Case("sta6", [("valid:04", b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x03\x00\x00")])
    try:
        for _ in range(10):  # warm-up: imports, caches
            target.run(case)
        tracemalloc.start()
        first = tracemalloc.take_snapshot()
        for _ in range(60):
            assert target.run(case).judgement.verdict == "conform"
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
        tracemalloc.stop()
    finally:
        target.close()
    assert growth < 512 * 1024, f"{growth} bytes retained over 60 associations"


def test_saved_findings_replay_with_a_one_line_command(tmp_path: Path) -> None:
    # A P-DATA on a context that was never accepted: the [interp] rule of PS3.8 §10.1 expects
    # Evt19 (AA-8), which netdicom2 follows; a saved case replays to the same judgement.
    pdata = b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x07\x03\x00\x00"
    case = Case("sta6", [("pdata:context", pdata)], Delivery())
    result = LocalTarget().run(case)
    assert result.judgement.verdict == "conform"
    assert ("Evt19", "Sta6", "AA-8") in result.cells
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"case": case.to_json()}))
    [(_, again)] = replay(LocalTarget(), [path])
    assert again.judgement.verdict == result.judgement.verdict
    assert Case.from_json(case.to_json()) == case


@pytest.mark.parametrize("name", ["RQ", "RQv0", "REL-RQ", "RP"])
def test_setup_pdus_are_well_formed(name: str) -> None:
    from netdicom2.fuzz.validate import VALID, judge

    assert judge(setup_pdu(name)).level == VALID
