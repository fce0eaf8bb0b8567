"""The listen-mode matrix against a scripted requestor with planted deviations.

``python -m netdicom2.conformance.planted_scu PORT [DEVIATION ...]`` is spawned for each cell; it
conforms unless a deviation is named. A conforming requestor gets no fail; each deviation
fails its own cells, and the cells that depend on them are inconclusive, naming them.
"""

from __future__ import annotations

import sys

import pytest

from netdicom2.conformance.matrix import Report, Target, run_matrix
from netdicom2.conformance.planted_scu import DEVIATIONS
from netdicom2.conformance.recipes import Params

CELLS = {
    "Sta5-Evt3",
    "Sta5-Evt4",
    "Sta5-Evt12",
    "Sta6-Evt3",
    "Sta6-Evt10",
    "Sta6-Evt12",
    "Sta7-Evt10",
    "Sta7-Evt12",
    "Sta7-Evt13",
    "Sta11-Evt13",
    "Sta13-Evt3",
    "Sta13-Evt17",
    "Sta13-Evt18",
}
EXPECTED: dict[str, tuple[set[str], set[str]]] = {  # fail, inconclusive
    "reset-after-abort": (
        {"Sta5-Evt12", "Sta6-Evt3"},
        {"Sta13-Evt3", "Sta13-Evt17", "Sta13-Evt18"},
    ),
    "close-on-collision": ({"Sta7-Evt12"}, {"Sta11-Evt13"}),
    "rst-after-release": ({"Sta7-Evt13", "Sta11-Evt13"}, set()),
    "abort-source-0": ({"Sta5-Evt12", "Sta6-Evt3"}, set()),
    "abort-on-data-in-sta7": ({"Sta7-Evt10"}, set()),
}


def _matrix(*deviations: str) -> Report:
    spawn = (sys.executable, "-m", "netdicom2.conformance.planted_scu", "{port}", *deviations)
    target = Target(
        "planted-scu",
        "remote-requestor",
        Params(artim=0.5, max_wait=3.0),
        listen_port=0,
        spawn=spawn,
    )
    return run_matrix(target, only=sorted(CELLS))


def _cells(report: Report, verdict: str) -> set[str]:
    return {r.cell for r in report.results if r.verdict == verdict}


def test_every_deviation_has_a_test() -> None:
    assert set(EXPECTED) == set(DEVIATIONS)


@pytest.mark.timeout(60)
def test_a_conforming_requestor_passes_every_cell_run() -> None:
    report = _matrix()
    assert _cells(report, "pass") == CELLS, {r.cell: r.reason for r in report.results}
    assert report.header["peer"]["implementation_version_name"] == "NETDICOM2_010"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deviation", list(EXPECTED))
def test_a_planted_requestor_deviation_fails_its_cells(deviation: str) -> None:
    must_fail, undecided = EXPECTED[deviation]
    report = _matrix(deviation)
    assert _cells(report, "fail") == must_fail, {r.cell: r.reason for r in report.results}
    assert _cells(report, "inconclusive") == undecided
    for r in report.results:
        if r.verdict == "inconclusive":
            assert "explained by" in r.reason, r.reason
    assert _cells(report, "pass") == CELLS - must_fail - undecided


@pytest.mark.timeout(60)
def test_our_echo_scu_keeps_sta7_on_data_and_completes_the_release() -> None:
    # Our provider as requestor (``netdicom2 echo``): AR-6 in Sta7, then AR-3 on our RP.
    spawn = (sys.executable, "-m", "netdicom2.cli", "echo", "127.0.0.1", "{port}")
    target = Target(
        "echo", "remote-requestor", Params(artim=0.5, max_wait=3.0), listen_port=0, spawn=spawn
    )
    report = run_matrix(target, only=["Sta7-Evt10", "Sta7-Evt13"])
    assert _cells(report, "pass") == {"Sta7-Evt10", "Sta7-Evt13"}, [
        r.reason for r in report.results
    ]
    (data,) = (r for r in report.results if r.cell == "Sta7-Evt10")
    assert any("nothing sent for" in line for line in data.observed)
    assert "closed (FIN)" in data.observed[-1]
