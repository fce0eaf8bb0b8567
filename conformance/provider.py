"""Target ``provider``: the threaded ``DULServiceProvider`` over real loopback sockets.

The scripted peer talks to the provider through TCP on 127.0.0.1; the script's user steps
call the provider's user API (``send``, ``receive``). The next state and ARTIM are read from
the provider's core through an observer (white box); everything else is what the peer sees
on the wire and what the user receives. Sta4 (a TRANSPORT CONNECT that has not completed)
comes from a ``connect=`` callable that waits on a gate the script opens (Evt2) or fails
(Evt17).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass

from netdicom2.conformance.peer import Address, Listener, Wire
from netdicom2.conformance.runner import StepFailed, WireSteps, frame_text, matches, rules_text
from netdicom2.conformance.script import (
    Accept,
    AwaitState,
    Connect,
    ElapseArtim,
    ExpectArtim,
    ExpectClosed,
    ExpectNoTransition,
    ExpectRefused,
    ExpectTransition,
    RefuseConnect,
    Script,
    Step,
    UserExpect,
    UserExpectNothing,
    UserSend,
)
from netdicom2.conformance.table import PDU_NAMES
from netdicom2.connection import Transition
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.exceptions import LocalProtocolError, ProviderStoppedError, TimeoutError
from netdicom2.fsm import State

__all__ = ["ProviderDriver"]


@dataclass(frozen=True)
class Snapshot:
    """A transition as the observer saw it, with ARTIM's deadline right after it."""

    transition: Transition
    artim: float | None
    at: float


class ProviderDriver(WireSteps):
    """Drives one DULServiceProvider (acceptor or requestor, per the script's role)."""

    def __init__(self, script: Script) -> None:
        """Listening sockets on loopback; a requestor provider is created (idle, Sta1) now."""
        super().__init__()
        self.script = script
        self.dul: DULServiceProvider | None = None
        self.snapshots: queue.Queue[Snapshot] = queue.Queue()
        self.error: LocalProtocolError | None = None
        self.gate = threading.Event()
        self.refuse = False
        self.listener = Listener()  # the peer's side for a requestor, the IUT's for an acceptor
        self.current: Snapshot | None = None
        self._mark_state = State.Sta1
        self._mark_artim: float | None = None
        self._inject_time = time.monotonic()
        if script.role == "requestor":
            self.dul = DULServiceProvider(
                address=self.listener.address,
                connect=self._connector if script.hold_connect else None,
                artim_timeout=script.artim,
                observer=self._observe,
                name=f"provider {script.cell}",
            )
            self.dul.start()

    def _observe(self, transition: Transition) -> None:
        """Observer (loop or user thread, under the provider's lock): record the step."""
        artim = self.dul.connection.artim_deadline if self.dul is not None else None
        self.snapshots.put(Snapshot(transition, artim, time.monotonic()))

    def _connector(self, address: Address) -> socket.socket:
        """A TRANSPORT CONNECT that completes (Evt2) or fails (Evt17) when the script says."""
        if not self.gate.wait(30.0) or self.refuse:
            raise ConnectionRefusedError("connect refused by the script")
        return socket.create_connection(self.listener.address, timeout=5)

    def _state(self) -> State:
        """The provider's state; Sta1 before an acceptor exists."""
        return self.dul.state if self.dul is not None else State.Sta1

    def mark_inject(self) -> None:
        """Setup is done: forget its transitions, remember state and ARTIM."""
        while not self.snapshots.empty():
            self.snapshots.get_nowait()
        self._mark_state = self._state()
        self._mark_artim = self.dul.connection.artim_deadline if self.dul is not None else None
        self._inject_time = time.monotonic()

    def step(self, step: Step) -> str:
        """Perform one step against the provider or on the wire."""
        if self.error is not None and not isinstance(step, ExpectRefused):
            raise StepFailed(f"the IUT refused a local input: {self.error}")
        note = self.wire_step(step) if not isinstance(step, ExpectClosed) else None
        if note is not None:
            return note
        if isinstance(step, Connect):
            return self._connect()
        if isinstance(step, Accept):
            self.gate.set()
            self.wire = Wire(self.listener.accept(step.within))
            return "accepted the provider's TCP connection (its Evt2)"
        if isinstance(step, RefuseConnect):
            self.refuse = True
            self.gate.set()
            return "the provider's connect fails (its Evt17)"
        if isinstance(step, ExpectClosed):
            if self.wire is None and self.script.hold_connect:
                return self._connect_abandoned()
            return self._expect_closed(step)
        if isinstance(step, UserSend | UserExpect | UserExpectNothing | ExpectRefused):
            return self._user(step)
        if isinstance(step, AwaitState):
            return self._await_state(step)
        if isinstance(step, ExpectTransition):
            return self._expect_transition(step)
        if isinstance(step, ExpectNoTransition):
            if not self.snapshots.empty() or self._state() != self._mark_state:
                raise StepFailed(f"a transition happened; now {self._state()}")
            return f"no transition, still {self._state()}"
        if isinstance(step, ExpectArtim):
            return self._expect_artim(step)
        if isinstance(step, ElapseArtim):
            running = self.dul is not None and self.dul.connection.artim_deadline is not None
            return "waiting for ARTIM on the wall clock" if running else "ARTIM not running"
        raise StepFailed(f"step {type(step).__name__} is not available on target provider")

    def _connect(self) -> str:
        """The peer connects; the accepted socket becomes an acceptor provider (Evt5, AE-5)."""
        client = socket.create_connection(self.listener.address, timeout=5)
        server = self.listener.accept(5.0)
        self.wire = Wire(client)
        self.dul = DULServiceProvider(
            server,
            artim_timeout=self.script.artim,
            observer=self._observe,
            name=f"provider {self.script.cell}",
        )
        # The observer saw Evt5 (AE-5) inside the constructor, before ``self.dul`` existed:
        # complete that snapshot with ARTIM's deadline now (the loop has not started yet).
        early = [self.snapshots.get_nowait() for _ in range(self.snapshots.qsize())]
        for snap in early:
            self.snapshots.put(
                Snapshot(snap.transition, self.dul.connection.artim_deadline, snap.at)
            )
        self.dul.start()
        return "connected; the provider got the socket (Evt5)"

    def _connect_abandoned(self) -> str:
        """Sta4: with no connection made, "closed" means the provider gave the connect up."""
        if self._state() is not State.Sta1:
            raise StepFailed(f"the pending connect was not given up; in {self._state()}")
        return "the pending TRANSPORT CONNECT was given up (no connection made)"

    def _user(self, step: UserSend | UserExpect | UserExpectNothing | ExpectRefused) -> str:
        """The local user's side of the provider API."""
        dul = self.dul
        if dul is None:
            raise StepFailed("no provider yet")
        if isinstance(step, UserSend):
            try:
                dul.send(step.primitive)
            except ProviderStoppedError as exc:
                raise StepFailed(f"the provider has stopped: {exc}") from exc
            except LocalProtocolError as exc:
                self.error = exc
                return f"refused: {exc}"
            return f"user sent {PDU_NAMES[step.primitive.pdu_type]}"
        if isinstance(step, ExpectRefused):
            if self.error is None:
                raise StepFailed("the local input was accepted; Table 9-10 has no action for it")
            error, self.error = self.error, None
            if not self.snapshots.empty() or dul.state != self._mark_state:
                raise StepFailed(f"refused but changed: now {dul.state}")
            return f"LocalProtocolError ({error}); state unchanged"
        within = step.within
        try:
            got = dul.receive(timeout=within)
        except (TimeoutError, ProviderStoppedError) as exc:
            if isinstance(step, UserExpectNothing):
                return "no indication"
            raise StepFailed(
                f"no indication ({type(exc).__name__}); expected {rules_text((step.pdu,))}"
            ) from exc
        if isinstance(step, UserExpectNothing):
            raise StepFailed(f"unexpected indication {got!r}")
        if not matches(got.encode(), (step.pdu,)):
            raise StepFailed(f"indication {got!r}; expected {rules_text((step.pdu,))}")
        return f"user got {frame_text(got.encode())}"

    def _await_state(self, step: AwaitState) -> str:
        """Follow the transitions until the provider is in the wanted state."""
        deadline = time.monotonic() + step.within
        while self._state() != step.state:
            try:
                self.snapshots.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise StepFailed(f"in {self._state()}, expected {step.state}") from None
        return f"in {step.state}"

    def _expect_transition(self, step: ExpectTransition) -> str:
        """The first transition after the event (white box, from the provider's core)."""
        try:
            snap = self.snapshots.get(timeout=step.within)
        except queue.Empty:
            raise StepFailed(f"no transition within {step.within} s; in {self._state()}") from None
        got = snap.transition
        first = self.current is None
        self.current = snap
        if (
            (first and got.state != self._mark_state)
            or got.event != step.event
            or got.action != step.action
            or got.next_state not in step.next_states
        ):
            raise StepFailed(f"transition {got}; expected {step.event} -> {step.action}")
        return str(got)

    def _expect_artim(self, step: ExpectArtim) -> str:
        """ARTIM's deadline right after the transition (PS3.8 §9.1.5)."""
        if self.current is not None:
            deadline, at = self.current.artim, self.current.at
        else:
            deadline = self.dul.connection.artim_deadline if self.dul is not None else None
            at = time.monotonic()
        if step.expect == "stop" and deadline is not None:
            raise StepFailed("ARTIM still running")
        if step.expect == "keep" and deadline != self._mark_artim:
            raise StepFailed(f"ARTIM changed from {self._mark_artim} to {deadline}")
        if step.expect == "start":
            if deadline is None:
                raise StepFailed("ARTIM not running")
            started = deadline - self.script.artim
            if not self._inject_time - 0.01 <= started <= at + 0.01:
                raise StepFailed(f"ARTIM started {started - self._inject_time:+.3f} s from event")
        return f"ARTIM {step.expect}"

    def close(self) -> None:
        """Release the gate, kill the provider, close sockets."""
        if not self.gate.is_set():
            self.refuse = True
            self.gate.set()
        if self.dul is not None:
            self.dul.kill()
        self.close_wire()
        self.listener.close()
