"""The Table 9-10 oracle: does an observed reaction follow PS3.8 from a given state?

The target's reaction to a byte stream is what it put on the wire (PDU kinds, in order), how the
connection ended (closed by the target, reset, still open) and, for our own provider, the
indications its user received. ``match`` runs the standard's machine (``fuzz.spec``) as a
nondeterministic automaton over that trace: each input PDU may raise one of the events its
verdict allows (``fuzz.validate``); the local user may answer at any time where the scenario
lets it (Evt7/8 in Sta3, Evt14 in Sta8/9/12, P-DATA or A-ABORT after a data indication); ARTIM
may expire in Sta2/Sta13 (timing is checked separately); our closing of the connection is Evt17
after everything we sent. The reaction conforms when some run of the machine produces exactly
the observed trace.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netdicom2.fuzz.spec import ARTIM_STATES, EFFECTS, PDU_EVENT, load_table
from netdicom2.fuzz.validate import INVALID, VALID, Verdict

__all__ = ["Frame", "MatchResult", "Observed", "Policy", "frame_of", "match", "wire_kind"]

#: A-ABORT reasons a service-provider may give (PS3.8 Table 9-26; 3 is reserved).
PROVIDER_REASONS = frozenset({0, 1, 2, 4, 5, 6})


@dataclass(frozen=True)
class Frame:
    """One PDU we sent, with the events a conforming receiver may raise for it (§9.2.2)."""

    events: tuple[str, ...]  # "Evt6", "Evt19", ... ; "-" = not processed (stream lost)
    label: str = ""
    version_bit0: bool = True  # for Evt6: AE-6 must reject when False (§9.3.2)
    interp: bool = False  # Evt19 only by a contextual [interp] rule (validate.Verdict)
    abort_source: int | None = None  # for Evt16: AA-3 indicates A-ABORT (0) or A-P-ABORT
    unknown_type: bool = False  # a receiver may not know where the next PDU starts (§9.3.1)
    rules: tuple[str, ...] = ()  # the [interp] rules (fuzz.interp keys) this PDU touches


def frame_of(
    verdict: Verdict,
    label: str = "",
    *,
    relax_interp: bool = False,
    readings: Mapping[str, str] | None = None,
) -> Frame:
    """The events PS3.8 allows for a PDU of this verdict (spec notes §4.1).

    A PDU invalid only by [interp] rules (``fuzz.interp``) raises Evt19 by default, either
    event with ``relax_interp``, and with ``readings`` (the reading a known implementation
    takes of each rule) exactly the event those readings give.
    """
    own = PDU_EVENT.get(verdict.pdu_type)
    interp = verdict.level == INVALID and verdict.interp
    events: tuple[str, ...]
    if own is not None and interp and readings is not None:
        taken = {readings.get(rule, "Evt19") for rule in verdict.interp_rules}
        if taken == {"Evt19"}:
            events = ("Evt19",)
        elif len(taken) == 1 and not verdict.undecided:
            events = (own,)
        else:
            events = (own, "Evt19")
    elif own is None or (verdict.level == INVALID and not (relax_interp and verdict.interp)):
        events = ("Evt19",)
    elif verdict.level == VALID:
        events = (own,)
    else:  # EITHER, or a relaxed [interp] rule
        events = (own, "Evt19")
    source = verdict.source if verdict.pdu_type == 0x07 else None
    unknown = verdict.pdu_type not in PDU_EVENT
    rules = tuple(verdict.interp_rules)
    return Frame(events, label, verdict.version_bit0, interp, source, unknown, rules)


def wire_kind(data: bytes) -> str:
    """A short name for a PDU the target sent: AC, RJ(1,2,2), ABORT(2,2), P-DATA, RP, …"""
    if len(data) < 6:
        return "garbage"
    kind = {1: "RQ", 2: "AC", 4: "P-DATA", 5: "REL-RQ", 6: "RP"}.get(data[0])
    if kind is not None:
        return kind
    if data[0] in (3, 7) and len(data) == 10:
        name = "RJ" if data[0] == 3 else "ABORT"
        fields = (data[7], data[8], data[9]) if data[0] == 3 else (data[8], data[9])
        return f"{name}({','.join(map(str, fields))})"
    return "garbage"


@dataclass(frozen=True)
class Policy:
    """What the target's local user may do on its own (PS3.8 §7: user primitives)."""

    answer_associate: bool = True  # Evt7/Evt8 in Sta3 (AE-7 AC, AE-8 RJ)
    reject_allowed: bool = True  # a black-box user may reject (RJ) as well as accept
    answer_release: bool = True  # Evt14 in Sta8, Sta9, Sta12 (AR-4, AR-9)
    react_to_data: bool = True  # after a P-DATA indication: P-DATA requests or an A-ABORT
    role: str = "acceptor"  # the target's association role (AR-8 branch)
    initiates: bool = False  # a requestor's user: once associated, P-DATA, release or abort


@dataclass
class Observed:
    """A target's reaction: PDUs it sent (kinds), how it ended, its user's indications."""

    wire: list[str] = field(default_factory=list)
    end: str = "open"  # "close" (FIN), "reset", "open" (still open), "unobserved" (we reset)
    indications: list[str] | None = None  # None: not observable (black box)
    our_close: str | None = None  # "fin": Evt17 after all our PDUs; "rst": unread ones may be lost
    artim_expired: bool = False  # we waited past the target's ARTIM deadline while it was open

    def outcome(self) -> str:
        """The outcome class: wire kinds (runs counted) then the ending, "ABORT(2,2)x3 close"."""
        parts: list[str] = []
        for kind, run in itertools.groupby(self.wire):
            count = len(list(run))
            parts.append(kind if count == 1 else f"{kind}x{count}")
        return " ".join([*parts, self.end])


@dataclass
class MatchResult:
    """Verdict of ``match``: conforming or not, the path taken, or what was expected."""

    ok: bool
    cells: list[tuple[str, str, str]] = field(default_factory=list)  # (event, state, action)
    artim_close_state: str | None = None  # the close was an ARTIM expiry in this state
    final_state: str = ""  # the state the accepted run ends in
    artim_ref: int | None = None  # index of the output sent by the last action starting ARTIM
    expected: str = ""  # on failure: what the furthest run expected next
    state: str = ""  # on failure: the state of that run
    key: str = ""  # on failure: a short, stable description (for de-duplication)


@dataclass(frozen=True)
class _Config:
    state: str
    i: int  # next frame
    j: int  # next wire PDU
    k: int  # next indication
    closed: bool
    fin_done: bool
    data_seen: bool
    desync: bool = False  # an unknown PDU type was refused: the stream may be out of step


def _sends_match(kind: str, want: str) -> bool:
    """Does an observed PDU kind satisfy the PDU an action sends (Table 9-9 fields)?"""
    if want == "ABORT-user":
        return kind.startswith("ABORT(0,")  # AA-1: source 0, reason not significant
    if want == "ABORT-provider":
        return kind.startswith("ABORT(2,") and int(kind[8:-1]) in PROVIDER_REASONS
    if want == "ABORT":
        return kind.startswith("ABORT(") and kind[6] in "012"  # AA-7: source not prescribed
    if want == "RJ-version":
        return kind.startswith("RJ(") and kind.endswith(",2,2)")  # AE-6 reject, §9.3.2
    if want == "RJ-provider":  # AE-6 reject of a version-1 RQ: source 2 reason 1, or source 3
        return kind.startswith("RJ(") and (kind.endswith(",2,1)") or ",3," in kind)
    if want == "RJ-user":  # AE-8: the user's response primitive, source 1 (Table 9-21)
        return kind.startswith("RJ(") and ",1," in kind[3:]
    return kind == want


def match(
    start: str,
    frames: Sequence[Frame],
    observed: Observed,
    policy: Policy,
) -> MatchResult:
    """Search a run of Table 9-10 from ``start`` that explains ``observed`` exactly."""
    table = load_table()
    wire, inds = observed.wire, observed.indications
    n_frames = len(frames)
    our_close = observed.our_close
    best: tuple[tuple[int, int, int], _Config] | None = None
    seen: set[_Config] = set()
    parents: dict[_Config, tuple[_Config, tuple[str, str, str] | None]] = {}
    stack = [_Config(start, 0, 0, 0, False, False, False)]

    def step(
        cfg: _Config,
        state: str,
        *,
        send: str | None = None,
        indicate: str | None = None,
        close: bool = False,
        di: int = 0,
        fin: bool = False,
        data: bool = False,
        desync: bool = False,
        cell: tuple[str, str, str] | None = None,
    ) -> Iterable[_Config]:
        """The next configuration if the outputs of an action match the trace."""
        j, k = cfg.j, cfg.k
        if send is not None:
            if j >= len(wire) and observed.end == "unobserved":
                pass  # sent after our reset: lost, not observable
            elif j >= len(wire) or not _sends_match(wire[j], send):
                return
            else:
                j += 1
        if indicate is not None and inds is not None:
            if k >= len(inds) or inds[k] != indicate:
                return
            k += 1
        nxt = _Config(
            state,
            cfg.i + di,
            j,
            k,
            close,
            cfg.fin_done or fin,
            cfg.data_seen or data,
            cfg.desync or desync,
        )
        if nxt not in parents:
            parents[nxt] = (cfg, cell)
        yield nxt

    def successors(cfg: _Config) -> Iterable[_Config]:
        state = cfg.state
        if cfg.closed:
            return
        # A PDU we sent, in order; our close (Evt17) after all of them (FIN) or any time (RST).
        if cfg.i < n_frames:
            for event in frames[cfg.i].events:
                yield from _run(cfg, event, state, di=1, frame=frames[cfg.i])
            if cfg.desync:
                yield from step(cfg, state, di=1)  # swallowed by an out-of-step receiver
        if cfg.desync and state == "Sta13":
            # PS3.8 does not say how a receiver finds the next PDU after one of unknown type:
            # the bytes may raise any number of further Evt19 (AA-7: A-ABORT).
            yield from step(cfg, state, send="ABORT", cell=("Evt19", state, "AA-7"))
        late = observed.artim_expired and state in ARTIM_STATES  # ARTIM should have closed it
        if not late and (our_close == "rst" or (our_close == "fin" and cfg.i >= n_frames)):
            yield from _run(cfg, "Evt17", state, di=0, fin=True)
        # The local user's own primitives (PS3.8 §7).
        if state == "Sta3" and policy.answer_associate:
            yield from step(cfg, "Sta6", send="AC", cell=("Evt7", state, "AE-7"))
            if policy.reject_allowed:
                yield from step(cfg, "Sta13", send="RJ-user", cell=("Evt8", state, "AE-8"))
        if state in ("Sta8", "Sta12") and policy.answer_release:
            yield from step(cfg, "Sta13", send="RP", cell=("Evt14", state, "AR-4"))
        if state == "Sta9" and policy.answer_release:
            yield from step(cfg, "Sta11", send="RP", cell=("Evt14", state, "AR-9"))
        if policy.initiates and state == "Sta6":
            # A requestor's own user (e.g. echoscu): its request, its release, or an abort
            # once the association is there (PS3.8 §7: Evt9, Evt11, Evt15 in Sta6).
            yield from step(cfg, state, send="P-DATA", cell=("Evt9", state, "DT-1"))
            yield from step(cfg, "Sta7", send="REL-RQ", cell=("Evt11", state, "AR-1"))
            if not cfg.data_seen:
                yield from step(cfg, "Sta13", send="ABORT-user", cell=("Evt15", state, "AA-1"))
        if cfg.data_seen and policy.react_to_data and state in ("Sta6", "Sta8"):
            action = "DT-1" if state == "Sta6" else "AR-7"
            yield from step(cfg, state, send="P-DATA", cell=("Evt9", state, action))
            yield from step(cfg, "Sta13", send="ABORT-user", cell=("Evt15", state, "AA-1"))
        # ARTIM expiry (Evt18 → AA-2): in Sta13 at any time, in Sta2 once our bytes are read.
        # (Not when the target was seen open after the deadline: then it did not expire.)
        if not observed.artim_expired and (
            state == "Sta13" or (state == "Sta2" and cfg.i >= n_frames)
        ):
            cell = table.get(("Evt18", state))
            if cell is not None:
                yield from step(cfg, "Sta1", close=True, cell=("Evt18", state, cell.action))

    def _run(
        cfg: _Config,
        event: str,
        state: str,
        *,
        di: int,
        fin: bool = False,
        frame: Frame | None = None,
    ) -> Iterable[_Config]:
        if event == "-":
            yield from step(cfg, state, di=di)
            return
        cell = table.get((event, state))
        if cell is None:  # blank: cannot come from the wire in a live state; ignore
            yield from step(cfg, state, di=di, fin=fin)
            return
        action, tag = cell.action, (event, state, cell.action)
        close = fin or EFFECTS.get(action, EFFECTS["AA-6"]).close
        if action == "AE-6":
            if frame is None or frame.version_bit0:
                yield from step(cfg, "Sta3", indicate="A-ASSOCIATE-RQ", di=di, cell=tag)
                yield from step(cfg, "Sta13", send="RJ-provider", di=di, cell=tag)
            else:
                yield from step(cfg, "Sta13", send="RJ-version", di=di, cell=tag)
            return
        effects = EFFECTS[action]
        indicate = effects.indicate
        desync = event == "Evt19" and frame is not None and frame.unknown_type
        if action == "AA-3" and frame is not None and frame.abort_source != 0:
            indicate = "A-P-ABORT"  # PS3.8 Table 9-9: provider source → A-P-ABORT
        for nxt in cell.next_states:
            if action == "AR-8" and nxt != ("Sta9" if policy.role == "requestor" else "Sta10"):
                continue
            yield from step(
                cfg,
                "Sta1" if close else nxt,
                send=effects.send,
                indicate=indicate,
                close=close,
                di=di,
                fin=fin,
                data=effects.indicate == "P-DATA",
                desync=desync,
                cell=tag,
            )

    def accepting(cfg: _Config) -> bool:
        if cfg.j != len(wire) or (inds is not None and cfg.k != len(inds)):
            return False
        if observed.end == "unobserved":  # we reset: what followed cannot be seen
            return inds is None or cfg.closed
        if our_close is not None and not cfg.fin_done and not cfg.closed:
            return False  # our close must have been seen
        if observed.end == "open":
            if observed.artim_expired and cfg.state in ARTIM_STATES:
                return False  # PS3.8 §9.1.5: ARTIM should have closed it
            return not cfg.closed and cfg.i >= n_frames
        return cfg.closed

    while stack:
        cfg = stack.pop()
        if cfg in seen:
            continue
        seen.add(cfg)
        if accepting(cfg):
            return _success(cfg, parents)
        # The furthest into the reaction; among those, the earliest input: the PDU the
        # reaction went wrong on (not a later one a receiver might have skipped).
        score = (cfg.j, cfg.k, -cfg.i)
        if best is None or score > best[0]:
            best = (score, cfg)
        stack.extend(reversed(list(successors(cfg))))  # frames first, ARTIM last
    assert best is not None
    cfg = best[1]
    events = "end"
    if cfg.i < len(frames):
        # Its class: Evt19 when it may be invalid at all (whatever else it may raise), else
        # its own event ("-", not processed, only when nothing else is possible).
        allowed = [e for e in frames[cfg.i].events if e != "-"] or ["-"]
        events = "Evt19" if "Evt19" in allowed else "/".join(allowed)
    saw = _short(wire[cfg.j]) if cfg.j < len(wire) else observed.end
    return MatchResult(
        False,
        expected=_describe(cfg, frames, wire, inds),
        state=cfg.state,
        key=f"in {cfg.state}, next {events}, saw {saw}",
    )


def _short(kind: str) -> str:
    """An observed PDU kind without its reason: ABORT(2,1) → ABORT(2), RJ(1,2,2) → RJ."""
    if kind.startswith("ABORT("):
        return kind[:7] + ")"
    return "RJ" if kind.startswith("RJ(") else kind


def _success(
    cfg: _Config, parents: dict[_Config, tuple[_Config, tuple[str, str, str] | None]]
) -> MatchResult:
    """The cells of the accepted run, oldest first."""
    steps: list[tuple[tuple[str, str, str], int, bool]] = []
    node: _Config | None = cfg
    while node is not None and node in parents:
        parent, cell = parents[node]
        if cell is not None:
            steps.append((cell, node.j - 1, node.j > parent.j))
        node = parent
    steps.reverse()
    cells = [cell for cell, _, _ in steps]
    artim = next((c[1] for c in cells if c[0] == "Evt18"), None)
    # PS3.8 §9.1.5: AE-6 (reject), AE-8, AR-4, AA-1, AA-8 start ARTIM; AA-7 leaves it running.
    ref = None
    for cell, index, sent in steps:
        if sent and cell[2] in ("AE-6", "AE-8", "AR-4", "AA-1", "AA-8"):
            ref = index
    return MatchResult(True, cells, artim, final_state=cfg.state, artim_ref=ref)


def _describe(
    cfg: _Config, frames: Sequence[Frame], wire: list[str], inds: list[str] | None
) -> str:
    """What the furthest run of the machine saw and would have needed."""
    parts = [f"in {cfg.state} after {cfg.i} of {len(frames)} PDUs"]
    if cfg.i < len(frames):
        frame = frames[cfg.i]
        parts.append(f"next PDU {frame.label or '?'} → {'/'.join(frame.events)}")
    parts.append(f"observed next: {wire[cfg.j] if cfg.j < len(wire) else 'nothing'}")
    if inds is not None:
        parts.append(f"indication next: {inds[cfg.k] if cfg.k < len(inds) else 'none'}")
    return "; ".join(parts)
