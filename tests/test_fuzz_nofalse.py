"""No false alarms on our own stack: many seeds, core, provider and our SCP as a remote peer.

Each campaign must end with zero findings (and, for our core and provider, no [interp] note
either: they are held to the readings of fuzz/interp.py). ``benchmarks/bench_fuzz.py
--no-false-alarms`` runs the same with more seeds and examples and prints the totals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.nettargets import ProviderTarget, RemoteTarget
from netdicom2.fuzz.targets import LocalTarget

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", range(8))
def test_local_campaigns_find_nothing(seed: int) -> None:
    stats = run_campaign(LocalTarget(), max_examples=400, seed=1000 + seed)
    assert stats.examples >= 400
    assert stats.findings == {} and not stats.interpretations, stats.summary()["findings"]


@pytest.mark.parametrize("seed", range(3))
def test_provider_campaigns_find_nothing(seed: int) -> None:
    target = ProviderTarget(artim=0.2)
    try:
        stats = run_campaign(target, max_examples=80, seed=2000 + seed)
    finally:
        target.close()
    assert stats.examples >= 80
    assert stats.findings == {} and not stats.interpretations, stats.summary()["findings"]


def test_our_scp_as_a_remote_peer_has_no_finding(tmp_path: Path) -> None:
    with StorageSCP("127.0.0.1", 0, artim_timeout=0.5, output_dir=tmp_path) as scp:
        target = RemoteTarget(scp.address, artim=0.5, quiet=0.05)
        stats = run_campaign(target, budget=4.0, seed=3000, shrink_budget=0)
    assert stats.examples >= 10
    assert stats.findings == {}, stats.summary()["findings"]
