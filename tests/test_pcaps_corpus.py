"""Every committed capture and every public capture: codec round trip, judgement, local replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netdicom2.pcaps.codec_check import check_codec
from netdicom2.pcaps.corpus import EXTERNAL, EXTERNAL_DIR, ExternalCapture, corpus_entries
from netdicom2.pcaps.flows import Capture, load_capture
from netdicom2.pcaps.model import judge
from netdicom2.pcaps.replay_local import replay_local
from tests.shared import require_shared

ENTRIES = corpus_entries()
_CACHE: dict[Path, Capture] = {}


def _load(path: Path, ports: list[int] | None = None) -> Capture:
    """Each capture is read once per session."""
    if path not in _CACHE:
        _CACHE[path] = load_capture(path, ports or [])
    return _CACHE[path]


def _external(capture: ExternalCapture) -> Path:
    """The path of a public capture; skip (with the reason) when the folder is absent."""
    return require_shared(EXTERNAL_DIR) / capture.name


def _findings(capture: Capture) -> list[str]:
    """ "side cell" of every finding, all connections."""
    return [f"{f.side} {f.cell}" for conn in capture.connections for f in judge(conn).findings]


def test_the_corpus_is_there_and_small() -> None:
    assert len(ENTRIES) >= 20
    assert sum(e["path"].stat().st_size for e in ENTRIES) < 200_000


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_corpus_codec_round_trip(entry: dict[str, Any]) -> None:
    report = check_codec(_load(entry["path"], [entry["port"]]))
    assert not [i for i in report.issues if i.kind == "mismatch"]
    assert sum(1 for i in report.issues if i.kind == "invalid") == entry["expect_invalid"]
    assert report.pdus == entry["pdus"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_corpus_findings(entry: dict[str, Any]) -> None:
    capture = _load(entry["path"], [entry["port"]])
    assert sorted(_findings(capture)) == sorted(entry["expect_findings"])


@pytest.mark.parametrize("role", ["scp", "scu"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_corpus_replays_against_local_provider(entry: dict[str, Any], role: str) -> None:
    capture = _load(entry["path"], [entry["port"]])
    for conn in capture.connections:
        result = replay_local(conn, role, step_timeout=3.0, artim=0.5)
        if result.skipped:
            assert role == "scu" and "no A-ASSOCIATE-RQ" in result.skipped
            continue
        unexcused = [d.as_dict() for d in result.differences if not d.excused_by]
        assert unexcused == [], result.transcript


@pytest.mark.parametrize("capture", EXTERNAL, ids=[c.name for c in EXTERNAL])
def test_external_codec_round_trip(capture: ExternalCapture) -> None:
    report = check_codec(_load(_external(capture)))
    assert report.issues == [] and report.exact == capture.pdus


@pytest.mark.parametrize("capture", EXTERNAL, ids=[c.name for c in EXTERNAL])
def test_external_findings(capture: ExternalCapture) -> None:
    assert sorted(_findings(_load(_external(capture)))) == sorted(capture.findings)


@pytest.mark.parametrize("role", ["scp", "scu"])
@pytest.mark.parametrize("capture", EXTERNAL, ids=[c.name for c in EXTERNAL])
def test_external_replays_against_local_provider(capture: ExternalCapture, role: str) -> None:
    loaded = _load(_external(capture))
    assert loaded.connections
    for conn in loaded.connections:
        result = replay_local(conn, role, step_timeout=3.0, artim=0.5)
        assert result.ok, [d.as_dict() for d in result.differences]


def test_tapirxl_close_is_replaced_by_an_abort_not_copied() -> None:
    capture = _load(_external(EXTERNAL[-2]))
    result = replay_local(capture.connections[0], "scu", step_timeout=3.0)
    assert result.ok and result.not_copied
    assert "A-ABORT source 0" in result.received[-1]
    assert "Sta6 + Evt15 -> AA-1 -> Sta13" in result.transcript


def test_pipelined_requests_are_held_until_the_association_is_accepted() -> None:
    capture = _load(_external(EXTERNAL[3]))  # profuzzbench store: P-DATA before the AC
    result = replay_local(capture.connections[0], "scp", step_timeout=3.0)
    assert result.ok
    # netdicom2 sees the P-DATA only in Sta6 (DT-2), never in Sta3 (which would be AA-8).
    assert "Sta6 + Evt10 -> DT-2 -> Sta6" in result.transcript
    assert not any("AA-8" in line for line in result.transcript)
