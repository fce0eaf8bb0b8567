"""Start states for fuzz cases: how the fuzzing peer (and the target's user) reach each one.

A scenario is a short script of setup steps taken before the fuzz stream is sent: PDUs the
fuzzing peer sends ("send:RQ") or must receive ("expect:AC"), and, for white-box targets, a wait
until the target is in a state ("sync:Sta8"). The target's local user follows ``UserScript``.
Black-box targets (remote peers) only offer the scenarios their automatic user can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

from netdicom2.fuzz.oracle import Policy

__all__ = ["PIPELINE_PREFIX", "SCENARIOS", "Scenario", "UserScript", "black_box_scenarios"]


@dataclass(frozen=True)
class UserScript:
    """What the target's local user does (white-box targets: our provider, the core)."""

    hold_associate: bool = False  # never answer the A-ASSOCIATE indication (stay in Sta3)
    hold_release: bool = False  # never answer an A-RELEASE indication (Sta8, Sta9, Sta12)
    after_association: str | None = None  # "release" (Evt11) or "abort" (Evt15) once in Sta6
    requestor: bool = False  # the target opens the association (Evt1)

    def policy(self) -> Policy:
        """The user primitives the oracle must allow for this script (PS3.8 §7)."""
        return Policy(
            answer_associate=not self.hold_associate,
            reject_allowed=False,
            answer_release=not self.hold_release,
            react_to_data=False,
            role="requestor" if self.requestor else "acceptor",
        )


@dataclass(frozen=True)
class Scenario:
    """A start state, the steps that reach it, the target user's script."""

    name: str
    start: str
    steps: tuple[str, ...]
    user: UserScript = UserScript()
    black_box: bool = False

    @property
    def requestor(self) -> bool:
        """The target is the association requestor (we play the acceptor)."""
        return self.user.requestor


_AUTO = UserScript()
_HOLD_ASSOC = UserScript(hold_associate=True)
_HOLD_REL = UserScript(hold_release=True)
_RELEASES = UserScript(after_association="release", hold_release=True)
_REQ = UserScript(requestor=True)
_REQ_RELEASES = UserScript(requestor=True, after_association="release", hold_release=True)
_REQ_ANSWERS = UserScript(requestor=True, after_association="release")
_REQ_ABORTS = UserScript(requestor=True, after_association="abort")

_ASSOCIATED = ("send:RQ", "expect:AC")
_REQ_ASSOCIATED = ("expect:RQ", "send:AC")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        # The target is the association acceptor (PS3.8 §9.2: Sta2 after AE-5).
        Scenario("sta2", "Sta2", (), _AUTO, black_box=True),
        Scenario("sta3", "Sta3", ("send:RQ", "sync:Sta3"), _HOLD_ASSOC),
        Scenario("sta6", "Sta6", _ASSOCIATED, _AUTO, black_box=True),
        Scenario("sta7", "Sta7", (*_ASSOCIATED, "expect:REL-RQ"), _RELEASES),
        Scenario("sta8", "Sta8", (*_ASSOCIATED, "send:REL-RQ", "sync:Sta8"), _HOLD_REL),
        Scenario(
            "sta10",
            "Sta10",
            (*_ASSOCIATED, "expect:REL-RQ", "send:REL-RQ", "sync:Sta10"),
            _RELEASES,
        ),
        Scenario(
            "sta12",
            "Sta12",
            (*_ASSOCIATED, "expect:REL-RQ", "send:REL-RQ", "sync:Sta10", "send:RP", "sync:Sta12"),
            _RELEASES,
        ),
        Scenario("sta13", "Sta13", (*_ASSOCIATED, "send:REL-RQ", "expect:RP"), _AUTO, True),
        Scenario("sta13-rj", "Sta13", ("send:RQv0", "expect:RJ"), _AUTO, black_box=True),
        # The target is the association requestor: we accept its connection (Sta5 after AE-2).
        Scenario("sta5", "Sta5", ("expect:RQ",), _REQ),
        Scenario("req-sta6", "Sta6", (*_REQ_ASSOCIATED, "sync:Sta6"), _REQ),
        Scenario("req-sta7", "Sta7", (*_REQ_ASSOCIATED, "expect:REL-RQ"), _REQ_RELEASES),
        Scenario(
            "sta9",
            "Sta9",
            (*_REQ_ASSOCIATED, "expect:REL-RQ", "send:REL-RQ", "sync:Sta9"),
            _REQ_RELEASES,
        ),
        Scenario(
            "sta11",
            "Sta11",
            (*_REQ_ASSOCIATED, "expect:REL-RQ", "send:REL-RQ", "expect:RP"),
            _REQ_ANSWERS,
        ),
        Scenario("req-sta13", "Sta13", (*_REQ_ASSOCIATED, "expect:ABORT"), _REQ_ABORTS),
    )
}

#: Scenarios whose setup can be sent in one go, before any answer (pipelining): their PDUs.
PIPELINE_PREFIX: dict[str, tuple[str, ...]] = {
    "sta6": ("RQ",),
    "sta13": ("RQ", "REL-RQ"),
    "sta13-rj": ("RQv0",),
}


def black_box_scenarios() -> list[str]:
    """The scenarios a remote acceptor with an automatic user can be driven into."""
    return [name for name, s in SCENARIOS.items() if s.black_box]
