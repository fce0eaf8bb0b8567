"""The [interp] rules: where PS3.8 leaves a receiver two readings, and the one netdicom2 takes.

This table is the one source of truth for "deviation or allowed interpretation". The judge
(``fuzz.validate``) tags a PDU with the rule that makes it invalid only by interpretation; the
oracle (``fuzz.check``) then accepts both readings from a black-box peer (verdict
``deviation-interp``: a note, never a finding) and holds our own core and provider to the
reading given here; ``docs/fuzzing.md`` lists the same rules (a test keeps them equal) and
``tests/test_fuzz_interp.py`` checks that the core really behaves as this table says.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPT", "EVT19", "NETDICOM2", "RULES", "InterpRule"]

#: The two readings: the PDU is invalid (Evt19, AA-8 in Sta6/7), or it is taken as its type.
EVT19, ACCEPT = "Evt19", "accept"


@dataclass(frozen=True)
class InterpRule:
    """One contextual rule PS3.8 does not list among its Evt19 triggers (spec notes §4.1)."""

    key: str
    ref: str
    summary: str
    netdicom2: str  # EVT19 or ACCEPT: the reading our core takes
    how: str  # what our core does, in one line


RULES: dict[str, InterpRule] = {
    rule.key: rule
    for rule in (
        InterpRule(
            "pdata-context",
            "PS3.8 §9.3.5, §10.1",
            "P-DATA-TF with a PDV on a presentation context the A-ASSOCIATE-AC did not accept",
            EVT19,
            "Evt19: A-ABORT source 2, reason 6 (invalid PDU parameter value)",
        ),
        InterpRule(
            "pdata-max-length",
            "PS3.8 Annex D.1",
            "P-DATA-TF longer than the Maximum Length the receiver announced",
            EVT19,
            "Evt19: A-ABORT source 2 (the framer refuses the length at the header)",
        ),
        InterpRule(
            "ac-context-no-transfer-syntax",
            "PS3.8 Table 9-18",
            "A-ASSOCIATE-AC accepting a presentation context without a transfer syntax sub-item",
            ACCEPT,
            "Evt3: the A-ASSOCIATE-AC is indicated to the user",
        ),
    )
}

#: The readings our own core and provider are held to.
NETDICOM2: dict[str, str] = {key: rule.netdicom2 for key, rule in RULES.items()}
