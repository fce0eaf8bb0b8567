"""Target ``local``: the sans-I/O ``Connection``, white box, on a fake clock.

The driver plays both the scripted peer and the local user against one
``netdicom2.connection.Connection``: wire steps become ``receive_bytes`` /
``transport_accepted`` / ``transport_connected`` / ``transport_closed`` calls, the PDUs the
core asks to send are what the peer "receives", indications are what the user receives, and
the clock moves only when a step says so (``ElapseArtim``). Nothing sleeps, so the whole
matrix runs in a fraction of a second. The next state is read from the core's transcript.
"""

from __future__ import annotations

from collections import deque

from netdicom2.conformance.runner import Driver, StepFailed, frame_text, matches, rules_text
from netdicom2.conformance.script import (
    Accept,
    AwaitState,
    Close,
    Connect,
    ElapseArtim,
    Expect,
    ExpectArtim,
    ExpectClosed,
    ExpectNoTransition,
    ExpectRefused,
    ExpectSilence,
    ExpectTransition,
    HalfClose,
    RefuseConnect,
    Reset,
    Script,
    Send,
    Step,
    TransportEvent,
    UserExpect,
    UserExpectNothing,
    UserSend,
)
from netdicom2.conformance.table import PDU_NAMES
from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    OpenTransport,
    SendPDU,
    StartTimer,
    StopTimer,
)
from netdicom2.exceptions import LocalProtocolError
from netdicom2.fsm import State
from netdicom2.pdu import PDU

__all__ = ["LocalDriver", "effect_tokens", "tokens_match"]


def effect_tokens(effects: list[Effect]) -> list[str]:
    """The core's effects as the oracle's tokens ("send A-ABORT", "start", "close", …)."""
    out = []
    for effect in effects:
        if isinstance(effect, SendPDU):
            out.append(f"send {PDU_NAMES[effect.pdu.pdu_type]}")
        elif isinstance(effect, Indicate):
            out.append(f"indicate {PDU_NAMES[effect.primitive.pdu_type]}")
        elif isinstance(effect, StartTimer):
            out.append("start")
        elif isinstance(effect, StopTimer):
            out.append("stop")
        elif isinstance(effect, OpenTransport):
            out.append("open")
        elif isinstance(effect, CloseTransport):
            out.append("close")
    return out


def tokens_match(expected: tuple[str, ...], got: list[str], artim_was_running: bool) -> bool:
    """Equal in order; AA-2's "stop?" is required if ARTIM ran and allowed if not (§9.1.5)."""
    with_stop = ["stop" if token == "stop?" else token for token in expected]
    without = [token for token in expected if token != "stop?"]
    return got == with_stop or (not artim_was_running and got == without)


class LocalDriver(Driver):
    """Drives one ``Connection`` from a script, on a clock that moves only when told."""

    def __init__(self, script: Script) -> None:
        """A fresh Connection in Sta1 with the script's ARTIM duration."""
        super().__init__()
        self.script = script
        self.now = 1000.0
        self.conn = Connection(artim_timeout=script.artim)
        self.outbox: deque[bytes] = deque()
        self.indications: deque[PDU] = deque()
        self.closed_at: float | None = None
        self.connect_pending = False
        self.peer_open = False
        self.error: LocalProtocolError | None = None
        self.reference = self.now  # the last wire activity, for ARTIM measurements
        self.inject_effects: list[Effect] | None = None
        self._mark_len = 0
        self._cursor = 0
        self._mark_state = State.Sta1
        self._mark_artim: float | None = None
        self._inject_time = self.now

    def _apply(self, effects: list[Effect]) -> None:
        """Route effects: sent PDUs to the peer, indications to the user, closes noted."""
        if self.inject_effects is not None:
            self.inject_effects.extend(effects)
        for effect in effects:
            if isinstance(effect, SendPDU):
                self.outbox.append(effect.data)
            elif isinstance(effect, Indicate):
                self.indications.append(effect.primitive)
            elif isinstance(effect, OpenTransport):
                self.connect_pending = True
            elif isinstance(effect, CloseTransport):
                self.closed_at = self.now
                self.connect_pending = False

    def mark_inject(self) -> None:
        """Remember the state before the event; move the clock a little (restart ≠ keep)."""
        self._mark_len = len(self.conn.transcript)
        self._cursor = self._mark_len
        self._mark_state = self.conn.state
        self._mark_artim = self.conn.artim_deadline
        self.now += self.script.artim / 4
        self._inject_time = self.now
        self.inject_effects = []

    def step(self, step: Step) -> str:
        """Perform one step on the Connection."""
        if self.error is not None and not isinstance(step, ExpectRefused):
            raise StepFailed(f"the IUT refused a local input: {self.error}")
        try:
            return self._step(step)
        except LocalProtocolError as exc:
            if isinstance(step, (UserSend, TransportEvent)):
                self.error = exc
                return f"refused: {exc}"
            raise StepFailed(f"LocalProtocolError: {exc}") from exc

    def _step(self, step: Step) -> str:
        """The step's effect on the Connection (LocalProtocolError propagates)."""
        conn = self.conn
        if isinstance(step, Connect):
            self._apply(conn.transport_accepted(self.now))
            self.peer_open = True
            self.reference = self.now
            return "transport connection accepted (Evt5)"
        if isinstance(step, Accept | RefuseConnect):
            if not self.connect_pending:
                raise StepFailed("the IUT issued no TRANSPORT CONNECT")
            self.connect_pending = False
            if isinstance(step, RefuseConnect):
                self._apply(conn.transport_closed(self.now))
                return "connect refused (Evt17)"
            self._apply(conn.transport_connected(self.now))
            self.peer_open = True
            return "connect confirmed (Evt2)"
        if isinstance(step, TransportEvent):
            call = conn.transport_connected if step.event == "Evt2" else conn.transport_accepted
            self._apply(call(self.now))
            return f"{step.event} accepted"
        if isinstance(step, Send):
            return self._send(step)
        if isinstance(step, Expect):
            return self._expect(step)
        if isinstance(step, ExpectClosed):
            return self._expect_closed(step)
        if isinstance(step, ExpectSilence):
            if self.outbox:
                raise StepFailed(f"sent {frame_text(self.outbox[0])} where nothing was expected")
            if not conn.transport_open:
                raise StepFailed("the transport was closed where nothing was expected")
            return "nothing sent, transport open"
        if isinstance(step, Close | HalfClose | Reset):
            if self.peer_open:
                self._apply(conn.transport_closed(self.now))
                self.peer_open = False
                self.reference = self.now
            return "transport closed by the peer (Evt17)"
        if isinstance(step, UserSend):
            self._apply(conn.send(step.primitive, self.now))
            return f"user sent {PDU_NAMES[step.primitive.pdu_type]}"
        if isinstance(step, UserExpect):
            if not self.indications:
                raise StepFailed(f"no indication; expected {rules_text((step.pdu,))}")
            got = self.indications.popleft()
            if not matches(got.encode(), (step.pdu,)):
                raise StepFailed(f"indication {got!r}; expected {rules_text((step.pdu,))}")
            return f"user got {frame_text(got.encode())}"
        if isinstance(step, UserExpectNothing):
            if self.indications:
                raise StepFailed(f"unexpected indication {self.indications[0]!r}")
            return "no indication"
        if isinstance(step, ExpectRefused):
            return self._expect_refused()
        if isinstance(step, AwaitState):
            if conn.state != step.state:
                raise StepFailed(f"in {conn.state}, expected {step.state}")
            return f"in {conn.state}"
        if isinstance(step, ExpectTransition):
            return self._expect_transition(step)
        if isinstance(step, ExpectNoTransition):
            new = conn.transcript[self._mark_len :]
            if new or conn.state != self._mark_state:
                raise StepFailed(f"transitions {[str(t) for t in new]}, state {conn.state}")
            return f"no transition, still {conn.state}"
        if isinstance(step, ExpectArtim):
            return self._expect_artim(step)
        if isinstance(step, ElapseArtim):
            deadline = conn.artim_deadline
            if deadline is None:
                self.now += 3600.0  # ARTIM not running: an hour passes and nothing may happen
                self._apply(conn.handle_timer(self.now))
                return "ARTIM not running; an hour passed"
            self.now = deadline
            self._apply(conn.handle_timer(self.now))
            return f"clock moved to ARTIM's deadline (+{deadline - self._inject_time:.3f} s)"
        raise StepFailed(f"step {type(step).__name__} is not available on target local")

    def _send(self, step: Send) -> str:
        """Feed the peer's bytes to the core, piece by piece (delays move the clock)."""
        data = step.data if isinstance(step.data, bytes) else step.data.encode()
        if not self.peer_open or not self.conn.transport_open:
            return f"sending {frame_text(data)} failed: the IUT had closed the transport"
        rest = data
        pieces = []
        for size in step.segments:
            pieces.append(rest[:size])
            rest = rest[size:]
        pieces.append(rest)
        for index, piece in enumerate(p for p in pieces if p):
            if index and step.delay:
                self.now += step.delay
                self._apply(self.conn.handle_timer(self.now))
            self._apply(self.conn.receive_bytes(piece, self.now))
        self.reference = self.now
        return f"sent {frame_text(data)}"

    def _expect(self, step: Expect) -> str:
        """The next PDU the core asked to send must match (PDUs in ``skip`` passed over)."""
        while self.outbox and PDU_NAMES.get(self.outbox[0][0]) in step.skip:
            self.outbox.popleft()
        if not self.outbox:
            if step.or_silence and self.conn.transport_open:
                return "nothing sent (allowed)"
            what = "closed the transport" if not self.conn.transport_open else "sent nothing"
            raise StepFailed(f"the IUT {what}; expected {rules_text(step.any_of)}")
        data = self.outbox.popleft()
        if not matches(data, step.any_of):
            raise StepFailed(f"got {frame_text(data)}; expected {rules_text(step.any_of)}")
        self.reference = self.now
        return f"got {frame_text(data)}"

    def _expect_closed(self, step: ExpectClosed) -> str:
        """The transport is closed (by the IUT, or gone after the peer's close) and nothing sent."""
        if self.outbox:
            raise StepFailed(f"got {frame_text(self.outbox[0])} instead of a transport close")
        if self.conn.transport_open or self.connect_pending:
            raise StepFailed("the transport is still open")
        closed = self.closed_at if self.closed_at is not None else self.now
        elapsed = closed - self.reference
        self.measured["close_after"] = round(elapsed, 3)
        if elapsed < step.not_before:
            raise StepFailed(f"closed after {elapsed:.3f} s, before {step.not_before} s")
        return f"transport closed (+{elapsed:.3f} s on the fake clock)"

    def _expect_refused(self) -> str:
        """The refused input changed nothing: same state, no transition, no effect (blank)."""
        if self.error is None:
            raise StepFailed("the local input was accepted; Table 9-10 has no action for it")
        error, self.error = self.error, None
        new = self.conn.transcript[self._mark_len :]
        if self.conn.state != self._mark_state or new or self.inject_effects:
            raise StepFailed(f"refused but changed: {self.conn.state}, {new}")
        return f"LocalProtocolError ({error}); state unchanged"

    def _expect_transition(self, step: ExpectTransition) -> str:
        """The transcript's first transition after the event, and the effects it returned."""
        first = self._cursor == self._mark_len
        if self._cursor >= len(self.conn.transcript):
            raise StepFailed(f"no transition; still {self.conn.state}")
        got = self.conn.transcript[self._cursor]
        self._cursor += 1
        text = str(got)
        if (
            (first and got.state != self._mark_state)
            or got.event != step.event
            or got.action != step.action
            or got.next_state not in step.next_states
        ):
            raise StepFailed(f"transition {text}; expected {step.event} -> {step.action}")
        tokens = effect_tokens(self.inject_effects or [])
        if not first:
            return text  # the effects of later transitions are checked by the other steps
        if step.effects and not tokens_match(step.effects, tokens, self._mark_artim is not None):
            raise StepFailed(f"effects {tokens}; expected {list(step.effects)}")
        return f"{text}; effects {tokens}"

    def _expect_artim(self, step: ExpectArtim) -> str:
        """ARTIM's deadline after the event, against the one before it (PS3.8 §9.1.5)."""
        deadline = self.conn.artim_deadline
        if step.expect == "stop" and deadline is not None:
            raise StepFailed(f"ARTIM still running (deadline +{deadline - self.now:.3f} s)")
        if step.expect == "keep" and deadline != self._mark_artim:
            raise StepFailed(f"ARTIM changed from {self._mark_artim} to {deadline}")
        wanted = self._inject_time + self.script.artim
        if step.expect == "start" and (deadline is None or abs(deadline - wanted) > 1e-6):
            raise StepFailed(f"ARTIM deadline {deadline}, expected event time + ARTIM")
        return f"ARTIM {step.expect} (deadline {deadline})"

    def close(self) -> None:
        """Nothing to release."""
