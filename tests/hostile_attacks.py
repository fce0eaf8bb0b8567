"""Attacks on `python -m netdicom2 scp`, measured from outside: the figures of docs/reliability.md.

    python -m tests.hostile_attacks header-flood --connections 1000
    python -m tests.hostile_attacks header-flood --connections 200 --send-body
    python -m tests.hostile_attacks header-flood --connections 500 --established
    python -m tests.hostile_attacks starve --requesters 32

`header-flood`: each connection sends a PDU header announcing an A-ASSOCIATE-RQ of 4 MiB - 6
(or --length) and two single bytes (or, with --send-body, the whole announced body); the SCP's
RSS is read from /proc before, at the peak, and after ARTIM closed the connections.
`starve`: 32 requesters loop sending A-ASSOCIATE-RQs of about 4 MiB (80,000 presentation
contexts, all ID 1) while one requestor measures full C-ECHO associations for 10 s.
Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from netdicom2.acse import build_rq
from netdicom2.app_scu import echo
from netdicom2.items import PresentationContextItemRQ
from netdicom2.pdu import AAssociateRqPDU
from tests.hostile import association_rq, read_pdu
from tests.probes import proc_stats

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"


@contextlib.contextmanager
def scp(*extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m netdicom2 scp` on a free loopback port, terminated on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdicom2", "scp", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening on ..."
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def mib(kib: int) -> float:
    """KiB as MiB, one decimal."""
    return round(kib / 1024, 1)


def header_flood(
    connections: int, length: int, send_body: bool, artim: float, established: bool = False
) -> dict[str, object]:
    """The 8-bytes-buy-4-MiB attack; RSS before, at the peak, after ARTIM (or the idle timeout).

    ``established``: each connection first associates (Verification), then announces a
    P-DATA-TF of ``length`` to an SCP whose maximum length is 4 MiB (`--max-pdu 4194304`).
    """
    extra = ["--max-associations", str(connections + 10), "--idle-timeout", str(artim)]
    if established:
        extra += ["--max-pdu", str(4 * 1024 * 1024)]
    with scp("--artim", str(artim), "--max-pending", str(connections + 10), *extra) as (
        proc,
        port,
    ):
        idle = proc_stats(proc.pid)
        socks = []
        rejected = 0
        start = time.monotonic()
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if established:
                sock.sendall(association_rq())
                answer = read_pdu(sock)
                if answer[0] != 0x02:  # e.g. A-ASSOCIATE-RJ 2/3/2 (max_per_address)
                    rejected += 1
                    sock.close()
                    continue
            sock.sendall(struct.pack(">BBI", 0x04 if established else 0x01, 0, length))
            socks.append(sock)
        for byte in (b"\x00", b"\x01"):  # two single bytes, each read on its own
            time.sleep(0.3)
            for sock in socks:
                if send_body:
                    with contextlib.suppress(OSError):
                        sock.sendall(bytes(length // 2 + (length & 1 if byte == b"\x01" else 0)))
                else:
                    sock.send(byte)
        sent = time.monotonic() - start
        time.sleep(1.0)  # let the SCP read what was sent (measurement script, not library)
        peak = proc_stats(proc.pid)
        time.sleep(artim + 2.0)  # ARTIM closes them (Sta2 or Sta13)
        for sock in socks:
            sock.close()
        time.sleep(1.0)
        after = proc_stats(proc.pid)
        alive = proc.poll() is None
    return {
        "connections": connections,
        "associated first": established,
        "rejected": rejected,
        "announced": length,
        "bytes sent each": length + 6 if send_body else 8,
        "send seconds": round(sent, 2),
        "rss idle MiB": mib(idle.rss_kib),
        "rss 1 s after sending MiB": mib(peak.rss_kib),
        "rss peak MiB": mib(after.hwm_kib),
        "rss after ARTIM MiB": mib(after.rss_kib),
        "scp alive": alive,
    }


def big_request(contexts: int = 80_655) -> bytes:
    """An A-ASSOCIATE-RQ of ~4 MiB: `contexts` presentation contexts, all ID 1."""
    rq = build_rq("ANY-SCP", "STARVER", [(VERIFICATION, [IMPLICIT])])
    app, _, info = rq.variable_items
    pcs = [PresentationContextItemRQ(1, VERIFICATION, [IMPLICIT])] * contexts
    return AAssociateRqPDU("ANY-SCP", "STARVER", [app, *pcs, info]).encode()


def starve(requesters: int, seconds: float) -> dict[str, object]:
    """Looping 4 MiB requesters; one echo association at a time, latency of each."""
    data = big_request()
    stop = threading.Event()
    sent = [0]

    def requester(port: int) -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(data)
                    sent[0] += 1
                    sock.recv(65536)  # the answer (AC, RJ or A-ABORT) or EOF
            except OSError:
                pass

    with scp() as (proc, port):
        threads = [
            threading.Thread(target=requester, args=(port,), daemon=True) for _ in range(requesters)
        ]
        for thread in threads:
            thread.start()
        latencies: list[float] = []
        failures = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                status = echo(("127.0.0.1", port), timeout=10.0)
                if status == 0:
                    latencies.append(time.monotonic() - start)
                else:
                    failures += 1
            except Exception:
                failures += 1
        stop.set()
        for thread in threads:
            thread.join(5)
        peak = proc_stats(proc.pid)
    latencies.sort()
    return {
        "requesters": requesters,
        "request bytes": len(data),
        "requests sent": sent[0],
        "echoes ok": len(latencies),
        "echoes failed": failures,
        "echo p50 ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "echo max ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "scp peak rss MiB": mib(peak.hwm_kib),
    }


def main() -> None:
    """Run one attack and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="attack", required=True)
    flood = sub.add_parser("header-flood")
    flood.add_argument("--connections", type=int, default=1000)
    flood.add_argument("--length", type=int, default=4 * 1024 * 1024 - 6)
    flood.add_argument("--send-body", action="store_true")
    flood.add_argument("--artim", type=float, default=3.0)
    flood.add_argument("--established", action="store_true")
    starving = sub.add_parser("starve")
    starving.add_argument("--requesters", type=int, default=32)
    starving.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", os.getcwd())
    if args.attack == "header-flood":
        figures = header_flood(
            args.connections, args.length, args.send_body, args.artim, args.established
        )
    else:
        figures = starve(args.requesters, args.seconds)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
