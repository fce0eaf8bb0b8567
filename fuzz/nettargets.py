"""Targets over real TCP on loopback: our threaded provider (white box) and a remote peer.

The provider target runs each case on a fresh ``DULServiceProvider`` with a scripted user thread
and checks, besides the Table 9-10 oracle, that the provider's thread ends, that no exception
escaped its loop and that no thread or file descriptor is left. The remote target is a black
box at HOST:PORT: the oracle sees only the wire; after each case a fresh connection tells a
crashed peer (refused) from a live one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

from netdicom2.conformance.table import INDICATING
from netdicom2.connection import Transition
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import NetDicomError, TimeoutError
from netdicom2.fuzz.check import Facts, Judgement, artim_pending, evaluate
from netdicom2.fuzz.interp import NETDICOM2
from netdicom2.fuzz.oracle import Policy, wire_kind
from netdicom2.fuzz.scenarios import PIPELINE_PREFIX, SCENARIOS, black_box_scenarios
from netdicom2.fuzz.strategies import Case
from netdicom2.fuzz.targets import Result, _prefix, _requestor_rq, _User, first_ac
from netdicom2.fuzz.wire import Peer, run_setup, setup_pdu

__all__ = ["ProviderTarget", "RemoteTarget", "identity", "parse_address"]

Connector = Callable[[tuple[str, int]], socket.socket]


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as a socket address."""
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _open_fds() -> int:
    """File descriptors this process holds (Linux; 0 elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return 0


#: Actions that give the user a primitive (PS3.8 §5.5 of the spec notes).


class _Recorder:
    """Observer of a provider's transitions: the cells, and waits for a state."""

    def __init__(self) -> None:
        self.cells: list[tuple[str, str, str]] = []
        self.state = "Sta1"
        self.indications = 0  # primitives the user has been given so far
        self.changed = threading.Condition()

    def __call__(self, transition: Transition) -> None:
        with self.changed:
            action, nxt = transition.action.value, transition.next_state.value
            self.cells.append((transition.event.value, transition.state.value, action))
            if action in INDICATING and (action != "AE-6" or nxt == "Sta3"):
                self.indications += 1
            self.state = nxt
            self.changed.notify_all()

    def wait_state(self, state: str, timeout: float = 2.0) -> bool:
        """Wait (on a condition, no polling) until the provider is in ``state``."""
        with self.changed:
            return self.changed.wait_for(lambda: self.state == state, timeout)


def _linger_until(peer: Peer, facts: Facts, artim: float | None, late: float) -> float | None:
    """When a target waiting in Sta2/Sta13 must have closed: after ARTIM from its last PDU."""
    if artim is None:
        return None
    ref = max([facts.t_start, *peer.times, time.monotonic()])
    return ref + artim + late


class ProviderTarget:
    """Our DULServiceProvider over a real socket pair on 127.0.0.1, with a scripted user."""

    name = "provider"
    ends: tuple[str, ...] = ("fin",) * 6 + ("quiet", "linger")

    def __init__(
        self,
        artim: float = 0.2,
        *,
        response_timeout: float = 2.0,
        quiet: float = 0.02,
        max_delay: float = 0.02,
        tolerance: tuple[float, float] = (0.05, 0.5),
    ) -> None:
        self.artim = artim
        self.response_timeout = response_timeout
        self.quiet = quiet
        self.max_delay = max_delay
        self.tolerance = tolerance
        self.scenarios = list(SCENARIOS)
        self.pipelinable = frozenset(PIPELINE_PREFIX)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(response_timeout)
        self.baseline = (threading.active_count(), _open_fds())
        self.deadline: float | None = None  # the campaign's end: Peer raises OutOfTime past it

    def close(self) -> None:
        """Stop listening."""
        self.listener.close()

    def run(self, case: Case) -> Result:
        """One case on a fresh provider; leaks, thread deaths and hangs are failures."""
        began = time.perf_counter()
        scenario = SCENARIOS[case.scenario]
        recorder = _Recorder()
        facts = Facts(start="Sta2" if case.pipelined else scenario.start, artim=self.artim)
        facts.prefix = _prefix(case)
        dul, peer_sock = self._connect(scenario.requestor, recorder, facts)
        user = _User(scenario.user, dul.send)
        base = 0
        user_thread = threading.Thread(
            target=self._user_loop, args=(dul, user, scenario.requestor), name="fuzz-user"
        )
        user_thread.start()
        if scenario.requestor:
            peer_sock = self._accept()
        peer = Peer(
            peer_sock or socket.socket(),
            response_timeout=self.response_timeout,
            deadline=lambda: self.deadline,
        )
        problems: list[str] = []
        try:
            if peer_sock is None:
                facts.setup_error = "other: the requestor did not connect"
            elif not case.pipelined:
                facts.setup_error = run_setup(peer, scenario.steps, facts, recorder.wait_state)
            if not facts.setup_error:
                facts.t_start = peer.times[-1] if peer.times else facts.t_start
                self._settle(user, recorder)
                peer.mark()
                base = len(user.indications)
                prefix = b"".join(d for _, d in facts.prefix)
                delivered = peer.deliver(case.stream, case, prefix)
                facts.delivered = delivered if case.delivery.close_at is not None else None
                linger = _linger_until(peer, facts, self.artim, self.tolerance[1])
                waiting = lambda: recorder.state in ("Sta2", "Sta13")  # noqa: E731
                peer.finish(case.end, quiet=self.quiet, linger_until=linger, worth_waiting=waiting)
        finally:
            if peer.our_close != "rst":
                peer.close()
            problems += self._end(dul, user_thread, recorder, scenario.requestor)
        facts.t_outputs = peer.times[peer.base :]
        facts.t_close = peer.t_close
        observed = peer.observed(user.indications[base:] if not facts.setup_error else [])
        observed.artim_expired = peer.lingered_out
        if facts.setup_error and not problems:
            judgement = Judgement("setup-failed", facts.setup_error)
        elif problems:
            judgement = Judgement("failure", "; ".join(problems))
        else:
            facts.target_ac = first_ac(peer.outputs)
            judgement = evaluate(
                case.pdus,
                observed,
                facts,
                scenario.user.policy(),
                tolerance=self.tolerance,
                readings=NETDICOM2,
            )
        elapsed = time.perf_counter() - began
        return Result(case, judgement, observed.outcome(), recorder.cells, elapsed, peer.raw())

    def _connect(
        self, requestor: bool, recorder: _Recorder, facts: Facts
    ) -> tuple[DULServiceProvider, socket.socket | None]:
        """A provider on a fresh connection: acceptor on an accepted socket, or a requestor."""
        facts.t_start = time.monotonic()
        if requestor:
            dul = DULServiceProvider(
                address=self.listener.getsockname(), artim_timeout=self.artim, observer=recorder
            )
            dul.start()
            return dul, None
        client = socket.create_connection(self.listener.getsockname())
        server, _ = self.listener.accept()
        dul = DULServiceProvider(server, artim_timeout=self.artim, observer=recorder)
        dul.start()
        return dul, client

    def _accept(self) -> socket.socket | None:
        """Our end of the requestor target's connection."""
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return None
        return sock

    def _user_loop(self, dul: DULServiceProvider, user: _User, requestor: bool) -> None:
        """The target's user: open the association if requestor, then answer indications."""
        try:
            if requestor:
                user._try(_requestor_rq())
            for _ in range(1000):  # bounded: the provider stops within the case
                try:
                    primitive = dul.receive(self.response_timeout)
                except TimeoutError:
                    continue
                user.react(primitive)
        except NetDicomError:
            return  # ProviderStoppedError: the association and the provider are over

    def _settle(self, user: _User, recorder: _Recorder) -> None:
        """Let the user take in the setup's indications before the stream starts."""
        expected = recorder.indications
        with user.changed:
            user.changed.wait_for(lambda: len(user.indications) >= expected, self.response_timeout)

    def _end(
        self,
        dul: DULServiceProvider,
        user_thread: threading.Thread,
        recorder: _Recorder,
        requestor: bool,
    ) -> list[str]:
        """Wait for the association to end and every thread to exit; report what did not."""
        problems = []
        if not recorder.wait_state("Sta1", self.response_timeout):
            problems.append(f"provider still in {recorder.state} after the transport closed")
        if requestor:
            dul.stop()
        dul.join(self.response_timeout)
        if dul.is_alive():
            problems.append("provider thread did not exit")
            dul.kill()
        user_thread.join(self.response_timeout)
        if user_thread.is_alive():
            problems.append("user thread blocked in receive()")
        error = getattr(dul, "_error", None)
        if error is not None:
            problems.append(f"exception escaped the event loop: {error!r}")
        threads, fds = threading.active_count(), _open_fds()
        if threads > self.baseline[0] or fds > self.baseline[1]:
            problems.append(
                f"left {threads - self.baseline[0]} threads, {fds - self.baseline[1]} fds"
            )
        return problems


class RemoteTarget:
    """A remote acceptor at HOST:PORT, judged from the wire alone (black box).

    A refused connection is a crash only when the peer keeps refusing (``REFUSED_FOR`` s), and
    a peer that stays silent and open through ``SILENT_CASES`` cases in a row has stopped
    answering (also a crash); shorter refusals count as setup failures (``refused``).

    A peer serving one association at a time (``serial``, probed for ``--jobs``; DCMTK
    ``storescp`` without ``--fork``) leaves our other connections in its accept queue: its
    ARTIM for one of them (Evt5 → AE-5, PS3.8 §9.1.5) starts once the connections ahead of it
    ended, so Sta2 timing is measured from then (``Facts.t_start_late``), not from our connect.
    """

    ends: tuple[str, ...] = ("fin", "quiet", "quiet", "linger")
    REFUSED_FOR = 1.0
    SILENT_CASES = 3
    LINGER_SHARE = 0.25  # of the campaign's time, at most, spent waiting for ARTIM
    MEASURED = 2  # ARTIM waited out this often on one path: later cases on it do not linger
    PROBE = 0.5  # a second association answered within this long → not serial

    def __init__(
        self,
        address: tuple[str, int],
        *,
        connect: Connector | None = None,
        artim: float | None = None,
        response_timeout: float = 3.0,
        quiet: float = 0.05,
        max_delay: float = 0.05,
        tolerance: tuple[float, float] = (0.25, 0.5),
    ) -> None:
        self.address = address
        self.name = f"{address[0]}:{address[1]}"
        self.connector = connect or (
            lambda a: socket.create_connection(a, timeout=response_timeout)
        )
        self.artim = artim
        self.response_timeout = response_timeout
        self.quiet = quiet
        self.max_delay = max_delay
        self.tolerance = tolerance
        self.scenarios = black_box_scenarios()
        self.pipelinable = frozenset(PIPELINE_PREFIX)
        self.crashed = False
        self.stopped = ""  # why the peer counts as crashed or gone
        self.silent = 0  # cases in a row without a byte or a close from the peer
        self.deadline: float | None = None
        self.identity: dict[str, str] = {}
        self.lingered: Counter[str] = Counter()  # ARTIM waits by path (see run.waiting)
        self.linger_time = 0.0
        self.first = time.monotonic()  # reset by the first case
        self.cases = 0
        # None: not probed (Sta2 "late" then allows for queueing, "early" does not).
        self.serial: bool | None = None
        self._lock = threading.Lock()
        self._connecting = threading.Lock()
        self._tickets = 0
        self._ends: dict[int, float | None] = {}  # our connections: when each ended (None: open)

    def close(self) -> None:
        """Nothing held between cases."""

    def alive(self) -> bool:
        """A fresh connection is accepted, now or within ``REFUSED_FOR`` seconds."""
        until = time.monotonic() + self.REFUSED_FOR
        while True:
            try:
                self.connector(self.address).close()
            except OSError:
                if time.monotonic() >= until:
                    return False
                threading.Event().wait(0.1)  # harness back-off between probes
                continue
            return True

    def check(self) -> None:
        """Before a campaign: connect and associate once; raise OSError or say it is silent.

        Raises ``OSError`` when nothing can be connected (the caller names the address) and
        ``ConnectionError`` when the peer accepts but neither answers an A-ASSOCIATE-RQ nor
        closes within the response timeout (it is not answering at all). Records
        the peer's identity from its A-ASSOCIATE-AC (implementation class UID, version name).
        """
        sock = self.connector(self.address)
        peer = Peer(sock, response_timeout=self.response_timeout)
        try:
            peer.send(setup_pdu("RQ"))
            answer = peer.expect("")
            if answer is None and peer.end is not None:
                return  # it closed without an answer: a reaction the campaign will judge
            if answer is None:
                raise ConnectionError(
                    f"{self.name} accepted the connection but answered nothing to an "
                    f"A-ASSOCIATE-RQ within {self.response_timeout:g} s ({peer.end or 'open'})"
                )
            self.identity = identity(answer)
            peer.send(bytes.fromhex("07000000000400000000"))  # A-ABORT: we are done
        finally:
            peer.close()

    def probe_serial(self) -> None:
        """``--jobs``: does the peer leave a second association unanswered? (``serial``)"""
        try:
            sock = self.connector(self.address)
        except OSError:
            return  # the campaign's cases will tell
        peer = Peer(sock, response_timeout=self.response_timeout)
        try:
            peer.send(setup_pdu("RQ"))
            if peer.expect("AC") is None:
                return  # not associated: nothing to hold open while probing
            self.serial = self._probe_serial()  # while this association is held open
            peer.send(bytes.fromhex("07000000000400000000"))  # A-ABORT: we are done
        finally:
            peer.close()

    def _probe_serial(self) -> bool | None:
        """While one association is open: is a second A-ASSOCIATE-RQ left unanswered?"""
        try:
            sock = self.connector(self.address)
        except OSError:
            return None
        other = Peer(sock, response_timeout=self.PROBE)
        try:
            other.send(setup_pdu("RQ"))
            other.expect("")  # AC, or RJ (e.g. 2/3/2 local limit exceeded): served at once
            if other.outputs or other.end is not None:
                if other.outputs and wire_kind(other.outputs[0]).startswith("AC"):
                    other.send(bytes.fromhex("07000000000400000000"))
                return False
            return True  # still in its accept queue: one association at a time
        finally:
            other.close()

    def _enter(self) -> tuple[int, list[int]]:
        """A ticket for our next connection, and the ones still open ahead of it."""
        with self._lock:
            ticket = self._tickets
            self._tickets += 1
            ahead = [t for t, end in self._ends.items() if end is None]
            self._ends[ticket] = None
        return ticket, ahead

    def _leave(self, ticket: int, ended: float) -> None:
        """Our connection ``ticket`` is over for the peer (its close, or ours)."""
        if ticket < 0:
            return
        with self._lock:
            self._ends[ticket] = ended
            if len(self._ends) > 4096:  # bounded: forget long-ended connections
                done = sorted(t for t, end in self._ends.items() if end is not None)
                for old in done[: len(done) // 2]:
                    del self._ends[old]

    def _queued_until(self, ahead: list[int]) -> float:
        """When the connections ``ahead`` of ours had all ended (now for those still open)."""
        now = time.monotonic()
        with self._lock:
            ends = [self._ends.get(t, 0.0) for t in ahead]
        return max([0.0, *(now if end is None else end for end in ends)])

    def rerun(self, case: Case) -> Result:
        """``case`` again to confirm, shrink or replay a finding: it lingers when it did."""
        return self.run(case, measure=True)

    def run(self, case: Case, *, measure: bool = False) -> Result:
        """One case on a fresh connection; black-box oracle, then the crash probe."""
        began = time.perf_counter()
        if not self.cases:
            self.first = time.monotonic()
        self.cases += 1
        scenario = SCENARIOS[case.scenario]
        facts = Facts(start="Sta2" if case.pipelined else scenario.start, artim=self.artim)
        facts.prefix = _prefix(case)
        policy = Policy()  # an automatic SCP user: answers, may reject, may react to data
        ticket, ahead = -1, list[int]()
        try:
            if self.serial is False:
                sock = self.connector(self.address)
            else:
                # Connect and take our place in one step: the peer's accept queue is FIFO
                # (connections in the order their handshakes completed).
                with self._connecting:
                    sock = self.connector(self.address)
                    ticket, ahead = self._enter()
        except OSError as exc:
            return self._refused(case, exc)
        facts.t_start = time.monotonic()
        peer = Peer(sock, response_timeout=self.response_timeout, deadline=lambda: self.deadline)
        waited: list[str] = [""]
        try:
            if not case.pipelined:
                facts.setup_error = run_setup(peer, scenario.steps, facts, None)
            if not facts.setup_error:
                facts.t_start = peer.times[-1] if peer.times else facts.t_start
                peer.mark()
                prefix = b"".join(d for _, d in facts.prefix)
                delivered = peer.deliver(case.stream, case, prefix)
                facts.delivered = delivered if case.delivery.close_at is not None else None
                linger = _linger_until(peer, facts, self.artim, self.tolerance[1])

                def linger_until() -> float:
                    # A queued connection: its ARTIM starts once those ahead of it ended.
                    assert linger is not None and self.artim is not None
                    return max(linger, self._queued_until(ahead) + self.artim + self.tolerance[1])

                def waiting() -> bool:
                    facts.target_ac = first_ac(peer.outputs)
                    observed = peer.observed(None)
                    state = artim_pending(case.pdus, observed, facts, policy)
                    kinds = sorted({label.split(":")[0] for label, _ in case.pdus})
                    partial = case.delivery.close_at is not None
                    waited[:] = [f"{state} {kinds} {partial}"]
                    # Measured enough: ARTIM was already waited out MEASURED times on this
                    # path (state, kinds of input, early close); again decides nothing.
                    # And lingering takes at most LINGER_SHARE of the campaign's time.
                    spent = time.monotonic() - self.first
                    share = self.linger_time + time.monotonic() - linger_began
                    return bool(state) and (
                        measure
                        or (
                            self.lingered[waited[0]] < self.MEASURED
                            and share <= self.LINGER_SHARE * spent + 2 * one_wait
                        )
                    )

                linger_began = time.monotonic()
                one_wait = (self.artim or 0.0) + self.tolerance[1]  # one full wait

                until = linger_until if linger is not None and ahead else linger
                peer.finish(case.end, quiet=self.quiet, linger_until=until, worth_waiting=waiting)
                if case.end == "linger":
                    self.linger_time += time.monotonic() - linger_began
        finally:
            if peer.our_close != "rst":
                peer.close()
            gave_up = time.monotonic()
            self._leave(ticket, peer.t_close or gave_up)
        # Still behind an open connection of ours when we gave up: its silence is our queue's.
        queued = bool(ahead) and self._queued_until(ahead) >= gave_up - self.quiet
        self._queue_start(facts, peer, ahead)
        facts.t_outputs = peer.times[peer.base :]
        facts.t_close = peer.t_close
        observed = peer.observed(None)
        observed.artim_expired = peer.lingered_out
        facts.target_ac = first_ac(peer.outputs)
        judgement = evaluate(case.pdus, observed, facts, policy, tolerance=self.tolerance)
        if case.end == "linger" and waited[0]:
            self.lingered[waited[0]] += 1
        if observed.wire[:1] and observed.wire[0].endswith(",3,2)"):
            # PS3.8 Table 9-21: source 3 reason 2, local limit exceeded: the peer was busy
            # (too many associations); the case never reached its start state.
            detail = f"rejected: {observed.wire[0]} local limit exceeded"
            judgement = Judgement("setup-failed", detail, labels=judgement.labels)
        silent = not peer.outputs and peer.end is None and peer.our_close != "rst" and not queued
        self.silent = self.silent + 1 if silent else 0
        if self.silent >= self.SILENT_CASES:
            self.crashed = True
            self.stopped = f"stopped answering: {self.silent} cases without a byte or a close"
            judgement = Judgement("crash", self.stopped, labels=judgement.labels, key="silent")
        elif not self.alive():
            self.crashed = True
            self.stopped = f"refuses connections for {self.REFUSED_FOR:g} s"
            judgement = Judgement(
                "crash",
                f"refused after: {judgement.detail}",
                labels=judgement.labels,
                key="refused after the case",
            )
        elapsed = time.perf_counter() - began
        return Result(case, judgement, observed.outcome(), judgement.cells, elapsed, peer.raw())

    def _queue_start(self, facts: Facts, peer: Peer, ahead: list[int]) -> None:
        """Sta2's ARTIM start on a peer that may serve one association at a time."""
        if not ahead:
            return
        queued = self._queued_until(ahead)
        if peer.times and peer.times[0] < queued - self.tolerance[0]:
            # It answered us while one ahead was still open: it serves several at once.
            self.serial = False
            return
        # It accepted us before it reacted at all: no later than its first PDU or its close.
        evidence = [*peer.times[:1], *([peer.t_close] if peer.t_close is not None else [])]
        queued = min([queued, *evidence])
        facts.t_start_late = max(facts.t_start, queued)
        if self.serial:  # probed: the accept queue is the only way in
            facts.t_start = facts.t_start_late

    def _refused(self, case: Case, exc: OSError) -> Result:
        """A connect that failed: transient (setup failure) unless the peer keeps refusing."""
        if self.alive():
            detail = f"refused: connect failed ({exc.__class__.__name__}), then accepted again"
            return Result(case, Judgement("setup-failed", detail), "refused")
        self.crashed = True
        self.stopped = f"refuses connections for {self.REFUSED_FOR:g} s ({exc})"
        return Result(case, Judgement("crash", self.stopped, key="refused"), "crash")


def identity(pdu: bytes) -> dict[str, str]:
    """The implementation class UID (52H) and version name (55H) in an RQ/AC (PS3.7 D.3.3.2)."""
    out: dict[str, str] = {}
    off = 6 + 68
    while off + 4 <= len(pdu):
        item, length = pdu[off], int.from_bytes(pdu[off + 2 : off + 4], "big")
        if item == 0x50:
            sub = off + 4
            while sub + 4 <= min(len(pdu), off + 4 + length):
                kind, size = pdu[sub], int.from_bytes(pdu[sub + 2 : sub + 4], "big")
                value = pdu[sub + 4 : sub + 4 + size].decode("latin-1").rstrip("\x00 ")
                if kind == 0x52:
                    out["implementation_class_uid"] = value
                elif kind == 0x55:
                    out["implementation_version_name"] = value
                sub += 4 + size
        off += 4 + length
    return out
