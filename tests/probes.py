"""Reliability probes shared by tests/test_reliability.py and benchmarks/reliability.py.

Each probe drives one DICOM SCP (ours, pynetdicom's, DCMTK's, reached on 127.0.0.1 directly or
inside a peer's network namespace through `connect`) and returns figures: a full association
(A-ASSOCIATE, C-ECHO, C-STORE, A-RELEASE), concurrent and sequential load, silent sockets
against the association cap, and hostile crowds beside good traffic. Server-side figures come
from /proc/PID (RSS, peak RSS, threads, descriptors).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from netdicom2.app_scu import Association, AssociationError
from netdicom2.dimse import VERIFICATION_SOP_CLASS, c_echo_rq, c_store_rq
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError, TimeoutError
from netdicom2.fsm import State
from netdicom2.pdu import AAbortPDU
from tests.dicomfiles import EXPLICIT_VR_LE, SECONDARY_CAPTURE, secondary_capture
from tests.hostile import Hostile, HostileCrowd, HostileOutcome

Address = tuple[str, int]
Connector = Callable[[Address], socket.socket]
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
CONTEXTS = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LE]), (SECONDARY_CAPTURE, [EXPLICIT_VR_LE])]
INSTANCE = "1.2.826.0.1.3680043.2.1125.88.1"


@dataclass(frozen=True)
class Target:
    """An SCP under test: where it listens, how to reach it, its process for /proc figures."""

    name: str
    address: Address
    connect: Connector | None = None
    pid: int | None = None
    called_ae: str = "ANY-SCP"

    def socket(self) -> socket.socket:
        """A new TCP connection to the SCP."""
        if self.connect is not None:
            return self.connect(self.address)
        return socket.create_connection(self.address, timeout=10)


def dataset(size: int) -> bytes:
    """A Secondary Capture data set of about `size` bytes (Explicit VR LE)."""
    return secondary_capture(INSTANCE, size)


# ----------------------------------------------------------------------------- /proc figures


@dataclass(frozen=True)
class ProcStats:
    """A process' resident memory (now and peak, KiB), threads and open descriptors."""

    rss_kib: int
    hwm_kib: int
    threads: int
    fds: int


def proc_stats(pid: int) -> ProcStats:
    """Read /proc/PID/status and /proc/PID/fd."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(rest.split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcStats(values.get("VmRSS", 0), values.get("VmHWM", 0), values.get("Threads", 0), fds)


def reset_peak_rss(pid: int) -> None:
    """Start a new VmHWM measurement (Linux: write 5 to /proc/PID/clear_refs)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")


def settle(pid: int, predicate: Callable[[ProcStats], bool], timeout: float) -> ProcStats:
    """Wait (bounded, 20 ms steps on an Event) until the process' figures satisfy predicate."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    stats = proc_stats(pid)
    while not predicate(stats) and time.monotonic() < deadline:
        pause.wait(0.02)
        stats = proc_stats(pid)
    return stats


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ------------------------------------------------------------------------ one full association


@dataclass
class RunResult:
    """How one requestor association ended, as its user saw it."""

    outcome: str  # released | A-P-ABORT | A-ABORT | rejected | timeout | status | stopped
    seconds: float
    detail: str = ""
    final_state: State = State.Sta1
    thread_alive: bool = False
    associated_after: float | None = None  # seconds to the A-ASSOCIATE-AC


def full_association(
    target: Target,
    data: bytes | None,
    *,
    connect: Connector | None = None,
    timeout: float = 10.0,
    hold: Callable[[], None] | None = None,
) -> RunResult:
    """A-ASSOCIATE, C-ECHO, C-STORE of `data` (if any), A-RELEASE; never raises for the peer.

    A send refused because the association already ended (PS3.8 Table 9-10 blank cell, a
    LocalProtocolError) is followed by the indication that ended it, read from receive().
    `hold()` runs once associated (a barrier for concurrency).
    """
    started = time.perf_counter()
    assoc = Association(
        target.address,
        CONTEXTS,
        called_ae=target.called_ae,
        connect=connect or target.connect,
        timeout=timeout,
    )
    detail = ""
    associated_after = None
    try:
        assoc.associate()
        associated_after = time.perf_counter() - started
        if hold is not None:
            hold()
        assoc.send_message(assoc.context_for(VERIFICATION_SOP_CLASS), c_echo_rq(1))
        statuses = [assoc.receive_command().status]
        if data is not None:
            context = assoc.context_for(SECONDARY_CAPTURE)
            assoc.send_message(context, c_store_rq(2, SECONDARY_CAPTURE, INSTANCE), data)
            statuses.append(assoc.receive_command().status)
        assoc.release()
        outcome = "released" if statuses == [0] * len(statuses) else "status"
        detail = str(statuses)
    except AssociationError as exc:
        outcome, detail = _classify(str(exc)), str(exc)
    except LocalProtocolError as exc:
        outcome, detail = _ending_indication(assoc.dul, timeout), str(exc)
    finally:
        assoc.dul.kill()
    elapsed = time.perf_counter() - started
    alive = assoc.dul.is_alive()
    return RunResult(outcome, elapsed, detail, assoc.dul.state, alive, associated_after)


def _classify(message: str) -> str:
    """The outcome named by an AssociationError's message."""
    for prefix, outcome in (
        ("A-P-ABORT", "A-P-ABORT"),
        ("A-ABORT", "A-ABORT"),
        ("association rejected", "rejected"),
        ("no answer", "timeout"),
    ):
        if message.startswith(prefix):
            return outcome
    return "ended"


def _ending_indication(dul: DULServiceProvider, timeout: float) -> str:
    """The A-ABORT / A-P-ABORT indication waiting after a refused send."""
    try:
        pdu = dul.receive(timeout)
    except TimeoutError:
        return "timeout"
    except ProviderStoppedError:
        return "stopped"
    if isinstance(pdu, AAbortPDU):
        return "A-ABORT" if pdu.source == 0 else "A-P-ABORT"
    return f"unexpected {type(pdu).__name__}"


# ------------------------------------------------------------------------------------ load


@dataclass
class LoadResult:
    """Concurrent or sequential associations: outcomes, times, server figures."""

    outcomes: dict[str, int]
    seconds: list[float]
    associate_seconds: list[float] = field(default_factory=list)
    peak: ProcStats | None = None
    before: ProcStats | None = None
    after: ProcStats | None = None
    wall: float = 0.0

    @property
    def ok(self) -> int:
        """Associations that ended with a release and statuses 0000H."""
        return self.outcomes.get("released", 0)

    def p(self, q: float) -> float:
        """The q-th percentile of the association times of the successful runs, seconds."""
        return percentile(self.seconds, q)


def _tally(results: Sequence[RunResult]) -> dict[str, int]:
    """Outcome -> count."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts


@contextlib.contextmanager
def sampling(pid: int | None, every: float = 0.02) -> Iterator[list[ProcStats]]:
    """Sample /proc/PID every `every` seconds in a thread while the block runs."""
    samples: list[ProcStats] = []
    stop = threading.Event()

    def run() -> None:
        while pid is not None and not stop.wait(every):
            with contextlib.suppress(OSError):
                samples.append(proc_stats(pid))

    thread = threading.Thread(target=run, name="proc-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def concurrent(
    target: Target, count: int, data: bytes | None, *, hold: bool = True, timeout: float = 30.0
) -> LoadResult:
    """`count` requestors started together; with `hold`, each keeps its association until all
    have been answered, so that `count` associations are open at once."""
    start = threading.Barrier(count + 1, timeout=timeout)
    all_held: list[ProcStats] = []  # sampled when every association is held at once

    def when_all_held() -> None:
        if target.pid:
            with contextlib.suppress(OSError):
                all_held.append(proc_stats(target.pid))

    held = threading.Barrier(count, action=when_all_held, timeout=timeout)
    results: list[RunResult | None] = [None] * count

    def worker(index: int) -> None:
        arrived = threading.Event()

        def wait_held() -> None:
            arrived.set()
            with contextlib.suppress(threading.BrokenBarrierError):
                held.wait()

        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait()
        result = full_association(target, data, timeout=timeout, hold=wait_held if hold else None)
        if hold and not arrived.is_set():
            wait_held()  # not associated: still counts as answered for the others
        results[index] = result

    threads = [threading.Thread(target=worker, args=(i,), name=f"load-{i}") for i in range(count)]
    before = proc_stats(target.pid) if target.pid else None
    if target.pid:
        reset_peak_rss(target.pid)
    for thread in threads:
        thread.start()
    with sampling(target.pid) as samples:
        began = time.perf_counter()
        start.wait()
        for thread in threads:
            thread.join(timeout * 3)
        wall = time.perf_counter() - began
    done = [r for r in results if r is not None]
    peak = None
    samples += all_held
    if target.pid and samples:
        last = proc_stats(target.pid)
        peak = ProcStats(
            max(s.rss_kib for s in samples),
            last.hwm_kib,
            max(s.threads for s in samples),
            max(s.fds for s in samples),
        )
    return LoadResult(
        _tally(done),
        [r.seconds for r in done if r.outcome == "released"],
        [r.associated_after for r in done if r.associated_after is not None],
        peak,
        before,
        wall=wall,
    )


def sequential(
    target: Target, count: int, data: bytes | None, *, timeout: float = 10.0
) -> LoadResult:
    """`count` associations one after the other."""
    results = []
    began = time.perf_counter()
    for _ in range(count):
        results.append(full_association(target, data, timeout=timeout))
    wall = time.perf_counter() - began
    return LoadResult(
        _tally(results), [r.seconds for r in results if r.outcome == "released"], wall=wall
    )


# --------------------------------------------------------------------------- hostile peers


@dataclass
class StarveResult:
    """A good association tried while `silent` connections sit idle on the SCP."""

    silent: int
    connected: int
    good: RunResult


def starvation(target: Target, silent: int, *, timeout: float = 10.0) -> StarveResult:
    """Open `silent` connections that send nothing, then try one good association."""
    crowd = HostileCrowd(target.socket, [Hostile.silent()] * silent).start()
    try:
        connected = sum(1 for o in crowd.outcomes if o.how != "refused")
        good = full_association(target, None, timeout=timeout)
    finally:
        crowd.close()
    return StarveResult(silent, connected, good)


@dataclass
class MixResult:
    """Hostile clients beside good traffic: what happened to each, and to the good ones."""

    hostile: list[HostileOutcome]
    good: LoadResult
    peak: ProcStats | None = None
    before: ProcStats | None = None
    by_kind: dict[str, list[HostileOutcome]] = field(default_factory=dict)


def hostile_mix(
    target: Target,
    clients: Sequence[Hostile],
    *,
    duration: float,
    data: bytes | None = None,
    workers: int = 2,
    timeout: float = 10.0,
    settle_after: float = 0.0,
) -> MixResult:
    """Start `clients`, run good associations in `workers` loops for `duration` seconds, then
    give the SCP `settle_after` more seconds to end the hostile connections."""
    before = proc_stats(target.pid) if target.pid else None
    if target.pid:
        reset_peak_rss(target.pid)
    results: list[RunResult] = []
    lock = threading.Lock()
    with sampling(target.pid) as samples:
        crowd = HostileCrowd(target.socket, clients).start()
        deadline = time.monotonic() + duration

        def good_loop() -> None:
            while time.monotonic() < deadline:
                result = full_association(target, data, timeout=timeout)
                with lock:
                    results.append(result)

        loops = [threading.Thread(target=good_loop, name=f"good-{i}") for i in range(workers)]
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join(duration + 2 * timeout)
        crowd.wait(max(0.0, deadline + settle_after - time.monotonic()))
        outcomes = crowd.close()
    peak = None
    if target.pid and samples:
        last = proc_stats(target.pid)
        peak = ProcStats(
            max(s.rss_kib for s in samples),
            last.hwm_kib,
            max(s.threads for s in samples),
            max(s.fds for s in samples),
        )
    good = LoadResult(_tally(results), [r.seconds for r in results if r.outcome == "released"])
    by_kind: dict[str, list[HostileOutcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    return MixResult(outcomes, good, peak, before, by_kind)


def summary(values: Sequence[float]) -> str:
    """min/median/max of seconds, in ms."""
    if not values:
        return "-"
    return (
        f"{min(values) * 1000:.0f}/{statistics.median(values) * 1000:.0f}/"
        f"{max(values) * 1000:.0f} ms"
    )
