"""``--ignore FIELD``: differences a user declares expected, excused everywhere and named.

Each rule names the fields of the comparison (``pcaps.compare``) it excuses. An excused
difference is still reported (marked ``~`` and "excused: --ignore RULE") and the JSON carries
the rule in ``excused_by``, so nothing is hidden, only not failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from netdicom2.pcaps.plan import Difference

__all__ = ["RULES", "apply_ignores", "rule_for"]

#: Rule name -> (what it excuses, the pattern of the compared field names it matches).
RULES: dict[str, tuple[str, str]] = {
    "max-length": (
        "Maximum Length, user information 51H (PS3.8 Annex D.1)",
        r"user information 51H",
    ),
    "implementation": (
        "Implementation Class UID 52H and Version Name 55H (PS3.7 D.3.3.2; always normalised)",
        r"user information 5[25]H",
    ),
    "async-window": ("Asynchronous Operations Window 53H (PS3.7 D.3.3.3)", r"user information 53H"),
    "role-selection": ("SCP/SCU Role Selection 54H (PS3.7 D.3.3.4)", r"user information 54H"),
    "extended-negotiation": (
        "SOP Class (Common) Extended Negotiation 56H/57H (PS3.7 D.3.3.5-6)",
        r"user information 5[67]H",
    ),
    "user-identity": ("User Identity 58H/59H (PS3.7 D.3.3.7)", r"user information 5[89]H"),
    "user-information": ("every user information sub-item", r"user information "),
    "transfer-syntax": (
        "the transfer syntax an accepted presentation context got (PS3.8 §9.3.3.2)",
        r"context \d+ transfer syntax",
    ),
    "context-result": (
        "the result of a presentation context (PS3.8 Table 9-18)",
        r"context \d+ result|presentation context IDs",
    ),
    "dimse-status": ("(0000,0900) Status of DIMSE responses (PS3.7 Annex C)", r".*\(0000,0900\)"),
    "error-comment": ("(0000,0902) Error Comment (always normalised)", r".*\(0000,0902\)"),
    "dataset": ("data set presence and bytes", r".* data set (present|bytes)"),
    "reject": ("A-ASSOCIATE-RJ result, source and reason (PS3.8 Table 9-21)", r"A-ASSOCIATE-RJ "),
    "abort-reason": ("A-ABORT reason/diag (PS3.8 Table 9-26)", r"A-ABORT reason/diag"),
}

_COMPILED = {name: re.compile(pattern) for name, (_, pattern) in RULES.items()}


def rule_for(what: str, ignores: Iterable[str]) -> str | None:
    """The first of ``ignores`` whose pattern matches the compared field ``what``."""
    for name in ignores:
        if _COMPILED[name].match(what):
            return name
    return None


def apply_ignores(differences: Iterable[Difference], ignores: Iterable[str]) -> int:
    """Excuse every difference an ``--ignore`` rule covers; returns how many."""
    chosen = list(ignores)
    count = 0
    for diff in differences:
        if diff.excused_by:
            continue
        rule = rule_for(diff.what, chosen)
        if rule is not None:
            diff.excused_by = f"--ignore {rule}"
            count += 1
    return count
