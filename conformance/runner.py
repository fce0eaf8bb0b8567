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

from conformance.peer import Closed, Frame, PeerError, Wire, parse_frame
from conformance.script import (
    Close,
    Expect,
    ExpectClosed,
    ExpectSilence,
    HalfClose,
    Pdu,
    Reply,
    Reset,
    Script,
    Send,
    Step,
    describe,
)
from conformance.table import PDU_NAMES
from netdicom2.acse import negotiate
from netdicom2.dimse import c_echo_rsp, decode_command, encode_command
from netdicom2.exceptions import NetDicomError
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAssociateRqPDU, PDataTfPDU, decode

__all__ = ["Driver", "Run", "StepFailed", "WireSteps", "execute", "frame_text", "matches"]


class StepFailed(Exception):
    """The IUT did not do what a step expects; the message says what it did instead."""


@dataclass
class Run:
    """The outcome of one script: ok, or the phase/step that failed and why."""

    ok: bool
    phase: str | None = None
    index: int | None = None
    message: str = ""
    log: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)


class Driver(ABC):
    """Performs steps against one target; ``note`` and ``measured`` collect observations."""

    def __init__(self) -> None:
        """No observations yet."""
        self.measured: dict[str, float] = {}

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
            if phase == "inject":
                driver.mark_inject()
            for step in steps:
                try:
                    note = driver.step(step)
                except (StepFailed, PeerError) as exc:
                    run.ok, run.phase, run.index, run.message = False, phase, index, str(exc)
                    run.log.append(f"{index:2d} {describe(step)}: FAILED: {exc}")
                    after = driver.aftermath()
                    if after:
                        run.log.append(f"   afterwards: {after}")
                    return run
                run.log.append(f"{index:2d} {describe(step)}: {note}")
                index += 1
        return run
    finally:
        run.measured.update(driver.measured)
        driver.close()


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
    fields = parse_frame(data)
    for rule in rules:
        if PDU_NAMES.get(data[0]) != rule.name:
            continue
        if rule.source is not None and fields.get("source") not in rule.source:
            continue
        if rule.reason is not None and fields.get("reason") not in rule.reason:
            continue
        if rule.max_length is not None and fields["length"] > rule.max_length:
            continue
        return True
    return False


def rules_text(rules: tuple[Pdu, ...]) -> str:
    """The alternatives of an Expect, in words."""
    out = []
    for rule in rules:
        extra = []
        if rule.source is not None:
            extra.append(f"source in {list(rule.source)}")
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

    def _expect(self, step: Expect) -> str:
        """Wait for a PDU matching one of the rules (PS3.8 §9.3)."""
        wire = self._need_wire()
        start = time.monotonic()
        deadline = start + step.within
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
                    f"the IUT closed the transport ({event.how}) after "
                    f"{event.at - start:.3f} s; expected {rules_text(step.any_of)}"
                )
            name = PDU_NAMES.get(event.pdu_type)
            if name in step.skip:
                continue
            self.last_rx[event.pdu_type] = event
            if matches(event.data, step.any_of):
                wire.last_activity = event.at
                return f"got {frame_text(event.data)} after {event.at - start:.3f} s"
            raise StepFailed(f"got {frame_text(event.data)}; expected {rules_text(step.any_of)}")

    def _expect_closed(self, step: ExpectClosed) -> str:
        """Wait for the IUT to close the transport, with no PDU first (PS3.8 §9.1.4)."""
        wire = self._need_wire()
        reference = wire.last_activity
        event = wire.next_event(time.monotonic() + step.within)
        if event is None:
            self.aftermath_window = 0.0  # we have just watched the wire that long
            raise StepFailed(f"the transport was still open after {step.within} s")
        if isinstance(event, Frame):
            raise StepFailed(f"got {frame_text(event.data)} instead of a transport close")
        elapsed = event.at - reference
        self.measured["close_after"] = round(elapsed, 3)
        if step.how != "any" and event.how != step.how:
            raise StepFailed(f"closed with {event.how.upper()}, expected {step.how.upper()}")
        if elapsed < step.not_before:
            raise StepFailed(f"closed after {elapsed:.3f} s, before {step.not_before} s")
        return f"closed ({event.how.upper()}) after {elapsed:.3f} s"

    def _expect_silence(self, step: ExpectSilence) -> str:
        """Nothing may arrive, and the transport stays open, for the duration."""
        wire = self._need_wire()
        event = wire.next_event(time.monotonic() + step.duration)
        if event is None:
            return f"silent for {step.duration} s"
        if isinstance(event, Frame):
            raise StepFailed(f"got {frame_text(event.data)} where nothing was expected")
        raise StepFailed(f"the IUT closed the transport ({event.how}) where nothing was expected")

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
