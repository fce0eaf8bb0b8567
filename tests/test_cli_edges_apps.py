"""`echo`, `store` and `scp` as a new user meets them: every mistake is one line, no traceback.

Each case runs `python -m netdicom2 ...` as a subprocess (this tree on PYTHONPATH) and checks
the exit status (2: a value on the command line that cannot work, 1: a runtime failure, 130 /
143: SIGINT / SIGTERM) and that the message names the bad value.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dicomfiles import write_part10
from tests.scp_process import start_scp

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 20.0
LONG_AE = "ABCDEFGHIJKLMNOPQ"  # 17 characters (PS3.5 AE: at most 16)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdicom2", *argv],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=ENV,
    )


def _check(result: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """The exit status, no traceback, and a last stderr line naming the problem."""
    err = result.stderr
    assert "Traceback" not in err, err
    assert result.returncode == status, (result.returncode, err)
    last = (err.strip().splitlines() or [""])[-1]
    for word in words:
        assert word in last, (word, err)
    return last


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_acceptor() -> Iterator[socket.socket]:
    """A listener that never answers; `_wait_for_rq` tells when a requestor has sent its RQ."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def _wait_for_rq(listener: socket.socket) -> socket.socket:
    """Accept the requestor and read the start of its A-ASSOCIATE-RQ: it now waits for us."""
    listener.settimeout(WAIT)
    conn, _ = listener.accept()
    conn.settimeout(WAIT)
    assert conn.recv(1) == b"\x01"
    return conn


@pytest.fixture
def dicom_file(tmp_path: Path) -> Path:
    return write_part10(tmp_path / "a.dcm", "1.2.826.0.1.3680043.9.3811.19.1", 1000)


# ------------------------------------------------------------------------------ echo / store


def test_echo_unknown_host_is_one_line() -> None:
    _check(_run("echo", "nohost.invalid", "104"), 1, "cannot resolve host", "nohost.invalid")


def test_echo_closed_port_says_nothing_listens(closed_port: int) -> None:
    last = _check(_run("echo", "127.0.0.1", str(closed_port)), 1)
    assert (
        last == f"netdicom2 echo: nothing listens on 127.0.0.1:{closed_port} (connection refused)"
    )


@pytest.mark.parametrize("option", ["--called-ae", "--calling-ae"])
def test_echo_ae_title_over_16_characters_is_a_usage_error(option: str) -> None:
    _check(_run("echo", "127.0.0.1", "104", option, LONG_AE), 2, LONG_AE, "16")


def test_echo_port_out_of_range_is_a_usage_error() -> None:
    _check(_run("echo", "127.0.0.1", "99999"), 2, "99999")


def test_store_names_the_file_that_is_not_dicom(dicom_file: Path, tmp_path: Path) -> None:
    text = tmp_path / "notdicom.txt"
    text.write_text("hello\n")
    _check(_run("store", "127.0.0.1", "104", str(dicom_file), str(text)), 2, str(text), "DICOM")


def test_store_names_a_missing_file(dicom_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.dcm"
    _check(_run("store", "127.0.0.1", "104", str(dicom_file), str(missing)), 2, str(missing))


def test_store_unknown_host_and_closed_port(dicom_file: Path, closed_port: int) -> None:
    _check(_run("store", "nohost.invalid", "104", str(dicom_file)), 1, "nohost.invalid")
    _check(
        _run("store", "127.0.0.1", str(closed_port), str(dicom_file)),
        1,
        f"nothing listens on 127.0.0.1:{closed_port}",
    )


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_echo_interrupted_is_one_line(
    silent_acceptor: socket.socket, signum: int, status: int
) -> None:
    port = str(silent_acceptor.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdicom2", "echo", "127.0.0.1", port],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    conn = _wait_for_rq(silent_acceptor)  # the association waits for its answer
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=WAIT)
    conn.close()
    assert proc.returncode == status, err
    assert err.strip().splitlines() == [
        f"netdicom2 echo: interrupted ({signal.Signals(signum).name})"
    ]


# ------------------------------------------------------------------------------------ scp


def test_scp_port_in_use_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        _check(_run("scp", "--port", port), 1, port, "in use")


@pytest.mark.parametrize(
    ("host", "words"),
    [("192.0.2.1", "not an address of this machine"), ("nohost.invalid", "cannot resolve")],
)
def test_scp_host_that_cannot_be_bound_is_a_usage_error(host: str, words: str) -> None:
    _check(_run("scp", "--port", "0", "--host", host), 2, host, words)


def test_scp_output_dir_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "out"
    _check(_run("scp", "--port", "0", "--output-dir", str(target)), 2, str(target))


@pytest.mark.parametrize("target", ["/proc/netdicom2-out", "/proc"])
def test_scp_output_dir_under_proc(target: str) -> None:
    _check(_run("scp", "--port", "0", "--output-dir", target), 2, target)


def test_scp_ae_title_over_16_is_refused_at_start_up() -> None:
    _check(_run("scp", "--port", "0", "--ae-title", LONG_AE), 2, LONG_AE)


@pytest.mark.parametrize("value", ["12Q", "-1", "1.5G"])
def test_scp_max_dataset_size_garbage_is_a_usage_error(value: str) -> None:
    _check(_run("scp", "--port", "0", "--max-dataset-size", value), 2, value)


def _scp(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc, (host, port) = start_scp(*args)
    assert host == "127.0.0.1"  # the default --host
    return proc, port


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_scp_exits_130_on_ctrl_c_and_143_on_sigterm(signum: int, status: int) -> None:
    proc, _ = _scp()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"netdicom2 scp: interrupted ({signal.Signals(signum).name})"
    )
    assert "associations" in out  # the summary so far


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_scp_verbose_logs_one_line_per_association_and_store(
    verbosity: str, dicom_file: Path, tmp_path: Path
) -> None:
    proc, port = _scp(verbosity, "--output-dir", str(tmp_path / "out"))
    try:
        _check(_run("echo", "127.0.0.1", str(port)), 0)
        _check(_run("store", "127.0.0.1", str(port), str(dicom_file)), 0)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130
    accepted = [line for line in err.splitlines() if "association" in line and "accepted" in line]
    ended = [line for line in err.splitlines() if "released after" in line]
    stores = [
        line for line in err.splitlines() if "C-STORE 1.2.826.0.1.3680043.9.3811.19.1" in line
    ]
    assert len(accepted) == 2 and len(ended) == 2 and len(stores) == 1, err
    assert "status 0000" in stores[0]
    transitions = [line for line in err.splitlines() if "+ Evt" in line]
    assert bool(transitions) == (verbosity == "-vv"), err


def test_store_interrupted_is_one_line(silent_acceptor: socket.socket, dicom_file: Path) -> None:
    argv = ["store", "127.0.0.1", str(silent_acceptor.getsockname()[1]), str(dicom_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdicom2", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    conn = _wait_for_rq(silent_acceptor)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=WAIT)
    conn.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["netdicom2 store: interrupted (SIGINT)"]


_FAILING_LOOP = """
import sys
from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main

def fail(self, now):
    raise MemoryError("no room for one more connection")

StorageSCP._accept = fail  # the loop fails at the first connection
sys.exit(main(["scp", "--port", "0"]))
"""


def test_scp_whose_loop_fails_exits_1_instead_of_looking_alive() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _FAILING_LOOP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.rsplit(":", 1)[1])
    with contextlib.suppress(OSError):  # reset when the failing loop closes the listener first
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, err
    assert "MemoryError" in err and "no room for one more connection" in err
    assert "Traceback" not in err
    with pytest.raises(ConnectionRefusedError):  # and nothing is left listening
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
