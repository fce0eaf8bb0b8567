"""Judge one executed fuzz case: frame what the target received, run the oracle, time ARTIM.

The receiver's framing is recomputed here from the bytes actually delivered (PS3.8 §9.1.3:
6-byte header then PDU-length bytes): a lying length swallows the next PDU exactly as it would
in any conforming receiver. Each frame is judged by ``fuzz.validate``; a frame whose body never
fully arrived may be refused at its header (a local length limit) or wait forever.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from fuzz.oracle import Frame, MatchResult, Observed, Policy, frame_of, match
from fuzz.spec import PDU_EVENT
from fuzz.validate import judge

__all__ = ["Facts", "Judgement", "evaluate", "receiver_frames"]

#: Verdict classes, worst first; "deviation-interp" breaks only a contextual [interp] rule.
FAILURES = ("failure", "crash", "hang", "deviation", "timing", "deviation-interp")
HARD_FAILURES = FAILURES[:-1]


@dataclass
class Facts:
    """What the setup and the run established, for judging and timing."""

    start: str  # state the oracle starts in (Sta2 when the setup was pipelined)
    prefix: list[tuple[str, bytes]] = field(default_factory=list)  # pipelined setup PDUs
    accepted: frozenset[int] | None = None  # presentation contexts the association accepted
    peer_max: int | None = None  # the target's announced Maximum-length-received (Annex D.1)
    delivered: int | None = None  # stream bytes delivered before our early close (None: all)
    t_start: float = 0.0  # ARTIM start for the start state: connection (Sta2), setup's last PDU
    t_outputs: list[float] = field(default_factory=list)  # arrival of each PDU of the reaction
    t_close: float | None = None  # when the target's close arrived (FIN/RST)
    artim: float | None = None  # the target's ARTIM, when known
    setup_error: str = ""


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
) -> list[Frame]:
    """The frames a receiver cuts from the delivered bytes, each with its allowed events."""
    stream = b"".join(data for _, data in pdus)
    if delivered is not None:
        stream = stream[:delivered]
    starts: list[tuple[int, str]] = []
    offset = 0
    for label, data in pdus:
        starts.append((offset, label))
        offset += len(data)
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
        verdict = judge(stream[off:end], accepted=accepted, max_pdata=peer_max)
        frames.append(frame_of(verdict, label, relax_interp=relax_interp))
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
    ref = facts.t_start if result.artim_ref is None else facts.t_outputs[result.artim_ref]
    measured = facts.t_close - ref
    error = measured - facts.artim
    early, late = tolerance
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
) -> Judgement:
    """Run the Table 9-10 oracle on one executed case and time any ARTIM close (§9.1.5)."""
    labels = [label for label, _ in pdus]
    if facts.setup_error:
        return Judgement("setup-failed", facts.setup_error, labels=labels)
    everything = [*facts.prefix, *pdus]
    delivered = facts.delivered
    if delivered is not None:
        delivered += sum(len(d) for _, d in facts.prefix)
    accepted, peer_max = facts.accepted, facts.peer_max
    frames = receiver_frames(everything, delivered, accepted=accepted, peer_max=peer_max)
    result = match(facts.start, frames, observed, policy)
    if not result.ok:
        detail = f"{observed.outcome()}: {result.expected}"
        relaxed = receiver_frames(
            everything, delivered, accepted=accepted, peer_max=peer_max, relax_interp=True
        )
        if any(f.interp for f in frames) and match(facts.start, relaxed, observed, policy).ok:
            return Judgement("deviation-interp", detail, labels=labels, key=result.key)
        kind = "hang" if observed.end == "open" or observed.artim_expired else "deviation"
        return Judgement(kind, detail, labels=labels, key=result.key)
    timing, error = _artim_check(result, observed, facts, tolerance)
    if timing and any(f.interp for f in frames):
        # An early "ARTIM" close may only be how the oracle explained a PDU handled by the
        # other reading of an [interp] rule: prefer that explanation when it is clean.
        relaxed = receiver_frames(
            everything, delivered, accepted=accepted, peer_max=peer_max, relax_interp=True
        )
        again = match(facts.start, relaxed, observed, policy)
        if again.ok and not _artim_check(again, observed, facts, tolerance)[0]:
            detail = f"{observed.outcome()}: conforms only with the other [interp] reading"
            return Judgement("deviation-interp", detail, again.cells, labels=labels, key="interp")
    if timing:
        key = f"{result.artim_close_state} {'early' if error and error < 0 else 'late'}"
        return Judgement("timing", timing, result.cells, error, labels, key)
    return Judgement("conform", observed.outcome(), result.cells, error, labels)
