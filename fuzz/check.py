"""Judge one executed fuzz case: frame what the target received, run the oracle, time ARTIM.

The receiver's framing is recomputed here from the bytes actually delivered (PS3.8 §9.1.3:
6-byte header then PDU-length bytes): a lying length swallows the next PDU exactly as it would
in any conforming receiver. Each frame is judged by ``fuzz.validate``; a frame whose body never
fully arrived may be refused at its header (a local length limit) or wait forever.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from netdicom2.fuzz.oracle import Frame, MatchResult, Observed, Policy, frame_of, match
from netdicom2.fuzz.spec import ARTIM_STATES, PDU_EVENT
from netdicom2.fuzz.validate import VALID, judge

__all__ = ["Facts", "Judgement", "artim_pending", "evaluate", "receiver_frames"]

#: Verdict classes that are findings, worst first.
FAILURES = ("failure", "crash", "hang", "deviation", "timing")
HARD_FAILURES = FAILURES
#: Not findings: the peer took the other reading of an [interp] rule (``fuzz.interp``), or
#: the case never reached its start state (counted apart, see ``fuzz.campaign``).
INTERP = "deviation-interp"


@dataclass
class Facts:
    """What the setup and the run established, for judging and timing."""

    start: str  # state the oracle starts in (Sta2 when the setup was pipelined)
    prefix: list[tuple[str, bytes]] = field(default_factory=list)  # pipelined setup PDUs
    accepted: frozenset[int] | None = None  # presentation contexts the association accepted
    peer_max: int | None = None  # the target's announced Maximum-length-received (Annex D.1)
    delivered: int | None = None  # stream bytes delivered before our early close (None: all)
    t_start: float = 0.0  # ARTIM start for the start state: connection (Sta2), setup's last PDU
    # The latest the target may have started ARTIM in Sta2 (Evt5, AE-5): a peer serving one
    # association at a time accepts ours only once those ahead of it ended (None: t_start).
    t_start_late: float | None = None
    t_outputs: list[float] = field(default_factory=list)  # arrival of each PDU of the reaction
    t_close: float | None = None  # when the target's close arrived (FIN/RST)
    artim: float | None = None  # the target's ARTIM, when known
    setup_error: str = ""
    target_ac: bytes | None = None  # the first A-ASSOCIATE-AC the target sent, if any


@dataclass
class Judgement:
    """The verdict on one case."""

    verdict: str  # "conform", or one of FAILURES, or "setup-failed"
    detail: str = ""
    cells: list[tuple[str, str, str]] = field(default_factory=list)
    artim_error: float | None = None  # measured ARTIM close minus the target's ARTIM (s)
    labels: list[str] = field(default_factory=list)
    key: str = ""  # stable description of a failure, for de-duplication


def receiver_frames(
    pdus: Sequence[tuple[str, bytes]],
    delivered: int | None,
    *,
    accepted: frozenset[int] | None,
    peer_max: int | None,
    relax_interp: bool = False,
    readings: Mapping[str, str] | None = None,
    target_ac: bytes | None = None,
) -> list[Frame]:
    """The frames a receiver cuts from the delivered bytes, each with its allowed events.

    The accepted presentation contexts follow the stream (PS3.8 §9.3.3, §10.1): after an
    A-ASSOCIATE-RQ we sent they are those of the target's A-ASSOCIATE-AC (``target_ac``;
    unknown when it sent none), after an A-ASSOCIATE-AC we sent they are the ones it accepts
    (unknown when an [interp] rule makes its reading uncertain).
    """
    stream = b"".join(data for _, data in pdus)
    if delivered is not None:
        stream = stream[:delivered]
    starts: list[tuple[int, str]] = []
    offset = 0
    for label, data in pdus:
        starts.append((offset, label))
        offset += len(data)
    known = True
    frames: list[Frame] = []
    off = 0
    while off < len(stream):
        label = next((lab for start, lab in reversed(starts) if start <= off), "?")
        if len(stream) - off < 6:
            # A header that never completes: nothing can happen, except that a receiver may
            # already refuse an unknown PDU-type byte (§9.3.1).
            unknown = stream[off] not in PDU_EVENT
            frames.append(Frame(("-", "Evt19") if unknown else ("-",), label, unknown_type=True))
            break
        end = off + 6 + struct.unpack_from(">I", stream, off + 2)[0]
        if end > len(stream):
            # Body incomplete: wait for it, or refuse the length at the header (local limit,
            # Annex D.1 for P-DATA-TF; pynetdicom refuses unknown types at the header). The
            # body of RJ/RELEASE/ABORT is codes and reserved bytes: acting on the header of one
            # is acting on that PDU.
            events: tuple[str, ...] = ("-", "Evt19")
            if stream[off] in (0x03, 0x05, 0x06, 0x07):
                events += (PDU_EVENT[stream[off]],)
            frames.append(Frame(events, label, unknown_type=True))
            break
        verdict = judge(
            stream[off:end], accepted=accepted, max_pdata=peer_max, contexts_known=known
        )
        frames.append(frame_of(verdict, label, relax_interp=relax_interp, readings=readings))
        if verdict.pdu_type == 0x01:  # our RQ: the target's AC decides the contexts
            answer = judge(target_ac) if target_ac is not None else None
            known = answer is not None and answer.level == VALID
            accepted = frozenset(answer.context_ids) if answer is not None else None
            peer_max = answer.max_length if answer is not None else None
        elif verdict.pdu_type == 0x02:  # our AC to a requestor target
            known = verdict.level == VALID
            accepted = frozenset(verdict.context_ids)
        off = end
    return frames


def _artim_check(
    result: MatchResult, observed: Observed, facts: Facts, tolerance: tuple[float, float]
) -> tuple[str, float | None]:
    """("" or a timing finding, the measured error) for a close the oracle took as ARTIM."""
    if result.artim_close_state is None or facts.artim is None or facts.t_close is None:
        return "", None
    if observed.our_close is not None:
        return "", None  # we closed first: the timer's end is not observable
    if result.artim_ref is None:  # Sta2: the timer started when the target accepted us
        first, last = facts.t_start, max(facts.t_start, facts.t_start_late or facts.t_start)
    else:  # the target's own PDU started it: evidence that it was serving us then
        first = last = facts.t_outputs[result.artim_ref]
    early, late = tolerance
    # Early only when the close beats ARTIM from the earliest start the target could have
    # had, late only when it misses it from the latest: our queueing is never blamed on it.
    error = facts.t_close - first - facts.artim
    measured = facts.t_close - first
    if error >= -early:
        error = facts.t_close - last - facts.artim
        measured = facts.t_close - last
    when = (
        f"closed {measured:.3f} s after entering {result.artim_close_state}, ARTIM {facts.artim} s"
    )
    if error < -early:
        return f"{when} (early)", error
    if error > late:
        return f"{when} (late)", error
    return "", error


def evaluate(
    pdus: Sequence[tuple[str, bytes]],
    observed: Observed,
    facts: Facts,
    policy: Policy,
    *,
    tolerance: tuple[float, float] = (0.05, 0.5),
    readings: Mapping[str, str] | None = None,
) -> Judgement:
    """Run the Table 9-10 oracle on one executed case and time any ARTIM close (§9.1.5).

    ``readings`` (``fuzz.interp.NETDICOM2`` for our own core and provider) holds the target
    to one reading of each [interp] rule; without it (a black-box peer) both readings conform
    and the other one is reported as ``deviation-interp``, a note rather than a finding.
    """
    labels = [label for label, _ in pdus]
    if facts.setup_error:
        return Judgement("setup-failed", facts.setup_error, labels=labels)
    everything = [*facts.prefix, *pdus]
    delivered = facts.delivered
    if delivered is not None:
        delivered += sum(len(d) for _, d in facts.prefix)

    def frames_for(relax: bool) -> list[Frame]:
        return receiver_frames(
            everything,
            delivered,
            accepted=facts.accepted,
            peer_max=facts.peer_max,
            relax_interp=relax,
            readings=readings,
            target_ac=facts.target_ac,
        )

    frames = frames_for(False)
    result = match(facts.start, frames, observed, policy)
    interp = readings is None and any(f.interp for f in frames)
    if not result.ok:
        detail = f"{observed.outcome()}: {result.expected}"
        if interp and match(facts.start, frames_for(True), observed, policy).ok:
            return Judgement(INTERP, detail, labels=labels, key=_rules(frames))
        kind = "hang" if observed.end == "open" or observed.artim_expired else "deviation"
        return Judgement(kind, detail, labels=labels, key=result.key)
    timing, error = _artim_check(result, observed, facts, tolerance)
    if timing and interp:
        # An early "ARTIM" close may only be how the oracle explained a PDU handled by the
        # other reading of an [interp] rule: prefer that explanation when it is clean.
        again = match(facts.start, frames_for(True), observed, policy)
        if again.ok and not _artim_check(again, observed, facts, tolerance)[0]:
            detail = f"{observed.outcome()}: conforms only with the other [interp] reading"
            key = _rules(frames)
            return Judgement(INTERP, detail, again.cells, labels=labels, key=key)
    if timing and error is not None and error < 0 and any(_waits(f) for f in frames):
        # Early for a timer, and the run let a PDU wait unprocessed: the close is the target's
        # reaction to that PDU's header (PS3.8 §9.3.1), judged as such (e.g. AA-1 in Sta2).
        acted = [
            replace(f, events=tuple(e for e in f.events if e != "-")) if _waits(f) else f
            for f in frames
        ]
        again = match(facts.start, acted, observed, policy)
        if not again.ok:
            detail = f"{observed.outcome()}: {again.expected}"
            return Judgement("deviation", detail, labels=labels, key=again.key)
        if not _artim_check(again, observed, facts, tolerance)[0]:
            return Judgement("conform", observed.outcome(), again.cells, None, labels)
    if timing:
        key = f"{result.artim_close_state} {'early' if error and error < 0 else 'late'}"
        return Judgement("timing", timing, result.cells, error, labels, key)
    return Judgement("conform", observed.outcome(), result.cells, error, labels)


def artim_pending(
    pdus: Sequence[tuple[str, bytes]], observed: Observed, facts: Facts, policy: Policy
) -> str:
    """The state (Sta2/Sta13) whose ARTIM may be running now (PS3.8 §9.1.5), or "".

    Lingering for ARTIM measures something only then: when the reaction so far is explained
    by a run that ends in another state (e.g. associated, Sta6), waiting longer decides
    nothing. Unexplained reactions keep the wait ("?": the final judgement decides).
    """
    frames = receiver_frames(
        [*facts.prefix, *pdus],
        None,
        accepted=facts.accepted,
        peer_max=facts.peer_max,
        relax_interp=True,
        target_ac=facts.target_ac,
    )
    now = Observed(observed.wire, "open", observed.indications, None)
    result = match(facts.start, frames, now, policy)
    if not result.ok:
        return "?"
    return result.final_state if result.final_state in ARTIM_STATES else ""


def _waits(frame: Frame) -> bool:
    """A frame the target may leave unprocessed (body incomplete) or act on at its header."""
    return "-" in frame.events and len(frame.events) > 1


def _rules(frames: Sequence[Frame]) -> str:
    """The [interp] rules (``fuzz.interp`` keys) the stream's PDUs touch, for the note's key."""
    keys = sorted({rule for frame in frames if frame.interp for rule in frame.rules})
    return "interp " + ",".join(keys)
