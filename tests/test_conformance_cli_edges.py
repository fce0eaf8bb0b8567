"""`netdicom2 conformance` edges: one line and the right exit status, checked before any work.

Usage errors exit 2, runtime failures (nothing listens, unknown host, port in use) exit 1,
Ctrl-C/SIGTERM exit 130/143 after the summary so far and reports marked partial.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netdicom2.cli import main
from netdicom2.conformance.planted import PlantedAcceptor

ROOT = Path(__file__).resolve().parent.parent
# What the `netdicom2` console script runs (not `python -m netdicom2.cli`, under which the
# module's exception classes are a second copy of the ones the subcommands raise).
CONSOLE_SCRIPT = "import sys; from netdicom2.cli import main; sys.exit(main())"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of `netdicom2 conformance ARGV` (argparse errors included)."""
    try:
        status = main(["conformance", *argv])
    except SystemExit as exc:  # argparse: usage line + one error line, exit 2
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "status", "needle"),
    [
        (["--target", "garbage"], 2, "'garbage'"),
        (["--target", "127.0.0.1:99999"], 2, "99999"),
        (["--target", "no-such-host.invalid:104"], 1, "cannot resolve host 'no-such-host.invalid'"),
        (["--listen", "99999"], 2, "99999"),
        (["--listen", "127.0.0.1:12345", "--spawn", "/nonexistent/binary {port}"], 2, "binary"),
        (["--spawn", "true"], 2, "--spawn needs --listen"),
        (["--called-ae", "A" * 17], 2, "17 characters"),
        (["--calling-ae", "B" * 20], 2, "20 characters"),
        (["--cell", "Sta99-Evt1"], 2, "'Sta99-Evt1'"),
        (["--cell", "sta6-evt10"], 2, "'sta6-evt10'"),
        (["--jobs", "-1"], 2, "-1"),
        (["--artim", "-1"], 2, "-1"),
        (["--sta13-timer", "0"], 2, "0.0"),
        (["--max-wait", "nan"], 2, "nan"),
        (["--json", "/nonexistent-folder/r.json"], 2, "/nonexistent-folder"),
        (["--html", "/nonexistent-folder/r.html"], 2, "/nonexistent-folder"),
    ],
)
def test_a_bad_value_is_one_line_and_its_status(
    argv: list[str], status: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, err = _run(argv, capsys)
    assert got == status, err
    assert "Traceback" not in err and needle in err, err
    assert len([line for line in err.splitlines() if not line.startswith("usage:")]) == 1, err


def test_a_closed_port_says_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    status, err = _run(["--target", f"127.0.0.1:{port}"], capsys)
    assert status == 1 and err.strip() == (
        f"netdicom2 conformance: nothing listens on 127.0.0.1:{port} (connection refused)"
    )


def test_a_listen_port_in_use_is_a_runtime_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        status, err = _run(["--listen", str(port)], capsys)
    assert status == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_nothing_runs_when_a_report_path_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "r.json"
    status, err = _run(["--json", str(good), "--junit", str(tmp_path / "no" / "r.xml")], capsys)
    assert status == 2 and not good.exists(), err


def test_listen_defaults_to_loopback() -> None:
    from netdicom2.conformance.cli import listen_address

    assert listen_address("11112") == ("127.0.0.1", 11112)
    assert listen_address("0.0.0.0:11112") == ("0.0.0.0", 11112)


def _start(argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CONSOLE_SCRIPT, "conformance", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_matrix_writes_partial_reports(tmp_path: Path) -> None:
    # A peer that never closes in Sta13: each abort cell waits for the ceiling (3 s).
    out = tmp_path / "r.json"
    cells = ["Sta2-Evt3", "Sta2-Evt4", "Sta2-Evt10", "Sta6-Evt3", "Sta6-Evt4", "Sta6-Evt6"]
    with PlantedAcceptor(["never-close-sta13"]) as peer:
        host, port = peer.address
        argv = ["--target", f"{host}:{port}", "--artim", "0.5", "--max-wait", "3", "-v"]
        argv += [f"--cell={c}" for c in cells]
        process = _start([*argv, "--json", str(out), "--markdown", str(tmp_path / "r.md")])
        assert process.stderr is not None
        first = process.stderr.readline()  # -v: one line per finished cell
        assert first.startswith("Sta"), first
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stderr.strip().endswith("interrupted (SIGINT)") and "Traceback" not in stderr
    assert "PARTIAL" in stdout
    report = json.loads(out.read_text())
    assert report["header"]["partial"].startswith("interrupted")
    assert 0 < len(report["cells"]) < len(cells)
    assert "interrupted" in (tmp_path / "r.md").read_text()


@pytest.mark.timeout(60)
def test_sigterm_while_listening_exits_143_with_a_partial_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    process = _start(["--listen", str(_closed_port()), "--json", str(out)])
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1.5)  # waiting for a requestor that never comes
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert json.loads(out.read_text())["header"]["partial"]
