"""Reliability figures side by side: netdicom2's StorageSCP, pynetdicom's SCP, DCMTK storescp.

The same probes (tests/probes.py, tests/hostile.py, conformance/faults.py) run against each SCP,
each alone in a private network namespace on its own loopback (tests/peers.py), in one run:

* full association latency (A-ASSOCIATE, C-ECHO, C-STORE 300 KB, A-RELEASE);
* 200 clients at once, then 1000 one after the other (server threads, descriptors, RSS);
* 510 silent sockets, then one good association (does silence deny service?); pynetdicom is
  also shown with its default cap of 10 associations;
* 100 connections announcing a 4 GB PDU; a client that pumps C-ECHO-RQs and never reads;
* a hostile crowd (100 silent, 100 x 4 GB, 100 truncated RQs, 100 never reading, 100 writing one
  byte per 100 ms) beside two loops of good associations for 15 s;
* a reset sweep through the fault proxy: the connection is cut (RST) at every offset of the
  first 1 KB of the requestor's stream and every 4099th after it, and at every offset of the
  acceptor's stream; every 10th cut is followed by a direct association (still serving?).

Timeouts are made comparable: ARTIM / ACSE timeout 5 s, idle / DIMSE / network timeout 10 s.
Concurrency caps are each one's default (netdicom2 500, DCMTK storescp one association at a
time), except pynetdicom's, raised from 10 to 500 to match ours (its default is probed apart).

Run as root (network namespaces): ``python benchmarks/reliability.py [--quick] [--full]
[--only netdicom2,pynetdicom,dcmtk] [--json FILE]``. ``--full`` adds the complete reset sweep of
netdicom2: every offset of both streams, RST and FIN (about 600 000 associations, ~40 min).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdicom2.conformance.faults import Drop, Fault, FaultProxy, sweep_offsets  # noqa: E402
from tests.hostile import Hostile, HostileCrowd  # noqa: E402
from tests.peers import NetnsServer, netns_server, require  # noqa: E402
from tests.probes import (  # noqa: E402
    Target,
    concurrent,
    dataset,
    full_association,
    hostile_mix,
    percentile,
    proc_stats,
    reset_peak_rss,
    sequential,
    settle,
    starvation,
)

ARTIM, IDLE = 5.0, 10.0
PORT = 11112
PYNETDICOM_SCP = """
import logging, sys
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
port, cap = int(sys.argv[1]), int(sys.argv[2])
acse, network = float(sys.argv[3]), float(sys.argv[4])
ae = AE(ae_title="PYNETDICOM")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.maximum_associations = cap
ae.acse_timeout = acse   # also pynetdicom's ARTIM
ae.dimse_timeout = network
ae.network_timeout = network
ae.start_server(("127.0.0.1", port), block=True,
                evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
"""


@dataclass(frozen=True)
class Counts:
    """How much of each probe to run."""

    concurrent: int = 200
    sequential: int = 1000
    silent: int = 510
    huge: int = 100
    hostile: int = 100
    hostile_window: float = 15.0
    dense: int = 1024
    stride: int = 4099
    sweep_budget: float = 240.0


QUICK = Counts(50, 200, 510, 30, 20, 6.0, 256, 16381, 60.0)


# ----------------------------------------------------------------------------- the servers


@contextlib.contextmanager
def netdicom2_server(tmp: Path) -> Iterator[tuple[NetnsServer, str]]:
    """`netdicom2 scp` (this checkout) alone in a namespace."""
    argv = [sys.executable, "-m", "netdicom2", "scp", "--port", str(PORT), "--artim", str(ARTIM)]
    argv += ["--idle-timeout", str(IDLE), "--max-per-address", "0"]  # every client is 127.0.0.1
    with netns_server(argv, PORT, tmp / "netdicom2.log") as server:
        yield server, "ANY-SCP"


@contextlib.contextmanager
def pynetdicom_server(tmp: Path, cap: int = 500) -> Iterator[tuple[NetnsServer, str]]:
    """pynetdicom's AE as an SCP (Verification + storage), `cap` associations at most."""
    argv = [sys.executable, "-c", PYNETDICOM_SCP, str(PORT), str(cap), str(ARTIM), str(IDLE)]
    with netns_server(argv, PORT, tmp / f"pynetdicom-{cap}.log") as server:
        yield server, "PYNETDICOM"


@contextlib.contextmanager
def dcmtk_server(tmp: Path) -> Iterator[tuple[NetnsServer, str]]:
    """DCMTK storescp (data discarded), its default one association at a time."""
    binary = require("storescp")
    argv = [binary, "--ignore", "-aet", "STORESCP", "-ta", str(int(ARTIM))]
    argv += ["-td", str(int(IDLE)), str(PORT)]
    with netns_server(argv, PORT, tmp / "storescp.log") as server:
        yield server, "STORESCP"


Starter = Callable[[Path], contextlib.AbstractContextManager[tuple[NetnsServer, str]]]
SERVERS: dict[str, Starter] = {
    "netdicom2": netdicom2_server,
    "pynetdicom": pynetdicom_server,
    "dcmtk": dcmtk_server,
}


def target_of(name: str, server: NetnsServer, called_ae: str) -> Target:
    """The probes' view of a server in its namespace."""
    return Target(name, ("127.0.0.1", PORT), server.connect, server.process.pid, called_ae)


# ------------------------------------------------------------------------------- the probes

Figures = dict[str, str]


def mib(kib: int) -> str:
    """KiB as MiB with one decimal."""
    return f"{kib / 1024:.1f}"


def ms(seconds: float) -> str:
    """Seconds as whole milliseconds."""
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"  # NaN: no value


def probe_latency(target: Target, data: bytes) -> Figures:
    """Twenty full associations one after the other: the median time."""
    result = sequential(target, 20, data)
    return {"full association p50 (ms)": f"{ms(result.p(50))} ({result.ok}/20 ok)"}


def probe_load(target: Target, data: bytes, counts: Counts) -> Figures:
    """Clients at once, then one after the other; server figures from /proc."""
    assert target.pid is not None
    idle = proc_stats(target.pid)
    load = concurrent(target, counts.concurrent, data, hold=False, timeout=30)
    peak = load.peak
    figures = {
        f"{counts.concurrent} at once: ok": (
            f"{load.ok}/{counts.concurrent}{_others(load.outcomes)}"
        ),
        f"{counts.concurrent} at once: p50/p99 (ms)": f"{ms(load.p(50))}/{ms(load.p(99))}",
        f"{counts.concurrent} at once: server threads, peak RSS (MiB)": (
            f"{peak.threads}, {mib(peak.hwm_kib)}" if peak else "-"
        ),
    }
    sequential(target, 20, data)  # warm-up
    settle(target.pid, lambda s: s.threads <= idle.threads, 15)
    before = proc_stats(target.pid)
    seq = sequential(target, counts.sequential, data)
    after = settle(target.pid, lambda s: s.threads <= before.threads and s.fds <= before.fds, 15)
    figures[f"{counts.sequential} sequential: ok, p99 (ms)"] = (
        f"{seq.ok}/{counts.sequential}{_others(seq.outcomes)}, {ms(seq.p(99))}"
    )
    figures[f"{counts.sequential} sequential: fds, RSS MiB before->after"] = (
        f"{before.fds}->{after.fds}, {mib(before.rss_kib)}->{mib(after.rss_kib)}"
    )
    return figures


def _others(outcomes: dict[str, int]) -> str:
    """The outcomes other than success, if any: "(rejected 190)"."""
    rest = {k: v for k, v in outcomes.items() if k != "released"}
    return " (" + ", ".join(f"{k} {v}" for k, v in sorted(rest.items())) + ")" if rest else ""


def probe_starvation(target: Target, silent: int) -> Figures:
    """Silent connections, then a good association with a 10 s answer timeout."""
    result = starvation(target, silent, timeout=10)
    good = result.good
    return {
        f"{silent} silent sockets, then a good association": (
            f"{good.outcome} in {ms(good.seconds)} ms ({result.connected} connected)"
        )
    }


def probe_huge(target: Target, count: int) -> Figures:
    """Connections announcing a 4 GB A-ASSOCIATE-RQ: answered how fast, memory after."""
    assert target.pid is not None
    before = proc_stats(target.pid)
    reset_peak_rss(target.pid)
    crowd = HostileCrowd(target.socket, [Hostile.huge()] * count).start()
    crowd.wait(ARTIM + IDLE + 5)
    outcomes = crowd.close()
    peak = proc_stats(target.pid)
    aborted = [o.first_pdu_after or 0.0 for o in outcomes if o.first_pdu == 0x07]
    closed = [o.ended_after for o in outcomes if o.ended_after is not None]
    return {
        f"{count} x 4 GB PDU-length: A-ABORT, max ms": (
            f"{len(aborted)}/{count}, {ms(max(aborted)) if aborted else '-'}"
        ),
        f"{count} x 4 GB PDU-length: closed by the server, median s": (
            f"{len(closed)}/{count}" + (f" @{percentile(closed, 50):.1f}" if closed else "")
        ),
        f"{count} x 4 GB PDU-length: RSS MiB before->peak": (
            f"{mib(before.rss_kib)}->{mib(peak.hwm_kib)}"
        ),
    }


def probe_pump(target: Target) -> Figures:
    """One client sends C-ECHO-RQs (up to 64 MB) and never reads: dropped when, memory."""
    assert target.pid is not None
    before = proc_stats(target.pid)
    reset_peak_rss(target.pid)
    crowd = HostileCrowd(target.socket, [Hostile.never_reads(pump_limit=64 << 20)]).start()
    crowd.wait(40)
    (outcome,) = crowd.close()
    peak = proc_stats(target.pid)
    dropped = "not within 40 s" if outcome.ended_after is None else f"{outcome.ended_after:.1f} s"
    return {
        "never-reading C-ECHO pump: pumped MiB, dropped after": (
            f"{outcome.sent / 2**20:.1f}, {dropped}"
        ),
        "never-reading C-ECHO pump: RSS MiB before->peak": (
            f"{mib(before.rss_kib)}->{mib(peak.hwm_kib)}"
        ),
    }


def probe_hostile(target: Target, data: bytes, counts: Counts) -> Figures:
    """The hostile crowd beside good traffic; what each kind became within the window."""
    n = counts.hostile
    clients = (
        [Hostile.silent()] * n
        + [Hostile.huge()] * n
        + [Hostile.truncated()] * n
        + [Hostile.never_reads(pump_limit=8_000)] * n
        + [Hostile.slow(0.1)] * n
    )
    mix = hostile_mix(target, clients, duration=counts.hostile_window, data=data, settle_after=5)
    good = mix.good
    figures = {
        f"hostile x{n} each + good traffic: good ok, p50/p99 (ms)": (
            f"{good.ok}{_others(good.outcomes)}, {ms(good.p(50))}/{ms(good.p(99))}"
        ),
    }
    ended = []
    for kind, outcomes in mix.by_kind.items():
        times = [o.ended_after for o in outcomes if o.ended_after is not None]
        median = f" @{percentile(times, 50):.1f}s" if times else ""
        refused = sum(1 for o in outcomes if o.how == "refused")
        ended.append(f"{kind} {len(times)}{median}" + (f" ({refused} refused)" if refused else ""))
    figures["hostile: ended by the server, median s after connect"] = "; ".join(ended)
    if mix.peak is not None and mix.before is not None:
        figures["hostile: server threads, RSS MiB before->peak"] = (
            f"{mix.peak.threads}, {mib(mix.before.rss_kib)}->{mib(mix.peak.hwm_kib)}"
        )
    return figures


def sweep_faults(target: Target, data: bytes, counts: Counts, full: bool) -> list[Fault]:
    """The cut points for this target's streams, measured by one clean association."""
    with FaultProxy(target.address, connect=target.connect) as proxy:
        full_association(target, data, connect=proxy.connector())
        proxy.wait_idle(10)
        lengths = proxy.records[-1].transferred
    faults: list[Fault] = []
    hows = ("rst", "fin") if full else ("rst",)
    for how in hows:
        for direction in ("c2s", "s2c"):
            length = lengths[direction]
            if full:
                offsets = list(range(length + 1))
            else:
                offsets = sweep_offsets(length, dense=counts.dense, stride=counts.stride)
            faults += [Drop(direction, n, how) for n in offsets]  # type: ignore[arg-type]
    return faults


def probe_sweep(target: Target, data: bytes, counts: Counts, full: bool) -> Figures:
    """Cut every chosen offset; count outcomes, failed next associations, slow runs, leaks."""
    assert target.pid is not None
    faults = sweep_faults(target, data, counts, full)
    base = proc_stats(target.pid)
    outcomes: dict[str, int] = {}
    next_failed = checked = 0
    slowest = 0.0
    slow_runs = 0
    done = 0
    budget = None if full else time.monotonic() + counts.sweep_budget
    with FaultProxy(target.address, connect=target.connect) as proxy:
        for index, fault in enumerate(faults):
            if budget is not None and time.monotonic() > budget:
                break
            proxy.plan = [fault]
            result = full_association(target, data, connect=proxy.connector(), timeout=5)
            proxy.wait_idle(10)
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            slowest = max(slowest, result.seconds)
            slow_runs += result.seconds > 1.0
            done += 1
            if index % 10 == 0:
                checked += 1
                next_failed += full_association(target, None, timeout=10).outcome != "released"
    after = settle(target.pid, lambda s: s.threads <= base.threads and s.fds <= base.fds, 20)
    cut = f"{done}/{len(faults)} cuts" + ("" if done == len(faults) else " (time budget)")
    return {
        "reset sweep: cuts": cut,
        "reset sweep: requestor outcomes": ", ".join(
            f"{k} {v}" for k, v in sorted(outcomes.items())
        ),
        "reset sweep: next association failed": f"{next_failed}/{checked}",
        "reset sweep: runs over 1 s, slowest (ms)": f"{slow_runs}, {ms(slowest)}",
        "reset sweep: server threads, fds before->after": (
            f"{base.threads}->{after.threads}, {base.fds}->{after.fds}"
        ),
    }


def run_target(name: str, counts: Counts, full: bool, tmp: Path) -> Figures:
    """Every probe against one implementation (a fresh server for the heavier groups)."""
    figures: Figures = {}
    data = dataset(300_000)
    small = dataset(32_000)
    groups: list[tuple[str, Callable[[Target], Figures]]] = [
        ("latency", lambda t: probe_latency(t, data)),
        ("load", lambda t: probe_load(t, small, counts)),
        ("starvation", lambda t: probe_starvation(t, counts.silent)),
        ("huge", lambda t: probe_huge(t, counts.huge)),
        ("pump", probe_pump),
        ("hostile", lambda t: probe_hostile(t, small, counts)),
        ("sweep", lambda t: probe_sweep(t, data, counts, full and name == "netdicom2")),
    ]
    for group, probe in groups:
        started = time.monotonic()
        try:
            with SERVERS[name](tmp) as (server, called_ae):
                figures.update(probe(target_of(name, server, called_ae)))
        except Exception as exc:  # a probe failing is a figure too; keep the others going
            figures[f"{group}: error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {name} {group}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if name == "pynetdicom":
        with pynetdicom_server(tmp, cap=10) as (server, called_ae):
            result = starvation(target_of(name, server, called_ae), 10, timeout=10)
            figures["default cap 10: 10 silent sockets, then a good association"] = (
                f"{result.good.outcome} in {ms(result.good.seconds)} ms"
            )
    return figures


def table(results: dict[str, Figures]) -> str:
    """Rows: figures; columns: implementations."""
    names = list(results)
    rows: list[str] = []
    for figures in results.values():
        rows += [row for row in figures if row not in rows]
    width = max(len(r) for r in rows)
    cols = [max([len(n), *(len(results[n].get(r, "")) for r in rows)]) for n in names]
    line = " | ".join(
        [f"{'figure':<{width}}", *(f"{n:<{w}}" for n, w in zip(names, cols, strict=True))]
    )
    out = [line, "-" * len(line)]
    for row in rows:
        cells = [f"{results[n].get(row, '-'):<{w}}" for n, w in zip(names, cols, strict=True)]
        out.append(" | ".join([f"{row:<{width}}", *cells]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the probes, print the table (and write JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a few minutes)")
    parser.add_argument("--full", action="store_true", help="netdicom2's complete reset sweep")
    parser.add_argument("--only", default="netdicom2,pynetdicom,dcmtk", help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    counts = QUICK if args.quick else Counts()
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="netdicom2-reliability-") as tmp:
        for name in args.only.split(","):
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = run_target(name, counts, args.full, Path(tmp))
    print(
        f"Timeouts: ARTIM/ACSE {ARTIM:.0f} s, idle/DIMSE/network {IDLE:.0f} s; "
        f"threads {threading.active_count()} left in the benchmark process"
    )
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
