"""A hostile acceptor for a requestor under test (``netdicom2 fuzz --listen [HOST:]PORT``).

The fuzzer listens; each case takes one connection from the requestor (started per case with
``--spawn CMD``, ``{port}`` replaced, or connecting by itself) and answers it from the case:
malformed A-ASSOCIATE-AC/RJ, P-DATA-TF replies, aborts and releases at odd times, silence (the
requestor's own timers), resets. The requestor's reaction is judged by the same black-box
Table 9-10 oracle as an acceptor's, with a requestor's user (PS3.8 §7: it may send its
request, release or abort once associated). A spawned requestor that dies by a signal (e.g.
SIGSEGV) is a crash finding; one that never connects is a setup failure ("unresponsive").
"""

from __future__ import annotations

import selectors
import shlex
import signal
import socket
import subprocess
import time

from netdicom2.fuzz.check import Facts, Judgement, evaluate
from netdicom2.fuzz.oracle import Policy
from netdicom2.fuzz.scenarios import SCENARIOS
from netdicom2.fuzz.strategies import Case
from netdicom2.fuzz.targets import Result, first_ac
from netdicom2.fuzz.wire import Peer, run_setup

__all__ = ["REQUESTOR_SCENARIOS", "RequestorTarget"]

#: Start states a black-box requestor reaches by itself: its RQ received (Sta5), and
#: associated after our A-ASSOCIATE-AC (Sta6: it sends its request on its own).
REQUESTOR_SCENARIOS = ["sta5", "req-sta6"]
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


class RequestorTarget:
    """Listen at ``address``; run each case on the next connection of the requestor."""

    ends: tuple[str, ...] = ("fin", "quiet", "quiet", "linger")
    max_delay = 0.05

    def __init__(
        self,
        address: tuple[str, int],
        *,
        spawn: str | None = None,
        artim: float | None = None,
        response_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        quiet: float = 0.05,
        tolerance: tuple[float, float] = (0.25, 0.5),
    ) -> None:
        self.listener = socket.create_server(address)  # OSError (in use, …): the caller says
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self.spawn = spawn
        self.artim = artim
        self.response_timeout = response_timeout
        self.connect_timeout = connect_timeout
        self.quiet = quiet
        self.tolerance = tolerance
        self.scenarios = list(REQUESTOR_SCENARIOS)
        self.pipelinable: frozenset[str] = frozenset()
        self.deadline: float | None = None
        self.crashed = False
        self.stopped = ""
        self.identity: dict[str, str] = {}
        host, port = self.address
        self.name = f"listen {host}:{port}"
        self.command = f"netdicom2 fuzz --listen {host}:{port}" + (
            f" --spawn {shlex.quote(spawn)}" if spawn else ""
        )

    def close(self) -> None:
        """Stop listening."""
        self.listener.close()

    def _start(self) -> subprocess.Popen[bytes] | None:
        """The requestor of this case, when we start it (``{port}`` in the command)."""
        if self.spawn is None:
            return None
        argv = shlex.split(self.spawn.replace("{port}", str(self.address[1])))
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _accept(self, proc: subprocess.Popen[bytes] | None) -> socket.socket | None:
        """The requestor's connection, within ``connect_timeout`` (sooner if it exited)."""
        until = time.monotonic() + self.connect_timeout
        if self.deadline is not None:
            until = min(until, self.deadline)
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while time.monotonic() < until:
                if selector.select(min(0.1, max(0.0, until - time.monotonic()))):
                    try:
                        sock, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    return sock
                if proc is not None and proc.poll() is not None:
                    return None
        return None

    def _reap(self, proc: subprocess.Popen[bytes] | None) -> str:
        """End this case's requestor; "" or how it crashed (a signal such as SIGSEGV)."""
        if proc is None:
            return ""
        wait = self.response_timeout
        if self.deadline is not None:
            wait = min(wait, max(0.0, self.deadline - time.monotonic()))
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return ""  # still running after the case: stopped by us, not a crash
        if proc.returncode < 0 and -proc.returncode in _CRASH_SIGNALS:
            return f"the requestor died by {signal.Signals(-proc.returncode).name}"
        return ""

    def check(self) -> None:
        """Nothing to check before the campaign: the listener is bound."""

    def run(self, case: Case) -> Result:
        """Accept the requestor's connection, take the setup steps, deliver, judge."""
        began = time.perf_counter()
        scenario = SCENARIOS[case.scenario]
        facts = Facts(start=scenario.start, artim=self.artim)
        policy = Policy(
            answer_associate=False,
            reject_allowed=False,
            react_to_data=True,
            role="requestor",
            initiates=True,
        )
        proc = self._start()
        try:
            sock = self._accept(proc)
            if sock is None:
                detail = "unresponsive: the requestor did not connect"
                return Result(case, Judgement("setup-failed", detail), "no connection")
            facts.t_start = time.monotonic()
            peer = Peer(
                sock, response_timeout=self.response_timeout, deadline=lambda: self.deadline
            )
            try:
                steps = tuple(s for s in scenario.steps if not s.startswith("sync:"))
                facts.setup_error = run_setup(peer, steps, facts, None)
                if peer.outputs and not self.identity:
                    from netdicom2.fuzz.nettargets import identity

                    self.identity = identity(peer.outputs[0])
                if not facts.setup_error:
                    facts.t_start = peer.times[-1] if peer.times else facts.t_start
                    peer.mark()
                    delivered = peer.deliver(case.stream, case)
                    facts.delivered = delivered if case.delivery.close_at is not None else None
                    linger = None
                    if self.artim is not None:
                        ref = max([facts.t_start, *peer.times, time.monotonic()])
                        linger = ref + self.artim + self.tolerance[1]
                    peer.finish(case.end, quiet=self.quiet, linger_until=linger)
            finally:
                if peer.our_close != "rst":
                    peer.close()
        finally:
            crash = self._reap(proc)
        facts.t_outputs = peer.times[peer.base :]
        facts.t_close = peer.t_close
        facts.target_ac = first_ac(peer.outputs)
        observed = peer.observed(None)
        observed.artim_expired = peer.lingered_out
        judgement = evaluate(case.pdus, observed, facts, policy, tolerance=self.tolerance)
        if crash:
            judgement = Judgement("crash", crash, labels=judgement.labels, key=crash)
        elapsed = time.perf_counter() - began
        return Result(case, judgement, observed.outcome(), judgement.cells, elapsed, peer.raw())
