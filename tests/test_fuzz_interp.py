"""One source of truth for [interp] rules: the core, the oracle and the docs agree (fuzz.interp)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.check import FAILURES, INTERP
from netdicom2.fuzz.interp import ACCEPT, EVT19, NETDICOM2, RULES
from netdicom2.fuzz.strategies import IMPLEMENTATION_UID, IMPLICIT_LE, Case, Delivery
from netdicom2.fuzz.targets import LocalTarget

DOCS = Path(__file__).resolve().parent.parent / "docs" / "fuzzing.md"


def _ac(contexts: list[t.Node]) -> bytes:
    subs = [t.sub_item(0x51, struct.pack(">I", 16384)), t.sub_item(0x52, IMPLEMENTATION_UID)]
    return t.ac(b"FUZZ-SCP", b"TARGET-SCU", contexts, subs).encode()


def _pdata(context: int, size: int = 2) -> bytes:
    return t.pdata([(context, 0x03, bytes(size - 2))]).encode()


#: For each rule, a case that touches it (and only it), against our core.
EXAMPLES: dict[str, Case] = {
    # PS3.8 §10.1: an AC accepting 1 and 3, then a PDV on context 41 (the reported case).
    "pdata-context": Case(
        "sta5",
        [
            ("valid:ac", _ac([t.pc_ac(1, 0, IMPLICIT_LE), t.pc_ac(3, 0, IMPLICIT_LE)])),
            ("pdata:context", _pdata(41)),
        ],
    ),
    # Annex D.1: the core announced 16384; a P-DATA-TF of 20,000 bytes follows the setup.
    "pdata-max-length": Case("sta6", [("pdata:long", _pdata(1, 20000))]),
    # Table 9-18: an AC whose accepted context carries no transfer syntax sub-item.
    "ac-context-no-transfer-syntax": Case("sta5", [("ac:no-ts", _ac([t.pc_ac(1, 0, None)]))]),
}


def test_every_rule_has_an_example_and_a_reading() -> None:
    assert set(EXAMPLES) == set(RULES)
    assert {rule.netdicom2 for rule in RULES.values()} <= {EVT19, ACCEPT}
    assert INTERP not in FAILURES  # the other reading is a note, never a finding


@pytest.mark.parametrize("key", sorted(RULES))
def test_the_core_takes_the_documented_reading(key: str) -> None:
    case = EXAMPLES[key]
    assert LocalTarget().run(case).judgement.verdict == "conform"
    # The other reading must be caught: the check can fail.
    flipped = {**NETDICOM2, key: ACCEPT if RULES[key].netdicom2 == EVT19 else EVT19}
    assert LocalTarget(readings=flipped).run(case).judgement.verdict == "deviation"
    # A black-box judge allows both readings; the non-default one is a note (Evt19 first).
    expected = "conform" if RULES[key].netdicom2 == EVT19 else INTERP
    assert LocalTarget(readings=None).run(case).judgement.verdict == expected


@pytest.mark.parametrize("key", sorted(RULES))
def test_the_docs_list_each_rule_with_our_reading(key: str) -> None:
    rows = [line for line in DOCS.read_text().splitlines() if f"`{key}`" in line]
    assert rows, f"docs/fuzzing.md does not list the [interp] rule {key}"
    assert re.search(rf"\b{re.escape(RULES[key].netdicom2)}\b", rows[0]), rows[0]


def test_pipelined_contexts_come_from_the_targets_ac() -> None:
    # Pipelined sta6: the RQ proposes contexts 1 and 3; the core accepts both, so a PDV on
    # context 3 is data (no interp rule), and one on 41 is the pdata-context rule.
    for context, verdict in ((3, "conform"), (41, "conform")):
        case = Case("sta6", [("pdata", _pdata(context))], Delivery(), "fin", pipelined=True)
        result = LocalTarget().run(case)
        assert result.judgement.verdict == verdict, result.judgement.detail
    case = Case("sta6", [("pdata", _pdata(3))], Delivery(), "fin", pipelined=True)
    assert "P-DATA" not in LocalTarget().run(case).outcome  # our core answers nothing here
