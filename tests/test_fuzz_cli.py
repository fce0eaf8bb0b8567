"""`netdicom2 fuzz`: the campaign command line, its JSON summary, corpus and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdicom2.cli import main
from netdicom2.fuzz.cli import parse_duration


def test_fuzz_local_smoke_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.json"
    argv = ["fuzz", "--target", "local", "--max-examples", "50", "--json", str(out)]
    argv += ["--seed", "1", "--corpus", str(tmp_path / "corpus"), "--database", "none", "--plain"]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["target"] == "local"
    assert summary["examples"] >= 50
    assert summary["cells_reached"] > 0 and summary["distinct_outcomes"] > 0
    assert set(summary) >= {"verdicts", "outcomes_by_malformation", "findings", "artim"}
    assert "PS3.8 Table 9-10 cells reached" in capsys.readouterr().out


def test_same_seed_same_campaign(tmp_path: Path) -> None:
    summaries = []
    for run in range(2):
        out = tmp_path / f"s{run}.json"
        argv = ["fuzz", "--target", "local", "--max-examples", "30", "--seed", "5", "--plain"]
        assert main([*argv, "--database", "none", "--json", str(out)]) == 0
        summaries.append(json.loads(out.read_text()))
    for key in ("examples", "verdicts", "cells", "outcomes_by_malformation", "codec_inputs"):
        assert summaries[0][key] == summaries[1][key], key


def test_replay_of_a_saved_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = {
        "scenario": "sta2",
        "pdus": [["unknown:pdu-type", "09000000000400000000"]],
        "delivery": {"cuts": [], "delays": [], "close_at": None, "close_how": "fin"},
        "end": "fin",
        "pipelined": False,
    }
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"case": case}))
    assert main(["fuzz", "--target", "provider", "--replay", str(path)]) == 0
    assert "conform: ABORT(0,0) close" in capsys.readouterr().out  # Sta2 + Evt19 → AA-1


def test_durations() -> None:
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("2") == 2
