"""A small scripted association acceptor with switchable deviations from PS3.8 (test peer).

``PlantedAcceptor()`` conforms to Table 9-10 for everything a black-box matrix can drive:
ARTIM in Sta2 and Sta13, AE-6 (reject branch for a protocol version without bit 0), C-ECHO
answered in Sta6, AR-2/AR-4 on a release, AA-1/AA-7/AA-8 with the right sources, AA-6 in
Sta13; with ``idle`` set, an idle association ends by its user's A-ABORT (AA-1, source 0).
Each name in ``deviations`` plants one bug (``DEVIATIONS`` says which), so tests can
show that the matrix fails the right cells and nothing else. Loopback only; one thread per
connection; every wait is a bounded ``select``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable

from netdicom2.acse import negotiate
from netdicom2.dimse import c_echo_rsp, decode_command, encode_command
from netdicom2.exceptions import NetDicomError
from netdicom2.items import PresentationContextItemAC, PresentationDataValueItem
from netdicom2.pdu import (
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    PDataTfPDU,
    decode,
)

__all__ = ["DEVIATIONS", "PlantedAcceptor"]

DEVIATIONS: dict[str, str] = {
    "accept-bad-version": "AE-6 accepts a protocol version without bit 0",
    "reject-valid": "AE-6/AE-8 rejects every valid request (RJ 1/1/1)",
    "ignore-release": "AR-2: no answer to an A-RELEASE-RQ",
    "reset-after-abort": "AA-1/AA-8: a RST right after its A-ABORT",
    "never-close-sta13": "no ARTIM in Sta13: never closes",
    "long-pdata": "its P-DATA-TF is longer than the maximum length we announced",
    "wrong-rj-triple": "the reject branch sends RJ 1/2/3 (reason undefined for source 2)",
    "ac-unproposed-syntax": "the AC accepts a transfer syntax that was not proposed",
    "abort-source-0": "AA-8 sends an A-ABORT of source 0 (service-user)",
    "rst-in-sta13": "any PDU in Sta13 resets the connection (not AA-6/AA-7)",
    "drop-rest-of-segment": "after a P-DATA-TF, the rest of what one read returned is lost",
    "data-after-release-rp": "an answer pending behind an A-RELEASE-RQ is sent after the RP",
    "idle-bare-close": "its idle timer closes the transport with no A-ABORT (FIN only)",
}
_HEADER = struct.Struct(">BBI")
_UNPROPOSED = "1.2.840.10008.1.2.4.999"


class _Closed(Exception):
    """The requestor closed or reset the connection."""


class PlantedAcceptor:
    """The acceptor on 127.0.0.1; ``address`` to connect to; a context manager."""

    def __init__(
        self,
        deviations: Iterable[str] = (),
        *,
        artim: float = 0.5,
        sta13: float = 0.5,
        idle: float | None = None,
    ) -> None:
        """Listen now; serve from a thread until ``close``; ``idle``: its user's idle timer."""
        self.deviations = frozenset(deviations)
        unknown = self.deviations - set(DEVIATIONS)
        if unknown:
            raise ValueError(f"unknown deviations {sorted(unknown)}")
        self.artim, self.sta13, self.idle = artim, sta13, idle
        if "idle-bare-close" in self.deviations and idle is None:
            self.idle = 0.5
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="planted acceptor", daemon=True)
        self._thread.start()

    def __enter__(self) -> PlantedAcceptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting; open connections end at their next timeout."""
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        """Accept connections, one handler thread each."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(0.1):
                    continue
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    # ------------------------------------------------------------------ one connection

    def _handle(self, conn: socket.socket) -> None:
        """Table 9-10 from Sta2 (AE-5 started ARTIM) to Sta1."""
        with contextlib.suppress(_Closed, OSError), conn:
            state = "Sta2"
            deadline: float | None = time.monotonic() + self.artim
            rq: AAssociateRqPDU | None = None
            fragments: list[bytes] = []
            pending: list[bytes] = []  # answers held back ("data-after-release-rp")
            while state != "Sta1" and not self._stop.is_set():
                if state == "Sta6":  # its user's idle timer, when it has one (§9.1.4 Note 2)
                    deadline = None if self.idle is None else time.monotonic() + self.idle
                pdu = _read_pdu(conn, deadline)
                if pdu is None and state == "Sta6":
                    if "idle-bare-close" in self.deviations:
                        raise _Closed  # the planted bug: a bare close (FIN), no PDU
                    state = self._abort(conn, 0, 0)  # its user's A-ABORT request: AA-1
                    deadline = time.monotonic() + self.sta13
                    continue
                if pdu is None:  # Evt18 in Sta2/Sta13: AA-2, close
                    if state == "Sta13" and "never-close-sta13" in self.deviations:
                        deadline = time.monotonic() + 3600
                        continue
                    return
                kind, before = pdu[0], state
                if state == "Sta2":
                    state, rq = self._sta2(conn, kind, pdu)
                elif state == "Sta6":
                    state = self._sta6(conn, kind, pdu, rq, fragments, pending)
                else:
                    state = self._sta13(conn, kind, pdu)  # AA-6/AA-7: the timer runs on
                if state == "Sta13" and before != "Sta13":  # AA-1, AA-8, AE-6/8, AR-4
                    deadline = time.monotonic() + self.sta13

    def _abort(self, conn: socket.socket, source: int, reason: int) -> str:
        """AA-1 / AA-8: A-ABORT, start ARTIM, Sta13 (or the planted reset)."""
        conn.sendall(AAbortPDU(source, reason).encode())
        if "reset-after-abort" in self.deviations:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _Closed
        return "Sta13"

    def _sta2(
        self, conn: socket.socket, kind: int, pdu: bytes
    ) -> tuple[str, AAssociateRqPDU | None]:
        """Sta2: AE-6 for an RQ, AA-2 for an A-ABORT, AA-1 for anything else."""
        if kind == 0x07:
            raise _Closed  # AA-2: close
        if kind != 0x01:
            return self._abort(conn, 0, 0), None  # AA-1: source 0
        try:
            rq = decode(pdu)
        except NetDicomError:
            return self._abort(conn, 0, 0), None
        assert isinstance(rq, AAssociateRqPDU)
        bad_version = not rq.protocol_version & 1
        if bad_version and "accept-bad-version" not in self.deviations:
            triple = (1, 2, 3) if "wrong-rj-triple" in self.deviations else (1, 2, 2)
            conn.sendall(AAssociateRjPDU(*triple).encode())  # AE-6 reject branch
            return "Sta13", None
        if "reject-valid" in self.deviations:
            conn.sendall(AAssociateRjPDU(1, 1, 1).encode())  # AE-8
            return "Sta13", None
        answer, _ = negotiate(rq)
        assert isinstance(answer, AAssociateAcPDU)
        if "ac-unproposed-syntax" in self.deviations:
            for item in answer.variable_items:
                if isinstance(item, PresentationContextItemAC) and item.result == 0:
                    item.transfer_syntax = _UNPROPOSED
        conn.sendall(answer.encode())  # AE-7
        return "Sta6", rq

    def _sta6(
        self,
        conn: socket.socket,
        kind: int,
        pdu: bytes,
        rq: AAssociateRqPDU | None,
        fragments: list[bytes],
        pending: list[bytes],
    ) -> str:
        """Sta6: DT-2 (a C-ECHO answered), AR-2 (then AR-4), AA-3, AA-8."""
        source = 0 if "abort-source-0" in self.deviations else 2
        if kind == 0x07:
            raise _Closed  # AA-3
        if kind == 0x05:
            if "ignore-release" in self.deviations:
                return "Sta6"
            conn.sendall(AReleaseRpPDU().encode())  # AR-2, the user's AR-4
            for answer in pending:  # the planted bug: data in Sta13, after the RP
                conn.sendall(answer)
            return "Sta13"
        if kind != 0x04:
            return self._abort(conn, source, 1 if kind not in range(1, 8) else 2)
        try:
            pdata = decode(pdu)
            assert isinstance(pdata, PDataTfPDU)
            item = pdata.data_value_items[0]
            fragments.append(bytes(item.fragment))
            if item.control_header & 0x03 != 0x03:
                return "Sta6"  # a command fragment: wait for the last one (PS3.8 Annex E)
            command = decode_command(b"".join(fragments))
            fragments.clear()
            rsp = encode_command(c_echo_rsp(command))
        except (NetDicomError, ValueError, IndexError, AssertionError):
            return self._abort(conn, source, 2)  # Evt19: AA-8
        items = [PresentationDataValueItem(item.context_id, 0x03, rsp)]
        if "long-pdata" in self.deviations:
            limit = (rq.max_length if rq is not None else 0) or 16384
            items.insert(0, PresentationDataValueItem(item.context_id, 0x00, bytes(limit)))
        if "drop-rest-of-segment" in self.deviations:
            _drain(conn)
        answer = PDataTfPDU(items).encode()
        if "data-after-release-rp" in self.deviations and _peek(conn) == b"\x05":
            pending.append(answer)  # an A-RELEASE-RQ waits: answered first (the bug)
            return "Sta6"
        conn.sendall(answer)
        return "Sta6"

    def _sta13(self, conn: socket.socket, kind: int, pdu: bytes) -> str:
        """Sta13: AA-6 ignores, AA-7 aborts an RQ or an invalid PDU, AA-2 on an A-ABORT."""
        if "rst-in-sta13" in self.deviations:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _Closed
        if kind == 0x07:
            raise _Closed
        if kind == 0x01 or kind not in range(1, 8) or not _decodes(pdu):
            conn.sendall(AAbortPDU(2, 2).encode())  # AA-7 (Evt6 or Evt19)
        return "Sta13"


def _peek(conn: socket.socket) -> bytes:
    """The first byte already received and not yet read, or b"" (no wait)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return b""
    finally:
        conn.setblocking(True)


def _drain(conn: socket.socket) -> None:
    """Discard what has arrived and is not yet read (a reader that loses it)."""
    while _peek(conn):
        conn.setblocking(False)
        try:
            conn.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        finally:
            conn.setblocking(True)


def _decodes(pdu: bytes) -> bool:
    """Whether a PDU of a known type is valid (otherwise it is Evt19, PS3.8 §9.3)."""
    try:
        decode(pdu)
    except NetDicomError:
        return False
    return True


def _read_exact(conn: socket.socket, size: int, deadline: float | None) -> bytes | None:
    """``size`` bytes, or None when ``deadline`` passes first; _Closed when the peer left."""
    data = bytearray()
    while len(data) < size:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        conn.settimeout(wait if wait is None else max(wait, 1e-3))
        try:
            chunk = conn.recv(min(size - len(data), 1 << 16))
        except TimeoutError:
            return None
        except ConnectionError as exc:
            raise _Closed from exc
        if not chunk:
            raise _Closed
        data += chunk
    return bytes(data)


def _read_pdu(conn: socket.socket, deadline: float | None) -> bytes | None:
    """One whole PDU framed by its header (PS3.8 §9.3.1), any type; None on timeout."""
    head = _read_exact(conn, 6, deadline)
    if head is None:
        return None
    length = _HEADER.unpack(head)[2]
    if length > 1 << 20:
        raise _Closed  # not followed further: the connection ends
    body = _read_exact(conn, length, None if deadline is None else deadline + 5)
    if body is None:
        raise _Closed
    return head + body
