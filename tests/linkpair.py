"""An association requestor and acceptor over an in-memory link, on a fake clock.

The test double of ARCHITECTURE.md §5 (h11's ``ConnectionPair``, aioquic's ``roundtrip``):
two sans-I/O ``Connection`` objects whose effects a ``LinkPair`` performs in memory. Nothing
sleeps and nothing is delivered until the test says so, so every interleaving can be scripted.

The link models TCP as the DICOM UL sees it (PS3.8 §9.1): one byte stream per direction; a
side that closes (``CloseTransport``) stops reading, the bytes it had written are still
delivered and then its peer sees the close (Evt17); a network failure (``drop``) loses the
bytes in flight and both sides see Evt17.

Also here: small factories for valid primitives (``make_rq`` …) that other tests reuse.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from netdicom2.connection import (
    CloseTransport,
    Connection,
    Effect,
    Indicate,
    OpenTransport,
    SendPDU,
)
from netdicom2.fsm import State
from netdicom2.items import (
    ApplicationContextItem,
    ImplementationClassUIDSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    UserInformationItem,
)
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.1"

Side = Literal["requestor", "acceptor"]


# --------------------------------------------------------------------------- primitives


def _user_info(max_length: int | None) -> UserInformationItem:
    """User information with the maximum length (omitted when None) and an implementation UID."""
    sub_items: list[Any] = []
    if max_length is not None:
        sub_items.append(MaximumLengthSubItem(max_length))
    sub_items.append(ImplementationClassUIDSubItem(IMPLEMENTATION_UID))
    return UserInformationItem(sub_items)


def make_rq(
    *,
    max_length: int | None = 16384,
    protocol_version: int = 1,
    called: str = "ANY-SCP",
    calling: str = "ECHOSCU",
) -> AAssociateRqPDU:
    """A valid A-ASSOCIATE-RQ proposing Verification with Implicit VR Little Endian."""
    items: list[Any] = [
        ApplicationContextItem(),
        PresentationContextItemRQ(1, VERIFICATION, [IMPLICIT_VR_LE]),
        _user_info(max_length),
    ]
    return AAssociateRqPDU(called, calling, items, protocol_version=protocol_version)


def make_ac(*, max_length: int | None = 16384, called: str = "ANY-SCP") -> AAssociateAcPDU:
    """A valid A-ASSOCIATE-AC accepting context 1 of ``make_rq``."""
    items: list[Any] = [
        ApplicationContextItem(),
        PresentationContextItemAC(1, 0, IMPLICIT_VR_LE),
        _user_info(max_length),
    ]
    return AAssociateAcPDU(called, "ECHOSCU", items)


def make_rj(result: int = 1, source: int = 1, reason: int = 1) -> AAssociateRjPDU:
    """An A-ASSOCIATE-RJ (default: permanent, service-user, no reason given)."""
    return AAssociateRjPDU(result=result, source=source, reason_diag=reason)


def make_pdata(size: int = 2, context_id: int = 1) -> PDataTfPDU:
    """A P-DATA-TF with one last command fragment of ``size`` bytes (PDU-length size + 6)."""
    return PDataTfPDU([PresentationDataValueItem(context_id, 0x03, bytes(size))])


def make_abort(source: int = 0, reason: int = 0) -> AAbortPDU:
    """An A-ABORT (default: service-user)."""
    return AAbortPDU(source=source, reason_diag=reason)


def all_primitives() -> list[PDU]:
    """One primitive of each of the seven kinds, in Evt1, 7, 8, 9, 11, 14, 15 order."""
    return [
        make_rq(),
        make_ac(),
        make_rj(),
        make_pdata(),
        AReleaseRqPDU(),
        AReleaseRpPDU(),
        make_abort(),
    ]


# --------------------------------------------------------------------------- the link


@dataclass
class FakeClock:
    """Seconds on a clock that moves only when the test moves it."""

    now: float = 0.0


@dataclass
class Pipe:
    """One direction of the byte stream: chunks written, then maybe the writer's close."""

    chunks: deque[bytes] = field(default_factory=deque)
    fin: bool = False  # the writer closed: after the chunks, the reader sees Evt17
    reader_gone: bool = False  # the reader closed: whatever is written is lost


@dataclass
class Endpoint:
    """One side of the link: its connection, what its user was told, what it sent."""

    name: Side
    conn: Connection
    indications: list[PDU] = field(default_factory=list)
    sent: list[PDU] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    open: bool = False  # this side's end of the transport is open

    @property
    def state(self) -> State:
        """The state of this side's machine."""
        return self.conn.state


class LinkPair:
    """A requestor and an acceptor ``Connection`` joined by an in-memory transport."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        requestor: Connection | None = None,
        acceptor: Connection | None = None,
        **kwargs: Any,
    ) -> None:
        """Build both sides; ``kwargs`` go to both ``Connection`` constructors."""
        self.clock = clock or FakeClock()
        self.requestor = Endpoint("requestor", requestor or Connection(requestor=True, **kwargs))
        self.acceptor = Endpoint("acceptor", acceptor or Connection(requestor=False, **kwargs))
        self.pipes: dict[Side, Pipe] = {"requestor": Pipe(), "acceptor": Pipe()}  # to <side>
        self.connect_pending = False

    # ----------------------------------------------------------------- helpers

    def side(self, name: Side) -> Endpoint:
        """The endpoint called ``name``."""
        return self.requestor if name == "requestor" else self.acceptor

    def peer(self, endpoint: Endpoint) -> Endpoint:
        """The other endpoint."""
        return self.acceptor if endpoint is self.requestor else self.requestor

    @property
    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        """Both endpoints, requestor first."""
        return (self.requestor, self.acceptor)

    def idle(self) -> bool:
        """Both machines in Sta1, no transport, nothing in flight."""
        return (
            all(e.state is State.Sta1 and not e.open for e in self.endpoints)
            and not self.connect_pending
            and not any(p.chunks or p.fin for p in self.pipes.values())
        )

    # ----------------------------------------------------------------- inputs

    def send(self, name: Side, primitive: PDU) -> list[Effect]:
        """The user of ``name`` issues ``primitive`` (may raise LocalProtocolError)."""
        endpoint = self.side(name)
        return self._apply(endpoint, endpoint.conn.send(primitive, self.clock.now))

    def complete_connect(self) -> None:
        """The TRANSPORT CONNECT of AE-1 succeeds: the acceptor accepts (Evt5), then Evt2."""
        assert self.connect_pending, "no TRANSPORT CONNECT is pending"
        assert self.acceptor.state is State.Sta1, "a listener gives each connection a new machine"
        self.connect_pending = False
        self.pipes = {"requestor": Pipe(), "acceptor": Pipe()}
        now = self.clock.now
        self.acceptor.open = True
        self._apply(self.acceptor, self.acceptor.conn.transport_accepted(now))
        self.requestor.open = True
        self._apply(self.requestor, self.requestor.conn.transport_connected(now))

    def refuse_connect(self) -> None:
        """The TRANSPORT CONNECT of AE-1 fails: Evt17 in Sta4."""
        assert self.connect_pending, "no TRANSPORT CONNECT is pending"
        self.connect_pending = False
        self._apply(self.requestor, self.requestor.conn.transport_closed(self.clock.now))

    def inject(self, to: Side, data: bytes, *, first: bool = False) -> None:
        """Raw bytes appear on the stream towards ``to`` (a misbehaving peer's writes).

        With ``first`` they arrive before whatever is still in flight, as if the peer had
        written them before its well-behaved output.
        """
        pipe = self.pipes[to]
        if not pipe.reader_gone and not pipe.fin and data:
            if first:
                pipe.chunks.appendleft(bytes(data))
            else:
                pipe.chunks.append(bytes(data))

    def deliver(self, to: Side, max_bytes: int | None = None) -> bool:
        """Deliver the next chunk (or its first ``max_bytes``) towards ``to``; False if idle."""
        endpoint, pipe = self.side(to), self.pipes[to]
        now = self.clock.now
        if pipe.chunks:
            chunk = pipe.chunks.popleft()
            if max_bytes is not None and 0 < max_bytes < len(chunk):
                pipe.chunks.appendleft(chunk[max_bytes:])
                chunk = chunk[:max_bytes]
            if endpoint.open:
                self._apply(endpoint, endpoint.conn.receive_bytes(chunk, now))
            return True
        if pipe.fin:
            pipe.fin = False
            if endpoint.open:
                # PS3.8 §9.1.4: the peer closed; the local transport service says so (Evt17).
                endpoint.open = False
                self._apply(endpoint, endpoint.conn.transport_closed(now))
            return True
        return False

    def pump(self, *, connect: bool = True) -> None:
        """Deliver everything in flight, both ways, until the link is quiet."""
        progress = True
        while progress:
            progress = False
            if connect and self.connect_pending:
                self.complete_connect()
                progress = True
            sides: tuple[Side, Side] = ("acceptor", "requestor")
            for name in sides:
                while self.deliver(name):
                    progress = True

    def drop(self) -> None:
        """A network failure: bytes in flight are lost and both open ends see Evt17."""
        for pipe in self.pipes.values():
            pipe.chunks.clear()
            pipe.fin = False
        if self.connect_pending:
            self.refuse_connect()
        for endpoint in self.endpoints:
            if endpoint.open:
                endpoint.open = False
                self._apply(endpoint, endpoint.conn.transport_closed(self.clock.now))

    def advance(self, seconds: float) -> None:
        """Move the clock on, then fire every deadline that has passed (ARTIM and app timers)."""
        self.clock.now += seconds
        for endpoint in self.endpoints:
            deadline = endpoint.conn.timer_deadline
            if deadline is not None and self.clock.now >= deadline:
                self._apply(endpoint, endpoint.conn.handle_timer(self.clock.now))

    # ----------------------------------------------------------------- scripts

    def associate(
        self, rq: AAssociateRqPDU | None = None, ac: AAssociateAcPDU | None = None
    ) -> None:
        """A-ASSOCIATE, accepted: both sides end in Sta6."""
        self.send("requestor", rq or make_rq())
        self.pump()
        self.send("acceptor", ac or make_ac())
        self.pump()

    def release(self, by: Side = "requestor") -> None:
        """A-RELEASE started by ``by`` and answered by the other side; both end in Sta1."""
        other: Side = "acceptor" if by == "requestor" else "requestor"
        self.send(by, AReleaseRqPDU())
        self.pump()
        self.send(other, AReleaseRpPDU())
        self.pump()

    # ----------------------------------------------------------------- effects

    def _apply(self, endpoint: Endpoint, effects: list[Effect]) -> list[Effect]:
        """Perform a side's effects on the link, in order, as an adapter would."""
        endpoint.effects.extend(effects)
        for effect in effects:
            if isinstance(effect, SendPDU):
                endpoint.sent.append(effect.pdu)
                pipe = self.pipes[self.peer(endpoint).name]
                if endpoint.open and not pipe.reader_gone:
                    pipe.chunks.append(effect.data)
            elif isinstance(effect, Indicate):
                endpoint.indications.append(effect.primitive)
            elif isinstance(effect, OpenTransport):
                self.connect_pending = True
            elif isinstance(effect, CloseTransport):
                self._close(endpoint)
            # StartTimer / StopTimer: the pair reads conn.timer_deadline in advance().
        return effects

    def _close(self, endpoint: Endpoint) -> None:
        """``endpoint`` closes its end: its bytes still flow, then the peer sees the close."""
        if endpoint.name == "requestor" and self.connect_pending:
            self.connect_pending = False  # AA-2 in Sta4 cancels the TRANSPORT CONNECT
            return
        if not endpoint.open:
            return
        endpoint.open = False
        self.pipes[self.peer(endpoint).name].fin = True
        towards_me = self.pipes[endpoint.name]
        towards_me.chunks.clear()
        towards_me.reader_gone = True
