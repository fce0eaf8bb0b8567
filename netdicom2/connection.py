"""The sans-I/O DICOM Upper Layer connection: events in, effects out (PS3.8 §9.2).

``Connection`` turns inputs into the events of Table 9-10, looks the action up in
``netdicom2.fsm.TRANSITIONS``, runs it (``netdicom2.actions``) and returns its effects. It never
touches a socket, a thread or a clock: every input carries ``now`` (float seconds on the
caller's clock) and every output is a returned value. The caller performs the effects in order
and re-arms its timer from ``timer_deadline`` after every call.

Inputs and their events:

* ``send(primitive, now)``: the local user's primitive, carried as the PDU of the same type
  (RQ Evt1, AC Evt7, RJ Evt8, P-DATA-TF Evt9, RELEASE-RQ Evt11, RELEASE-RP Evt14, ABORT Evt15).
  A blank cell raises ``LocalProtocolError`` and changes nothing.
* ``receive_bytes(data, now)``: bytes from the transport; each whole PDU is Evt3/4/6/10/12/13/16
  by its type, an undecodable one (or one over the length we announced) Evt19. Bytes arriving
  while no transport is open (Sta1, Sta4, after we closed it) are ignored.
* ``transport_connected(now)`` Evt2, ``transport_accepted(now)`` Evt5,
  ``transport_closed(now)`` Evt17 (ignored in Sta1: there is no transport to close).
* ``handle_timer(now)``: Evt18 once ARTIM's deadline has passed; an application timeout (below)
  once its deadline has passed; otherwise nothing.

Application timeouts (PS3.8 §9.1.4 Note 2: not ARTIM). ``association_timeout`` supervises the
wait for the A-ASSOCIATE-AC/RJ (Sta4, Sta5, from the A-ASSOCIATE request on) and
``release_timeout`` the release this side requested (Sta7 and the collision states Sta9–Sta12
that follow it). When one passes, ``handle_timer`` acts as the user's A-ABORT request: the
transcript shows Evt15 (AA-1, or AA-2 in Sta4) and, after that action's effects, the user gets
``Indicate(AAbortPDU(source=2, reason_diag=0))``, an A-P-ABORT notice; ``timed_out`` names the
timeout ("association" or "release").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from netdicom2.acse import check_request
from netdicom2.actions import (
    ACTIONS,
    Acceptable,
    ActionContext,
    CloseTransport,
    Effect,
    Indicate,
    OpenTransport,
    Outcome,
    SendPDU,
    StartTimer,
    StopTimer,
)
from netdicom2.exceptions import (
    AbortReason,
    LocalProtocolError,
    PDUDecodeError,
    PDUTooLargeError,
)
from netdicom2.framing import (
    DEFAULT_MAX_ASSOCIATE_LENGTH,
    PDATA_STREAM_LENGTH,
    FramingError,
    PDUFramer,
)
from netdicom2.fsm import (
    NEXT_STATE,
    PDU_TYPE_EVENT,
    PRIMITIVE_TYPE_EVENT,
    TRANSITIONS,
    Action,
    Event,
    State,
)
from netdicom2.items import PresentationContextItemAC
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
    decode,
)

__all__ = [
    "CloseTransport",
    "Connection",
    "Effect",
    "Indicate",
    "OpenTransport",
    "SendPDU",
    "StartTimer",
    "StopTimer",
    "Transition",
]

_PDU_CLASSES = (
    AAssociateRqPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    PDataTfPDU,
    AReleaseRqPDU,
    AReleaseRpPDU,
    AAbortPDU,
)

# The members read on every event, bound once: reading a member from an Enum class passes
# through EnumType's __getattr__ hook, several times the cost of a module global.
_STA1, _STA6, _STA7 = State.Sta1, State.Sta6, State.Sta7
_EVT1, _EVT2, _EVT5, _EVT9, _EVT17 = Event.Evt1, Event.Evt2, Event.Evt5, Event.Evt9, Event.Evt17
_AE_2, _AE_3, _AE_6, _AE_7 = Action.AE_2, Action.AE_3, Action.AE_6, Action.AE_7

_CONTEXT_ID = attrgetter("context_id")

# PS3.8 §9.1.4 Note 2: the application-level waits this connection can supervise.
_ASSOCIATION_WAIT = frozenset({State.Sta4, State.Sta5})
_RELEASE_WAIT = frozenset({State.Sta7, State.Sta9, State.Sta10, State.Sta11, State.Sta12})


@dataclass(frozen=True)
class Transition:
    """One step of the machine: Table 9-10's (state, event) cell, its action and next state."""

    state: State
    event: Event
    action: Action
    next_state: State

    def __str__(self) -> str:
        """The step as a log line: "Sta6 + Evt12 -> AR-2 -> Sta8"."""
        return f"{self.state} + {self.event} -> {self.action} -> {self.next_state}"


Observer = Callable[[Transition], None]

# Table 9-10 cell by cell, built once from fsm.TRANSITIONS and fsm.NEXT_STATE: the action and
# the Transition for each next state it may take. One lookup per event; and as transitions are
# immutable values, one instance per step is shared by every transcript. (The action's function
# is looked up in actions.ACTIONS at each event: the conformance tests substitute mutants.)
_Cell = tuple[Action, dict[State, Transition]]
_CELLS: dict[tuple[State, Event], _Cell] = {
    (state, event): (
        action,
        {after: Transition(state, event, action, after) for after in NEXT_STATE[action]},
    )
    for (state, event), action in TRANSITIONS.items()
}

# The data-transfer hot path. PS3.8 Table 9-10: Sta6 + Evt9 → DT-1 (send the P-DATA-TF) and
# Sta6 + Evt10 → DT-2 (issue the P-DATA indication), both back to Sta6, with no timer or
# transport effect (Table 9-7). Connection takes these two cells without building an
# ActionContext; the effects, transcript and observer calls are those of the generic path.
_DT_1 = _CELLS[State.Sta6, Event.Evt9][1][State.Sta6]
_DT_2 = _CELLS[State.Sta6, Event.Evt10][1][State.Sta6]
assert (_DT_1.action, _DT_2.action) == (Action.DT_1, Action.DT_2)
assert NEXT_STATE[Action.DT_1] == NEXT_STATE[Action.DT_2] == (State.Sta6,)


def check_settings(*, max_pdu_length: int, artim_timeout: float) -> None:
    """Refuse settings no association can use: ValueError names the setting and its range."""
    if not 0 <= max_pdu_length <= 0xFFFFFFFF:  # PS3.8 Annex D.1: a 32-bit length, 0 unlimited
        raise ValueError(f"max_pdu_length must be 0..4294967295, not {max_pdu_length}")
    if not artim_timeout > 0:  # PS3.8 §9.1.5: ARTIM runs for a time
        raise ValueError(f"artim_timeout must be more than 0 seconds, not {artim_timeout}")


class Connection:
    """One association's DICOM UL state machine, sans I/O (PS3.8 §9.2)."""

    def __init__(
        self,
        *,
        requestor: bool | None = None,
        artim_timeout: float = 30.0,
        max_pdu_length: int = 16384,
        acceptable: Acceptable | None = None,
        association_timeout: float | None = None,
        release_timeout: float | None = None,
        max_other_length: int | None = None,
        observer: Observer | None = None,
        transcript_limit: int | None = None,
    ) -> None:
        """Start in Sta1; ``requestor`` fixes the role, None takes it from Evt1 or Evt5.

        ``transcript_limit`` keeps at least that many of the latest transitions (and at most
        twice as many) instead of all of them: one per PDU, so a peer sending tiny PDUs would
        otherwise grow the transcript for as long as the association lasts.
        ``transcript_dropped`` counts the transitions no longer kept.
        """
        if transcript_limit is not None and transcript_limit < 1:
            raise ValueError(f"transcript_limit must be at least 1, not {transcript_limit}")
        check_settings(max_pdu_length=max_pdu_length, artim_timeout=artim_timeout)
        self._fixed_role = requestor
        self._artim_timeout = artim_timeout
        self._default_max_pdu_length = max_pdu_length
        self._acceptable = acceptable
        self._association_timeout = association_timeout
        self._release_timeout = release_timeout
        self._max_other_length = max_other_length
        self.observer = observer

        self._state = _STA1
        self.is_requestor: bool | None = requestor
        self.transcript: list[Transition] = []
        self.transcript_dropped = 0
        self._transcript_limit = transcript_limit
        self.max_pdu_length = max_pdu_length
        self.peer_max_pdu_length: int | None = None
        self.timed_out: str | None = None
        self.transport_open = False
        self._artim_deadline: float | None = None
        self._app_deadline: float | None = None
        self._app_kind: str | None = None
        self._framer: PDUFramer | None = None
        self._desynchronised = False
        self._association_rq: AAssociateRqPDU | None = None
        # Why the latest received PDU was Evt19 (for the adapter's log line; it may reset it).
        self.refused: PDUDecodeError | None = None
        # Presentation context IDs the A-ASSOCIATE-AC accepted (None before the AC).
        self.accepted_contexts: frozenset[int] | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """The current state (Sta1 … Sta13)."""
        return self._state

    @property
    def discarding(self) -> bool:
        """Whether received bytes are ignored (no transport, or a stream lost after Evt19)."""
        return not self.transport_open or self._framer is None or self._desynchronised

    @property
    def buffered(self) -> int:
        """Bytes the framer holds for a PDU in progress (grows with bytes received only)."""
        framer = self._framer
        return 0 if framer is None else framer.reserved

    @property
    def artim_deadline(self) -> float | None:
        """When ARTIM expires, or None when it is not running (it runs in Sta2 and Sta13)."""
        return self._artim_deadline

    @property
    def application_deadline(self) -> float | None:
        """When the running association or release timeout passes, or None."""
        return self._app_deadline

    @property
    def timer_deadline(self) -> float | None:
        """The nearest deadline (ARTIM or an application timeout); call handle_timer then."""
        artim, app = self._artim_deadline, self._app_deadline
        if artim is None or app is None:
            return app if artim is None else artim
        return min(artim, app)

    # ------------------------------------------------------------------ inputs

    def send(self, primitive: PDU, now: float) -> list[Effect]:
        """A local user primitive (Evt1, 7, 8, 9, 11, 14, 15); a blank cell raises."""
        if type(primitive) is PDataTfPDU and self._state is _STA6:
            # DT-1 (actions.dt_1): the P-DATA-TF in pieces, within the peer's maximum (D.1).
            effect = SendPDU(primitive, parts=primitive.encode_parts())
            maximum = self.peer_max_pdu_length or 0
            if maximum and effect.size - 6 > maximum:
                raise PDUTooLargeError(
                    self._state, _EVT9, primitive, length=effect.size - 6, maximum=maximum
                )
            self._record(_DT_1)
            return [effect]
        if not isinstance(primitive, _PDU_CLASSES):
            raise TypeError(f"not a DICOM UL primitive: {primitive!r}")
        event = PRIMITIVE_TYPE_EVENT[primitive.pdu_type]
        cell = _CELLS.get((self._state, event))
        if cell is None:
            raise LocalProtocolError(self._state, event, primitive)  # a blank cell of Table 9-10
        if event is _EVT1:
            # PS3.8 §9.2, Table 9-10, Sta1/Evt1 → AE-1: this side becomes the requestor.
            self._check_role(True, event, primitive)
        # For Evt15 the primitive is not put on the wire: AA-1 builds its own A-ABORT.
        outcome = self._run(cell, primitive, now)
        if event is _EVT9:
            self._check_peer_max(event, primitive, outcome)
        if isinstance(primitive, AAssociateRqPDU):  # Sta1/Evt1 → AE-1
            self._new_association(requestor=True)
            self._association_rq = primitive
            self._announce(primitive.max_length)
        elif isinstance(primitive, AAssociateAcPDU):  # Sta3/Evt7 → AE-7
            self._announce(primitive.max_length)
            self.accepted_contexts = _accepted_ids(primitive)
        return self._commit(event, cell, outcome, now)

    def receive_bytes(self, data: bytes | bytearray | memoryview, now: float) -> list[Effect]:
        """Bytes from the transport: one event per whole PDU (Evt3 … Evt16, or Evt19)."""
        if not self.transport_open or self._framer is None or self._desynchronised:
            return []  # no transport (Sta1, Sta4, closed by us) or a lost stream
        refused: FramingError | None = None
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            # The PDUs completed before the refused header keep their place in the stream.
            frames, refused = exc.frames, exc
        return self._frames(frames, refused, now)

    def receive_buffer(self) -> memoryview | None:
        """Where the rest of a large PDU in progress may be received directly, or None.

        For ``socket.recv_into``: it saves joining the PDU from many reads. Report the bytes
        written with ``receive_into``; when None, use ``receive_bytes``.
        """
        if not self.transport_open or self._framer is None or self._desynchronised:
            return None
        return self._framer.body_buffer()

    def receive_into(self, nbytes: int, now: float) -> list[Effect]:
        """``nbytes`` were received into ``receive_buffer()``: events as for receive_bytes."""
        if not self.transport_open or self._framer is None or self._desynchronised:
            return []
        return self._frames(self._framer.body_received(nbytes), None, now)

    def _frames(
        self, frames: list[memoryview], refused: FramingError | None, now: float
    ) -> list[Effect]:
        """One event per framed PDU (Evt3 … Evt16, or Evt19), then Evt19 for a refused one."""
        effects: list[Effect] = []
        for frame in frames:
            if not self.transport_open:
                return effects  # a previous PDU closed the transport: the rest is ignored
            fault = check_request(frame) if frame[0] == 0x01 else None
            if fault is not None:
                # PS3.8 §9.3.2.2 (Table 9-13): an even or repeated presentation context ID (so
                # also more than 128 contexts) is an invalid PDU parameter value: Evt19 (AA-1
                # in Sta2, reason 6 of Table 9-26), never an A-ASSOCIATE indication. Checked
                # before decoding, so that refusing costs a scan of the item headers only.
                reason = AbortReason.INVALID_PDU_PARAMETER_VALUE
                self.refused = PDUDecodeError(fault, pdu_type=0x01, offset=74, field="items")
                effects += self._fire(Event.Evt19, None, now, abort_reason=reason)
                continue
            try:
                pdu = decode(frame)
            except PDUDecodeError as exc:
                # PS3.8 §9.2.2: an unrecognized or invalid PDU is Evt19.
                self.refused = exc
                effects += self._fire(Event.Evt19, None, now, abort_reason=exc.abort_reason)
                continue
            if type(pdu) is PDataTfPDU:
                if self._foreign_context(pdu):
                    # PS3.8 §9.3.5 / spec §10.1 [interp]: a PDV on a presentation context the
                    # AC did not accept is an invalid PDU parameter value: Evt19 (AA-8 in
                    # Sta6/Sta7).
                    reason = AbortReason.INVALID_PDU_PARAMETER_VALUE
                    effects += self._fire(Event.Evt19, None, now, abort_reason=reason)
                    continue
                if self._state is _STA6:
                    effects.append(Indicate(pdu))  # DT-2 (actions.dt_2): the P-DATA indication
                    self._record(_DT_2)
                    continue
            effects += self._fire(PDU_TYPE_EVENT[pdu.pdu_type], pdu, now)
        if refused is not None and self.transport_open:
            # PS3.8 Annex D.1: a PDU longer than we announced (or a header that cannot start a
            # PDU) is a protocol error, Evt19. The stream cannot be re-synchronised after it.
            self._desynchronised = True
            self.refused = refused
            effects += self._fire(Event.Evt19, None, now, abort_reason=refused.abort_reason)
        return effects

    def transport_connected(self, now: float) -> list[Effect]:
        """Evt2: the TRANSPORT CONNECT issued by AE-1 completed (Sta4 → AE-2 sends the RQ)."""
        return self._fire(_EVT2, None, now)

    def transport_accepted(self, now: float) -> list[Effect]:
        """Evt5: a transport connection was accepted on a listener (Sta1 → AE-5)."""
        return self._fire(_EVT5, None, now)

    def transport_closed(self, now: float) -> list[Effect]:
        """Evt17: the transport closed (peer close, reset, failed connect); no-op in Sta1."""
        if self._state is _STA1:
            return []  # nothing to close: we closed it ourselves, or never had one
        return self._fire(_EVT17, None, now)

    def handle_timer(self, now: float) -> list[Effect]:
        """Evt18 if ARTIM has expired; the user's A-ABORT if an application timeout passed."""
        if self._artim_deadline is not None and now >= self._artim_deadline:
            return self._fire(Event.Evt18, None, now)  # PS3.8 §9.1.5: Sta2/Sta13 → AA-2
        if self._app_deadline is not None and now >= self._app_deadline:
            # PS3.8 §9.1.4 Note 2: the wait ends with an A-ABORT request (Evt15 → AA-1/AA-2).
            self.timed_out = self._app_kind
            effects = self._fire(Event.Evt15, AAbortPDU(source=0, reason_diag=0), now)
            notice = AAbortPDU(source=2, reason_diag=AbortReason.NOT_SPECIFIED)
            return [*effects, Indicate(notice)]
        return []

    # ------------------------------------------------------------------ machinery

    def _check_role(self, requestor: bool, event: Event, pdu: PDU | None) -> None:
        """Refuse Evt1 on a connection built as acceptor, and Evt5 on one built as requestor."""
        if self._fixed_role is not None and self._fixed_role is not requestor:
            role = "requestor" if self._fixed_role else "acceptor"
            raise LocalProtocolError(
                self._state, event, pdu, f"this connection is the association {role}"
            )

    def _check_peer_max(self, event: Event, pdu: PDU, outcome: Outcome) -> None:
        """PS3.8 Annex D.1: a P-DATA-TF we send must not exceed the peer's maximum length."""
        maximum = self.peer_max_pdu_length or 0
        for effect in outcome.effects:
            if isinstance(effect, SendPDU) and maximum and effect.size - 6 > maximum:
                raise PDUTooLargeError(
                    self._state, event, pdu, length=effect.size - 6, maximum=maximum
                )

    def _announce(self, max_length: int | None) -> None:
        """Record the maximum length we announce (sub-item 0x51); it bounds received P-DATA."""
        if max_length is not None:
            self.max_pdu_length = max_length

    def _foreign_context(self, pdu: PDataTfPDU) -> bool:
        """In Sta6/Sta7 (DT-2, AR-6), does a PDV use a context the AC did not accept?"""
        accepted = self.accepted_contexts
        if accepted is None or (self._state is not _STA6 and self._state is not _STA7):
            return False
        return not accepted.issuperset(map(_CONTEXT_ID, pdu.data_value_items))  # no generator

    def _new_association(self, *, requestor: bool) -> None:
        """Forget the previous association's role, limits and transport (back from Sta1)."""
        self.is_requestor = requestor
        self.max_pdu_length = self._default_max_pdu_length
        self.peer_max_pdu_length = None
        self.timed_out = None
        self._desynchronised = False
        self._association_rq = None
        self.accepted_contexts = None

    def _open_framer(self) -> None:
        """A new transport: a fresh framer bounded by the length we announce (Annex D.1)."""
        # PS3.8 Annex D.1, E.1 [interp]: a P-DATA-TF past PDATA_STREAM_LENGTH (possible with a
        # maximum length of 0, unlimited) is indicated in pieces, never buffered whole.
        self._framer = PDUFramer(
            max_pdata_length=self.max_pdu_length,
            max_other_length=(
                DEFAULT_MAX_ASSOCIATE_LENGTH
                if self._max_other_length is None
                else self._max_other_length
            ),
            stream_length=PDATA_STREAM_LENGTH,
        )
        self.transport_open = True
        self._desynchronised = False

    def _run(
        self,
        cell: _Cell,
        pdu: PDU | None,
        now: float,
        abort_reason: int = AbortReason.UNEXPECTED_PDU,
    ) -> Outcome:
        """Run the cell's action purely; nothing changes until ``_commit``."""
        action, steps = cell
        if action is _AE_2:
            pdu = self._association_rq  # AE-2 sends the A-ASSOCIATE-RQ of Evt1
        ctx = ActionContext(
            now,
            self._artim_timeout,
            self._artim_deadline is not None,
            bool(self.is_requestor),
            pdu,
            abort_reason,
            self._acceptable,
        )
        outcome = ACTIONS[action](ctx)  # actions.run(action, ctx)
        if outcome.next_state not in steps:  # pragma: no cover - a bug in actions
            raise RuntimeError(f"{action} went to {outcome.next_state}, not {NEXT_STATE[action]}")
        return outcome

    def _fire(
        self,
        event: Event,
        pdu: PDU | None,
        now: float,
        abort_reason: int = AbortReason.UNEXPECTED_PDU,
    ) -> list[Effect]:
        """Look up, run and commit one event that carries no primitive-specific bookkeeping."""
        cell = _CELLS.get((self._state, event))
        if cell is None:
            raise LocalProtocolError(self._state, event, pdu)  # a blank cell of Table 9-10
        action = cell[0]
        if event is _EVT5:
            self._check_role(False, event, pdu)
        outcome = self._run(cell, pdu, now, abort_reason)
        if event is _EVT5:
            self._new_association(requestor=False)
        if action is _AE_6 and isinstance(pdu, AAssociateRqPDU):
            self.peer_max_pdu_length = pdu.max_length or 0  # acceptor: the peer's RQ
        elif action is _AE_3 and isinstance(pdu, AAssociateAcPDU):
            self.peer_max_pdu_length = pdu.max_length or 0  # requestor: the peer's AC
            self.accepted_contexts = _accepted_ids(pdu)
        return self._commit(event, cell, outcome, now)

    def _commit(self, event: Event, cell: _Cell, outcome: Outcome, now: float) -> list[Effect]:
        """Apply the outcome: timers, transport, state, transcript; then tell the observer."""
        if event is _EVT2 or event is _EVT5:
            self._open_framer()  # the transport now exists (Sta4 → Sta5, Sta1 → Sta2)
        elif event is _EVT17:
            self.transport_open = False
        effects = outcome.effects
        for effect in effects:
            kind = type(effect)
            if kind is StopTimer:
                self._artim_deadline = None
            elif kind is CloseTransport:
                self.transport_open = False
            elif isinstance(effect, StartTimer):
                self._artim_deadline = effect.deadline
        if cell[0] is _AE_7 and self._framer is not None:
            self._framer.max_pdata_length = self.max_pdu_length  # announced in our AC
        transition = cell[1][outcome.next_state]
        self._state = outcome.next_state
        if self._state is _STA1:
            self.transport_open = False
            self._framer = None
        if self._association_timeout is not None or self._release_timeout is not None:
            self._supervise(now)
        self._record(transition)
        return list(effects)

    def _record(self, transition: Transition) -> None:
        """Append a step to the transcript (bounded if asked), then tell the observer."""
        transcript = self.transcript
        transcript.append(transition)
        limit = self._transcript_limit
        if limit is not None and len(transcript) > 2 * limit:  # amortised O(1) per transition
            self.transcript_dropped += len(transcript) - limit
            del transcript[:-limit]
        if self.observer is not None:
            self.observer(transition)

    def _supervise(self, now: float) -> None:
        """Arm, keep or clear the application timeout for the state just entered (§9.1.4)."""
        kind: str | None = None
        timeout: float | None = None
        if self._state in _ASSOCIATION_WAIT and self._association_timeout is not None:
            kind, timeout = "association", self._association_timeout
        elif self._state in _RELEASE_WAIT and self._release_timeout is not None:
            kind, timeout = "release", self._release_timeout
        if kind is None or timeout is None:
            self._app_deadline = self._app_kind = None
        elif self._app_kind != kind:
            self._app_deadline, self._app_kind = now + timeout, kind


def _accepted_ids(ac: AAssociateAcPDU) -> frozenset[int]:
    """IDs of the presentation contexts an AC accepted (PS3.8 Table 9-18, result 0)."""
    return frozenset(
        [
            item.context_id
            for item in ac.variable_items
            if type(item) is PresentationContextItemAC and item.result == 0
        ]
    )
