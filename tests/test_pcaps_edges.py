"""`replay` and `record` at their edges: one line, the right exit status, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdicom2.cli import main
from netdicom2.pcaps.corpus import corpus_entries
from tests.peers import free_port

BY_NAME = {Path(e["file"]).stem: str(e["path"]) for e in corpus_entries()}
ECHO = BY_NAME["dcmtk_echoscu_storescp_echo"]
ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of the console script, argparse exits included."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--against", "127.0.0.1:99999"], "99999"),
        (["--against", "garbage"], "garbage"),
        (["--against", "no-such-host.invalid:104"], "no-such-host.invalid"),
        (["--timeout", "-1"], "-1"),
        (["--port", "99999"], "99999"),
        (["--as", "scp"], "--as needs --against local"),
        (["--as", "scu", "--against", "127.0.0.1:104"], "--as needs --against local"),
        (["--max-packets", "-1"], "-1"),
        (["--time-limit", "nan"], "nan"),
        (["--json", "/no/such/folder/r.json"], "/no/such/folder"),
        (["--html", "/no/such/folder/r.html"], "/no/such/folder"),
    ],
)
def test_replay_usage_errors(
    extra: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["replay", ECHO, *extra], capsys)
    assert status == 2 and named in err, err
    assert "round-trip" not in err  # refused before any work


def test_missing_capture_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(["replay", ECHO, str(tmp_path / "gone.pcap")], capsys)
    assert status == 2 and "gone.pcap does not exist" in err and out == ""


def test_peer_down_is_its_own_outcome(
    closed_port: int, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    target = f"127.0.0.1:{closed_port}"
    status, out, _ = run(
        [
            "replay",
            ECHO,
            BY_NAME["orthanc_echoscu_echo"],
            "--against",
            target,
            "--json",
            str(report),
        ],
        capsys,
    )
    assert status == 3
    down = [line for line in out.splitlines() if "peer down" in line]
    assert len(down) == 2 and all(f"nothing listens on {target}" in line for line in down)
    assert "DIFFERENT" not in out
    data = json.loads(report.read_text())
    assert [c["verdict"] for c in data["captures"]] == ["UNREACHABLE", "UNREACHABLE"]
    assert data["exit_status"] == 3 and not data["partial"]


def test_quiet_prints_only_summaries(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["replay", BY_NAME["ugly_unknown_pdu_type_sta6"], "-q"], capsys)
    assert status == 1 and len(out.splitlines()) == 1 and "-> FAIL" in out


def test_skipped_replays_are_not_an_unqualified_ok(capsys: pytest.CaptureFixture[str]) -> None:
    path = BY_NAME["ugly_silent_connection"]
    status, out, _ = run(["replay", path, "-q", "--against", "local"], capsys)
    assert status == 0 and "skipped ->" in out and out.rstrip().endswith("skipped"), out


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A listener that accepts (in the backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_replay_writes_partial_reports(
    silent_peer: int, signum: int, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    command = [sys.executable, "-m", "netdicom2", "replay", ECHO, BY_NAME["orthanc_echoscu_echo"]]
    command += ["--against", f"127.0.0.1:{silent_peer}", "--timeout", "30", "--json", str(report)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            assert process.stdout.readline().startswith("== ")  # the replay has started
            process.send_signal(signum)
            assert process.wait(timeout=20) == 128 + signum
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
    assert "Traceback" not in err and "interrupted: 0 of 2 captures done" in err, err
    data = json.loads(report.read_text())
    assert data["partial"] and data["captures"][0]["verdict"] == "INTERRUPTED"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--listen", "99999", "--forward", "127.0.0.1:104"], "99999"),
        (["--listen", "0", "--forward", "garbage"], "garbage"),
        (["--listen", "0", "--forward", "no-such-host.invalid:104"], "cannot resolve"),
        (["--listen", "0", "--forward", "127.0.0.1:104", "--max-connections", "0"], "0"),
    ],
)
def test_record_usage_errors(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "o.pcap"
    status, _, err = run(["record", *args, "--out", str(out)], capsys)
    assert status == 2 and named in err and not out.exists(), err


def test_record_out_in_a_missing_folder(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        ["record", "--listen", "0", "--forward", "127.0.0.1:104", "--out", "/no/such/o.pcap"],
        capsys,
    )
    assert status == 2 and "/no/such" in err


def test_record_listen_in_use_leaves_no_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "o.pcap"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status, _, err = run(
            ["record", "--listen", str(port), "--forward", "127.0.0.1:104", "--out", str(out)],
            capsys,
        )
    assert status == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    assert not out.exists()


def test_record_forwarding_to_a_closed_port_says_so(closed_port: int, tmp_path: Path) -> None:
    out = tmp_path / "o.pcap"
    command = [sys.executable, "-m", "netdicom2", "record", "--listen", "127.0.0.1:0"]
    command += ["--forward", f"127.0.0.1:{closed_port}", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            first = process.stderr.readline()
            assert f"nothing listens on 127.0.0.1:{closed_port}" in first, first
            port = int(process.stdout.readline().split()[2].split(":")[1].rstrip(","))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    while client.recv(100):  # bounded by the proxy's reset
                        pass
            line = process.stderr.readline()
            assert f"cannot connect to 127.0.0.1:{closed_port}" in line and "reset" in line
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 143
        finally:
            if process.poll() is None:
                process.kill()


def test_extract_from_recorded_peers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pydicom = pytest.importorskip("pydicom")
    names = [
        "dcmtk_storescu_storescp_pdu4k",
        "orthanc_storescu_store",
        "dcmtk_echoscu_storescp_echo",
    ]
    status, out, _ = run(
        ["replay", *[BY_NAME[n] for n in names], "-q", "--extract", str(tmp_path)], capsys
    )
    assert status == 0 and out.count("extracted 1 data sets") == 2, out
    assert "extracted 0 data sets" in out  # the echo capture stores nothing
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and files[0] != files[1]  # same UID twice: unique names
    for path in files:
        data = pydicom.dcmread(path)
        assert data.SOPInstanceUID == data.file_meta.MediaStorageSOPInstanceUID
        assert data.file_meta.TransferSyntaxUID.startswith("1.2.840.10008.1.2")


def test_report_without_the_captures_says_no_ladder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "r.json"
    capture = tmp_path / "echo.pcap"
    capture.write_bytes(Path(ECHO).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "echo.pcap", "-q", "--json", str(report)]) == 0
    monkeypatch.chdir(ROOT)  # the relative capture path no longer resolves
    page = tmp_path / "r.html"
    status, out, _ = run(["report", str(report), "--html", str(page)], capsys)
    assert status == 0 and "without the ladder of 1 capture(s)" in out and "--base" in out
    assert "No ladder" in page.read_text()
    status, out, _ = run(
        ["report", str(report), "--html", str(page), "--base", str(tmp_path)], capsys
    )
    assert status == 0 and out.strip() == f"netdicom2 report: wrote {page}"
