"""The black-box matrix against peers with planted deviations: each fails its own cells only.

``conformance.planted.PlantedAcceptor`` conforms to Table 9-10 unless a deviation is switched
on; our own ``StorageSCP`` (``netdicom2 scp``) conforms too. A conforming peer must get no
``fail`` and no ``inconclusive``; each deviation must make exactly the cells that check it
fail (within the cells run, which include unaffected controls).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.conformance.matrix import Report, Target, run_matrix
from netdicom2.conformance.planted import DEVIATIONS, PlantedAcceptor
from netdicom2.conformance.recipes import Params

PARAMS = Params(artim=0.5, max_wait=3.0)
ABORTS_STA2 = {"Sta2-Evt3", "Sta2-Evt4", "Sta2-Evt10", "Sta2-Evt12", "Sta2-Evt13", "Sta2-Evt19"}
ABORTS_STA6 = {"Sta6-Evt3", "Sta6-Evt4", "Sta6-Evt6", "Sta6-Evt13", "Sta6-Evt19"}
CONTROLS = {"Sta1-Evt5", "Sta2-Evt16", "Sta6-Evt10", "Sta13-Evt17"}

# deviation -> (cells that must fail, cells run besides them)
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "accept-bad-version": ({"Sta2-Evt6"}, CONTROLS),
    "reject-valid": ({"Sta2-Evt6"}, {"Sta1-Evt5", "Sta13-Evt3"}),
    "ignore-release": ({"Sta6-Evt12"}, CONTROLS),
    "reset-after-abort": (ABORTS_STA2 | ABORTS_STA6, CONTROLS),
    "never-close-sta13": ({"Sta2-Evt3", "Sta6-Evt12", "Sta6-Evt19", "Sta13-Evt18"}, CONTROLS),
    "long-pdata": ({"Sta6-Evt10", "Sta6-Evt12"}, CONTROLS - {"Sta6-Evt10"}),
    "wrong-rj-triple": ({"Sta2-Evt6"}, CONTROLS),
    "ac-unproposed-syntax": ({"Sta2-Evt6"}, {"Sta1-Evt5", "Sta2-Evt16"}),
    "abort-source-0": (ABORTS_STA6, CONTROLS | {"Sta2-Evt3"}),
    "rst-in-sta13": (
        {"Sta13-Evt3", "Sta13-Evt6", "Sta13-Evt10", "Sta13-Evt19"},
        CONTROLS - {"Sta13-Evt17"} | {"Sta13-Evt16"},
    ),
    "drop-rest-of-segment": ({"Sta6-Evt10", "Sta6-Evt12"}, CONTROLS - {"Sta6-Evt10"}),
    "data-after-release-rp": ({"Sta6-Evt12"}, CONTROLS),
    "idle-bare-close": ({"Sta6-Evt15"}, CONTROLS),
}


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.CRITICAL, logger="netdicom2")
    yield


def _matrix(address: tuple[str, int], only: set[str] | None = None, jobs: int = 4) -> Report:
    target = Target("planted", "remote", PARAMS, address=address)
    return run_matrix(target, only=sorted(only) if only else None, jobs=jobs)


def _verdicts(report: Report, verdict: str) -> set[str]:
    return {r.cell for r in report.results if r.verdict == verdict}


def test_every_deviation_has_a_test() -> None:
    assert set(EXPECTED) == set(DEVIATIONS)


def _left_transient_state(report: Report) -> None:
    """Its only inconclusive cells: Sta3/Sta8, left (its user answered) before the event."""
    for r in report.results:
        if r.verdict == "inconclusive":
            assert r.state in ("Sta3", "Sta8") and "was left before the event" in r.reason


@pytest.mark.timeout(60)
def test_a_conforming_acceptor_gets_no_fail() -> None:
    with PlantedAcceptor() as peer:
        report = _matrix(peer.address)
    assert _verdicts(report, "fail") == set()
    _left_transient_state(report)
    assert report.counts()["pass"] == 30, [r.reason for r in report.results if r.reason]
    by_cell = {r.cell: r for r in report.results}
    assert "4 cases passed" in by_cell["Sta2-Evt6"].reason  # minimal, 0002H, 0003H, 128 contexts
    assert "3 cases passed" in by_cell["Sta6-Evt10"].reason  # one ECHO, 8 fragments, 50 ECHOs
    assert "2 cases passed" in by_cell["Sta6-Evt12"].reason  # the release alone, behind an ECHO
    idle = by_cell["Sta6-Evt15"]  # no idle timer: nothing to judge
    assert idle.verdict == "na" and "kept the idle association open for 3 s" in idle.reason


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deviation", list(EXPECTED))
def test_a_planted_deviation_fails_its_cells_and_no_other(deviation: str) -> None:
    must_fail, controls = EXPECTED[deviation]
    with PlantedAcceptor([deviation]) as peer:
        report = _matrix(peer.address, must_fail | controls)
    failed = {r.cell: r.reason for r in report.results if r.verdict == "fail"}
    assert set(failed) == must_fail, failed
    assert _verdicts(report, "pass") >= controls - {"Sta13-Evt3"}


def test_the_failures_say_what_was_expected_and_seen() -> None:
    with PlantedAcceptor(["reset-after-abort", "long-pdata"]) as peer:
        report = _matrix(peer.address, {"Sta2-Evt3", "Sta6-Evt10"})
    reasons = {r.cell: r.reason for r in report.results}
    assert "reset the connection (RST)" in reasons["Sta2-Evt3"]
    assert "Sta13 not held" in reasons["Sta2-Evt3"]
    assert "exceeds the maximum length 16384" in reasons["Sta6-Evt10"]


def test_unreachable_states_are_inconclusive_and_name_the_failed_cell() -> None:
    # Every valid request rejected: Sta6 is never reached; Sta2-Evt6 fails and explains it.
    with PlantedAcceptor(["reject-valid"]) as peer:
        report = _matrix(peer.address, {"Sta2-Evt6", "Sta6-Evt10", "Sta6-Evt12"})
    by_cell = {r.cell: r for r in report.results}
    assert by_cell["Sta2-Evt6"].verdict == "fail"
    for name in ("Sta6-Evt10", "Sta6-Evt12"):
        result = by_cell[name]
        assert result.verdict == "inconclusive", result.reason
        assert result.reason.startswith("could not reach Sta6")
        assert "A-ASSOCIATE-RJ" in result.reason and "explained by Sta2-Evt6" in result.reason
    assert report.counts()["fail"] == 1 and not report.ok


def test_sta13_is_reached_another_way_when_the_release_recipe_fails() -> None:
    # No answer to the release: Sta13 is reached by the AE-6 reject branch instead.
    with PlantedAcceptor(["ignore-release"]) as peer:
        report = _matrix(peer.address, {"Sta13-Evt17"})
    (result,) = report.results
    assert result.verdict == "pass", result.reason
    assert result.tried == ["release", "A-ASSOCIATE-RJ"]


@pytest.mark.timeout(60)
def test_our_scp_conforms_and_a_local_limit_lowers_the_jobs() -> None:
    # StorageSCP answers RJ 2/3/2 (local limit exceeded) past max_associations: the matrix
    # retries with backoff and runs fewer cells at once; nothing is blamed on the peer.
    cells = {"Sta2-Evt6", "Sta6-Evt10", "Sta6-Evt12", "Sta6-Evt19", "Sta13-Evt3", "Sta13-Evt17"}
    with StorageSCP("127.0.0.1", 0, artim_timeout=0.5, max_associations=1) as scp:
        report = _matrix(scp.address, cells | {"Sta3-Evt19", "Sta8-Evt10"}, jobs=4)
    assert _verdicts(report, "pass") >= cells, [r.reason for r in report.results]
    assert _verdicts(report, "fail") == set()
    _left_transient_state(report)
    jobs = report.header["jobs"]
    assert jobs["at most"] < 4 and "local-limit-exceeded" in jobs["note"]


def test_an_idle_association_ended_by_an_abort_passes() -> None:
    # Sta6-Evt15: its own timer ends the association by its user's A-ABORT (AA-1), Sta13 held.
    with PlantedAcceptor(idle=0.3, sta13=0.5) as peer:
        (planted,) = _matrix(peer.address, {"Sta6-Evt15"}).results
    assert planted.verdict == "pass", planted.reason
    assert any("its user aborted after 0.3 s (AA-1); held Sta13" in o for o in planted.observed)
    with StorageSCP("127.0.0.1", 0, idle_timeout=0.3) as scp:
        (ours,) = _matrix(scp.address, {"Sta6-Evt15"}).results
    assert ours.verdict == "pass", ours.reason
    assert "Sta13 not held, the PDU was delivered first" in ours.reason  # A-ABORT, then a FIN
    with PlantedAcceptor(["idle-bare-close"], idle=0.3) as peer:
        (bare,) = _matrix(peer.address, {"Sta6-Evt15"}).results
    assert bare.verdict == "fail"
    assert "closed the idle association (FIN) after 0.3 s with no A-ABORT" in bare.reason


@pytest.mark.timeout(30)
def test_a_late_close_says_when_it_came_and_what_was_expected() -> None:
    # The peer's Sta13 timer is 3 s where 0.2 s was announced: a late close, not "never".
    params = Params(artim=0.5, sta13_timer=0.2, max_wait=5.0)
    with PlantedAcceptor(sta13=3.0) as peer:
        target = Target("late", "remote", params, address=peer.address)
        (result,) = run_matrix(target, only=["Sta6-Evt12"]).results
    assert result.verdict == "fail"
    assert "closes after 3.0 s (expected about 0.2 s)" in result.reason, result.reason
