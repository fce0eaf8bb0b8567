"""The fuzzing peer's end of a TCP connection: setup steps, delivery plans, observation.

Everything waits in ``selectors`` with a deadline: delays between segments are part of the
input and are spent reading whatever the target sends meanwhile; nothing sleeps. Traffic goes
only to the socket handed in (the callers connect to 127.0.0.1 or a namespace of their own).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable

from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.check import Facts
from netdicom2.fuzz.oracle import Observed, wire_kind
from netdicom2.fuzz.strategies import Case, setup_rq
from netdicom2.fuzz.validate import judge

__all__ = ["MAX_KEPT_BYTES", "MAX_KEPT_PDUS", "OutOfTime", "Peer", "accept_all", "run_setup"]
__all__ += ["setup_pdu"]

Sync = Callable[[str], bool]

#: What one case keeps of the target's reaction (PDUs, bytes); the rest is counted, not stored,
#: so that a peer flooding tiny P-DATA-TF PDUs cannot grow memory or corpus files.
MAX_KEPT_PDUS = 256
MAX_KEPT_BYTES = 1 << 20


class OutOfTime(BaseException):
    """The campaign's time budget ran out in the middle of a case (not a failure: unwinds).

    A BaseException, so that Hypothesis lets it through at once instead of shrinking it.
    """


def setup_pdu(name: str) -> bytes:
    """The bytes of a PDU the setup steps send (PS3.8 §9.3)."""
    if name == "RQ":
        return setup_rq().encode()
    if name == "RQv0":
        return setup_rq(version=0).encode()  # §9.3.2: bit 0 clear → AE-6 rejects
    if name == "REL-RQ":
        return t.release_rq().encode()
    if name == "RP":
        return t.release_rp().encode()
    raise ValueError(name)


def accept_all(rq: bytes) -> tuple[bytes, frozenset[int]]:
    """An A-ASSOCIATE-AC accepting every proposed context with its first transfer syntax."""
    body = rq[6:]
    contexts = []
    ids = []
    off = 68
    while off + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, off)
        value = body[off + 4 : off + 4 + length]
        if item_type == 0x20 and len(value) >= 4:
            sub = 4
            transfer = None
            while sub + 4 <= len(value):
                st, _, sl = struct.unpack_from(">BBH", value, sub)
                if st == 0x40 and transfer is None:
                    transfer = value[sub + 4 : sub + 4 + sl]
                sub += 4 + sl
            contexts.append(t.pc_ac(value[0], 0, transfer or b"1.2.840.10008.1.2"))
            ids.append(value[0])
        off += 4 + length
    subs = [t.sub_item(0x51, struct.pack(">I", 16384)), t.sub_item(0x52, b"1.2.3.4")]
    return t.ac(body[4:20], body[20:36], contexts, subs).encode(), frozenset(ids)


class Peer:
    """One connection seen from the fuzzing peer: send, read PDUs, notice FIN/RST."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        response_timeout: float = 2.0,
        deadline: Callable[[], float | None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.response_timeout = response_timeout
        self.deadline = deadline  # the campaign's end (monotonic, read live): OutOfTime past it
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.buffer = bytearray()
        self.outputs: list[bytes] = []
        self.times: list[float] = []
        self.end: str | None = None  # "close" / "reset" once the target's end arrived
        self.t_close: float | None = None
        self.our_close: str | None = None
        self.garbage = False
        self.partial = b""
        self.base = 0  # outputs before this index belong to the setup
        self.cursor = 0  # next output the setup has not consumed yet
        self.lingered_out = False  # open past the ARTIM deadline we waited for
        self.dropped = 0  # PDUs received beyond MAX_KEPT_PDUS / MAX_KEPT_BYTES (not kept)
        self.kept_bytes = 0

    def mark(self) -> None:
        """The setup is over: later outputs are the reaction to the fuzz stream."""
        self.base = len(self.outputs)

    # ----------------------------------------------------------------- reading

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for data or the close; False when nothing came."""
        if self.end is not None:
            return False
        end = None if self.deadline is None else self.deadline()
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                raise OutOfTime
            timeout = min(timeout, left)
        if not self.selector.select(max(0.0, timeout)):
            return False
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._ended("reset")
            return True
        if not data:
            self._ended("close")
            return True
        self.buffer += data
        now = time.monotonic()
        off = 0  # one deletion per read: linear in the bytes received, however small the PDUs
        while len(self.buffer) - off >= 6:
            size = 6 + struct.unpack_from(">I", self.buffer, off + 2)[0]
            if size > 1 << 24:
                self.garbage = True  # no sane target sends this: stop parsing
                self.buffer.clear()
                off = 0
                break
            if len(self.buffer) - off < size:
                break
            if len(self.outputs) < MAX_KEPT_PDUS and self.kept_bytes + size <= MAX_KEPT_BYTES:
                self.outputs.append(bytes(self.buffer[off : off + size]))
                self.times.append(now)
                self.kept_bytes += size
            else:
                self.dropped += 1  # counted, not kept (the oracle is told: see observed)
            off += size
        del self.buffer[:off]
        return True

    def _ended(self, how: str) -> None:
        """The target closed (FIN) or reset the connection."""
        self.end = how
        self.t_close = time.monotonic()
        if self.buffer:
            self.garbage = True  # a PDU cut short by the close
            self.partial = bytes(self.buffer)

    def read_until(self, deadline: float, *, quiet: float | None = None) -> None:
        """Read until the target closes, ``deadline`` passes, or ``quiet`` s pass silently."""
        while self.end is None:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = deadline - now if quiet is None else min(quiet, deadline - now)
            if not self.poll(wait) and quiet is not None:
                return

    def expect(self, prefix: str) -> bytes | None:
        """The next PDU the target sends, if its kind starts with ``prefix``."""
        index = self.cursor
        deadline = time.monotonic() + self.response_timeout
        while len(self.outputs) <= index and self.end is None and time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        if len(self.outputs) <= index:
            return None
        self.cursor += 1
        data = self.outputs[index]
        return data if wire_kind(data).startswith(prefix) else None

    # ----------------------------------------------------------------- writing

    def send(self, data: bytes) -> bool:
        """Write all of ``data`` (reading meanwhile); False once the target is gone."""
        view = memoryview(data)
        deadline = time.monotonic() + self.response_timeout
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return False
            view = view[sent:]
            if view:
                if time.monotonic() > deadline:
                    return False
                self.poll(0.01)  # the target may answer while we fill its buffer
        return True

    def wait(self, delay: float) -> None:
        """Spend ``delay`` seconds reading whatever the target sends meanwhile."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if not self.poll(deadline - time.monotonic()) and self.end is None:
                return
            if self.end is not None:
                return

    def deliver(self, stream: bytes, case: Case, prefix: bytes = b"") -> int:
        """Send ``prefix`` + stream per the delivery plan; return stream bytes delivered."""
        plan = case.delivery
        limit = len(stream) if plan.close_at is None else min(plan.close_at, len(stream))
        bounds = [0, *[c for c in plan.cuts if 0 < c < limit], limit]
        delivered = 0
        for index in range(len(bounds) - 1):
            delay = plan.delays[index] if index < len(plan.delays) else 0.0
            if delay:
                self.wait(delay)
            chunk = stream[bounds[index] : bounds[index + 1]]
            if index == 0:
                chunk = prefix + chunk
            if not self.send(chunk):
                break
            delivered = bounds[index + 1]
            self.poll(0)
        if plan.close_at is not None:
            self.close_ours(plan.close_how)
        return delivered

    def close_ours(self, how: str) -> None:
        """Close our side: FIN (half-close, we keep reading) or RST (SO_LINGER 0)."""
        if self.our_close is not None:
            return
        self.our_close = how
        if how == "rst":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()
        else:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Release the socket and the selector."""
        try:
            self.selector.close()
        finally:
            self.sock.close()

    # ----------------------------------------------------------------- the whole exchange

    def finish(
        self,
        mode: str,
        *,
        quiet: float,
        linger_until: float | Callable[[], float] | None,
        worth_waiting: Callable[[], bool] | None = None,
    ) -> None:
        """After delivery: wait as ``mode`` says, then close with FIN and read to the end.

        "linger" waits for the target to close on its own (ARTIM, PS3.8 §9.1.5) until
        ``linger_until``; a white-box target may say through ``worth_waiting`` that it is in no
        state where that could happen, which ends the wait early. A callable ``linger_until``
        is read again on each turn (the target's ARTIM may start later than ours: queueing).
        """
        if self.our_close == "rst":
            return
        if self.end is None and mode == "quiet":
            self.read_until(time.monotonic() + self.response_timeout, quiet=quiet)
        elif self.end is None and mode == "linger":
            fixed = time.monotonic() + quiet if linger_until is None else linger_until
            deadline = fixed if callable(fixed) else lambda: fixed
            until = deadline()
            while self.end is None and time.monotonic() < until:
                self.read_until(min(until, time.monotonic() + quiet))
                if worth_waiting is not None and not worth_waiting():
                    break
                until = deadline()
            # Still open although we waited out the deadline: ARTIM did not close it.
            self.lingered_out = linger_until is not None and self.end is None
            self.lingered_out &= time.monotonic() >= until
        if self.end is None:
            self.close_ours("fin")
        self.read_until(time.monotonic() + self.response_timeout)

    def raw(self) -> list[str]:
        """The reaction's PDUs in hex (and a trailing fragment), for the corpus."""
        out = [d.hex() for d in self.outputs[self.base :]]
        if self.dropped:
            out.append(f"truncated: {self.dropped} more PDUs not kept")
        return out + ([f"partial:{self.partial.hex()[:512]}"] if self.partial else [])

    def observed(self, indications: list[str] | None = None) -> Observed:
        """The reaction as the oracle reads it."""
        wire = [wire_kind(d) for d in self.outputs[self.base :]]
        if self.dropped:
            wire.append(f"truncated({self.dropped})")
        if self.garbage:
            wire.append("garbage")
        end = "unobserved" if self.our_close == "rst" else (self.end or "open")
        return Observed(wire, end, indications, self.our_close)


def run_setup(peer: Peer, steps: tuple[str, ...], facts: Facts, sync: Sync | None) -> str:
    """Take the scenario's setup steps; "" on success, else what went wrong."""
    target_rq: bytes | None = None
    for step in steps:
        verb, _, what = step.partition(":")
        if verb == "send":
            if what == "AC":
                if target_rq is None:
                    return "no A-ASSOCIATE-RQ to answer"
                data, facts.accepted = accept_all(target_rq)
                verdict = judge(target_rq)
                facts.peer_max = verdict.max_length
            else:
                data = setup_pdu(what)
            if not peer.send(data):
                return f"closed: connection lost before {step}"
        elif verb == "expect":
            got = peer.expect(what)
            if got is None:
                seen = [wire_kind(d) for d in peer.outputs]
                # rejected: an A-ASSOCIATE-RJ (e.g. 2/3/2 local limit exceeded, Table 9-21);
                # unresponsive: nothing at all and still open; closed: it closed or reset.
                kind = "rejected" if any(k.startswith("RJ") for k in seen) else "closed"
                kind = "unresponsive" if not seen and peer.end is None else kind
                return f"{kind}: {step}: got {seen or 'nothing'} ({peer.end or 'open'})"
            if what == "AC":
                verdict = judge(got)
                facts.accepted = frozenset(verdict.context_ids)
                facts.peer_max = verdict.max_length
            elif what == "RQ":
                target_rq = got
        elif verb == "sync" and (sync is None or not sync(what)):
            return f"other: {step}: target not in {what}"
    return ""
