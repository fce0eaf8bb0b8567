"""Shared plumbing for the benchmarks: private loopback, server processes, /proc figures, tables.

Every benchmark process runs inside one private network namespace (``unshare -n``, loopback
up), so servers and clients share a loopback nobody else can reach and nothing leaves the
machine. Server processes are started here and measured from /proc (CPU, peak RSS).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NETNS_ENV = "NETDICOM2_BENCH_NETNS"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def private_loopback(argv: Sequence[str]) -> None:
    """Re-execute this script in a new network namespace with only loopback up (root only)."""
    if os.environ.get(NETNS_ENV):
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("note: not root or no unshare: running on the host loopback", file=sys.stderr)
        os.environ[NETNS_ENV] = "host"
        return
    os.environ[NETNS_ENV] = "private"
    script = 'ip link set lo up && exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, sys.executable, *argv])


def python_env() -> dict[str, str]:
    """Environment for child Python processes: the repository importable, no bytecode noise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a running process, KiB (/proc/PID/status)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class Server:
    """A server process listening on 127.0.0.1:port, started and stopped by the harness."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 20.0) -> Server:
        """Start and wait (bounded, with backoff) until the port accepts connections."""
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout} s")
            threading.Event().wait(delay)  # an external process starting: bounded backoff
            delay = min(delay * 2, 0.1)
        return self

    @property
    def pid(self) -> int:
        """The server's process ID."""
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        """What the server wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; reap."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Start a server for the duration of a with block."""
    try:
        yield server.start()
    finally:
        server.stop()


def run_child(
    argv: Sequence[str], *, env: dict[str, str] | None = None
) -> tuple[str, float, float]:
    """Run a process to completion: (stdout, wall seconds, CPU seconds from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return out.decode(), wall, usage.ru_utime + usage.ru_stime


def run_json(argv: Sequence[str], *, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run a benchmark child that prints one JSON object on its last line."""
    out, _, _ = run_child(argv, env=env)
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (inclusive method; the maximum for fewer than 100 values)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def spread(values: Sequence[float]) -> float:
    """Relative spread of repeated medians: (max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values) if values else 0.0


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table, with rich when it is installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        return
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)
