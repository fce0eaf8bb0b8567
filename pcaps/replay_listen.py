"""``--listen [HOST:]PORT``: play the recorded acceptor to a live requestor and compare.

For each recorded connection, one live requestor connects (started by ``--spawn CMD`` with
``{port}`` replaced, or by the user). The scripted acceptor sends the recorded acceptor's PDUs
in recorded order, each after what preceded it from the requestor, and compares what the live
requestor sends with the recorded requestor, field by field (``pcaps.compare``): the
A-ASSOCIATE-RQ (AE titles, contexts, transfer syntaxes, user information), A-RELEASE and
A-ABORT PDUs, P-DATA per DIMSE message, and its close. Normalisation and ``--ignore`` rules are
those of ``--against``.

Adapting the recorded answers to the live requestor (PS3.8 Annex D.1, PS3.7 §9.1.1.1): the
acceptor's DIMSE messages are re-fragmented to the live requestor's Maximum Length, and a
response's (0000,0120) Message ID Being Responded To and (0000,1000) Affected SOP Instance UID
take the values of the live request it answers (a requestor matches responses by them).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import Message
from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.compare import MessageAssembler, compare_messages, compare_pdus
from netdicom2.pcaps.describe import parse_command
from netdicom2.pcaps.flows import DicomConnection, Event
from netdicom2.pcaps.ignore import apply_ignores
from netdicom2.pcaps.model import judge
from netdicom2.pcaps.pdus import PduRecord
from netdicom2.pcaps.plan import Difference, ReplayResult, Wire, describe_bytes
from netdicom2.pcaps.refragment import refragment
from netdicom2.pdu import AAssociateRqPDU, PDataTfPDU, decode

__all__ = ["ListenReplay", "patch_response"]

_US = struct.Struct("<H")
_ELEMENT = struct.Struct("<HHI")


@dataclass
class _Item:
    """One step: "send", "close", "sendpdata", "expect", "pdata", "eof"."""

    kind: str
    step: int
    time: float
    records: list[PduRecord] = field(default_factory=list)
    how: str = ""


def _items(timeline: list[Event]) -> list[_Item]:
    """The recorded timeline as acceptor actions and requestor expectations."""
    items: list[_Item] = []
    for index, event in enumerate(timeline):
        record = event.record
        ours = event.side == "acceptor"
        if record is None:
            items.append(_Item("close" if ours else "eof", index, event.time, how=event.kind))
            continue
        pdata = record.status == "ok" and isinstance(record.pdu, PDataTfPDU)
        kind = ("sendpdata" if pdata else "send") if ours else ("pdata" if pdata else "expect")
        if pdata and items and items[-1].kind == kind:
            items[-1].records.append(record)
        elif ours or record.status == "ok":
            items.append(_Item(kind, index, event.time, [record]))
    return items


def patch_response(command: bytes, values: dict[int, bytes]) -> bytes:
    """A command set (implicit VR LE, group 0000) with elements replaced, group length redone."""
    elements = parse_command(command)
    if elements is None:
        return command
    elements.update({k: v for k, v in values.items() if k in elements})
    body = b"".join(
        _ELEMENT.pack(0x0000, tag, len(value)) + value
        for tag, value in sorted(elements.items())
        if tag != 0x0000
    )
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _encode_message(message: Message, max_length: int) -> list[bytes]:
    """A DIMSE message as P-DATA-TF PDUs within ``max_length`` (PS3.8 Annex E, D.1)."""
    pdvs = [PresentationDataValueItem(message.context_id, 0x03, message.command)]
    if message.dataset is not None:
        pdvs.append(PresentationDataValueItem(message.context_id, 0x02, message.dataset))
    out: list[bytes] = []
    for pdv in pdvs:
        out += refragment(PDataTfPDU([pdv]), max_length)
    return out


class ListenReplay:
    """Plays one recorded connection's acceptor on an accepted socket."""

    def __init__(
        self, conn: DicomConnection, result: ReplayResult, timeout: float, ignore: Sequence[str]
    ) -> None:
        self.conn = conn
        self.result = result
        self.timeout = timeout
        self.ignore = ignore
        self.recorded = MessageAssembler()
        self.live = MessageAssembler()
        self.ours = MessageAssembler()  # the recorded acceptor's messages
        self.ids: dict[bytes, bytes] = {}  # recorded request Message ID -> live one
        self.uids: dict[bytes, bytes] = {}  # recorded request instance UID -> live one
        self.live_max = 0
        self.diverged = False
        self.wire: Wire | None = None

    def diff(self, step: int | None, what: str, expected: str, actual: str) -> None:
        """Record a difference."""
        self.result.differences.append(Difference(step, what, expected, actual))

    def run(self, sock: socket.socket) -> None:
        """Walk the recorded steps on the accepted connection."""
        self.wire = Wire(sock)
        items = _items(self.conn.timeline())
        index = 0
        try:
            while index < len(items) and not self.diverged:  # bounded by len(items)
                item = items[index]
                after = items[index + 1] if index + 1 < len(items) else None
                if item.kind == "eof" and after is not None and after.kind == "close":
                    items[index], items[index + 1] = after, item  # Sta13: either closes first
                    continue
                getattr(self, f"_do_{item.kind}")(item)
                index += 1
        finally:
            self.wire.shutdown()
        apply_ignores(self.result.differences, self.ignore)

    def _next(self) -> bytes | None:
        """The live requestor's next PDU; b"" on timeout; None on close."""
        assert self.wire is not None
        try:
            pdu = self.wire.read_pdu(self.timeout, time.monotonic)
        except TimeoutError:
            return b""
        if pdu is not None:
            self.result.received.append(describe_bytes(pdu))
        return pdu

    def _send(self, data: bytes, step: int) -> None:
        """Write bytes to the live requestor."""
        assert self.wire is not None
        if not self.wire.send(data, self.timeout):
            self.result.notes.append(f"step {step}: the requestor had closed; not sent")
            self.diverged = True

    def _do_send(self, item: _Item) -> None:
        """A recorded acceptor PDU other than P-DATA (AC, RJ, RELEASE-RP, A-ABORT)."""
        record = item.records[0]
        if record.status == "incomplete":
            self.result.incomplete = (
                f"step {item.step}: the capture lacks bytes of this acceptor PDU: the replay "
                "stops before it"
            )
            self.diverged = True
            return
        self._send(record.data, item.step)
        self.result.sent += 1

    def _do_sendpdata(self, item: _Item) -> None:
        """Recorded acceptor messages, answering the live requests, fitted to its max length."""
        done = len(self.ours.messages)
        self.ours.add(r.pdu for r in item.records if r.pdu is not None)
        for message in self.ours.messages[done:]:
            elements = parse_command(message.command) or {}
            values = {}
            if elements.get(0x0120) in self.ids:
                values[0x0120] = self.ids[elements[0x0120]]
            if elements.get(0x1000) in self.uids:
                values[0x1000] = self.uids[elements[0x1000]]
            if values:
                message = Message(
                    message.context_id, patch_response(message.command, values), message.dataset
                )
            for data in _encode_message(message, self.live_max):
                self._send(data, item.step)
        self.result.sent += len(item.records)

    def _do_close(self, item: _Item) -> None:
        """Close or reset as the recorded acceptor did."""
        assert self.wire is not None
        self.wire.close(item.how)

    def _do_eof(self, item: _Item) -> None:
        """The recorded requestor closed here: the live one must close too."""
        assert self.wire is not None
        if self.wire.eof:
            return
        pdu = self._next()
        while pdu:  # bounded by the requestor's output before its close
            self.diff(item.step, "extra", "transport close", describe_bytes(pdu))
            pdu = self._next()
        if pdu == b"":
            self.diff(item.step, "close", "transport closed", "still open")
            self.diverged = True

    def _do_expect(self, item: _Item) -> None:
        """One requestor PDU other than P-DATA, compared field by field."""
        record = item.records[0]
        assert record.pdu is not None
        got = self._next()
        if not got:
            actual = "connection closed" if got is None else "nothing (timeout)"
            self.diff(item.step, "pdu", describe_bytes(record.data), actual)
            self.diverged = True
            return
        try:
            live = decode(got)
        except PDUDecodeError as exc:
            self.diff(item.step, "pdu", describe_bytes(record.data), f"undecodable: {exc}")
            self.diverged = True
            return
        if isinstance(live, AAssociateRqPDU):
            self.live_max = live.max_length or 0  # PS3.8 Annex D.1: absent or 0, no limit
        for name, want, have in compare_pdus(record.pdu, live):
            self.diff(item.step, name, want, have)
        if type(live) is not type(record.pdu):
            self.diverged = True

    def _do_pdata(self, item: _Item) -> None:
        """Recorded requestor P-DATA: read live P-DATA until as many messages completed."""
        done = len(self.recorded.messages)
        self.recorded.add(r.pdu for r in item.records if r.pdu is not None)
        target = len(self.recorded.messages)
        while len(self.live.messages) < target:  # bounded by timeouts and the peer's output
            got = self._next()
            live = None
            if got:
                try:
                    live = decode(got)
                except PDUDecodeError:
                    live = None
            if not isinstance(live, PDataTfPDU):
                actual = "connection closed" if got is None else describe_bytes(got or b"")
                actual = "nothing (timeout)" if got == b"" else actual
                left = target - len(self.live.messages)
                self.diff(item.step, "P-DATA", f"{left} more messages", actual)
                self.diverged = True
                return
            self.live.add([live])
        for want, have in zip(
            self.recorded.messages[done:target], self.live.messages[done:target], strict=True
        ):
            mine, theirs = parse_command(want.command) or {}, parse_command(have.command) or {}
            for tag, table in ((0x0110, self.ids), (0x1000, self.uids)):
                if tag in mine and tag in theirs:
                    table[mine[tag]] = theirs[tag]
            for name, a, b in compare_messages(want, have):
                self.diff(item.step, name, a, b)


def _excuse_after_findings(conn: DicomConnection, result: ReplayResult) -> None:
    """Differences at or after the recording's first deviation from PS3.8 are excused."""
    if not result.findings:
        return
    timeline = conn.timeline()
    first = min(f.time for f in result.findings)
    text = next(f.text for f in result.findings if f.time == first)
    for diff in result.differences:
        when = timeline[diff.step].time if diff.step is not None else float("inf")
        if when >= first and not diff.excused_by:
            diff.excused_by = text


def _accept(
    listener: socket.socket, process: subprocess.Popen[bytes] | None, timeout: float
) -> socket.socket | None:
    """The next connection, None after ``timeout`` or once the spawned requestor has exited.

    The child's exit is watched with a pidfd in the same selector (no polling).
    """
    selector = selectors.DefaultSelector()
    pidfd = -1
    try:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "listener")
        if process is not None and hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(process.pid)
                selector.register(pidfd, selectors.EVENT_READ, "exit")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:  # bounded by the deadline
            for key, _ in selector.select(left):
                if key.data == "listener":
                    with contextlib.suppress(BlockingIOError):
                        sock, _ = listener.accept()
                        sock.setblocking(True)
                        return sock
                elif key.data == "exit":
                    with contextlib.suppress(BlockingIOError):  # a connect may still be queued
                        sock, _ = listener.accept()
                        sock.setblocking(True)
                        return sock
                    return None
        return None
    finally:
        selector.close()
        if pidfd >= 0:
            os.close(pidfd)
        listener.setblocking(True)


def spawn(command: str, port: int, log: Path | None) -> subprocess.Popen[bytes]:
    """Start the requestor: ``command`` with ``{port}`` replaced, output to ``log`` or nowhere."""
    argv = shlex.split(command.replace("{port}", str(port)))
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    finally:
        if log is not None and not isinstance(sink, int):
            sink.close()


def replay_listen(
    conn: DicomConnection,
    listener: socket.socket,
    *,
    command: str | None = None,
    timeout: float = 5.0,
    accept_timeout: float = 30.0,
    ignore: Sequence[str] = (),
) -> ReplayResult:
    """Accept one live requestor (spawned from ``command`` if given) and play ``conn``."""
    host, port = listener.getsockname()[:2]
    result = ReplayResult(conn.label, f"listen {host}:{port}")
    started = time.monotonic()
    result.findings = list(judge(conn).findings)
    if not conn.rq.pdus and not conn.ac.pdus:
        result.skipped = "the recording holds no PDU"
        return result
    process = spawn(command, port, None) if command else None
    try:
        sock = _accept(listener, process, accept_timeout)
        if sock is None:
            why = f"in {accept_timeout:g} s"
            if process is not None and process.poll() is not None:
                why = f"(the requestor exited with status {process.returncode} first)"
            result.unreachable = f"no requestor connected to {host}:{port} {why}"
            return result
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ListenReplay(conn, result, timeout, ignore).run(sock)
        _excuse_after_findings(conn, result)
    finally:
        if process is not None:
            try:
                status = process.wait(timeout=timeout)
                result.notes.append(f"requestor exited with status {status}")
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                result.notes.append("requestor still running after the replay: killed")
    result.elapsed = time.monotonic() - started
    return result
