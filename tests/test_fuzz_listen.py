"""`netdicom2 fuzz --listen`: a hostile acceptor for requestors (ours, DCMTK's echoscu)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from peers import require

from netdicom2.cli import main
from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.listen import RequestorTarget

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_listen_usage_and_runtime_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        cases = [
            (["--listen", "99999"], 2, "99999"),
            (["--target", "local", "--spawn", "echoscu {port}"], 2, "--spawn needs --listen"),
            (["--listen", "0", "--spawn", "/nonexistent/binary {port}"], 2, "/nonexistent/binary"),
            (["--listen", str(port)], 1, f"cannot listen on 127.0.0.1:{port}"),
        ]
        for extra, status, words in cases:
            code, err = _run(["fuzz", "--budget", "5s", *extra], capsys)
            assert code == status, err
            assert words in err and "Traceback" not in err
    finally:
        busy.close()


def test_our_own_requestor_yields_no_finding(tmp_path: Path) -> None:
    command = f"{sys.executable} -m netdicom2.cli echo --timeout 1 127.0.0.1 {{port}}"
    target = RequestorTarget(("127.0.0.1", 0), spawn=command)
    try:
        stats = run_campaign(target, budget=6.0, seed=1, corpus=tmp_path, shrink_budget=0)
    finally:
        target.close()
    summary = stats.summary()
    assert stats.examples >= 4
    assert summary["findings"] == [], summary["findings"]
    assert target.identity.get("implementation_version_name", "").startswith("NETDICOM2")


@pytest.mark.interop
def test_dcmtk_echoscu_has_findings_and_is_named(tmp_path: Path) -> None:
    echoscu = require("echoscu")
    target = RequestorTarget(
        ("127.0.0.1", 0), spawn=f"{echoscu} -ta 1 127.0.0.1 {{port}}", artim=1.0
    )
    try:
        stats = run_campaign(target, budget=6.0, seed=2, corpus=tmp_path, shrink_budget=1.0)
    finally:
        target.close()
    summary = stats.summary()
    assert stats.examples >= 10
    assert "OFFIS_DCMTK" in target.identity.get("implementation_version_name", "")
    assert summary["findings"], "no finding against DCMTK echoscu: the fuzzer is too weak"
    assert all("--listen 127.0.0.1:" in f["repro"] for f in summary["findings"])
