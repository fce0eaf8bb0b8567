"""Fuzz campaigns against real peers on loopback: DCMTK storescp and pynetdicom's SCP.

Each peer runs alone in a network namespace (tests/peers.py); the campaign is the black-box
oracle of ``netdicom2 fuzz --target HOST:PORT --artim 1``: every reaction is classified and
compared with PS3.8 Table 9-10. The findings (deviations, hangs, crashes, ARTIM timing) are
written to ``fuzz-findings-<peer>.json`` in the test's directory and must not be empty: both
peers have known weak spots (early close in Sta13, what follows an unknown PDU type).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from peers import NetnsServer, dcmtk_storescp, pynetdicom_scp

from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.nettargets import RemoteTarget

pytestmark = pytest.mark.interop

BUDGET = 15.0  # seconds of fuzzing per peer (plus its start-up)

Peer = Callable[[Path], AbstractContextManager[NetnsServer]]
PEERS: dict[str, tuple[Peer, int]] = {
    # DCMTK: ACSE timeout 1 s (its ARTIM), socket timeout 5 s.
    "dcmtk": (lambda tmp: dcmtk_storescp(tmp, extra=["-ta", "1", "-ts", "5"]), 11112),
    # pynetdicom: ACSE timeout 1 s (also its ARTIM), network timeout 5 s.
    "pynetdicom": (lambda tmp: pynetdicom_scp(tmp, acse_timeout=1, network_timeout=5), 11113),
}


@pytest.mark.parametrize("name", sorted(PEERS))
def test_campaign_records_findings_against_the_peer(name: str, tmp_path: Path) -> None:
    start, port = PEERS[name]
    with start(tmp_path) as server:
        target = RemoteTarget(("127.0.0.1", port), connect=server.connect, artim=1.0)
        stats = run_campaign(target, budget=BUDGET, seed=2024, corpus=tmp_path / "corpus")
        alive = target.alive()
    summary = stats.summary()
    (tmp_path / f"fuzz-findings-{name}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["findings"], indent=1))
    assert stats.examples >= 10
    assert summary["distinct_outcomes"] >= 3
    assert stats.findings, "the fuzzer found nothing: too weak"
    assert all(
        f.repro.startswith("netdicom2 fuzz --target 127.0.0.1:") for f in stats.findings.values()
    )
    assert alive or any(f.verdict == "crash" for f in stats.findings.values())


FINDINGS = Path(__file__).resolve().parents[1] / "fuzz" / "findings"


@pytest.mark.parametrize("name", sorted(PEERS))
def test_recorded_findings_still_reproduce(name: str, tmp_path: Path) -> None:
    from netdicom2.fuzz.campaign import replay

    files = sorted(FINDINGS.glob(f"{name}-*.json"))
    assert files
    start, port = PEERS[name]
    with start(tmp_path) as server:
        target = RemoteTarget(("127.0.0.1", port), connect=server.connect, artim=1.0)
        results = replay(target, files)
    got = {path.stem: result.judgement.verdict for path, result in results}
    want = {path.stem: json.loads(path.read_text())["verdict"] for path in files}
    assert got == want
