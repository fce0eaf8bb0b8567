"""The acceptor's association cycle stage by stage, in one process: median µs per stage.

``python scp_stages.py [CYCLES]`` drives one `netdicom2 scp` channel (StorageSCP, not
serving: this script plays its loop) through accept (Evt5 → AE-5), A-ASSOCIATE-RQ → AC (Evt6
→ AE-6, the user's AC, Evt7 → AE-7), C-ECHO (Evt10 → DT-2, RSP Evt9 → DT-1), A-RELEASE-RQ → RP
(Evt12 → AR-2, Evt14 → AR-4) and the peer's close (Evt17 → AR-5), with the recorded requestor
bytes of bare.py over loopback. Each stage is timed from the moment its bytes are readable
to the end of the SCP's work (its answer written), so the figures are the SCP's own cost per
stage, system calls included, without the wake-up of a sleeping process. Compare code
versions by running this alternately; the machine's speed drifts between runs.

``--idle-us N`` sleeps N µs before each stage, as the real server waits for its peer between
PDUs: on a virtual machine that lets the CPU halt, the same work then runs markedly slower
(cold caches after the halt), which is the condition a served association meets.
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import sys
import time

from harness import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import bare  # after ROOT is on the path: it imports netdicom2

from netdicom2.app_scp import StorageSCP

STAGES = ("accept", "rq", "pdata", "release", "eof")


def run(cycles: int, warmup: int = 100, idle: float = 0.0) -> dict[str, float]:
    """Median µs of each stage (and their total) over `cycles` cycles; `idle` s before each."""
    requests, _ = bare.recorded_exchange()
    scp = StorageSCP(port=0)  # the SCP's listener is not used: this script accepts
    buf = bytearray(1 << 16)
    samples: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    clock = time.perf_counter
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for index in range(cycles + warmup):
            client = bare.nodelay(socket.create_connection(listener.getsockname()[:2]))
            sock, _ = listener.accept()
            if idle:
                time.sleep(idle)
            start = clock()
            scp._make_room()  # as DULServer._accept does after accept()
            scp._serve(sock, time.monotonic())
            times = [clock() - start]
            channel = scp._channels[sock.fileno()]
            for request in [*requests, None]:
                if request is None:
                    client.close()  # the requestor closes after the A-RELEASE-RP (AR-5)
                else:
                    client.sendall(request)
                if idle:
                    time.sleep(idle)  # the CPU may halt, as while a server waits for its peer
                select.select([sock], [], [])
                start = clock()
                channel.read()
                scp.settle(channel)
                times.append(clock() - start)
                if request is not None:
                    bare.read_pdu(client, buf)
            if not channel.finished:
                raise RuntimeError(f"the association did not end in Sta1: {channel.state}")
            if index >= warmup:
                for name, seconds in zip(STAGES, times, strict=True):
                    samples[name].append(seconds * 1e6)
                samples["total"].append(sum(times) * 1e6)
    scp.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str]) -> int:
    """Print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cycles", type=int, nargs="?", default=3000)
    parser.add_argument("--idle-us", type=float, default=0.0, help="sleep before each stage")
    args = parser.parse_args(argv)
    for name, micros in run(args.cycles, idle=args.idle_us / 1e6).items():
        print(f"{name:8s} {micros:7.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
