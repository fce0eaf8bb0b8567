"""`python -m netdicom2 scp --port 0 ...` of this checkout as a subprocess, with its port.

The SCP's first line names the address it listens on ("netdicom2 scp listening on HOST:PORT");
the tests that run it as a process (signals, kill -9, file descriptors) start it here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start_scp(
    *args: str, preexec_fn: Callable[[], object] | None = None
) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """Start the SCP on a free port of 127.0.0.1; the process and the (host, port) it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdicom2", "scp", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"netdicom2 scp did not start: {line!r} {err}")
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return proc, (host, int(port))
