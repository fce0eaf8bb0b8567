"""Real DICOM peers for interoperability tests: DCMTK, pynetdicom and Orthanc on loopback.

Servers that bind every interface (DCMTK `storescp`, Orthanc) run in a private network
namespace (`unshare -n`, loopback up), so nothing outside this machine can reach them; tests
reach them through sockets created inside that namespace (`setns` in a helper thread) or by
running the client under `nsenter --net`. pynetdicom's SCP binds 127.0.0.1 itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from netdicom2.conformance.tools import system_binary

CLONE_NEWNET = 0x40000000
Connector = Callable[[tuple[str, int]], socket.socket]


def require(binary: str) -> str:
    """The path of `binary`; fail under CI (it must be installed there), skip elsewhere."""
    path = system_binary(binary)  # DCMTK's, not pynetdicom's scripts of the same name
    if path is None:
        message = f"{binary} is not installed (Debian: see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Bounded wait for an external process to become ready (not used between our threads)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class NetnsServer:
    """A server process alone in a network namespace; `connect` reaches it from the test."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def netns(self) -> str:
        """The path of the namespace, for `nsenter --net=`."""
        return f"/proc/{self.process.pid}/ns/net"

    def connect(self, address: tuple[str, int]) -> socket.socket:
        """A TCP connection made inside the server's namespace (setns in a helper thread)."""
        result: list[socket.socket | BaseException] = []

        def worker() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(self.netns, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result.append(socket.create_connection(address, timeout=5))
            except BaseException as exc:  # handed to the caller's thread
                result.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        outcome = result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        outcome.settimeout(None)
        return outcome

    def run_client(
        self, argv: Sequence[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a client program inside the namespace."""
        return subprocess.run(
            ["nsenter", f"--net={self.netns}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def netns_server(argv: Sequence[str], port: int, log_path: Path) -> Iterator[NetnsServer]:
    """Start `argv` in a private network namespace with loopback up; wait until it listens."""
    require("unshare")
    require("ip")
    script = 'ip link set lo up && exec "$@"'
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", script, "sh", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = NetnsServer(process, port, log_path)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{argv[0]} exited: {server.log()}")
            try:
                server.connect(("127.0.0.1", port)).close()
            except OSError:
                return False
            return True

        wait_until(listening, 20, f"{argv[0]} to listen on {port}")
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def dcmtk_storescp(tmp: Path, *, extra: Sequence[str] = ()) -> Iterator[NetnsServer]:
    """DCMTK `storescp` (data discarded with --ignore) alone in a namespace."""
    binary = require("storescp")
    port = 11112
    argv = [binary, "--ignore", "-aet", "STORESCP", *extra, str(port)]
    with netns_server(argv, port, tmp / "storescp.log") as server:
        yield server


@contextlib.contextmanager
def orthanc(
    tmp: Path, *, extra_config: Mapping[str, object] | None = None
) -> Iterator[NetnsServer]:
    """Orthanc as this test's own process, its own JSON config, alone in a namespace.

    ``extra_config`` entries are added to (or replace) the configuration, e.g.
    ``{"DicomScpTimeout": 2}``.
    """
    binary = require("Orthanc")
    port = 4242
    storage = tmp / "orthanc-db"
    config = {
        "Name": "netdicom2-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpServerEnabled": False,
        "RemoteAccessAllowed": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "Plugins": [],
        **(extra_config or {}),
    }
    config_path = tmp / "orthanc.json"
    config_path.write_text(json.dumps(config))
    with netns_server([binary, str(config_path)], port, tmp / "orthanc.log") as server:
        yield server


PYNETDICOM_SCP = """
import logging, sys
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
ae = AE(ae_title="PYNETDICOM")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.maximum_associations = 50
# Optional timeouts (seconds) from argv[2:]: ACSE (pynetdicom's ARTIM too), DIMSE, network.
for name, value in zip(("acse_timeout", "dimse_timeout", "network_timeout"), sys.argv[2:]):
    if value != "-":
        setattr(ae, name, float(value))
def on_store(event):
    return 0x0000
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True,
                evt_handlers=[(evt.EVT_C_STORE, on_store)])
"""


@contextlib.contextmanager
def pynetdicom_scp(
    tmp: Path,
    *,
    acse_timeout: float | None = None,
    dimse_timeout: float | None = None,
    network_timeout: float | None = None,
) -> Iterator[NetnsServer]:
    """pynetdicom's SCP (Verification + all storage) bound to 127.0.0.1, in a namespace too.

    The timeouts, when given, replace pynetdicom's defaults (ACSE 30 s, DIMSE 30 s, network
    60 s); pynetdicom also uses the ACSE timeout as its ARTIM.
    """
    port = 11113
    timeouts = (acse_timeout, dimse_timeout, network_timeout)
    extra = [("-" if t is None else str(t)) for t in timeouts] if any(timeouts) else []
    argv = [sys.executable, "-c", PYNETDICOM_SCP, str(port), *extra]
    with netns_server(argv, port, tmp / "pynetdicom.log") as server:
        yield server
