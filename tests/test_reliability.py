"""Reliability: resets at every offset, load, hostile peers, the association cap, API misuse.

Each test prints the figures it produced (run with -s) and records them as properties. Counts
are the CI-bounded ones; `python benchmarks/reliability.py --full` runs the full counts and the
same probes against pynetdicom and DCMTK.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from netdicom2.acse import build_rq, negotiate
from netdicom2.app_scp import StorageSCP, add_subcommand
from netdicom2.app_scu import Association, AssociationError
from netdicom2.conformance.faults import Drop, FaultProxy, sweep_offsets
from netdicom2.connection import Transition
from netdicom2.dimse import c_echo_rq, c_store_rq, encode_command
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError, TimeoutError
from netdicom2.framing import fragment
from netdicom2.fsm import State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)
from tests.conftest import open_fds
from tests.dicomfiles import SECONDARY_CAPTURE
from tests.hostile import Hostile, HostileCrowd
from tests.probes import (
    CONTEXTS,
    INSTANCE,
    ProcStats,
    RunResult,
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
)
from tests.scp_process import start_scp

WAIT = 5.0
STORE_SIZE = 300_000  # "a C-STORE of a few hundred KB"
PDU_MAX = 16384


@pytest.fixture
def scp(no_leaks: None) -> Iterator[StorageSCP]:
    """StorageSCP in this process on 127.0.0.1, data sets counted and discarded."""
    with StorageSCP("127.0.0.1", 0) as server:
        yield server


def report(record: Callable[[str, object], None], name: str, **figures: object) -> None:
    """Print one line of figures and record each as a test property."""
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    for key, value in figures.items():
        record(key, value)


# ---------------------------------------------------------------------- reset at every offset


def c2s_edges(rq: AAssociateRqPDU, data: bytes) -> list[int]:
    """Where each PDU of the requestor's stream ends: RQ, C-ECHO, C-STORE, data, RELEASE-RQ."""
    sizes = [len(rq.encode())]
    for context, payload, is_command in (
        (1, encode_command(c_echo_rq(1)), True),
        (3, encode_command(c_store_rq(2, SECONDARY_CAPTURE, INSTANCE)), True),
        (3, data, False),
    ):
        pdus = fragment(context, payload, is_command=is_command, max_pdu_length=PDU_MAX)
        sizes += [len(pdu.encode()) for pdu in pdus]
    sizes.append(len(AReleaseRqPDU().encode()))
    edges, total = [], 0
    for size in sizes:
        total += size
        edges.append(total)
    return edges


ENDINGS = ("released", "aborted", "provider_aborted", "idle_aborted", "errors")


def scp_ending(scp: StorageSCP, before: dict[str, int]) -> str:
    """Which ending counter moved since `before` ("none": no association was indicated)."""
    moved = [name for name in ENDINGS if getattr(scp.stats, name) != before[name]]
    assert len(moved) <= 1, moved
    return moved[0] if moved else "none"


def expected(fault: Drop, lengths: dict[str, int], rq_length: int) -> tuple[set[str], set[str]]:
    """What the requestor's user and the SCP's user must see for a cut (PS3.8 Table 9-10).

    The proxy ends both connections when the cut fires. Before the whole A-ASSOCIATE-RQ reached
    the SCP, its provider is in Sta2 (Evt17 → AA-5: no indication). Afterwards every loss is
    Evt17 → AA-4, an A-P-ABORT, except at the very end: the requestor's release is confirmed
    when all of the A-RELEASE-RP got through (AR-3), and the SCP saw the release when it had
    started sending the RP (AR-4 → Sta13 → Evt17 → AR-5, no further indication).
    """
    n, total = fault.offset, lengths[fault.direction]
    if fault.direction == "c2s":
        if n < rq_length:
            return {"A-P-ABORT"}, {"none"}
        if n == total:  # the A-RELEASE-RQ arrived whole just before the cut: a race
            return {"A-P-ABORT"}, {"released", "provider_aborted"}
        return {"A-P-ABORT"}, {"provider_aborted"}
    requestor = {"released"} if n == total else {"A-P-ABORT"}
    if n == 0:
        return requestor, {"none"}
    return requestor, {"released"} if n > total - 10 else {"provider_aborted"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("direction", "how"), [("c2s", "rst"), ("s2c", "rst"), ("c2s", "fin"), ("s2c", "fin")]
)
def test_a_cut_at_every_offset_ends_both_users_cleanly_and_the_scp_keeps_serving(
    scp: StorageSCP,
    direction: str,
    how: str,
    record_property: Callable[[str, object], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="netdicom2")
    data = dataset(STORE_SIZE)
    target = Target("netdicom2", scp.address)
    with FaultProxy(scp.address) as proxy:
        clean = full_association(target, data, connect=proxy.connector())
        assert proxy.wait_idle(WAIT) and scp.wait_idle(WAIT) and clean.outcome == "released"
        lengths = proxy.records[-1].transferred
        rq = build_rq("ANY-SCP", "NETDICOM2", CONTEXTS)
        edges = c2s_edges(rq, data) if direction == "c2s" else []
        # CI sample: every offset of the first 2 KB (all of the A-ASSOCIATE exchange and the
        # DIMSE commands), ±12 bytes around every PDU edge, a 509-byte stride over the data,
        # and the end; the acceptor's stream (under 500 bytes) is swept at every offset.
        dense = 2048
        cuts = sweep_offsets(lengths[direction], dense=dense, stride=509, edges=edges)
        fds, threads = open_fds(), threading.active_count()
        outcomes: dict[tuple[str, str], int] = {}
        started = time.perf_counter()
        slowest = 0.0
        connections = scp.stats.connections
        for offset in cuts:
            fault = Drop(direction, offset, how)  # type: ignore[arg-type]
            proxy.plan = [fault]
            before = {name: getattr(scp.stats, name) for name in ENDINGS}
            result = full_association(target, data, connect=proxy.connector(), timeout=WAIT)
            connections += 1  # the proxy connected upstream once
            assert proxy.wait_idle(WAIT), fault
            assert scp.wait_idle(WAIT, connections=connections), fault
            ending = scp_ending(scp, before)
            want_user, want_scp = expected(fault, lengths, len(rq.encode()))
            assert result.outcome in want_user, (fault, result)
            assert ending in want_scp, (fault, ending, result)
            assert result.final_state is State.Sta1 and not result.thread_alive, fault
            assert fault in proxy.records[-1].fired, fault
            assert (open_fds(), threading.active_count()) == (fds, threads), fault
            outcomes[result.outcome, ending] = outcomes.get((result.outcome, ending), 0) + 1
            slowest = max(slowest, result.seconds)
        elapsed = time.perf_counter() - started
    assert scp.stats.unclean == 0 and scp.stats.errors == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert full_association(target, data).outcome == "released"  # and it still serves
    report(
        record_property,
        f"reset sweep {direction}/{how}",
        stream_bytes=lengths[direction],
        cuts=len(cuts),
        dense_to=min(dense, lengths[direction]),
        seconds=round(elapsed, 1),
        slowest_run_ms=round(slowest * 1000, 1),
        outcomes={f"{u}|scp:{s}": c for (u, s), c in sorted(outcomes.items())},
    )


# ------------------------------------------------------------------------ our SCP in a process


@contextlib.contextmanager
def scp_process(*args: str, nofile: int | None = None) -> Iterator[tuple[Target, list[str]]]:
    """`python -m netdicom2 scp --port 0 ARGS` on 127.0.0.1; the Target carries its PID, the
    list gets its standard error once it has exited."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    stderr: list[str] = []
    process, (host, port) = start_scp(*args, preexec_fn=limit)
    try:
        yield Target("netdicom2", (host, port), pid=process.pid), stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            stderr.append(process.communicate(timeout=20)[1])
        except subprocess.TimeoutExpired:
            process.kill()
            stderr.append(process.communicate()[1])


def idle(target: Target, baseline: ProcStats) -> ProcStats:
    """Wait (bounded) until the SCP is back to `baseline` threads and descriptors; its figures.

    The SCP closes a connection's socket when it sees the requestor's close (Evt17, AR-5),
    which can come just after the requestor's release returned.
    """
    assert target.pid is not None
    return settle(target.pid, lambda s: s.threads <= baseline.threads and s.fds <= baseline.fds, 10)


@pytest.mark.slow
def test_200_concurrent_associations_all_succeed(
    record_property: Callable[[str, object], None],
) -> None:
    # 200 clients from one address: lift the per-address cap (default 128) for this test.
    with scp_process("--max-per-address", "0") as (target, _):
        assert target.pid is not None
        base = proc_stats(target.pid)
        result = concurrent(target, 200, dataset(32_000), hold=True, timeout=30)
        assert result.outcomes == {"released": 200}, result.outcomes
        assert result.peak is not None
        # Every one of the 200 was associated at the same time (one socket each in the SCP),
        # all served by the one DULServer loop thread: no thread per association.
        assert result.peak.fds >= base.fds + 200
        assert result.peak.threads == base.threads
        report(
            record_property,
            "200 concurrent (held open together)",
            ok=result.ok,
            associate_p50_ms=round(percentile(result.associate_seconds, 50) * 1000, 1),
            associate_p99_ms=round(percentile(result.associate_seconds, 99) * 1000, 1),
            association_p50_ms=round(result.p(50) * 1000, 1),
            association_p99_ms=round(result.p(99) * 1000, 1),
            wall_s=round(result.wall, 2),
            scp_threads_base=base.threads,
            scp_threads_peak=result.peak.threads,
            scp_rss_base_mib=round(base.rss_kib / 1024, 1),
            scp_peak_rss_mib=round(result.peak.hwm_kib / 1024, 1),
        )


@pytest.mark.slow
def test_1000_sequential_associations_return_to_the_baseline(
    record_property: Callable[[str, object], None],
) -> None:
    with scp_process() as (target, _):
        assert target.pid is not None
        data = dataset(16_000)
        at_rest = proc_stats(target.pid)  # the main and the accepting thread, the listener
        assert sequential(target, 50, data).ok == 50  # warm-up: allocator pools, code paths
        before = idle(target, at_rest)
        result = sequential(target, 1000, data)
        assert result.ok == 1000, result.outcomes
        after = idle(target, before)
        growth = (after.rss_kib - before.rss_kib) / 1024
        report(
            record_property,
            "1000 sequential",
            ok=result.ok,
            p50_ms=round(result.p(50) * 1000, 1),
            p99_ms=round(result.p(99) * 1000, 1),
            fds=f"{before.fds}->{after.fds}",
            threads=f"{before.threads}->{after.threads}",
            rss_mib=f"{before.rss_kib / 1024:.1f}->{after.rss_kib / 1024:.1f}",
        )
        assert after.fds == before.fds  # exactly: every socket, selector and socketpair closed
        assert after.threads == before.threads
        assert growth < 2.0  # tolerance 2 MiB: allocator slack, not per-association leaks


# ----------------------------------------------------------------------------- hostile peers

ARTIM = 2.0
IDLE = 3.0


@pytest.mark.slow
def test_hostile_peers_beside_good_traffic(record_property: Callable[[str, object], None]) -> None:
    """Silent, 4 GB, truncated, never-reading and slow clients; good associations go on."""
    # CI counts: 100 silent, 100 announcing 4 GB, 100 truncated RQs, 100 that never read
    # (each sends 8 KB of C-ECHO-RQs, which fits the socket buffers), 50 slow writers (one byte
    # per 100 ms, the benchmark runs 100). ARTIM and the idle timeout are shortened to 2 s / 3 s.
    clients = (
        [Hostile.silent()] * 100
        + [Hostile.huge()] * 100
        + [Hostile.truncated()] * 100
        + [Hostile.never_reads(pump_limit=8_000)] * 100
        + [Hostile.slow(0.1)] * 50
    )
    args = ("--artim", str(ARTIM), "--idle-timeout", str(IDLE), "--send-timeout", "2")
    with scp_process(*args) as (target, _):
        assert target.pid is not None
        mix = hostile_mix(
            target, clients, duration=4.0, data=dataset(16_000), settle_after=IDLE + 2
        )
        good = mix.good
        assert good.outcomes == {"released": good.ok} and good.ok > 0, good.outcomes
        assert mix.before is not None and mix.peak is not None
        kinds = mix.by_kind
        slack = 1.5  # scheduling on a loaded 2-core machine
        for kind in ("silent", "truncated", "slow"):  # Sta2 + Evt18 → AA-2: at ARTIM, not before
            ends = [o.ended_after for o in kinds[kind]]
            assert all(e is not None and ARTIM - 0.05 <= e < ARTIM + slack for e in ends), kind
            assert all(o.first_pdu is None for o in kinds[kind]), kind  # AA-2 sends nothing
        for o in kinds["huge"]:  # Sta2 + Evt19 → AA-1: A-ABORT at once (PS3.8 Annex D.1)
            assert o.first_pdu == 0x07 and o.first_pdu_after is not None
            # From the client's connect: includes the wait to be accepted among 450 at once;
            # well before ARTIM, so not a timer's doing (the lone 4 GB test measures it alone).
            assert o.first_pdu_after < ARTIM
        for o in kinds["never-reads"]:  # associated, then aborted after the idle timeout
            assert o.first_pdu == 0x02 and o.ended_after is not None
            assert IDLE <= o.ended_after < IDLE + ARTIM + slack
        huge_abort = max(o.first_pdu_after or 0 for o in kinds["huge"])
        report(
            record_property,
            "hostile peers + good traffic",
            good_ok=good.ok,
            good_p50_ms=round(good.p(50) * 1000, 1),
            good_p99_ms=round(good.p(99) * 1000, 1),
            silent_dropped_s=_span(kinds["silent"]),
            truncated_dropped_s=_span(kinds["truncated"]),
            slow_dropped_s=_span(kinds["slow"]),
            huge_abort_max_ms=round(huge_abort * 1000, 1),
            never_reads_dropped_s=_span(kinds["never-reads"]),
            scp_threads_peak=mix.peak.threads,
            scp_rss_mib=f"{mix.before.rss_kib / 1024:.1f}->peak {mix.peak.hwm_kib / 1024:.1f}",
        )
        assert mix.peak.hwm_kib - mix.before.rss_kib < 96 * 1024  # 450 connections, a thread each


def _span(outcomes: list[object]) -> str:
    """min..max of ended_after, seconds."""
    ends = [o.ended_after for o in outcomes if o.ended_after is not None]  # type: ignore[attr-defined]
    return f"{min(ends):.2f}..{max(ends):.2f}" if ends else "-"


def test_4gb_announcements_are_aborted_at_once_without_memory_growth(
    record_property: Callable[[str, object], None],
) -> None:
    with scp_process("--artim", "1") as (target, _):
        assert target.pid is not None
        before = proc_stats(target.pid)
        reset_peak_rss(target.pid)
        crowd = HostileCrowd(target.socket, [Hostile.huge()] * 100).start()
        assert crowd.wait(10)
        outcomes = crowd.close()
        peak = proc_stats(target.pid)
        assert all(o.first_pdu == 0x07 for o in outcomes)
        slowest = max(o.first_pdu_after or 0 for o in outcomes)
        report(
            record_property,
            "100 x 4 GB PDU-length",
            abort_max_ms=round(slowest * 1000, 1),
            rss_mib=f"{before.rss_kib / 1024:.1f}->peak {peak.hwm_kib / 1024:.1f}",
        )
        assert peak.hwm_kib - before.rss_kib < 16 * 1024  # threads' stacks, no 4 GB buffer


def test_a_peer_that_pumps_requests_and_never_reads_is_dropped_with_bounded_memory(
    record_property: Callable[[str, object], None],
) -> None:
    """Our sends are bounded in time (send_timeout) and memory (reading stops at a high mark)."""
    with scp_process("--send-timeout", "1") as (target, _):
        assert target.pid is not None
        before = proc_stats(target.pid)
        reset_peak_rss(target.pid)
        crowd = HostileCrowd(target.socket, [Hostile.never_reads(pump_limit=64 << 20)]).start()
        finished = crowd.wait(60)
        (outcome,) = crowd.close()
        peak = proc_stats(target.pid)
        assert finished and outcome.ended_after is not None
        report(
            record_property,
            "C-ECHO-RQ pump, never reading",
            pumped_mib=round(outcome.sent / 2**20, 2),
            dropped_after_s=round(outcome.ended_after, 1),
            rss_mib=f"{before.rss_kib / 1024:.1f}->peak {peak.hwm_kib / 1024:.1f}",
        )
        assert peak.hwm_kib - before.rss_kib < 48 * 1024


# ------------------------------------------------------------------ the cap on associations


def test_the_default_caps() -> None:
    parser = argparse.ArgumentParser()
    add_subcommand(parser.add_subparsers())
    args = parser.parse_args(["scp"])
    assert (args.max_associations, args.max_pending) == (500, 1000)
    assert (args.idle_timeout, args.send_timeout, args.artim) == (60.0, 30.0, 30.0)
    signature = inspect.signature(StorageSCP)
    assert signature.parameters["max_associations"].default == 500
    assert signature.parameters["max_pending"].default == 1000


def test_over_the_cap_a_request_is_rejected_transient_local_limit_at_once(
    no_leaks: None, record_property: Callable[[str, object], None]
) -> None:
    with StorageSCP("127.0.0.1", 0, max_associations=2) as scp:
        held = [Association(scp.address, CONTEXTS) for _ in range(2)]
        for assoc in held:
            assoc.associate()
        started = time.perf_counter()
        extra = Association(scp.address, CONTEXTS, timeout=WAIT)
        with pytest.raises(AssociationError, match="result 2, source 3, reason 2"):
            extra.associate()  # PS3.8 Table 9-21: rejected-transient, local-limit-exceeded
        rejected_after = time.perf_counter() - started
        held.pop().release()
        assert full_association(Target("scp", scp.address), None).outcome == "released"
        for assoc in held:
            assoc.release()
        assert scp.wait_idle(WAIT)
        assert scp.stats.rejected_over_limit == 1 and scp.stats.active == 0
        report(record_property, "over the cap", rejected_after_ms=round(rejected_after * 1000, 1))
        assert rejected_after < 1.0


def test_silent_connections_do_not_take_association_slots(
    no_leaks: None, record_property: Callable[[str, object], None]
) -> None:
    """pynetdicom counts a connection as an association from accept on: ten silent sockets
    deny its default of ten. Here slots are taken at AE-6, when an A-ASSOCIATE-RQ arrives."""
    with StorageSCP("127.0.0.1", 0, max_associations=2) as scp:
        target = Target("scp", scp.address)
        crowd = HostileCrowd(target.socket, [Hostile.silent()] * 50).start()
        try:
            results = [full_association(target, None, timeout=WAIT) for _ in range(5)]
        finally:
            crowd.close()
        assert scp.wait_idle(WAIT)
    assert [r.outcome for r in results] == ["released"] * 5
    worst = max(r.seconds for r in results)
    report(record_property, "50 silent vs cap 2", good=5, worst_ms=round(worst * 1000, 1))


def test_beyond_max_pending_the_oldest_silent_connection_is_dropped(no_leaks: None) -> None:
    with StorageSCP("127.0.0.1", 0, max_pending=10) as scp:
        target = Target("scp", scp.address)
        crowd = HostileCrowd(target.socket, [Hostile.silent()] * 15).start(workers=1)
        try:
            assert crowd.wait_ended(5, WAIT)  # the five oldest made room for the last five
            assert full_association(target, None, timeout=WAIT).outcome == "released"
            assert crowd.wait_ended(6, WAIT)  # and the good one for itself
        finally:
            outcomes = crowd.close()
        assert scp.wait_idle(WAIT)
    # Long before ARTIM (30 s), oldest first; the other nine were left to ARTIM.
    ended = [o for o in outcomes if o.how != "open"]
    assert [outcomes.index(o) for o in ended] == list(range(6))
    assert scp.stats.evicted == 6


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("max_pending", [1000, 8])
def test_out_of_descriptors_the_accept_loop_backs_off_and_recovers(
    max_pending: int, record_property: Callable[[str, object], None]
) -> None:
    """EMFILE leaves connections in the backlog without spinning (PS3.8 §9.1.4 Note 1); with
    max_pending under the descriptor budget, silent sockets never exhaust it at all."""
    args = ("--max-pending", str(max_pending))
    with scp_process(*args, nofile=64) as (target, stderr):
        assert target.pid is not None
        # One descriptor per connection: 70 silent sockets outnumber the 64 the SCP may hold.
        crowd = HostileCrowd(target.socket, [Hostile.silent()] * 70).start()
        try:
            cpu = cpu_seconds(target.pid)
            pause = threading.Event()
            pause.wait(1.0)  # the SCP is out of descriptors (or evicting) for this second
            spent = cpu_seconds(target.pid) - cpu
            good = threading.Thread(target=lambda: results.append(full_association(target, None)))
            results: list[RunResult] = []
            good.start()
            if max_pending == 1000:
                good.join(0.5)
                assert good.is_alive()  # waiting in the backlog: no descriptor for it
        finally:
            crowd.close()  # the silent ones go away: descriptors come back
        good.join(WAIT * 2)
        assert results and results[0].outcome == "released", results
        report(
            record_property,
            f"fd limit 64, 70 silent, max_pending {max_pending}",
            cpu_ms_in_1s=round(spent * 1000),
            good_ms=round(results[0].seconds * 1000, 1),
        )
        assert spent < 0.2  # no busy loop on a readable listener
    failures = stderr[0].count("Too many open files")
    if max_pending == 1000:
        assert 0 < failures < 40  # one per back-off of 0.1 s, not a spin
    else:
        assert failures == 0


# ------------------------------------------------------------------------------ API misuse


@pytest.fixture
def tcp_pair(no_leaks: None) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (client, server) pair of TCP sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def primitives(rq: AAssociateRqPDU) -> list[PDU]:
    """One primitive of each kind a user can pass to send()."""
    answer, _ = negotiate(rq)
    pdv = PresentationDataValueItem(1, 0x03, encode_command(c_echo_rq(1)))
    return [
        rq,
        answer,
        AAssociateRjPDU(1, 1, 1),
        PDataTfPDU([pdv]),
        AReleaseRqPDU(),
        AReleaseRpPDU(),
        AAbortPDU(),
    ]


def indicated(
    client: socket.socket, server: socket.socket
) -> tuple[DULServiceProvider, AAssociateRqPDU]:
    """A started acceptor on `server` that has indicated the client's A-ASSOCIATE-RQ (Sta3)."""
    acceptor = DULServiceProvider(server)
    acceptor.start()
    rq = build_rq("ANY-SCP", "ME", CONTEXTS)
    client.sendall(rq.encode())
    assert isinstance(acceptor.receive(WAIT), AAssociateRqPDU)
    return acceptor, rq


def assert_nothing_sent(client: socket.socket) -> None:
    """The peer received no byte (blank cells send no PDU, PS3.8 Table 9-10)."""
    client.settimeout(0.1)
    with pytest.raises(socket.timeout):
        client.recv(1)


def test_every_primitive_without_an_action_in_sta2_raises_naming_the_state(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    rq = build_rq("ANY-SCP", "ME", CONTEXTS)
    for primitive in primitives(rq):  # Sta2 has no user-primitive cell at all, not even Evt15
        with pytest.raises(LocalProtocolError, match="Sta2") as info:
            acceptor.send(primitive)
        assert type(primitive).__name__ in str(info.value)
        assert acceptor.state is State.Sta2
    assert_nothing_sent(client)
    acceptor.kill()


def test_misuse_in_sta6_and_sta13_raises_and_leaves_the_association_alone(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor, rq = indicated(client, server)
    everything = primitives(rq)
    acceptor.send(everything[1])  # AC: Sta3 → AE-7 → Sta6
    client.recv(65536)
    for primitive in (everything[0], everything[1], everything[2], everything[5]):
        with pytest.raises(LocalProtocolError, match="Sta6"):
            acceptor.send(primitive)  # Evt1, Evt7, Evt8, Evt14 have no Sta6 action
    assert acceptor.state is State.Sta6
    acceptor.send(AAbortPDU())  # Evt15 → AA-1 → Sta13
    for primitive in everything:
        with pytest.raises(LocalProtocolError, match="Sta13"):
            acceptor.send(primitive)  # Sta13 has no user-primitive cell, Evt15 included
    client.close()
    acceptor.join(WAIT)
    with pytest.raises(ProviderStoppedError, match="Sta1"):
        acceptor.send(AAbortPDU())


def test_kill_from_an_observer_in_the_loop_thread_ends_the_association(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    providers: list[DULServiceProvider] = []

    def observer(transition: Transition) -> None:
        if transition.next_state is State.Sta3:
            providers[0].kill()  # must not try to join its own thread

    acceptor = DULServiceProvider(server)
    providers.append(acceptor)
    acceptor.add_observer(observer)
    acceptor.start()
    client.sendall(build_rq("ANY-SCP", "ME", CONTEXTS).encode())
    acceptor.join(WAIT)
    assert not acceptor.is_alive() and acceptor.state is State.Sta1
    client.settimeout(WAIT)
    assert client.recv(10)[:1] == b"\x07"  # Evt15 in Sta3 → AA-1: A-ABORT, then closed


def test_blocked_receivers_are_released_by_kill_and_later_calls_never_block(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    _, server = tcp_pair
    acceptor = DULServiceProvider(server)
    acceptor.start()
    errors: list[BaseException] = []

    def receiver() -> None:
        try:
            acceptor.receive(None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=receiver) for _ in range(4)]
    for thread in threads:
        thread.start()
    acceptor.kill()
    for thread in threads:
        thread.join(WAIT)
    assert [type(e) for e in errors] == [ProviderStoppedError] * 4
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(ProviderStoppedError):
            acceptor.receive(None)
    with pytest.raises(ProviderStoppedError):
        acceptor.send(AAbortPDU())
    assert acceptor.stop() is True
    acceptor.kill()
    assert time.monotonic() - started < 1.0


def test_start_after_kill_and_calls_on_a_never_started_provider_do_not_hang(no_leaks: None) -> None:
    never = DULServiceProvider(address=("127.0.0.1", 9))
    with pytest.raises(TimeoutError):
        never.receive(0)
    never.kill()  # not started: releases its sockets without joining
    never.start()  # runs once, sees the termination flag, exits
    never.join(WAIT)
    assert not never.is_alive()
    with pytest.raises(ProviderStoppedError, match="Sta1"):
        never.receive(None)
    other = DULServiceProvider(address=("127.0.0.1", 9))
    with pytest.raises(TypeError):
        other.send("not a PDU")  # type: ignore[arg-type]
    other.kill()


def test_sends_racing_a_kill_either_succeed_or_raise_typed_errors(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    acceptor, rq = indicated(client, server)
    acceptor.send(primitives(rq)[1])
    outcomes: list[str] = []
    pdata = primitives(rq)[3]

    def sender() -> None:
        for _ in range(200):
            try:
                acceptor.send(pdata)
            except LocalProtocolError as exc:
                outcomes.append(type(exc).__name__)
                return
        outcomes.append("sent")

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    acceptor.kill()
    for thread in threads:
        thread.join(WAIT)
    assert len(outcomes) == 4
    assert set(outcomes) <= {"sent", "LocalProtocolError", "ProviderStoppedError"}
