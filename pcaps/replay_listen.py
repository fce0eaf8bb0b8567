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
from pathlib import Path

from netdicom2.framing import Message
from netdicom2.items import PresentationDataValueItem
from netdicom2.pcaps.compare import MessageAssembler
from netdicom2.pcaps.describe import parse_command
from netdicom2.pcaps.flows import DicomConnection
from netdicom2.pcaps.model import judge
from netdicom2.pcaps.plan import ReplayResult, Wire
from netdicom2.pcaps.refragment import refragment
from netdicom2.pcaps.scripted import Item, ScriptedPeer, excuse, plan
from netdicom2.pdu import AAssociateRqPDU, PDataTfPDU

__all__ = ["ListenReplay", "patch_response"]

_ELEMENT = struct.Struct("<HHI")


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


class ListenReplay(ScriptedPeer):
    """Plays one recorded connection's acceptor on an accepted socket."""

    live_associate = AAssociateRqPDU
    any_close_is_eof = True
    swap_any_eof = True  # the requestor may close before or after our close

    def __init__(
        self, conn: DicomConnection, result: ReplayResult, timeout: float, ignore: Sequence[str]
    ) -> None:
        super().__init__(result, timeout)
        self.conn = conn
        self.ignore = ignore
        self.ours = MessageAssembler()  # the recorded acceptor's messages
        self.ids: dict[bytes, bytes] = {}  # recorded request Message ID -> live one
        self.uids: dict[bytes, bytes] = {}  # recorded request instance UID -> live one

    def run(self, sock: socket.socket) -> None:
        """Walk the recorded steps on the accepted connection."""
        self.wire = Wire(sock)
        timeline = self.conn.timeline()
        try:
            self.walk(plan(timeline, "acceptor", pdata_messages=True))
        finally:
            self.wire.shutdown()
        excuse(self.result.differences, timeline, self.result.findings, self.ignore)

    def _send(self, data: bytes, step: int) -> None:
        """Write bytes to the live requestor."""
        if not self.wire.send(data, self.timeout):
            self.result.notes.append(f"step {step}: the requestor had closed; not sent")
            self.diverged = True

    def _do_send(self, item: Item) -> None:
        """A recorded acceptor PDU other than P-DATA (AC, RJ, RELEASE-RP, A-ABORT)."""
        record = item.records[0]
        if record.status == "incomplete":
            self.stop(item.step, record, "the replay stops before it")
            return
        self._send(record.data, item.step)
        self.result.sent += 1

    def _do_sendpdata(self, item: Item) -> None:
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

    def matched(self, recorded: Message, live: Message) -> None:
        """A live request's Message ID and instance UID, for the response that answers it."""
        mine, theirs = parse_command(recorded.command) or {}, parse_command(live.command) or {}
        for tag, table in ((0x0110, self.ids), (0x1000, self.uids)):
            if tag in mine and tag in theirs:
                table[mine[tag]] = theirs[tag]


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
