"""Running a cell script: the step loop, PDU matching, and the wire steps shared by targets.

A driver performs each step of a ``Script`` against one target and raises ``StepFailed`` when
the IUT does not do what the step expects. ``execute`` runs the three phases and returns a
``Run``: where it failed (if it did), what was observed at each step, and timings measured
(ARTIM cells). ``WireSteps`` performs the scripted peer's wire steps over a real ``Wire``; the
provider and remote drivers share it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from netdicom2.acse import negotiate
from netdicom2.conformance.checks import ac_deviations, pdata_deviations, rj_deviations
from netdicom2.conformance.peer import Closed, Frame, PeerError, Wire, parse_frame
from netdicom2.conformance.script import (
    Close,
    Expect,
    ExpectClosed,
    ExpectIdleEnd,
    ExpectResponses,
    ExpectSilence,
    ExpectSta13,
    HalfClose,
    Pdu,
    Reply,
    Reset,
    Script,
    Send,
    Step,
    describe,
)
from netdicom2.conformance.table import PDU_NAMES
from netdicom2.dimse import c_echo_rsp, decode_command, encode_command
from netdicom2.exceptions import NetDicomError
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAssociateAcPDU, AAssociateRqPDU, AReleaseRpPDU, PDataTfPDU, decode

__all__ = [
    "Driver",
    "Inconclusive",
    "NotApplicable",
    "Run",
    "StepFailed",
    "WireSteps",
    "execute",
    "frame_text",
    "matches",
]


class StepFailed(Exception):
    """The IUT did not do what a step expects; the message says what it did instead."""


class Inconclusive(Exception):
    """The cell cannot be judged: the event was not delivered in its state, or cannot be."""


class NotApplicable(Inconclusive):
    """The peer never produced the event (its own timer did not run out): nothing to judge."""


@dataclass
class Run:
    """The outcome of one script: ok, or the phase/step that failed and why."""

    ok: bool
    phase: str | None = None
    index: int | None = None
    message: str = ""
    log: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    delivered: bool = True  # False: the inject phase could not deliver the event
    transient: tuple[int, int, int] | None = None  # an A-ASSOCIATE-RJ with result 2 seen
    na: bool = False  # the peer never produced the event (NotApplicable)
    step_text: str = ""  # the failed step, described


class Driver(ABC):
    """Performs steps against one target; ``note`` and ``measured`` collect observations."""

    def __init__(self) -> None:
        """No observations yet."""
        self.measured: dict[str, float] = {}
        self.aftermath_window = 0.0  # how long ``aftermath`` watches the wire
        self.phase = "setup"
        self.transient: tuple[int, int, int] | None = None

    @abstractmethod
    def step(self, step: Step) -> str:
        """Perform one step; return what was observed; raise StepFailed on a mismatch."""

    def mark_inject(self) -> None:  # noqa: B027 - optional hook, most drivers need it
        """Called once setup is complete, before the first inject step."""

    def aftermath(self) -> str:
        """After a failed step: what the IUT did next (for the report), "" when unknown."""
        return ""

    @abstractmethod
    def close(self) -> None:
        """Release sockets and threads."""


def execute(script: Script, driver: Driver) -> Run:
    """Run setup, inject and expect; stop at the first failing step."""
    run = Run(ok=True)
    index = 0
    try:
        for phase, steps in (
            ("setup", script.setup),
            ("inject", script.inject),
            ("expect", script.expect),
        ):
            driver.phase = phase
            if phase == "inject":
                driver.mark_inject()
            for step in steps:
                try:
                    note = driver.step(step)
                except (StepFailed, PeerError, Inconclusive) as exc:
                    run.ok, run.phase, run.index, run.message = False, phase, index, str(exc)
                    run.delivered = not isinstance(exc, Inconclusive) and phase != "setup"
                    run.na = isinstance(exc, NotApplicable)
                    run.step_text = brief(step)
                    run.log.append(f"{index:2d} {describe(step)}: FAILED: {exc}")
                    if isinstance(exc, Inconclusive):  # what follows is not judged: glance
                        driver.aftermath_window = min(driver.aftermath_window, 0.5)
                    after = driver.aftermath()
                    if after:
                        run.log.append(f"   afterwards: {after}")
                    return run
                run.log.append(f"{index:2d} {describe(step)}: {note}")
                index += 1
        return run
    finally:
        run.measured.update(driver.measured)
        run.transient = driver.transient
        driver.close()


def brief(step: Step) -> str:
    """A step in a few words, for a verdict's reason ("expect A-ASSOCIATE-AC", "hold 0.3 s")."""
    if isinstance(step, Send):
        data = step.data if isinstance(step.data, bytes) else step.data.encode()
        return f"send {frame_text(data)}"
    if isinstance(step, Expect):
        return f"expect {rules_text(step.any_of)}"
    if isinstance(step, ExpectSilence):
        return f"hold {step.duration:g} s"
    if isinstance(step, ExpectClosed):
        return "expect the close"
    if isinstance(step, ExpectSta13):
        return f"hold Sta13 after the {step.after}"
    if isinstance(step, Reply):
        return f"answer with {step.kind}"
    if isinstance(step, ExpectResponses):
        return f"expect {step.count} responses in order"
    if isinstance(step, ExpectIdleEnd):
        return "wait on an idle association"
    return type(step).__name__


def frame_text(data: bytes) -> str:
    """A received PDU in words: "A-ABORT(source=2, reason=2)", "unknown PDU type 0x09"."""
    if not data:
        return "no bytes"
    fields = parse_frame(data)
    name = PDU_NAMES.get(data[0])
    if name is None:
        return f"unknown PDU type 0x{data[0]:02X} ({len(data)} bytes)"
    if "source" in fields:
        extra = f"source={fields['source']}, reason={fields['reason']}"
        if data[0] == 0x03:
            extra = f"result={fields['result']}, {extra}"
        return f"{name}({extra})"
    if data[0] == 0x04:
        return f"{name}(PDU-length={fields['length']})"
    return name


def matches(data: bytes, rules: tuple[Pdu, ...]) -> bool:
    """Whether a PDU satisfies one of the rules (type, then source and reason when given)."""
    return matching_rule(data, rules) is not None


def matching_rule(data: bytes, rules: tuple[Pdu, ...]) -> Pdu | None:
    """The first rule a PDU satisfies (type, then result, source and reason when given)."""
    fields = parse_frame(data)
    for rule in rules:
        if PDU_NAMES.get(data[0]) != rule.name:
            continue
        if rule.source is not None and fields.get("source") not in rule.source:
            continue
        if rule.reason is not None and fields.get("reason") not in rule.reason:
            continue
        if rule.result is not None and fields.get("result") not in rule.result:
            continue
        if rule.max_length is not None and fields["length"] > rule.max_length:
            continue
        return rule
    return None


def rules_text(rules: tuple[Pdu, ...]) -> str:
    """The alternatives of an Expect, in words."""
    out = []
    for rule in rules:
        extra = []
        if rule.source is not None:
            extra.append(f"source in {list(rule.source)}")
        if rule.result is not None:
            extra.append(f"result in {list(rule.result)}")
        if rule.reason is not None:
            extra.append(f"reason in {list(rule.reason)}")
        if rule.max_length is not None:
            extra.append(f"PDU-length <= {rule.max_length}")
        out.append(rule.name + (f" ({', '.join(extra)})" if extra else ""))
    return " or ".join(out)


class WireSteps(Driver):
    """The scripted peer's wire steps over a real TCP connection (provider and remote)."""

    def __init__(self) -> None:
        """No connection yet."""
        super().__init__()
        self.wire: Wire | None = None
        self.last_rx: dict[int, Frame] = {}
        self.aftermath_window = 2.5
        self.sent_rq: AAssociateRqPDU | None = None  # our last A-ASSOCIATE-RQ
        self.announced: int | None = None  # the maximum length we announced (Annex D.1)
        self.deviations: list[str] = []  # content deviations seen outside the expect phase

    def _need_wire(self) -> Wire:
        """The connection, or a failure when there is none."""
        if self.wire is None:
            raise StepFailed("no transport connection to the IUT")
        return self.wire

    def wire_step(self, step: Step) -> str | None:
        """Perform a wire step, or return None when ``step`` is not one."""
        if isinstance(step, Send):
            data = step.data if isinstance(step.data, bytes) else step.data.encode()
            wire = self._need_wire()
            self._remember(data)
            if self.phase == "inject":
                self._check_still_there(wire)
            if not wire.send(data, step.segments, step.delay):
                return f"sending {frame_text(data)} failed: {wire.send_error} (the IUT is gone)"
            return f"sent {frame_text(data)}"
        if isinstance(step, Reply):
            return self._reply(step)
        if isinstance(step, Expect):
            return self._expect(step)
        if isinstance(step, ExpectClosed):
            return self._expect_closed(step)
        if isinstance(step, ExpectSilence):
            return self._expect_silence(step)
        if isinstance(step, ExpectSta13):
            return self._expect_sta13(step)
        if isinstance(step, ExpectResponses):
            return self._expect_responses(step)
        if isinstance(step, ExpectIdleEnd):
            return self._expect_idle_end(step)
        if isinstance(step, HalfClose):
            self._need_wire().half_close()
            return "half-closed (FIN sent, still reading)"
        if isinstance(step, Close):
            self._need_wire().close()
            return "closed (FIN)"
        if isinstance(step, Reset):
            self._need_wire().reset()
            return "reset (RST)"
        return None

    def _remember(self, data: bytes) -> None:
        """Our A-ASSOCIATE-RQ/AC: what the peer's answer and P-DATA-TF are checked against."""
        if data[:1] not in (b"\x01", b"\x02"):
            return
        try:
            pdu = decode(data)
        except NetDicomError:
            return  # a malformed RQ of a cell's own: nothing to check against
        if isinstance(pdu, AAssociateRqPDU):
            self.sent_rq = pdu
        if isinstance(pdu, AAssociateRqPDU | AAssociateAcPDU):
            self.announced = pdu.max_length

    def _check_still_there(self, wire: Wire) -> None:
        """The event is delivered only if the IUT has not closed before it (Inconclusive)."""
        try:
            event = wire.peek()
        except PeerError:
            return
        if isinstance(event, Closed):
            raise Inconclusive(
                f"the IUT had closed the transport ({event.how.upper()}) before the event"
                " was sent: it had left the state"
            )

    def _content(self, data: bytes) -> list[str]:
        """What is wrong inside a received PDU (Tables 9-18, 9-21; Annex D.1)."""
        kind = data[0]
        if kind == 0x02:
            return ac_deviations(data, self.sent_rq)
        if kind == 0x03:
            fields = parse_frame(data)
            if fields.get("result") == 2:  # rejected-transient: retried (not a deviation)
                self.transient = (fields["result"], fields["source"], fields["reason"])
            return rj_deviations(data)
        if kind == 0x04:
            return pdata_deviations(data, self.announced)
        return []

    def _judge(self, data: bytes) -> str:
        """Content deviations fail an expect step; elsewhere they are recorded."""
        found = self._content(data)
        if not found:
            return ""
        if self.phase == "expect":
            raise StepFailed(f"{frame_text(data)}: " + "; ".join(found))
        self.deviations.extend(found)
        return " (deviation: " + "; ".join(found) + ")"

    def _expect(self, step: Expect) -> str:
        """Wait for a PDU matching one of the rules (PS3.8 §9.3), checking its contents."""
        wire = self._need_wire()
        start = time.monotonic()
        deadline = start + step.within
        wanted = rules_text(step.any_of) + (" or nothing (state kept)" if step.or_silence else "")
        skipped: list[str] = []
        while True:
            event = wire.next_event(deadline)
            if event is None:
                if step.or_silence:
                    return f"nothing sent for {step.within} s (allowed)"
                raise StepFailed(
                    f"nothing within {step.within} s; expected {rules_text(step.any_of)}"
                )
            if isinstance(event, Closed):
                raise StepFailed(
                    f"the IUT closed the transport ({event.how.upper()}) after "
                    f"{event.at - start:.3f} s; expected {wanted}"
                )
            name = PDU_NAMES.get(event.pdu_type)
            if name in step.skip:
                self._judge(event.data)
                skipped.append(frame_text(event.data))
                continue
            self.last_rx[event.pdu_type] = event
            rule = matching_rule(event.data, step.any_of)
            if rule is not None:
                wire.last_activity = event.at
                extra = self._judge(event.data)
                if rule.undecided:
                    raise Inconclusive(f"got {frame_text(event.data)}: {rule.undecided}")
                first = f" (after {', '.join(skipped)})" if skipped else ""
                return f"got {frame_text(event.data)} after {event.at - start:.3f} s{first}{extra}"
            self._content(event.data)  # notes a transient rejection
            raise StepFailed(f"got {frame_text(event.data)}; expected {wanted}")

    def _expect_closed(self, step: ExpectClosed) -> str:
        """Wait for the IUT to close the transport, with no PDU first (PS3.8 §9.1.4)."""
        wire = self._need_wire()
        reference = wire.last_activity
        event = wire.next_event(reference + step.within)
        bound = None if step.expected is None else step.expected * 1.25 + 2.0
        if event is None:
            self.aftermath_window = 0.0  # we have just watched the wire that long
            waited = time.monotonic() - reference
            if step.expected is not None and bound is not None and step.within < bound:
                raise Inconclusive(
                    f"still open after {waited:.1f} s, the longest wait (--max-wait): the close"
                    f" expected about {step.expected:g} s after the last PDU was not awaited"
                )
            if step.expected is not None:
                raise StepFailed(
                    f"still open after {waited:.1f} s (expected a close about "
                    f"{step.expected:g} s after the last PDU)"
                )
            raise StepFailed(f"the transport was still open after {step.within} s")
        if isinstance(event, Frame):
            raise StepFailed(f"got {frame_text(event.data)} instead of a transport close")
        elapsed = event.at - reference
        self.measured["close_after"] = round(elapsed, 3)
        if step.how != "any" and event.how != step.how:
            raise StepFailed(f"closed with {event.how.upper()}, expected {step.how.upper()}")
        if elapsed < step.not_before:
            raise StepFailed(f"closed after {elapsed:.3f} s, before {step.not_before} s")
        if bound is not None and elapsed > bound:
            raise StepFailed(f"closes after {elapsed:.1f} s (expected about {step.expected:g} s)")
        return f"closed ({event.how.upper()}) after {elapsed:.3f} s"

    def _expect_sta13(self, step: ExpectSta13) -> str:
        """The IUT holds Sta13, then closes within its timer (PS3.8 §9.1.4, §9.1.5, Table 9-9)."""
        wire = self._need_wire()
        reference = wire.last_activity  # when the PDU that entered Sta13 arrived
        watch = step.within if step.timer is not None else step.hold
        event = wire.next_event(reference + watch)
        if event is None:
            waited = time.monotonic() - reference
            if not step.await_close:
                return (
                    f"held Sta13 for {waited:.1f} s after the {step.after}; this case checks"
                    " the hold only (the Sta13 cells judge the close)"
                )
            if step.timer is None:
                return (
                    f"held Sta13 for {waited:.1f} s after the {step.after}; its timer is"
                    " unknown, so its close was not awaited (give --sta13-timer)"
                )
            if step.within >= step.timer * 1.25 + 2.0:
                self.aftermath_window = 0.0
                raise StepFailed(
                    f"still open {waited:.1f} s after the {step.after} (expected a close "
                    f"about {step.timer:g} s after it: ARTIM in Sta13, PS3.8 §9.1.5)"
                )
            return (
                f"held Sta13, still open after {waited:.1f} s (--max-wait); the close expected"
                f" about {step.timer:g} s after the {step.after} was not awaited"
            )
        if isinstance(event, Frame):
            raise StepFailed(
                f"got {frame_text(event.data)} in Sta13 after the {step.after} (Table 9-10:"
                " nothing is sent there unless a PDU arrives)"
            )
        elapsed = event.at - reference
        self.measured["sta13_close_after"] = round(elapsed, 3)
        if elapsed < step.hold:
            if event.how == "rst":
                raise StepFailed(
                    f"reset the connection (RST) {elapsed:.3f} s after the {step.after}: Sta13"
                    " not held (PS3.8 §9.1.4, Table 9-9: ARTIM runs until the peer closes)"
                )
            return (
                f"closed (FIN) {elapsed:.3f} s after the {step.after}: Sta13 not held, "
                "the PDU was delivered first"
            )
        if step.timer is not None and elapsed > step.timer * 1.25 + 2.0:
            raise StepFailed(f"closes after {elapsed:.1f} s (expected about {step.timer:g} s)")
        return f"held Sta13, then closed ({event.how.upper()}) {elapsed:.3f} s after it"

    def _expect_responses(self, step: ExpectResponses) -> str:
        """Every request answered, in order, and nothing else (DT-2 per P-DATA-TF, Annex E)."""
        wire = self._need_wire()
        start = time.monotonic()
        expected, last = step.first, step.first + step.count - 1
        commands: dict[int, bytearray] = {}  # per presentation context: command fragments
        while expected <= last:
            answered = f"{expected - step.first} of {step.count} requests answered"
            event = wire.next_event(start + step.within)
            if event is None:
                raise StepFailed(
                    f"{answered} within {step.within} s; no response to message {expected}"
                )
            if isinstance(event, Closed):
                raise StepFailed(f"the IUT closed the transport ({event.how.upper()}); {answered}")
            if event.pdu_type != 0x04:
                if event.pdu_type == 0x07 and parse_frame(event.data).get("source") == 0:
                    # PS3.7 Annex D.3.3.3: past the negotiated window (1 by default) the user
                    # may refuse more operations; its abort is not the provider's to judge.
                    raise Inconclusive(f"its user aborted ({frame_text(event.data)}); {answered}")
                raise StepFailed(f"got {frame_text(event.data)}; {answered}")
            wire.last_activity = event.at
            self._judge(event.data)
            try:
                pdata = decode(event.data)
            except NetDicomError as exc:
                raise StepFailed(f"a P-DATA-TF that cannot be decoded ({exc}); {answered}") from exc
            assert isinstance(pdata, PDataTfPDU)
            for item in pdata.data_value_items:
                if not item.control_header & 0x01:
                    continue  # a data set fragment (Annex E): not a response's command
                buffer = commands.setdefault(item.context_id, bytearray())
                buffer += item.fragment
                if not item.control_header & 0x02:
                    continue  # more fragments of this command follow
                del commands[item.context_id]
                try:
                    command = decode_command(bytes(buffer))
                except (NetDicomError, ValueError) as exc:
                    raise StepFailed(f"a command that cannot be decoded ({exc})") from exc
                got = command.message_id_being_responded_to
                if not command.command_field & 0x8000 or got != expected:
                    raise StepFailed(
                        f"response {expected - step.first + 1} answers message {got}, expected"
                        f" {expected}: each P-DATA-TF is indicated in turn (DT-2) and, without an"
                        " asynchronous operations window, answered in turn (PS3.7 D.3.3.3)"
                    )
                expected += 1
                if expected > last:
                    break
        took = time.monotonic() - start
        return f"all {step.count} requests answered in order within {took:.3f} s"

    def _expect_idle_end(self, step: ExpectIdleEnd) -> str:
        """Sta6 left on the IUT's initiative by AR-1 or AA-1 only (Table 9-10, §9.1.4 Note 2)."""
        wire = self._need_wire()
        start = time.monotonic()
        while True:
            event = wire.next_event(start + step.within)
            if event is None:
                self.aftermath_window = 0.0
                raise NotApplicable(
                    f"the peer kept the idle association open for {step.within:g} s: no idle"
                    " timer of its own seen (PS3.8 prescribes none: §9.1.4 Note 2)"
                )
            after = event.at - start
            if isinstance(event, Closed):
                raise StepFailed(
                    f"closed the idle association ({event.how.upper()}) after {after:.1f} s with"
                    " no A-ABORT or A-RELEASE-RQ: no action of Sta6 closes the transport without"
                    " a PDU (Table 9-10; §9.1.4 Notes 1 and 2: its timer ends the association"
                    " with an A-ABORT request, Evt15 → AA-1)"
                )
            name = PDU_NAMES.get(event.pdu_type)
            wire.last_activity = event.at
            if name == "P-DATA-TF":  # its user's data (DT-1): still Sta6
                self._judge(event.data)
                continue
            if name == "A-ABORT" and parse_frame(event.data).get("source") == 0:
                held = self._expect_sta13(
                    ExpectSta13("A-ABORT", step.hold, step.timer, step.sta13_within)
                )
                return f"its user aborted after {after:.1f} s (AA-1); {held}"
            if name == "A-RELEASE-RQ":  # AR-1, Sta7: our A-RELEASE-RP makes it AR-3 (a FIN)
                wire.send(AReleaseRpPDU().encode())
                closed = self._expect_closed(ExpectClosed(how="fin"))
                return f"its user released after {after:.1f} s (AR-1); after our RP: {closed}"
            why = (
                "no PDU arrived, so no provider abort (AA-8) applies; its user's A-ABORT"
                " request (Evt15, AA-1) has source 0 (Table 9-26)"
                if name == "A-ABORT"
                else "Table 9-10: only AR-1 or AA-1 leave Sta6 with nothing received"
            )
            raise StepFailed(
                f"ended the idle association with {frame_text(event.data)} after {after:.1f} s:"
                f" {why}"
            )

    def _expect_silence(self, step: ExpectSilence) -> str:
        """Nothing may arrive, and the transport stays open, for the duration."""
        wire = self._need_wire()
        event = wire.next_event(time.monotonic() + step.duration)
        if event is None:
            return f"silent for {step.duration} s"
        if isinstance(event, Frame):
            raise StepFailed(f"got {frame_text(event.data)} where nothing was expected")
        raise StepFailed(
            f"the IUT closed the transport ({event.how.upper()}) where nothing was expected"
        )

    def _reply(self, step: Reply) -> str:
        """Answer the last A-ASSOCIATE-RQ with an AC, or the last C-ECHO-RQ with its RSP."""
        wire = self._need_wire()
        try:
            if step.kind == "A-ASSOCIATE-AC":
                frame = self.last_rx.get(0x01)
                rq = decode(frame.data) if frame is not None else None
                if not isinstance(rq, AAssociateRqPDU):
                    raise StepFailed("no A-ASSOCIATE-RQ received to answer")
                answer, _ = negotiate(rq)
                data = answer.encode()
                self.announced = answer.max_length if isinstance(answer, AAssociateAcPDU) else None
            else:
                frame = self.last_rx.get(0x04)
                pdata = decode(frame.data) if frame is not None else None
                if not isinstance(pdata, PDataTfPDU) or not pdata.data_value_items:
                    raise StepFailed("no P-DATA-TF received to answer")
                item = pdata.data_value_items[0]
                command = decode_command(bytes(item.fragment))
                rsp = encode_command(c_echo_rsp(command))
                data = PDataTfPDU([PresentationDataValueItem(item.context_id, 0x03, rsp)]).encode()
        except (NetDicomError, ValueError) as exc:
            raise StepFailed(f"cannot answer: {exc}") from exc
        if not wire.send(data):
            return f"sending {frame_text(data)} failed: {wire.send_error} (the IUT is gone)"
        return f"sent {frame_text(data)} answering the peer"

    def aftermath(self) -> str:
        """What arrives on the wire within ``aftermath_window`` after a failure."""
        wire = self.wire
        if wire is None or wire.sock.fileno() < 0 or wire.closed is not None:
            return ""
        if self.aftermath_window <= 0:
            return ""
        start = time.monotonic()
        deadline = start + self.aftermath_window
        seen: list[str] = []
        try:
            while len(seen) < 4:
                event = wire.next_event(deadline)
                if event is None:
                    seen.append(f"nothing more for {self.aftermath_window} s")
                    break
                if isinstance(event, Closed):
                    seen.append(f"closed ({event.how.upper()}) at +{event.at - start:.3f} s")
                    break
                seen.append(f"{frame_text(event.data)} at +{event.at - start:.3f} s")
        except PeerError as exc:
            seen.append(str(exc))
        return "; ".join(seen)

    def close_wire(self) -> None:
        """Close the connection if it is still ours."""
        if self.wire is not None:
            self.wire.close()
            self.wire = None
