"""ARTIM verdicts under ``--jobs`` against an acceptor that serves one association at a time.

A single-process acceptor (DCMTK ``storescp`` without ``--fork``) leaves our other connections
in its accept queue while it serves one: their ARTIM (PS3.8 §9.1.5, started by Evt5 → AE-5)
starts only when it accepts them. A conforming peer must yield no timing or hang finding under
``--jobs 4``, and a peer whose timer is too short must still be found.
"""

from __future__ import annotations

from pathlib import Path

from netdicom2.app_scp import StorageSCP
from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.nettargets import RemoteTarget


class SerialSCP(StorageSCP):
    """Our StorageSCP, accepting the next connection only once the current one is over."""

    def _accept(self, now: float) -> bool:
        if self.active:
            return False  # back off (re-registered after ACCEPT_BACKOFF): stays in the backlog
        return super()._accept(now)


def _campaign(tmp: Path, scp_artim: float, claimed: float, budget: float) -> dict[str, object]:
    with SerialSCP("127.0.0.1", 0, artim_timeout=scp_artim, output_dir=tmp) as scp:
        target = RemoteTarget(scp.address, artim=claimed)
        target.check()
        stats = run_campaign(target, budget=budget, seed=17, shrink_budget=0, jobs=4)
    summary: dict[str, object] = stats.summary()
    return summary


def _keys(summary: dict[str, object]) -> list[str]:
    findings = summary["findings"]
    assert isinstance(findings, list)
    return [str(f["signature"]) for f in findings]


def test_the_probe_tells_a_serial_acceptor_from_a_concurrent_one(tmp_path: Path) -> None:
    with SerialSCP("127.0.0.1", 0, artim_timeout=1.0, output_dir=tmp_path) as scp:
        target = RemoteTarget(scp.address, artim=1.0)
        target.probe_serial()
        assert target.serial is True
    with StorageSCP("127.0.0.1", 0, artim_timeout=1.0, output_dir=tmp_path) as scp:
        target = RemoteTarget(scp.address, artim=1.0)
        target.probe_serial()
        assert target.serial is False


def test_a_conforming_serial_acceptor_yields_no_timing_finding_with_jobs(tmp_path: Path) -> None:
    summary = _campaign(tmp_path, 0.5, 0.5, 8.0)
    assert summary["examples"] >= 20
    keys = _keys(summary)
    assert not [k for k in keys if k.startswith(("timing", "hang"))], keys


def test_a_serial_acceptor_with_a_short_timer_is_found_with_jobs(tmp_path: Path) -> None:
    summary = _campaign(tmp_path, 0.15, 1.0, 6.0)
    assert [k for k in _keys(summary) if k.startswith("timing") and "early" in k], _keys(summary)


def test_an_early_close_after_a_pdu_header_is_the_reaction_to_it_not_artim() -> None:
    """DCMTK storescp: a P-DATA-TF header with a huge length in Sta2, dropped at once."""
    from netdicom2.fuzz.check import Facts, evaluate
    from netdicom2.fuzz.oracle import Observed, Policy

    pdata = bytes.fromhex("0400ffffffff00000003011dcd00000005011dcc84aa")
    facts = Facts(start="Sta2", artim=1.0, t_start=10.0, t_close=10.006)
    judged = evaluate([("pdu-length:max", pdata)], Observed([], "reset"), facts, Policy())
    assert (judged.verdict, judged.key) == ("deviation", "in Sta2, next Evt19, saw reset")
    # Nothing sent: a close 0.2 s into a 1 s ARTIM is the timer, and early.
    facts = Facts(start="Sta2", artim=1.0, t_start=10.0, t_close=10.2)
    judged = evaluate([], Observed([], "close"), facts, Policy())
    assert (judged.verdict, judged.key) == ("timing", "Sta2 early")
    # Queued behind another association: the late check starts when the peer could accept.
    facts = Facts(start="Sta2", artim=1.0, t_start=10.0, t_close=12.0, t_start_late=11.0)
    assert evaluate([], Observed([], "close"), facts, Policy()).verdict == "conform"
    facts.t_start_late = None
    assert evaluate([], Observed([], "close"), facts, Policy()).key == "Sta2 late"


def test_a_connection_queued_behind_ours_is_timed_from_when_the_peer_could_accept_it(
    tmp_path: Path,
) -> None:
    """Two truncated A-ASSOCIATE-RQs at once, lingering: the second waits in the accept queue."""
    from concurrent.futures import ThreadPoolExecutor

    from netdicom2.fuzz.strategies import Case, setup_rq

    truncated = setup_rq().encode()[:10]  # Sta2: the peer waits for the rest, ARTIM runs
    case = Case("sta2", [("truncate:depth0", truncated)], end="linger")
    with SerialSCP("127.0.0.1", 0, artim_timeout=0.6, output_dir=tmp_path) as scp:
        target = RemoteTarget(scp.address, artim=0.6)
        target.probe_serial()
        assert target.serial is True
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(target.run, [case, case]))
    verdicts = [(r.judgement.verdict, r.judgement.detail) for r in results]
    assert all(r.judgement.verdict == "conform" for r in results), verdicts
    assert all(r.outcome == "close" for r in results), [r.outcome for r in results]
    # The queued one really waited: open longer than ARTIM + the late tolerance from its
    # connect, which a clock started at our connect would call late.
    assert max(r.elapsed for r in results) > 0.6 + 0.5 + 0.05, [r.elapsed for r in results]
