"""`netdicom2 fuzz` at its edges: one-line errors, exit codes, honest accounting, interrupts.

The peers here are small acceptors on 127.0.0.1 in threads of the test: a conforming one (our
StorageSCP), one that hangs after association, one that rejects every association, one that
never answers, one that disappears. Each case says which exit status and message it expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from peers import free_port

from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main
from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.cli import exit_status
from netdicom2.fuzz.nettargets import RemoteTarget
from netdicom2.fuzz.targets import Target
from netdicom2.fuzz.wire import accept_all

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of one command line, in process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--budget", "-5s"], "-5s"),
        (["--budget", "soon"], "soon"),
        (["--artim", "-1"], "-1"),
        (["--max-examples", "0"], "0"),
        (["--shrink-budget", "-2"], "-2"),
        (["--target", "127.0.0.1:99999"], "99999"),
        (["--target", "garbage"], "garbage"),
        (["--json", "/nonexistent-dir/x.json"], "/nonexistent-dir"),
        (["--html", "/nonexistent-dir/x.html"], "/nonexistent-dir"),
        (["--fail-on", "sometimes"], "sometimes"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_value(
    extra: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fuzz", "--target", "local", "--budget", "60s", "--database", "none", *extra]
    began = time.monotonic()
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert named in err and "Traceback" not in err
    assert time.monotonic() - began < 2  # refused before any work


def test_replay_of_what_is_not_a_case_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "conformance.json"
    report.write_text(json.dumps({"target": "x", "cells": []}))
    text = tmp_path / "notes.json"
    text.write_text("not json at all")
    for path, words in (
        (tmp_path / "missing.json", "no such file"),
        (text, "not a JSON fuzz case"),
        (report, "not a fuzz corpus file"),
    ):
        code, err = _run(["fuzz", "--target", "local", "--replay", str(path)], capsys)
        assert code == 2, err
        assert str(path) in err and words in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_runtime_failures_at_the_start_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    cases = [
        (["--target", f"127.0.0.1:{port}"], 1, f"nothing listens on 127.0.0.1:{port}"),
        (["--target", "no-such-host.invalid:104"], 1, "cannot resolve host"),
        (["--target", "local", "--database", f"redis://127.0.0.1:{port}"], 1, "Redis"),
    ]
    for extra, status, words in cases:
        code, err = _run(["fuzz", "--budget", "5s", *extra], capsys)
        assert code == status, err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------------------------------- toy peers


@contextlib.contextmanager
def _acceptor(serve: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A listener on 127.0.0.1 serving each connection with ``serve`` in its own thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def _read_pdu(conn: socket.socket) -> bytes:
    """One PDU (or b"" at the end)."""
    head = b""
    while len(head) < 6:
        more = conn.recv(6 - len(head))
        if not more:
            return b""
        head += more
    body = b""
    size = int.from_bytes(head[2:6], "big")
    while len(body) < size:
        more = conn.recv(min(65536, size - len(body)))
        if not more:
            return b""
        body += more
    return head + body


def _hangs_after_association(conn: socket.socket) -> None:
    """Planted deviation: accepts, then ignores everything and never closes (no AA-4)."""
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        rq = _read_pdu(conn)
        if rq[:1] == b"\x01":
            conn.sendall(accept_all(rq)[0])
        while conn.recv(65536):
            pass
        time.sleep(5)  # the planted fault: the transport stays open after the peer's close
    conn.close()


def _rejects(conn: socket.socket) -> None:
    """Every association rejected: 2/3/2, local limit exceeded (PS3.8 Table 9-21)."""
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        if _read_pdu(conn)[:1] == b"\x01":
            conn.sendall(t.rj(2, 3, 2).encode())
        while conn.recv(65536):
            pass
    conn.close()


def test_a_conforming_peer_yields_no_finding_and_exit_0(tmp_path: Path) -> None:
    with StorageSCP("127.0.0.1", 0, artim_timeout=0.5, output_dir=tmp_path) as scp:
        for seed in (1, 2):
            target = RemoteTarget(scp.address, artim=0.5, quiet=0.05)
            target.check()
            stats = run_campaign(target, budget=2.5, seed=seed, shrink_budget=0.5)
            summary = stats.summary()
            assert stats.examples >= 5
            assert summary["findings"] == [], summary["findings"]
            assert exit_status(summary, "finding") == 0
    assert target.identity["implementation_class_uid"]  # the peer named from its AC


def test_a_planted_deviation_is_a_finding_and_fail_on_relaxes_it(tmp_path: Path) -> None:
    with _acceptor(_hangs_after_association) as address:
        target = RemoteTarget(address, response_timeout=0.3, quiet=0.05)
        stats = run_campaign(target, budget=3.0, seed=3, corpus=tmp_path, shrink_budget=0.5)
    summary = stats.summary()
    assert any(f["verdict"] == "hang" for f in summary["findings"]), summary["verdicts"]
    assert exit_status(summary, "finding") == 1
    assert exit_status(summary, "crash") == 0 and exit_status(summary, "never") == 0
    assert sum(f["count"] for f in summary["findings"]) <= summary["failing_cases"]
    assert all(Path(f["path"]).exists() for f in summary["findings"])  # each in the corpus


def test_rejections_are_counted_as_setup_failures_not_findings() -> None:
    with _acceptor(_rejects) as address:
        target = RemoteTarget(address, response_timeout=0.5, quiet=0.05)
        stats = run_campaign(target, budget=2.0, seed=4, shrink_budget=0)
    summary = stats.summary()
    assert summary["setup_failed"]["rejected"] > 0
    assert summary["verdicts"]["setup-failed"] == summary["setup_failed"]["rejected"]
    # Cases that never reached Sta6 are not judged: no finding is about Sta6 (the toy's
    # handling of a first PDU other than an RQ is crude, so Sta2 findings may exist).
    assert not [f for f in summary["findings"] if "Sta6" in f["signature"]]


def test_a_silent_peer_is_exit_3_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        port = listener.getsockname()[1]
        code, err = _run(["fuzz", "--target", f"127.0.0.1:{port}", "--budget", "30s"], capsys)
    finally:
        listener.close()
    assert code == 3, err
    assert "answered nothing" in err and "Traceback" not in err


def test_a_peer_that_goes_away_is_a_crash_exit_3() -> None:
    served = [0]

    def once(conn: socket.socket) -> None:
        served[0] += 1
        _rejects(conn)

    with _acceptor(once) as address:
        target = RemoteTarget(address, response_timeout=0.5, quiet=0.05)
        target.check()
    stats = run_campaign(target, budget=5.0, seed=5, shrink_budget=0)  # listener closed now
    summary = stats.summary()
    assert summary["stopped"] and "refuses connections" in summary["stopped"]
    assert exit_status(summary, "finding") == 3 and exit_status(summary, "crash") == 3
    assert stats.elapsed < 3


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_keeps_the_summary_and_partial_reports(
    sig: int, status: int, tmp_path: Path
) -> None:
    out, html = tmp_path / "s.json", tmp_path / "s.html"
    argv = [sys.executable, "-m", "netdicom2.cli", "fuzz", "--target", "local", "--plain"]
    argv += ["--budget", "60s", "--database", "none", "--json", str(out), "--html", str(html)]
    argv += ["--corpus", str(tmp_path / "corpus")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        assert proc.stderr is not None
        if b"examples" in proc.stderr.readline():  # the first progress line: it runs
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == status, stderr.decode()
    assert b"Traceback" not in stderr and b"hypothesis" not in stderr.lower()
    assert b"partial" in stdout and b"{'" not in stdout  # the summary, without a Python dict
    summary = json.loads(out.read_text())
    assert summary["partial"] is True and summary["examples"] > 0
    assert "partial" in html.read_text()


def _floods(conn: socket.socket) -> None:
    """After association, floods 14-byte P-DATA-TF PDUs until the fuzzer goes away."""
    conn.settimeout(5)
    tiny = t.pdata([(1, 0x00, b"\x00" * 2)]).encode()
    assert len(tiny) == 14
    batch = tiny * 4096
    with contextlib.suppress(OSError):
        rq = _read_pdu(conn)
        if rq[:1] == b"\x01":
            conn.sendall(accept_all(rq)[0])
        until = time.monotonic() + 4
        while time.monotonic() < until:
            conn.sendall(batch)
    conn.close()


def test_a_flooding_peer_leaves_a_bounded_case_and_corpus(tmp_path: Path) -> None:
    from netdicom2.fuzz.strategies import Case
    from netdicom2.fuzz.wire import MAX_KEPT_BYTES, MAX_KEPT_PDUS

    with _acceptor(_floods) as address:
        target = RemoteTarget(address, response_timeout=0.5, quiet=0.05)
        began = time.monotonic()
        result = target.run(Case("sta6", [("valid:release", t.release_rq().encode())]))
        took = time.monotonic() - began
    assert took < 4  # bounded in time although the peer never stops
    assert len(result.raw) <= MAX_KEPT_PDUS + 2
    assert sum(len(x) for x in result.raw) <= 2 * MAX_KEPT_BYTES + 1024
    assert any(x.startswith("truncated:") for x in result.raw), result.raw[-2:]
    assert "truncated(" in result.outcome


@pytest.mark.parametrize("kind", ["local", "provider", "remote"])
def test_the_budget_is_a_deadline_within_a_second(kind: str, tmp_path: Path) -> None:
    from netdicom2.fuzz.nettargets import ProviderTarget
    from netdicom2.fuzz.targets import LocalTarget

    with StorageSCP("127.0.0.1", 0, artim_timeout=0.5, output_dir=tmp_path) as scp:
        makers: dict[str, Callable[[], Target]] = {
            "local": LocalTarget,
            "provider": ProviderTarget,
            "remote": lambda: RemoteTarget(scp.address, artim=0.5),
        }
        target = makers[kind]()
        began = time.monotonic()
        stats = run_campaign(target, budget=2.5, corpus=tmp_path / "c", shrink_budget=1.0)
        took = time.monotonic() - began
        target.close()
    assert 2.5 <= took <= 3.5, took
    assert stats.examples > 0
